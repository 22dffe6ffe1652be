"""The one file format between the host side and the workload side.

Both sides import this module, so it uses the standard library alone: the host never imports
torch, and the container image carries no pydantic. docs/run-record.md documents every field.

Words (used the same way everywhere):
  cell        one point of the matrix: a full set of settings
  repeat      one run of a cell (``repeat`` is its 0-based index)
  trajectory  the per-step training losses of one run, float32, shape [steps, ranks]
  run record  ``run.json`` + ``losses.npy`` + TensorBoard event files, written by one run
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPEC_FORMAT_VERSION = 1
RECORD_FORMAT_VERSION = 1

SPEC_FILE = "spec.json"
RECORD_FILE = "run.json"
LOSSES_FILE = "losses.npy"
TENSORBOARD_DIR = "tensorboard"
LOG_FILE = "run.log"

PLACEMENTS = ("none", "before_trainer", "before_model", "process_start")
DETERMINISTIC_ALGORITHMS = ("off", "on", "warn")
ACCELERATORS = ("cpu", "gpu")
STATUSES = ("ok", "failed")

#: The post's seed (``torch_seed(random_seed=201014)``).
DEFAULT_SEED = 201014

#: Environment variables that change numerics; recorded in every run record's provenance.
NUMERIC_ENV_VARS = (
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_LAUNCH_BLOCKING",
    "CUDA_VISIBLE_DEVICES",
    "CUDNN_LOGINFO_DBG",
    "NVIDIA_TF32_OVERRIDE",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
    "TORCH_CUDNN_V8_API_DISABLED",
    "NCCL_ALGO",
    "NCCL_PROTO",
    "NCCL_MIN_NCHANNELS",
    "NCCL_MAX_NCHANNELS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "PYTHONHASHSEED",
)

#: Deterministic cuBLAS needs this set before CUDA is initialised (torch docs, "Reproducibility").
CUBLAS_WORKSPACE_DETERMINISTIC = ":4096:8"


class SpecError(ValueError):
    """A spec that cannot be run: names the setting and what it accepts."""


@dataclass(frozen=True)
class RunSpec:
    """Everything one repeat of one cell needs; written by the host as ``spec.json``.

    The first block is the cell's settings (the matrix's axis names); the rest says which run
    this is and where things are. ``image``/``image_digest``/``image_id`` are filled by the
    host's executor and only copied into the provenance.
    """

    placement: str = "before_model"
    seed: int = DEFAULT_SEED
    epochs: int = 1
    max_steps_per_epoch: int | None = None
    threads: int = 1
    accelerator: str = "cpu"
    devices: int = 1
    cudnn_deterministic: bool = True
    cudnn_benchmark: bool = False
    deterministic_algorithms: str = "off"
    allow_tf32: bool = False
    pythonhashseed: int = 0
    batch_size: int = 32
    learning_rate: float = 1e-4
    hidden_size: int = 64
    data_dir: str | None = None
    repeat: int = 0
    cell_id: str = ""
    cell_name: str = ""
    image: str = "local"
    image_digest: str | None = None
    image_id: str | None = None
    format_version: int = SPEC_FORMAT_VERSION
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choice("placement", self.placement, PLACEMENTS)
        _check_choice(
            "deterministic_algorithms", self.deterministic_algorithms, DETERMINISTIC_ALGORITHMS
        )
        _check_choice("accelerator", self.accelerator, ACCELERATORS)
        for name in ("epochs", "threads", "devices", "batch_size", "hidden_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name} must be a positive integer, got {value!r}")
        if self.max_steps_per_epoch is not None and (
            isinstance(self.max_steps_per_epoch, bool)
            or not isinstance(self.max_steps_per_epoch, int)
            or self.max_steps_per_epoch < 1
        ):
            raise SpecError(
                f"max_steps_per_epoch must be a positive integer or null (the whole epoch), "
                f"got {self.max_steps_per_epoch!r}"
            )
        if self.format_version != SPEC_FORMAT_VERSION:
            raise SpecError(
                f"spec format_version {self.format_version} is not {SPEC_FORMAT_VERSION}; "
                "rebuild the workload image or update harness"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown spec settings: {', '.join(unknown)}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> RunSpec:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunSpec:
        return dataclasses.replace(self, **changes)


#: The settings that make a cell (the matrix's axes), with their defaults.
CELL_SETTINGS: tuple[str, ...] = (
    "image",
    "placement",
    "seed",
    "epochs",
    "max_steps_per_epoch",
    "threads",
    "accelerator",
    "devices",
    "cudnn_deterministic",
    "cudnn_benchmark",
    "deterministic_algorithms",
    "allow_tf32",
    "pythonhashseed",
    "batch_size",
    "learning_rate",
    "hidden_size",
)


def run_environment(spec: RunSpec) -> dict[str, str]:
    """The variables a run starts with, whoever starts it (local process, container, re-exec).

    Thread counts pinned to the spec, its hash seed, deterministic cuBLAS when deterministic
    algorithms are asked for (it must be set before CUDA starts), then the spec's extra_env,
    which wins.
    """
    threads = str(spec.threads)
    env = {
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "PYTHONHASHSEED": str(spec.pythonhashseed),
    }
    if spec.deterministic_algorithms != "off":
        env["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE_DETERMINISTIC
    env.update(spec.extra_env)
    return env


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SpecError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file so that a reader sees the old one or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        # A full disk or a signal must not leave half a file behind, even a hidden one.
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON (sorted keys, indented) through write_bytes_atomic."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
