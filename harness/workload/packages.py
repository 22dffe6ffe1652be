"""The two Lightning packages: ``pytorch_lightning`` and ``lightning`` (``lightning.pytorch``).

They hold the same code under two names, and each Trainer takes only its own package's classes
(a ``lightning.pytorch.Trainer`` refuses a ``pytorch_lightning.Callback``). A user's module is
trained by the Trainer of the package its class comes from; the harness's callbacks subclass
``pytorch_lightning.Callback`` and get a twin class for ``lightning.pytorch`` at runtime.
``lightning`` is imported only when a module comes from it, so a run of the built-in never
pays for it.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any, Literal

Package = Literal["pytorch_lightning", "lightning"]

#: Where each package keeps its Trainer, LightningModule, Callback, strategies, utilities.
_NAMESPACE = {"pytorch_lightning": "pytorch_lightning", "lightning": "lightning.pytorch"}


def from_package(value: Any, package: Package) -> bool:
    """Whether ``value``'s class derives from a class of ``package`` (told by module name, so
    nothing is imported to find out)."""
    return any(
        (getattr(c, "__module__", "") or "").split(".")[0] == package for c in type(value).__mro__
    )


def from_lightning(value: Any) -> bool:
    """Whether ``value``'s class derives from a class of the ``lightning`` package."""
    return from_package(value, "lightning")


def package_of(*values: Any) -> Package:
    """The package whose Trainer trains ``values`` (a module, its datamodule): ``lightning``
    when one of them comes from it, else ``pytorch_lightning``."""
    return "lightning" if any(from_lightning(v) for v in values) else "pytorch_lightning"


def namespace(package: Package) -> ModuleType:
    """``pytorch_lightning`` or ``lightning.pytorch``, imported."""
    return importlib.import_module(_NAMESPACE[package])


def submodule(package: Package, name: str) -> ModuleType:
    """A submodule of the package's namespace: ``submodule(p, "strategies")``."""
    return importlib.import_module(f"{_NAMESPACE[package]}.{name}")


def _resolve(cls: type, name: str) -> Any:
    return next(k.__dict__[name] for k in cls.__mro__ if name in k.__dict__)


@functools.cache
def twin_class(cls: type) -> type:
    """``cls`` (a ``pytorch_lightning.Callback`` subclass) made a ``lightning.pytorch.Callback``
    too. The hooks ``cls`` does not override are taken from ``lightning.pytorch.Callback``, so
    Lightning's ``is_overridden`` checks (is the callback stateful?) see what they would see on
    a callback written for it; ``isinstance(twin, cls)`` still holds."""
    from lightning.pytorch import Callback as LightningCallback
    from pytorch_lightning import Callback as PLCallback

    inherited = {
        name: LightningCallback.__dict__[name]
        for name, value in PLCallback.__dict__.items()
        if not name.startswith("__")
        and name in LightningCallback.__dict__
        and _resolve(cls, name) is value
    }
    attrs = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, **inherited}
    return type(cls.__name__, (cls, LightningCallback), attrs)


def for_package(callback: Any, package: Package) -> Any:
    """``callback`` (an instance of a harness callback) as one ``package``'s Trainer takes: the
    same object, its class switched to the twin for ``lightning``."""
    if package == "lightning" and not from_lightning(callback):
        kind: type = type(callback)  # a plain type: mypy takes type[Any] for unhashable
        callback.__class__ = twin_class(kind)
    return callback
