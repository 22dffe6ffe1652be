"""The user's own training as the workload: ``entry: "package.module:function"``.

The harness keeps the process: the environment before torch starts, the threads, the
determinism flags, the seed at its placement, the Trainer, loss capture, digests and the
record. The user's function only builds the model and its data: it receives a ``RunSettings``
and returns a ``LightningModule`` (that defines its dataloaders), ``(module, datamodule)``,
``(module, train_dataloader)`` or ``(module, train_dataloader, val_dataloader)``.

What is the user's workload's fault (the entry cannot be imported, returns something else, its
training step returns no loss, it changes a determinism flag) is a ``WorkloadError`` whose
message names the problem and the fix: the record's ``error.type`` is one of
``harness.contract.record.USER_WORKLOAD_ERRORS``, and the host stops there (no later run of the
same code can do better). Lightning (the package the returned value comes from) is imported
only where a returned value is checked.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from harness.contract import RunSpec
from harness.contract.record import Determinism
from harness.contract.settings import NAMES
from harness.mnist import default_cache_dir
from harness.workload.packages import Package, from_package, namespace, package_of, submodule
from harness.workload.params import Params


class WorkloadError(Exception):
    """The user's workload cannot be run as it is; the message says what and how to fix it."""


class DeterminismFlagsChanged(WorkloadError):
    """The user's code changed a determinism flag that the harness sets from the cell."""


