"""The results folder: layout, manifest, lock, resume decisions and host-written failure records.

Layout (docs/results.md)::

    <out>/manifest.json  matrix.yaml  .lock
    <out>/cells/<cell name>--<cell id>/repeat-<k>/{spec.json, run.json, losses.npy,
                                                   tensorboard/, run.log}
    <out>/report.md  report.json  report.csv  plots/

``run.json`` is the commit marker of a run: written last, atomically.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from harness import __version__
from harness.contract import (
    LOG_FILE,
    LOSSES_FILE,
    RECORD_FILE,
    RECORD_FORMAT_VERSION,
    SPEC_FILE,
    RunSpec,
    write_bytes_atomic,
    write_json_atomic,
)
from harness.errors import StoreError
from harness.matrix import Cell, LoadedMatrix
from harness.record import RecordError, RunRecord, load_record

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT_VERSION = 1
LOCK_FILE = ".lock"
CELLS_DIR = "cells"
LOG_TAIL_LINES = 40
LOG_TAIL_CHARS = 4000

#: Spec fields that may differ between a finished record and a new spec without a rerun.
RESUME_IGNORED = ("data_dir",)


def default_out(name: str, now: dt.datetime | None = None) -> Path:
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    return Path("results") / f"{name}-{stamp}"


class ResultsDir:
    """One results folder; ``lock`` it before writing to it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock_handle: Any = None

    def run_dir(self, cell: Cell | str, repeat: int) -> Path:
        dirname = cell.dirname if isinstance(cell, Cell) else cell
        return self.root / CELLS_DIR / dirname / f"repeat-{repeat}"

    def lock(self) -> None:
        """Non-blocking exclusive lock; a second harness on the same folder is told who holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / LOCK_FILE, "a+")  # noqa: SIM115 - held until unlock
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

    def read_manifest(self) -> dict[str, Any] | None:
        path = self.root / MANIFEST_FILE
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(
                f"{path}: unreadable manifest ({exc})", "choose another --out, or delete the folder"
            ) from exc

    def write_manifest(
        self,
        matrix: LoadedMatrix,
        cells: list[Cell] | None = None,
        shard: dict[str, int] | None = None,
    ) -> None:
        """Write the manifest; refuse a folder that was made from a different matrix or shard.

        ``cells`` (default: all) are the cells this folder holds; ``shard`` is
        ``{"index": i, "total": n}`` for ``harness run --shard i/n``, else None.
        """
        old = self.read_manifest()
        if old is not None and old.get("matrix_digest") != matrix.digest:
            raise StoreError(
                f"{self.root} holds results of another matrix ({old.get('name')!r}, made from "
                f"{old.get('matrix_path')}), not of {matrix.path}",
                "choose another --out, or run the matrix that made this folder",
            )
        if old is not None and old.get("shard") != shard:
            raise StoreError(
                f"{self.root} holds shard {_shard_text(old.get('shard'))} of this matrix, "
                f"not shard {_shard_text(shard)}",
                "give each shard its own --out; `harness merge` joins them",
            )
        cells = matrix.cells if cells is None else cells
        manifest = {
            "format_version": MANIFEST_FORMAT_VERSION,
            "name": matrix.model.name,
            "matrix_path": str(matrix.path),
            "matrix_text": matrix.text,
            "matrix_sha256": matrix.text_sha256,
            "matrix_digest": matrix.digest,
            "repeats": matrix.model.run.repeats,
            "harness_version": __version__,
            "created_at": (old or {}).get("created_at") or _now(),
            "shard": shard,
            "cells": [
                {
                    "id": c.id,
                    "name": c.name,
                    "dir": f"{CELLS_DIR}/{c.dirname}",
                    "settings": c.settings,
                }
                for c in cells
            ],
        }
        write_json_atomic(self.root / MANIFEST_FILE, manifest)
        write_bytes_atomic(self.root / "matrix.yaml", matrix.text.encode("utf-8"))

    # ------------------------------------------------------------ resume

    def finished(self, run_dir: Path, spec: RunSpec) -> bool:
        """True when the run is done and still valid: an ok record of the same spec.

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
        if _comparable(record.spec) != _comparable(spec.to_dict()):
            log.info("rerunning %s: its spec changed", run_dir)
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


def _comparable(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in RESUME_IGNORED}


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
    run_dir: Path, spec: RunSpec, error_type: str, message: str, seconds: float | None = None
) -> None:
    """Make sure a run that did not succeed has a failed run record with its log's tail.

    A failed record written by the workload is kept and given the tail; an ok record from a run
    the host saw fail (killed after writing) is turned into a failed one.
    """
    tail = log_tail(run_dir)
    try:
        record: RunRecord | None = load_record(run_dir)
    except RecordError:
        record = None
    if record is not None and not record.ok:
        data = record.model_dump(mode="json")
        data.setdefault("error", None)
        data["error"] = {
            **(data["error"] or {"type": error_type, "message": message}),
            "log_tail": tail,
        }
    elif record is not None:
        data = record.model_dump(mode="json")
        data["status"] = "failed"
        data["error"] = {
            "type": error_type,
            "message": f"{message} (after writing its record)",
            "traceback": None,
            "log_tail": tail,
        }
    else:
        data = {
            "format_version": RECORD_FORMAT_VERSION,
            "status": "failed",
            "error": {"type": error_type, "message": message, "traceback": None, "log_tail": tail},
            "spec": spec.to_dict(),
            "steps": 0,
            "ranks": spec.devices,
            "steps_per_epoch": [],
            "digests": {
                "trajectory": None,
                "init_weights": None,
                "final_weights": None,
                "epochs": [],
                "split": None,
            },
            "epochs": [],
            "timing": {"wall_seconds": seconds},
            "nondeterministic_ops": [],
            "provenance": {},
            "files": {},
            "written_by": "host",
        }
    RunRecord.model_validate(data)
    write_json_atomic(run_dir / RECORD_FILE, data)
