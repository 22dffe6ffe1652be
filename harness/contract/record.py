"""``run.json``: the run record, defined and written here and nowhere else.

The workload, the host's failure records and the test executor all build a ``RunRecord`` and
call ``write_record``; the host validates what it reads against these same dataclasses (through
pydantic, in harness/results/run_reader.py), so the format has one definition. docs/run-record.md
explains
each field. The progress line the host reads from ``run.log`` is defined here too, beside the
function that prints it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.contract.files import RECORD_FILE, write_json_atomic
from harness.contract.machine import Machine
from harness.contract.run_errors import (
    RANK_ERROR_FILE,
    RANK_ERROR_MAX_BYTES,
    RANK_MESSAGE_MAX_CHARS,
    STOPPED_BY_SIGNAL,
    USER_WORKLOAD_ERRORS,
    ErrorType,
    RankError,
    RankFailure,
    RunError,
    read_rank_errors,
    with_rank_errors,
    write_rank_error,
)
from harness.contract.run_errors import STRICT_FIELDS as _STRICT

#: The errors' names, defined in harness/contract/run_errors.py, are imported from here too.
__all__ = [
    "EPOCH_LINE",
    "RANK_ERROR_FILE",
    "RANK_ERROR_MAX_BYTES",
    "RANK_MESSAGE_MAX_CHARS",
    "RECORD_FORMAT_VERSION",
    "STOPPED_BY_SIGNAL",
    "USER_WORKLOAD_ERRORS",
    "Determinism",
    "Digests",
    "EpochSummary",
    "ErrorType",
    "HostSyncs",
    "Libraries",
    "Provenance",
    "RankError",
    "RankFailure",
    "RunError",
    "RunRecord",
    "Timing",
    "WeightDigests",
    "epoch_line",
    "failed_record",
    "read_rank_errors",
    "with_rank_errors",
    "write_rank_error",
    "write_record",
]

RECORD_FORMAT_VERSION = 2


@dataclass
class Digests:
    """sha256 hex digests; ``None`` where the run died before the thing existed."""

    __pydantic_config__ = _STRICT

    trajectory: str | None = None
    init_weights: str | None = None
    final_weights: str | None = None
    epochs: list[str] = field(default_factory=list)
    split: str | None = None


@dataclass
class EpochSummary:
    """One epoch's row in ``epochs``."""

    __pydantic_config__ = _STRICT

    epoch: int
    steps: int
    first_step: int
    val_loss: float | None = None
    val_acc: float | None = None
    train_seconds: float | None = None
    val_seconds: float | None = None
    steps_per_second: float | None = None


@dataclass
class Timing:
    __pydantic_config__ = _STRICT

    started_at: str | None = None
    finished_at: str | None = None
    wall_seconds: float | None = None
    setup_seconds: float | None = None


@dataclass
class Determinism:
    """The determinism flags torch had in force when ``fit`` returned, read from torch itself
    (not copied from the spec), so a flag the workload failed to apply shows up here."""

    __pydantic_config__ = _STRICT

    cudnn_deterministic: bool
    cudnn_benchmark: bool
    #: ``torch.are_deterministic_algorithms_enabled()``
    deterministic_algorithms: bool
    #: ``torch.is_deterministic_algorithms_warn_only_enabled()``
    deterministic_algorithms_warn_only: bool
    #: ``torch.backends.cuda.matmul.allow_tf32``
    matmul_allow_tf32: bool
    #: ``torch.backends.cudnn.allow_tf32``
    cudnn_allow_tf32: bool
    #: the ``CUBLAS_WORKSPACE_CONFIG`` environment variable (None when unset)
    cublas_workspace_config: str | None = None


