"""What ``RunSpec`` is besides its fields: the run fields, the checks and the methods.

The fields themselves are generated from the settings table into ``spec_fields.py``, so that a
type checker sees every one of them; this module holds the rest, which a new setting needs no
edit of. Standard library only (the workload side imports it inside the container).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Protocol, TypeGuard, TypeVar

from harness.contract.settings import Setting

SPEC_FORMAT_VERSION = 2


class SpecError(ValueError):
    """A spec that cannot be run: names the setting and what it accepts."""


#: What ``test_fault`` (test-only) can do: ``raise`` an exception, ``cuda_error`` trigger a
#: sticky device-side assert (an out-of-bounds index; on the CPU an IndexError), ``hang``
#: sleep until a signal, on rank ``rank`` as optimizer step ``step`` (0-based) starts.
FAULT_KINDS = ("raise", "cuda_error", "hang")

#: How closely a replay for ``harness diagnose`` watches its logged step: every aten operation
#: (DebugMode), or each module's outputs and gradients (hooks; torch without DebugMode).
DIAGNOSE_LEVELS = ("ops", "modules")

#: Run fields that are left out of the spec's dict while unset (None), so that the specs,
#: records and digests of matrices that do not set them stay what they were.
OPTIONAL_RUN_FIELDS = ("ddp_timeout_s", "test_fault", "count_host_syncs", "diagnose")


@dataclasses.dataclass(frozen=True)
class RunField:
    """A field of every spec after the settings: which repeat, and how the run runs.

    ``annotation`` is its type as ``spec_fields.py`` spells it; ``comment`` goes above it there.
    """

    name: str
    annotation: str
    default: Any
    comment: str = ""


RUN_FIELDS: tuple[RunField, ...] = (
    RunField("repeat", "int", 0),
    RunField("cell_id", "str", ""),
    RunField("cell_name", "str", ""),
    RunField("format_version", "int", SPEC_FORMAT_VERSION),
    RunField(
        "ddp_timeout_s",
        "float | None",
        None,
        "how the run runs, not what it computes; None (unset) is left out of to_dict()",
    ),
    RunField("test_fault", "dict[str, Any] | None", None),
    RunField(
        "count_host_syncs",
        "bool | None",
        None,
        'count the host syncs of the training steps (docs/workload.md, "Host syncs per step")',
    ),
    RunField(
        "diagnose",
        "dict[str, Any] | None",
        None,
        "a replay for `harness diagnose` (harness/workload/replay.py); None in every run of a "
        "matrix",
    ),
)


class _RunFields(Protocol):
    """The fields ``check_run_fields`` reads: those of every spec."""

    @property
    def devices(self) -> int: ...
    @property
    def repeat(self) -> int: ...
    @property
    def format_version(self) -> int: ...
    @property
    def ddp_timeout_s(self) -> float | None: ...
    @property
    def test_fault(self) -> dict[str, Any] | None: ...
    @property
    def count_host_syncs(self) -> bool | None: ...
    @property
    def diagnose(self) -> dict[str, Any] | None: ...


def check_spec(spec: _RunFields, table: tuple[Setting, ...]) -> None:
    """Raise SpecError for the first setting of ``table``, then run field, ``spec`` gets wrong."""
    for setting in table:
        problem = setting.check(getattr(spec, setting.name))
        if problem:
            raise SpecError(problem)
    check_run_fields(spec)


def check_run_fields(spec: _RunFields) -> None:
    """Raise SpecError for a run field that is not a value it takes."""
    repeat: object = spec.repeat
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 0:
        raise SpecError(f"repeat must be a non-negative integer, got {repeat!r}")
    if spec.format_version != SPEC_FORMAT_VERSION:
        raise SpecError(
            f"spec format_version {spec.format_version} is not {SPEC_FORMAT_VERSION}; "
            "rebuild the workload image or update harness"
        )
    timeout: object = spec.ddp_timeout_s
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise SpecError(f"ddp_timeout_s must be a positive number of seconds, got {timeout!r}")
    if spec.test_fault is not None:
        _check_fault(spec.test_fault)
    if spec.count_host_syncs is not None and not isinstance(spec.count_host_syncs, bool):
        raise SpecError(f"count_host_syncs must be true or false, got {spec.count_host_syncs!r}")
    if spec.diagnose is not None:
        _check_diagnose(spec.diagnose, spec.devices)


def _count(value: object) -> TypeGuard[int]:
    """A non-negative int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_diagnose(entry: object, devices: int) -> None:
    """diagnose: ``{steps, log_step, log_from, level, rank}`` (harness/workload/replay.py)."""
    keys = {"steps", "log_step", "log_from", "level", "rank"}
    if not isinstance(entry, dict) or set(entry) - keys:
        raise SpecError(f"diagnose must be a mapping of {', '.join(sorted(keys))}: {entry!r}")
    steps, log_step = entry.get("steps"), entry.get("log_step")
    if not _count(steps) or steps < 1:
        raise SpecError(f"diagnose.steps must be a positive integer, got {steps!r}")
    if log_step is not None and (not _count(log_step) or log_step >= steps):
        raise SpecError(f"diagnose.log_step must be null or a step below steps, got {log_step!r}")
    log_from = entry.get("log_from")
    if log_from is not None and (log_step is None or not _count(log_from) or log_from > log_step):
        raise SpecError(f"diagnose.log_from must be null or a step up to log_step: {log_from!r}")
    if entry.get("level", "ops") not in DIAGNOSE_LEVELS:
        raise SpecError(f"diagnose.level must be one of {', '.join(DIAGNOSE_LEVELS)}")
    rank = entry.get("rank", 0)
    if not _count(rank) or rank >= max(devices, 1):
        raise SpecError(f"diagnose.rank must be a rank of the run (0 to {devices - 1}): {rank!r}")


def _check_fault(fault: object) -> None:
    """test_fault: ``{kind, rank, step}``, nothing else."""
    if not isinstance(fault, dict) or set(fault) - {"kind", "rank", "step"}:
        raise SpecError(f"test_fault must be a mapping of kind, rank and step, got {fault!r}")
    if fault.get("kind") not in FAULT_KINDS:
        raise SpecError(f"test_fault.kind must be one of {', '.join(FAULT_KINDS)}")
    for key in ("rank", "step"):
        value = fault.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SpecError(f"test_fault.{key} must be a non-negative integer, got {value!r}")


_Spec = TypeVar("_Spec", bound="SpecBase")


@dataclasses.dataclass(frozen=True)
class SpecBase:
    """The methods of every spec class (``RunSpec``, and those tests build from other tables)."""

    def to_dict(self) -> dict[str, Any]:
        """The spec as spec.json and the record hold it: unset optional run fields left out."""
        data = dataclasses.asdict(self)
        for name in OPTIONAL_RUN_FIELDS:
            if data.get(name) is None:
                data.pop(name, None)
        return data

    @classmethod
    def from_dict(cls: type[_Spec], data: dict[str, Any]) -> _Spec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown spec settings: {', '.join(unknown)}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def load(cls: type[_Spec], path: str | Path) -> _Spec:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def replace(self: _Spec, **changes: Any) -> _Spec:
        """A copy with ``changes``, checked as a new spec is."""
        return dataclasses.replace(self, **changes)
