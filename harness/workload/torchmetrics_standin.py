"""Lightning for the built-in workload without importing torchmetrics: seconds off its start.

``pytorch_lightning`` imports torchmetrics unconditionally (``core/module.py``,
``utilities/types.py`` and ``logger_connector/result.py`` take ``Metric`` and
``MetricCollection`` from it; ``lightning_fabric.utilities.imports`` imports it for its version),
and no environment variable or import order turns that off. torchmetrics' own ``__init__``
imports ``scipy.signal`` when scipy is installed and all of ``torchmetrics.functional``, whose
``image.arniqa`` imports torchvision when it is installed (torchvision imports ``torch._dynamo``
and sympy). Here that was 2.7 s of the 3.1 s that ``import pytorch_lightning`` added to
``import torch`` (1.4 s of it not paid anyway: Lightning imports ``torch._dynamo`` itself, in
``lightning_fabric/wrappers.py``).

The built-in MNIST workload logs no metric, so nothing in its process is ever a torchmetrics
object: Lightning only subclasses ``Metric`` (its ``_ResultMetric``, created when a module calls
``self.log``) and checks values with ``isinstance``. For that run only, ``torchmetrics`` is a
stand-in module that holds the installed version and two classes nothing instantiates (one that
tried would fail, loudly). A user's own workload imports the real torchmetrics: its code may
use it. Where the stand-in does not satisfy the installed Lightning's import (another version),
the stand-in and what Lightning had imported are dropped and Lightning is imported as usual.
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Callable
from importlib import metadata
from typing import Any, NoReturn

log = logging.getLogger(__name__)

#: The packages whose half-done import is dropped when the stand-in does not do
_LIGHTNING_TOPS = ("torchmetrics", "pytorch_lightning", "lightning_fabric")


class StandInError(RuntimeError):
    """Something in the built-in's process used torchmetrics, which it does not import."""


def _refuse(*args: Any, **kwargs: Any) -> NoReturn:
    raise StandInError(
        "torchmetrics is not imported in a run of the built-in workload (it logs no metric); "
        "harness/workload/torchmetrics_standin.py says why"
    )


def standin() -> types.ModuleType:
    """The ``torchmetrics`` module Lightning imports from, with nothing behind it."""
    import torch

    module = types.ModuleType("torchmetrics", f"A stand-in: {__name__}")
    members = {"__module__": "torchmetrics", "__init__": _refuse}

    def __getattr__(name: str) -> NoReturn:
        raise AttributeError(f"torchmetrics.{name}: the stand-in has only Metric, MetricCollection")

    vars(module).update(
        __version__=metadata.version("torchmetrics"),
        Metric=type("Metric", (torch.nn.Module,), dict(members)),
        MetricCollection=type("MetricCollection", (torch.nn.ModuleDict,), dict(members)),
        __getattr__=__getattr__,
    )
    return module


def _drop_lightning() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in _LIGHTNING_TOPS]:
        del sys.modules[name]


def import_lightning_without_torchmetrics(
    make: Callable[[], types.ModuleType] = standin,
) -> bool:
    """Import ``pytorch_lightning`` with the stand-in ``make`` builds; True when it did, False
    when Lightning (or torchmetrics) was imported already, torchmetrics is not installed, or the
    installed Lightning needs more of it (then Lightning is imported with the real
    torchmetrics)."""
    if any(name in sys.modules for name in _LIGHTNING_TOPS):
        return False
    try:
        sys.modules["torchmetrics"] = make()
    except metadata.PackageNotFoundError:
        return False
    try:
        import pytorch_lightning  # noqa: F401 - imported here, with the stand-in
    except Exception as exc:  # noqa: BLE001 - the usual import instead
        log.debug("Lightning did not import with the torchmetrics stand-in: %s", exc)
        _drop_lightning()
        import pytorch_lightning  # noqa: F401, F811

        return False
    return True
