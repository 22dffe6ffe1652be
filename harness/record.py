"""The run record (``run.json``) as a typed model, for the host side.

The workload writes plain JSON (it has no pydantic); this model is the documented format that
the host validates against before it trusts a record. docs/run-record.md explains each field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.contract import LOSSES_FILE, RECORD_FILE, RECORD_FORMAT_VERSION


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class RunError(_Model):
    """Why a run failed; ``log_tail`` is filled by the host when the workload died silently."""

    type: str
    message: str
    traceback: str | None = None
    log_tail: str | None = None


class Digests(_Model):
    """sha256 hex digests; ``None`` where the run died before the thing existed."""

    trajectory: str | None = None
    init_weights: str | None = None
    final_weights: str | None = None
    epochs: list[str] = Field(default_factory=list)
    split: str | None = None


class EpochSummary(_Model):
    epoch: int
    steps: int
    first_step: int
    val_loss: float | None = None
    val_acc: float | None = None
    train_seconds: float | None = None
    val_seconds: float | None = None
    steps_per_second: float | None = None


class Timing(_Model):
    started_at: str | None = None
    finished_at: str | None = None
    wall_seconds: float | None = None
    setup_seconds: float | None = None


class Provenance(_Model):
    python: str | None = None
    torch: str | None = None
    torch_git: str | None = None
    cuda: str | None = None
    cudnn: int | str | None = None
    nccl: str | None = None
    lightning: str | None = None
    torchvision: str | None = None
    numpy: str | None = None
    gpus: list[dict[str, Any]] = Field(default_factory=list)
    gpu_driver: str | None = None
    cpu_model: str | None = None
    threads: int | None = None
    interop_threads: int | None = None
    hostname: str | None = None
    platform: str | None = None
    env: dict[str, str | None] = Field(default_factory=dict)
    image: str | None = None
    image_digest: str | None = None
    image_id: str | None = None
    workload_digest: str | None = None
    initial_seed: int | None = None
    world_size: int | None = None


class RunRecord(_Model):
    """One repeat's summary. ``losses.npy`` beside it holds the trajectory itself."""

    format_version: Literal[RECORD_FORMAT_VERSION]  # type: ignore[valid-type]
    status: Literal["ok", "failed"]
    error: RunError | None = None
    spec: dict[str, Any]
    steps: int = Field(ge=0)
    ranks: int = Field(ge=1)
    steps_per_epoch: list[int] = Field(default_factory=list)
    digests: Digests
    epochs: list[EpochSummary] = Field(default_factory=list)
    timing: Timing = Field(default_factory=Timing)
    nondeterministic_ops: list[str] = Field(default_factory=list)
    provenance: Provenance = Field(default_factory=Provenance)
    files: dict[str, str] = Field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class RecordError(ValueError):
    """A run record that is missing, truncated or not of the documented format."""


def load_record(run_dir: str | Path) -> RunRecord:
    """Read and validate ``run.json`` in ``run_dir``; a bad file is a RecordError, not a crash."""
    path = Path(run_dir) / RECORD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RecordError(f"{path}: no run record") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: not valid JSON ({exc}); the run will be repeated") from exc
    try:
        return RunRecord.model_validate(data)
    except ValidationError as exc:
        raise RecordError(
            f"{path}: not a run record of format {RECORD_FORMAT_VERSION}: {exc}"
        ) from exc


def losses_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / LOSSES_FILE


def record_json_schema() -> dict[str, Any]:
    return RunRecord.model_json_schema()
