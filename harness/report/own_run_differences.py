"""What the runs of one group of own runs differ in (harness/report/own_runs.py): the flags,
threads, software and hardware their records hold, since that is usually why they diverge.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from harness.contract.machine import limits_text
from harness.contract.record import RunRecord
from harness.report.folder_runs import gpu_kinds
from harness.report.report_data import RunDifference, RunResult


def value_text(value: Any) -> str:
    """A value as compared and shown: a string as it is, anything else as sorted JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


#: What a reader returns where the record does not say (no evidence either way).
NOT_SAID: Any = object()


def _spec(key: str) -> Callable[[RunRecord], Any]:
    """A key of the spec; null is a value there (``seed: null``: no seed was given)."""
    return lambda r: r.spec.get(key, NOT_SAID)


def _provenance(key: str) -> Callable[[RunRecord], Any]:
    """A field of the provenance; null there is unknown (a run that failed early)."""

    def read(record: RunRecord) -> Any:
        value = getattr(record.provenance, key)
        return NOT_SAID if value is None else value

    return read


def _threads(record: RunRecord) -> Any:
    """The torch thread count: the spec's (read from torch at fit start), else provenance's."""
    value = record.spec.get("threads")
    return _provenance("threads")(record) if value is None else value


def _gpus(record: RunRecord) -> Any:
    """The GPUs a run saw, each as model and SM count; ``none`` for a run that recorded its
    provenance and saw none (a record without provenance, torch unknown, says nothing)."""
    if not record.provenance.gpus:
        return "none" if record.provenance.torch is not None else NOT_SAID
    return ", ".join(
        f"{name or 'unnamed GPU'}" + (f" ({sms} SMs)" if sms is not None else "")
        for name, sms in gpu_kinds(record.provenance.gpus)
    )


def _machine(key: str) -> Callable[[RunRecord], Any]:
    """A field of ``provenance.machine``; a record without one says nothing. The ISA limits
    are those set (``none`` where none is)."""

    def read(record: RunRecord) -> Any:
        machine = record.provenance.machine
        if machine is None:
            return NOT_SAID
        if key == "isa_limits":
            return limits_text(machine.isa_limits)
        value = getattr(machine, key)
        return NOT_SAID if value is None else value

    return read


def _in_force(key: str) -> Callable[[RunRecord], Any]:
    """A flag of ``provenance.determinism`` (read back from torch when fit returned); the cuBLAS
    workspace ``unset`` where the record has the flags but no variable."""

    def read(record: RunRecord) -> Any:
        flags = record.provenance.determinism
        if flags is None:
            return NOT_SAID
        value = getattr(flags, key)
        return "unset" if value is None and key == "cublas_workspace_config" else value

    return read


#: What the runs of a group are compared in, in the order a reader checks them: the flags and
#: threads first (the usual cause), then the software, then the hardware. A value a record does
#: not hold (a key its spec lacks, a provenance field left null) is no evidence either way, and
#: is left out; a null in the spec is a value (``seed: null``: no seed).
DIFFERENCE_FIELDS: tuple[tuple[str, Callable[[RunRecord], Any]], ...] = (
    ("cudnn_deterministic", _spec("cudnn_deterministic")),
    ("cudnn_benchmark", _spec("cudnn_benchmark")),
    ("deterministic_algorithms", _spec("deterministic_algorithms")),
    ("matmul_allow_tf32", _in_force("matmul_allow_tf32")),
    ("cudnn_allow_tf32", _in_force("cudnn_allow_tf32")),
    ("cublas_workspace_config", _in_force("cublas_workspace_config")),
    ("threads", _threads),
    ("seed", _spec("seed")),
    ("entry", _spec("entry")),
    ("params", _spec("params")),
    ("ranks", lambda r: r.ranks),
    ("torch", _provenance("torch")),
    ("cuda", _provenance("cuda")),
    ("cudnn", _provenance("cudnn")),
    ("nccl", _provenance("nccl")),
    ("lightning", _provenance("lightning")),
    ("python", _provenance("python")),
    ("numpy", _provenance("numpy")),
    ("gpus", _gpus),
    ("gpu_driver", _provenance("gpu_driver")),
    ("cpu_model", _provenance("cpu_model")),
    ("cpu_capability", _machine("cpu_capability")),
    ("isa_limits", _machine("isa_limits")),
    ("machine", _machine("fingerprint")),
)


def differences(records: list[RunRecord], results: list[RunResult]) -> list[RunDifference]:
    """What the runs of one group differ in (their records, and the report's view of each),
    each run named by its folder."""
    out = []
    for what, read in DIFFERENCE_FIELDS:
        values = {
            res.path: value
            for record, res in zip(records, results, strict=True)
            if (value := read(record)) is not NOT_SAID
        }
        if len({value_text(v) for v in values.values()}) > 1:
            out.append(RunDifference(what=what, values=values))
    return out


def values_text(values: dict[str, Any]) -> str:
    """``1 (a, c), 2 (b)``: each value once, with the run folders that had it."""
    by_value: dict[str, list[str]] = {}
    for path, value in values.items():
        by_value.setdefault(value_text(value), []).append(path)
    return ", ".join(f"{v} ({', '.join(paths)})" for v, paths in by_value.items())


def describe_difference(diff: RunDifference) -> str:
    """``threads: 1 (a, c), 2 (b)``."""
    return f"{diff.what}: {values_text(diff.values)}"
