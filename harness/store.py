"""The results folder as ``harness run`` writes it: lock, manifest identity, resume decisions and
host-written failure records. Its names and the manifest format are harness/layout.py's.

``run.json`` is the commit marker of a run: written last, atomically.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from harness import __version__, layout
from harness.contract import (
    LOG_FILE,
    LOSSES_FILE,
    RECORD_FILE,
    SPEC_FILE,
    RunSpec,
    write_json_atomic,
)
from harness.contract.record import ErrorType, RunError, failed_record, write_record
from harness.errors import StoreError
from harness.layout import Manifest, ManifestCell, default_out
from harness.matrix import Cell, LoadedMatrix
from harness.record import RecordError, RunRecord, load_record

__all__ = ["ResultsDir", "default_out", "log_tail", "record_failure"]

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
LOG_TAIL_CHARS = 4000


class ResultsDir:
    """One results folder; ``lock`` it before writing to it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock_handle: Any = None

    def run_dir(self, cell: Cell | str, repeat: int) -> Path:
        """A run's folder; ``cell`` is a Cell or its folder name."""
        dirname = layout.cell_dirname(cell.name, cell.id) if isinstance(cell, Cell) else cell
        return layout.run_dir(self.root, dirname, repeat)

    def lock(self) -> None:
        """Non-blocking exclusive lock; a second harness on the same folder is told who holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / layout.LOCK_FILE, "a+")  # held until unlock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StoreError(
                f"{self.root} is in use by harness pid {holder}",
                "wait for that run to finish, or choose another --out",
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handle = handle

    def unlock(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def read_manifest(self) -> Manifest | None:
        """The folder's manifest (None for a new folder); another format is a StoreError."""
        return layout.read_manifest(self.root)

    def write_manifest(
        self,
        matrix: LoadedMatrix,
        cells: list[Cell] | None = None,
        shard: dict[str, int] | None = None,
    ) -> None:
        """Write the manifest; refuse a folder that was made from a different matrix or shard,
        or by a harness of another results format.

        ``cells`` (default: all) are the cells this folder holds; ``shard`` is
        ``{"index": i, "total": n}`` for ``harness run --shard i/n``, else None.
        """
        old = self.read_manifest()
        if old is not None and old.matrix_digest != matrix.digest:
            raise StoreError(
                f"{self.root} holds results of another matrix ({old.name!r}, made from "
                f"{old.matrix_path}), not of {matrix.path}",
                "choose another --out, or run the matrix that made this folder",
            )
        if old is not None and old.shard != shard:
            raise StoreError(
                f"{self.root} holds shard {_shard_text(old.shard)} of this matrix, "
                f"not shard {_shard_text(shard)}",
                "give each shard its own --out; `harness merge` joins them",
            )
        manifest = Manifest(
            name=matrix.model.name,
            matrix_path=str(matrix.path),
            matrix_text=matrix.text,
            matrix_sha256=matrix.text_sha256,
            matrix_digest=matrix.digest,
            repeats=matrix.model.run.repeats,
            harness_version=__version__,
            created_at=(old.created_at if old else None) or _now(),
            shard=shard,
            cells=[ManifestCell.of(c) for c in (matrix.cells if cells is None else cells)],
        )
        layout.write_manifest(self.root, manifest)
        layout.write_matrix_text(self.root, matrix.text)

    # ------------------------------------------------------------ resume

    def finished(self, run_dir: Path, spec: RunSpec, image_id: str | None = None) -> bool:
        """True when the run is done and still valid: an ok record of the same spec, made from
        the same workload image (``image_id``, when the run uses one).

        Anything else is cleared so the run starts clean; the reason goes to the log.
        """
        if not run_dir.exists():
            return False
        try:
            record = load_record(run_dir)
        except RecordError as exc:
            if (run_dir / RECORD_FILE).exists():
                log.warning("rerunning: %s", exc)
            return False
        if not record.ok:
            log.info("rerunning %s: its last attempt failed", run_dir)
            return False
        if record.spec != spec.to_dict():
            log.info("rerunning %s: its spec changed", run_dir)
            return False
        if image_id is not None and record.provenance.image_id != image_id:
            log.warning(
                "rerunning %s: it ran in workload image %s, not %s",
                run_dir,
                record.provenance.image_id,
                image_id,
            )
            return False
        if not (run_dir / LOSSES_FILE).exists():
            log.warning("rerunning %s: %s is missing", run_dir, LOSSES_FILE)
            return False
        return True

    def prepare_run(self, run_dir: Path, spec: RunSpec) -> None:
        """Start from an empty folder holding only the spec."""
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        write_json_atomic(run_dir / SPEC_FILE, spec.to_dict())


def _shard_text(shard: dict[str, int] | None) -> str:
    return "(all cells)" if not shard else f"{shard.get('index')}/{shard.get('total')}"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def log_tail(run_dir: Path) -> str:
    path = run_dir / LOG_FILE
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = text.splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(lines)[-LOG_TAIL_CHARS:]


def record_failure(
    run_dir: Path,
    spec: RunSpec,
    error_type: ErrorType | str,
    message: str,
    seconds: float | None = None,
) -> None:
    """Make sure a run that did not succeed has a failed run record with its log's tail.

    A failed record written by the workload is kept and given the tail; an ok record from a run
    the host saw fail (killed after writing) is turned into a failed one.
    """
    tail = log_tail(run_dir)
    kind = ErrorType(error_type).value if isinstance(error_type, ErrorType) else error_type
    try:
        record: RunRecord | None = load_record(run_dir)
    except RecordError:
        record = None
    if record is not None and not record.ok:
        error = record.error or RunError(type=kind, message=message)
        record = dataclasses.replace(record, error=dataclasses.replace(error, log_tail=tail))
    elif record is not None:
        error = RunError(type=kind, message=f"{message} (after writing its record)", log_tail=tail)
        record = dataclasses.replace(record, status="failed", error=error, written_by="host")
    else:
        error = RunError(type=kind, message=message, log_tail=tail)
        record = failed_record(spec.to_dict(), error, ranks=spec.devices, wall_seconds=seconds)
    write_record(run_dir, record)