@dataclass
class HostSyncs:
    """How often the training steps made the host wait for the GPU (``run.count_host_syncs``):
    torch's sync-debug warnings counted over ``scope`` (docs/workload.md, "Host syncs per
    step"). ``count`` is None, with ``reason``, where nothing could be counted (a CPU run)."""

    __pydantic_config__ = _STRICT

    count: int | None
    #: optimizer steps (per rank) inside the scope
    steps: int
    #: what was counted, from where to where
    scope: str
    #: why ``count`` is None; None when it was counted
    reason: str | None = None


@dataclass
class Libraries:
    """The CUDA math libraries mapped in the workload's process when its record was built (after
    ``fit``: cuBLAS loads lazily at the first GPU matmul), each a version string and the file it
    was mapped from; ``None`` where not loaded or not known, with the reason in
    ``Provenance.unavailable`` (key ``libraries.<field>``)."""

    __pydantic_config__ = _STRICT

    #: ``cublasGetProperty`` MAJOR.MINOR.PATCH of the loaded libcublas
    cublas: str | None = None
    cublas_path: str | None = None
    #: ``cublasLtGetProperty`` MAJOR.MINOR.PATCH of the loaded libcublasLt
    cublaslt: str | None = None
    cublaslt_path: str | None = None
    #: ``torch.backends.cudnn.version()``
    cudnn: str | None = None
    cudnn_path: str | None = None
    #: ``torch.cuda.nccl.version()``
    nccl: str | None = None
    nccl_path: str | None = None


@dataclass
class Provenance:
    """What the run ran on; ``None`` where it was not known (a run that died early).

    The fields added with GPU provenance (``libraries``, ``determinism_ranks``, each GPU's
    ``sm_count`` and ``pci_bus_id``) are null only with a reason in ``unavailable`` (the
    field's dotted path -> why), in the workload's records; older records load without them."""

    __pydantic_config__ = _STRICT

    python: str | None = None
    torch: str | None = None
    torch_git: str | None = None
    cuda: str | None = None
    cudnn: int | str | None = None
    nccl: str | None = None
    lightning: str | None = None
    torchvision: str | None = None
    numpy: str | None = None
    gpus: list[dict[str, Any]] = field(default_factory=list)
    gpu_driver: str | None = None
    cpu_model: str | None = None
    threads: int | None = None
    interop_threads: int | None = None
    hostname: str | None = None
    platform: str | None = None
    env: dict[str, str | None] = field(default_factory=dict)
    image: str | None = None
    image_digest: str | None = None
    image_id: str | None = None
    workload_digest: str | None = None
    #: sha256 of the user's code folder (``workload.path``) as the host found it when the
    #: matrix started (``HARNESS_USER_CODE_DIGEST``); None for the built-in MNIST experiment
    user_code_digest: str | None = None
    initial_seed: int | None = None
    #: the seed the user's build function set torch's default generator to (``manual_seed``,
    #: ``seed_everything``: ``torch.initial_seed()`` changed across the call); None when it did
    #: not, for the built-in, and in records written before it existed. Placement has no
    #: effect on such a run's randomness after build.
    user_seed: int | None = None
    world_size: int | None = None
    #: None in records written before it existed, and for a run that failed before fit returned
    determinism: Determinism | None = None
    #: every rank's flags, read when training ended (``on_train_end``), in rank order
    determinism_ranks: list[Determinism] | None = None
    libraries: Libraries | None = None
    #: the CPU, its code path and the machine's fingerprint (harness/contract/machine.py);
    #: None in records written before it existed
    machine: Machine | None = None
    #: why a field above is null or empty: its dotted path (``gpus``, ``libraries.cublas``,
    #: ``gpus[0].pci_bus_id``, ``determinism_ranks``, ``machine.onednn``) -> the reason
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass
class WeightDigests:
    """What ``weights.npy`` holds: one column per parameter, named as ``named_parameters()``
    names it (``model.1.weight``), and which bitwise hash filled it: ``mix64_sum``
    (harness/workload/weights.py), or ``hash_tensor`` / ``weighted_sum`` in records of older
    harnesses; hashes of different kinds are never compared with each other."""

    __pydantic_config__ = _STRICT

    parameters: list[str]
    hash: str


