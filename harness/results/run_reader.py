"""Reading run records on the host: ``run.json`` validated against the contract's dataclasses.

The format is defined once, in harness/contract/record.py (standard library, so the workload
can write it without pydantic); pydantic validates a file against those same dataclasses here
before the host trusts it.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from harness.contract.files import (
    LOSSES_FILE,
    RECORD_FILE,
    WEIGHTS_FILE,
    UnsafeFile,
    open_regular,
    read_regular,
)
from harness.contract.record import RECORD_FORMAT_VERSION, RunRecord


class RecordError(ValueError):
    """A run record that is missing, truncated or not of the documented format."""


@lru_cache(maxsize=1)
def _adapter() -> TypeAdapter[RunRecord]:
    return TypeAdapter(RunRecord)


def validate_record(data: Any) -> RunRecord:
    """A RunRecord from parsed JSON; pydantic's ValidationError when it is not one."""
    return _adapter().validate_python(data)


def load_record(run_dir: str | Path) -> RunRecord:
    """Read and validate ``run.json`` in ``run_dir``; a bad file is a RecordError, not a crash.

    Only a regular file is read: a symbolic link (to a file of the host's, say) or a FIFO left
    in the run folder is a RecordError saying so, never followed, never waited on."""
    path = Path(run_dir) / RECORD_FILE
    try:
        data = json.loads(read_regular(path).decode("utf-8"))
    except FileNotFoundError as exc:
        raise RecordError(f"{path}: no run record") from exc
    except UnsafeFile as exc:
        raise RecordError(f"{path}: {exc.strerror}; the run will be repeated") from exc
    except OSError as exc:
        raise RecordError(f"{path}: unreadable ({exc.strerror or exc})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: not valid JSON ({exc}); the run will be repeated") from exc
    try:
        return validate_record(data)
    except ValidationError as exc:
        raise RecordError(
            f"{path}: not a run record of format {RECORD_FORMAT_VERSION}: {exc}"
        ) from exc


class CorruptRun(RecordError):
    """A run whose record says ok but whose files do not bear it out: ``losses.npy`` is missing,
    unreadable, of another shape than recorded, or does not hash to ``digests.trajectory``."""


def trajectory_sha256(losses: np.ndarray) -> str:
    """sha256 of the float32 little-endian bytes of a [steps, ranks] loss array (as the
    workload computes ``digests.trajectory``)."""
    return hashlib.sha256(np.ascontiguousarray(losses, dtype="<f4").tobytes()).hexdigest()


def _read_array(path: Path, error: type[RecordError], missing: str) -> np.ndarray:
    """A run folder's ``.npy`` file, only if it is a regular file and holds no pickle; any
    problem is ``error`` naming the file (``missing`` says what its absence means)."""
    try:
        with open_regular(path) as handle:
            return np.load(handle, allow_pickle=False)
    except FileNotFoundError as exc:
        raise error(f"{path}: {missing}") from exc
    except UnsafeFile as exc:
        raise error(f"{path}: {exc.strerror}") from exc
    except (OSError, ValueError, EOFError) as exc:
        raise error(f"{path}: unreadable ({exc})") from exc


def load_losses(run_dir: str | Path) -> np.ndarray:
    """``losses.npy`` as float32 [steps, ranks]; CorruptRun when it cannot be read as one."""
    path = Path(run_dir) / LOSSES_FILE
    losses = _read_array(path, CorruptRun, "missing")
    if losses.ndim != 2 or losses.dtype != np.dtype("<f4"):
        raise CorruptRun(f"{path}: not float32 [steps, ranks] (got {losses.dtype} {losses.shape})")
    return np.ascontiguousarray(losses)


def verified_losses(run_dir: str | Path, record: RunRecord) -> np.ndarray:
    """The losses of an ok run, checked against its record before they are trusted: the shape
    it recorded and the digest it recorded. CorruptRun names what does not match."""
    losses = load_losses(run_dir)
    path = Path(run_dir) / LOSSES_FILE
    if losses.shape != (record.steps, record.ranks):
        raise CorruptRun(
            f"{path}: shape {losses.shape}, but run.json records "
            f"{record.steps} steps x {record.ranks} ranks"
        )
    expected = record.digests.trajectory
    if record.steps and trajectory_sha256(losses) != expected:
        raise CorruptRun(f"{path}: does not hash to digests.trajectory ({expected})")
    return losses


def first_nonfinite_step(losses: np.ndarray) -> int | None:
    """The first step (row) at which any rank's loss is NaN or infinite, or None."""
    bad = ~np.isfinite(losses).all(axis=1)
    return int(np.argmax(bad)) if bad.any() else None


def load_weight_hashes(run_dir: str | Path, record: RunRecord) -> np.ndarray | None:
    """``weights.npy`` as uint64 [steps, n_params], checked against the record (one row per
    recorded step, one column per recorded parameter); None when the record has none (written
    before it existed, or by a run that could not write one). A file that is missing, not a
    regular file, unreadable or of another dtype or shape is a RecordError that says so."""
    if record.weights is None:
        return None
    return read_weight_hashes(run_dir, record.steps, record.weights.parameters)


def read_weight_hashes(run_dir: str | Path, steps: int, parameters: list[str]) -> np.ndarray:
    """``weights.npy`` of ``run_dir``, held to ``steps`` rows and one column per name in
    ``parameters`` (``load_weight_hashes``, for a caller that has the record's numbers only)."""
    path = Path(run_dir) / WEIGHTS_FILE
    hashes = _read_array(path, RecordError, "missing, though run.json records weights")
    expected = (steps, len(parameters))
    if hashes.dtype != np.dtype("<u8") or hashes.shape != expected:
        raise RecordError(
            f"{path}: not uint64 {list(expected)} (steps x parameters, as run.json records), "
            f"got {hashes.dtype} {list(hashes.shape)}"
        )
    return np.ascontiguousarray(hashes)
