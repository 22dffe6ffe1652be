"""The run-folder reader: every file of a run folder the host reads, read here, none through a
link (``open_regular``: a symbolic link, FIFO or device is refused at once, never followed or
waited on).

- ``run.json`` strictly (``load_record``: validated against the contract's dataclasses; one
  ladder of what can be wrong, ``RecordError.why``), or leniently (``lenient_record``,
  ``lenient_spec``: nothing raised); with ``root`` (the results folder), never through a link
  at the run folder or above it;
- ``losses.npy`` checked against its record (``verified_losses``, with the trajectory digest of
  harness/contract/trajectory_hash.py) and ``weights.npy`` (``load_weight_hashes``);
- the tail of a log (``log_tail``, ``tail_bytes``), and a JSON file up to a size
  (``read_json_limited``).

The format is defined once, in harness/contract/record.py (standard library, so the workload
can write it without pydantic); pydantic validates a file against those same dataclasses here
before the host trusts it.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from harness.contract.files import (
    LOG_FILE,
    LOSSES_FILE,
    RECORD_FILE,
    WEIGHTS_FILE,
    UnsafeFile,
    open_regular,
    read_regular,
)
from harness.contract.record import RECORD_FORMAT_VERSION, RunRecord
from harness.contract.trajectory_hash import trajectory_sha256
from harness.results.safe_paths import first_link

#: ``log_tail``: at most this many of the log's last lines, and this many characters.
LOG_TAIL_LINES = 40
LOG_TAIL_CHARS = 4000


class RecordError(ValueError):
    """A run record that is missing, truncated or not of the documented format; ``why`` says
    what is wrong in a few words, without the path (the message has the path)."""

    def __init__(self, message: str, why: str | None = None) -> None:
        super().__init__(message)
        self.why = message if why is None else why


@lru_cache(maxsize=1)
def _adapter() -> TypeAdapter[RunRecord]:
    return TypeAdapter(RunRecord)


def validate_record(data: Any) -> RunRecord:
    """A RunRecord from parsed JSON; pydantic's ValidationError when it is not one."""
    return _adapter().validate_python(data)


def load_record(run_dir: str | Path, *, root: Path | None = None) -> RunRecord:
    """Read and validate ``run.json`` in ``run_dir``; a bad file is a RecordError, not a crash.

    Only a regular file is read: a symbolic link (to a file of the host's, say) or a FIFO left
    in the run folder is a RecordError saying so, never followed, never waited on; so is a link
    at the run folder or a folder above it, up to ``root`` (the results folder), where given."""
    path = Path(run_dir) / RECORD_FILE
    _refuse_links(root, Path(run_dir), path)
    repeated = "; the run will be repeated"
    try:
        data = json.loads(read_regular(path).decode("utf-8"))
    except FileNotFoundError as exc:
        raise RecordError(f"{path}: no run record", _unreadable(exc)) from exc
    except UnsafeFile as exc:
        raise RecordError(f"{path}: {exc.strerror}{repeated}", str(exc.strerror)) from exc
    except OSError as exc:
        raise RecordError(f"{path}: {_unreadable(exc)}", _unreadable(exc)) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        why = f"not valid JSON ({exc})"
        raise RecordError(f"{path}: {why}{repeated}", why) from exc
    try:
        return validate_record(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "record"
        raise RecordError(
            f"{path}: not a run record of format {RECORD_FORMAT_VERSION}: {exc}",
            f"not a run record of format {RECORD_FORMAT_VERSION} ({where}: {first['msg']})",
        ) from exc


def _refuse_links(root: Path | None, run_dir: Path, path: Path) -> None:
    """A RecordError when a folder from ``root`` down to ``run_dir`` is a symbolic link (no
    ``root``, or ``run_dir`` not below it: nothing to check)."""
    if root is None or not run_dir.is_relative_to(root):
        return
    link = first_link(root, run_dir)
    if link is not None:
        why = f"{link.relative_to(root).as_posix()} is a symbolic link (not followed)"
        raise RecordError(f"{path}: {why}", why)


def _unreadable(exc: OSError) -> str:
    return f"unreadable ({exc.strerror or exc})"


def record_or_none(run_dir: Path) -> RunRecord | None:
    """``load_record``, or None where there is no readable record (no evidence either way)."""
    try:
        return load_record(run_dir)
    except RecordError:
        return None


def lenient_record(run_dir: Path, *, root: Path | None = None) -> dict[str, Any] | None:
    """``run_dir``'s run.json as a JSON object, read leniently, unchecked: None where the file
    cannot be read (a link or FIFO neither followed nor waited on, nor a link up to ``root``)
    or is not a JSON object."""
    try:
        _refuse_links(root, Path(run_dir), Path(run_dir) / RECORD_FILE)
        data = json.loads(read_regular(Path(run_dir) / RECORD_FILE).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecordError):
        return None
    return data if isinstance(data, dict) else None


def lenient_spec(run_dir: Path, *, root: Path | None = None) -> dict[str, Any]:
    """The spec in ``run_dir``'s run.json, read leniently (``lenient_record``): {} where there
    is none."""
    spec = (lenient_record(run_dir, root=root) or {}).get("spec")
    return spec if isinstance(spec, dict) else {}


def read_json_limited(path: Path, limit: int) -> Any:
    """A regular file's JSON, of its first ``limit`` bytes at most (a longer file is cut there,
    so not JSON: a ValueError); never through a link, never waiting on a FIFO (UnsafeFile)."""
    with open_regular(path) as handle:
        return json.loads(handle.read(limit))


def log_tail(run_dir: Path) -> str:
    """The last lines of the run's ``run.log``; "" when there is none, or when what lies there
    is a symbolic link, FIFO or device (``open_regular``: never followed, never waited on)."""
    try:
        text = tail_bytes(Path(run_dir) / LOG_FILE, 64 * 1024).decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = text.splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(lines)[-LOG_TAIL_CHARS:]


def tail_bytes(path: Path, size: int) -> bytes:
    """The last ``size`` bytes of a log (a regular file only: a link or FIFO planted there is
    an UnsafeFile, never followed nor waited on; a missing one FileNotFoundError)."""
    with open_regular(path) as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - size))
        return handle.read()


class CorruptRun(RecordError):
    """A run whose record says ok but whose files do not bear it out: ``losses.npy`` is missing,
    unreadable, of another shape than recorded, or does not hash to ``digests.trajectory``."""


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