def _read_only(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy; nested mappings (the ``params`` setting) read-only too."""
    return MappingProxyType(
        {k: _read_only(v) if isinstance(v, Mapping) else v for k, v in mapping.items()}
    )


def _nested_read_only(value: Any) -> Any:
    return _read_only(value) if isinstance(value, Mapping) else value


@dataclass(frozen=True)
class RunSettings:
    """What the user's build function receives: this run's settings, read-only.

    - ``seed``, ``placement``: the cell's seed and where the harness sets it (the harness seeds;
      the function must not: with ``before_model`` it is called right after the seed is set,
      with ``before_trainer`` the seed is set after it returns, with ``none`` never);
    - ``repeat``: which repeat of the cell this is (0, 1, ...);
    - ``data_dir``: the MNIST folder given to the run (``--data-dir``, ``HARNESS_MNIST_DIR``) or
      already downloaded, else None; a workload that needs no MNIST ignores it;
    - ``settings``: every setting of the cell by name (docs/matrix.md), e.g. ``threads``;
    - ``params``: the cell's ``params`` (``workload.params`` with an axis's over it);
    - ``cell_id``, ``cell_name``: the host's names for the cell;
    - ``code_dir``: the folder of the user's code (``workload.path``), None when not given.
    """

    seed: int
    placement: str
    repeat: int
    data_dir: Path | None
    settings: Mapping[str, Any]
    params: Mapping[str, Any]
    cell_id: str
    cell_name: str
    code_dir: Path | None

    @classmethod
    def of(cls, spec: Any, data_dir: Path | None, code_dir: Path | None) -> RunSettings:
        settings = {name: getattr(spec, name) for name in NAMES}
        return cls(
            seed=spec.seed,
            placement=spec.placement,
            repeat=spec.repeat,
            data_dir=data_dir,
            settings=_read_only(settings),
            params=Params(dict(spec.params), _nested_read_only),
            cell_id=spec.cell_id,
            cell_name=spec.cell_name,
            code_dir=code_dir,
        )


def find_data_dir(cli_dir: str | None) -> Path | None:
    """The MNIST folder a user workload is told of: ``--data-dir``, ``HARNESS_MNIST_DIR``, else
    the harness's download folder where it exists; None otherwise (nothing is downloaded: a
    user workload need not use MNIST)."""
    for candidate in (cli_dir, os.environ.get("HARNESS_MNIST_DIR")):
        if candidate:
            return Path(candidate)
    cache = default_cache_dir()
    return cache if cache.is_dir() else None


def _where(code_dir: Path | None) -> str:
    return f"it is {code_dir}" if code_dir is not None else "no workload.path is set"


def load_entry(entry: str, code_dir: Path | None = None) -> Callable[[RunSettings], Any]:
    """The function ``entry`` names (``package.module:function``), imported from ``sys.path``
    (``--code-dir`` is first on it). Every way it can fail is a WorkloadError naming the entry,
    the underlying error and the fix; the cause stays chained for the record's traceback."""
    module_name, _, attr = entry.partition(":")
    if not module_name or not attr:
        raise WorkloadError(
            f"workload entry {entry!r} is not `package.module:function` (e.g. `convnet:build`)"
        )
    top = module_name.split(".")[0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == top or module_name.startswith(missing + ".") or missing == module_name:
            fix = (
                f"set `workload.path` to the folder that holds `{top}` (the harness puts that "
                f"folder on sys.path; {_where(code_dir)})"
            )
        else:
            fix = (
                f"`{module_name}` imports `{missing}`, which the workload's Python does not have: "
                "add it to `workload.requirements`"
            )
        raise WorkloadError(
            f"cannot import the workload entry {entry!r}: {type(exc).__name__}: {exc}; {fix}"
        ) from exc
    except BaseException as exc:
        if not isinstance(exc, Exception):
            raise  # a signal, an exit: not the entry's fault
        raise WorkloadError(
            f"cannot import the workload entry {entry!r}: importing `{module_name}` raised "
            f"{type(exc).__name__}: {exc} (the traceback is in run.log)"
        ) from exc
    try:
        function = getattr(module, attr)
    except AttributeError as exc:
        from harness.workload.entry_check import did_you_mean

        where = getattr(module, "__file__", None) or module_name
        raise WorkloadError(
            f"workload entry {entry!r}: module `{module_name}` ({where}) has no attribute "
            f"`{attr}`{did_you_mean(module, attr)}; define `def {attr}(settings): ...` there, "
            "or fix the name after the colon"
        ) from exc
    if not callable(function):
        raise WorkloadError(
            f"workload entry {entry!r}: `{module_name}.{attr}` is {_type_name(function)}, not a "
            "function; it must be a function that takes the run's settings"
        )
    return function


# ---------------------------------------------------------------- what the function returns

#: What a build function may return, in words (every message about it ends with this).
EXPECTED = (
    "a LightningModule (pytorch_lightning or lightning.pytorch) that defines its own dataloaders, "
    "(module, datamodule), "
    "(module, train_dataloader) or (module, train_dataloader, val_dataloader)"
)


@dataclass(frozen=True)
class Built:
    """What the user's function built: the module and where its data comes from (a datamodule,
    dataloaders, or neither: the module defines its own)."""

    module: Any
    datamodule: Any = None
    train: Any = None
    val: Any = None

    def fit_kwargs(self) -> dict[str, Any]:
        """The data arguments of ``trainer.fit(module, ...)``."""
        if self.datamodule is not None:
            return {"datamodule": self.datamodule}
        if self.train is not None:
            return {"train_dataloaders": self.train, "val_dataloaders": self.val}
        return {}


def _type_name(value: Any) -> str:
    if value is None:
        return "None"
    kind = type(value)
    if kind.__module__ == "builtins":
        return f"a {kind.__qualname__}"
    return f"a {kind.__module__}.{kind.__qualname__}"


def describe(value: Any) -> str:
    """What came back, in words: ``a tuple of (a convnet.Net, a list)``."""
    if isinstance(value, tuple | list):
        inner = ", ".join(_type_name(item) for item in value)
        return f"a {type(value).__name__} of ({inner})"
    return _type_name(value)


def _loader_like(value: Any, package: Package) -> bool:
    lightning = namespace(package)
    return isinstance(value, Iterable) and not isinstance(
        value, str | bytes | lightning.LightningModule | lightning.LightningDataModule
    )


def check_built(value: Any, entry: str) -> Built:
    """``value`` as a ``Built``, or a WorkloadError naming what came back and what may. The
    classes are those of the package the returned values come from (pytorch_lightning or
    lightning.pytorch); the run trains with that package's Trainer."""
    items = list(value) if isinstance(value, tuple | list) else [value]
    package = package_of(*items)
    lightning = namespace(package)
    LightningDataModule, LightningModule = lightning.LightningDataModule, lightning.LightningModule
    is_overridden = submodule(package, "utilities.model_helpers").is_overridden

    if isinstance(value, LightningModule):
        if not is_overridden("train_dataloader", value):
            raise WorkloadError(
                f"workload entry {entry!r} returned a {type(value).__qualname__} alone, which "
                "defines no train_dataloader; define it, or return the data beside the module: "
                f"{EXPECTED}"
            )
        return Built(value)
    if isinstance(value, tuple | list) and len(value) in (2, 3):
        module, rest = value[0], list(value[1:])
        if isinstance(module, LightningModule):
            if len(rest) == 1 and isinstance(rest[0], LightningDataModule):
                return Built(module, datamodule=rest[0])
            val = rest[1] if len(rest) == 2 else None
            if _loader_like(rest[0], package) and (val is None or _loader_like(val, package)):
                return Built(module, train=rest[0], val=val)
    mixed = package == "lightning" and any(from_package(v, "pytorch_lightning") for v in items)
    raise WorkloadError(
        f"workload entry {entry!r} returned {describe(value)}; it must return {EXPECTED}"
        + (
            " (module and datamodule from one package: both from pytorch_lightning or both "
            "from lightning.pytorch)"
            if mixed
            else ""
        )
    )


def build(entry: str, function: Callable[[RunSettings], Any], settings: RunSettings) -> Built:
    """Call the user's function and check what it returns. An exception it raises is the
    workload's: a WorkloadError naming it (the cause chained, for the record's traceback)."""
    try:
        value = function(settings)
    except Exception as exc:
        from harness.workload.entry_check import user_location

        where = user_location(exc, settings.code_dir)
        raise WorkloadError(
            f"workload entry {entry!r} raised {type(exc).__name__}: {exc}"
            + (f" at {where}" if where else "")
            + " (the traceback is in run.log)"
        ) from exc
    return check_built(value, entry)


# ---------------------------------------------------------------- determinism flags read back


@dataclass(frozen=True)
class FlagChange:
    """One determinism flag that training ended with other than the cell asked for."""

    torch_name: str
    setting: str
    asked: Any
    in_force: Any


def algorithms_setting(flags: Determinism) -> str:
    """The ``deterministic_algorithms`` setting (off, on, warn) that ``flags`` amount to."""
    if not flags.deterministic_algorithms:
        return "off"
    return "warn" if flags.deterministic_algorithms_warn_only else "on"


def changed_flags(spec: RunSpec, flags: Determinism) -> list[FlagChange]:
    """The flags torch had in force after ``fit`` that differ from the cell's settings."""
    pairs = [
        ("torch.backends.cudnn.deterministic", "cudnn_deterministic",
         spec.cudnn_deterministic, flags.cudnn_deterministic),
        ("torch.backends.cudnn.benchmark", "cudnn_benchmark",
         spec.cudnn_benchmark, flags.cudnn_benchmark),
        ("torch.use_deterministic_algorithms", "deterministic_algorithms",
         spec.deterministic_algorithms, algorithms_setting(flags)),
        ("torch.backends.cuda.matmul.allow_tf32", "allow_tf32",
         spec.allow_tf32, flags.matmul_allow_tf32),
        ("torch.backends.cudnn.allow_tf32", "allow_tf32", spec.allow_tf32, flags.cudnn_allow_tf32),
    ]  # fmt: skip
    return [FlagChange(*pair) for pair in pairs if pair[2] != pair[3]]


def _shown(setting: str, value: Any) -> str:
    if setting == "deterministic_algorithms":
        calls = {
            "off": "use_deterministic_algorithms(False)",
            "on": "use_deterministic_algorithms(True)",
            "warn": "use_deterministic_algorithms(True, warn_only=True)",
        }
        return f"{value!r} ({calls.get(value, value)})"
    return repr(value)


def flags_changed_message(changes: list[FlagChange]) -> str:
    """``your workload set torch.backends.cudnn.benchmark to True (the cell asked for False:
    cudnn_benchmark); ... remove that line``."""
    what = "; ".join(
        f"your workload set {c.torch_name} to {_shown(c.setting, c.in_force)} (the cell asked "
        f"for {_shown(c.setting, c.asked)}: `{c.setting}`)"
        for c in changes
    )
    line = "that line" if len(changes) == 1 else "those lines"
    return (
        f"{what}. The harness sets the determinism flags from the cell's settings: remove {line} "
        "(from build, the LightningModule or its callbacks), and vary the setting in the matrix "
        "to try another value"
    )


def check_flags(spec: RunSpec, flags: Determinism) -> None:
    """Raise DeterminismFlagsChanged when training ended with flags the cell did not ask for."""
    changes = changed_flags(spec, flags)
    if changes:
        raise DeterminismFlagsChanged(flags_changed_message(changes))