@dataclass
class RunRecord:
    """One repeat's summary. ``losses.npy`` beside it holds the trajectory itself.

    ``written_by`` says who wrote it: the workload, or the host for a run that died before it
    could (or that the host saw fail after it wrote an ok record).
    """

    __pydantic_config__ = _STRICT

    status: Literal["ok", "failed"]
    spec: dict[str, Any]
    format_version: int = RECORD_FORMAT_VERSION
    error: RunError | None = None
    steps: int = 0
    ranks: int = 1
    steps_per_epoch: list[int] = field(default_factory=list)
    digests: Digests = field(default_factory=Digests)
    epochs: list[EpochSummary] = field(default_factory=list)
    timing: Timing = field(default_factory=Timing)
    nondeterministic_ops: list[str] = field(default_factory=list)
    #: only with ``run.count_host_syncs``; None otherwise
    host_syncs: HostSyncs | None = None
    #: the columns of ``weights.npy`` (None: not recorded, as in records written before it)
    weights: WeightDigests | None = None
    #: global indexes (0-based, over epochs) of the batches whose training step gave no loss:
    #: they have no row in losses.npy (absent from run.json when empty, as in older records)
    skipped: list[int] = field(default_factory=list)
    provenance: Provenance = field(default_factory=Provenance)
    files: dict[str, str] = field(default_factory=dict)
    written_by: Literal["workload", "host", "test"] = "workload"

    def __post_init__(self) -> None:
        if self.format_version != RECORD_FORMAT_VERSION:
            raise ValueError(f"format_version {self.format_version} is not {RECORD_FORMAT_VERSION}")
        if self.status not in ("ok", "failed"):
            raise ValueError(f"status must be ok or failed, got {self.status!r}")
        if self.steps < 0 or self.ranks < 1:
            raise ValueError(f"steps must be >= 0 and ranks >= 1, got {self.steps}, {self.ranks}")
        if any(i < 0 for i in self.skipped) or self.skipped != sorted(set(self.skipped)):
            raise ValueError(f"skipped must be increasing batch indexes >= 0, got {self.skipped}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["error"] is not None and data["error"]["ranks"] is None:
            del data["error"]["ranks"]  # only DDP runs whose ranks wrote errors have it
        if not data["skipped"]:
            del data["skipped"]  # only runs that skipped a batch have it: format 2 as before
        return data


def failed_record(
    spec: dict[str, Any],
    error: RunError,
    *,
    ranks: int = 1,
    wall_seconds: float | None = None,
    written_by: Literal["workload", "host", "test"] = "host",
) -> RunRecord:
    """The record of a run that died before it could write its own."""
    return RunRecord(
        status="failed",
        spec=spec,
        error=error,
        ranks=ranks,
        timing=Timing(wall_seconds=wall_seconds),
        written_by=written_by,
    )


def write_record(run_dir: Path, record: RunRecord) -> None:
    """Write ``run.json`` atomically: it is the run's commit marker, written last."""
    write_json_atomic(Path(run_dir) / RECORD_FILE, record.to_dict())


# ---------------------------------------------------------------- the progress line

#: The host's progress display matches this in ``run.log`` (bytes, as the log streams).
EPOCH_LINE = re.compile(rb"epoch (\d+)/(\d+) done")


def epoch_line(summary: EpochSummary, epochs: int) -> str:
    """What the workload prints when an epoch ends; EPOCH_LINE must match it."""
    if summary.val_loss is not None and summary.val_acc is not None:
        val = f"val_loss {summary.val_loss:.6f}, val_acc {summary.val_acc:.4f}"
    else:
        val = "no validation"
    return (
        f"epoch {summary.epoch + 1}/{epochs} done: {summary.steps} steps, {val}, "
        f"train {summary.train_seconds or 0.0:.3f} s ({summary.steps_per_second or 0.0:.0f} "
        "steps/s)"
    )
