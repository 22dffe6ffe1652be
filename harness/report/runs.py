"""Loading a results folder for the report: its cells (from the manifest, or found on disk when
it has none) and each repeat's run record, as ``RunResult``s."""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import layout
from harness.contract import RECORD_FILE
from harness.contract.settings import NAMES
from harness.errors import HarnessError
from harness.record import RecordError, RunRecord, load_record
from harness.report.model import RunResult


@dataclass
class FolderCells:
    """What the report reads of a results folder: its name, cells and repeats per cell
    (None: as many as were found)."""

    name: str
    cells: list[layout.ManifestCell]
    repeats: int | None


def folder_cells(root: Path) -> FolderCells:
    """The cells of a results folder: from its manifest, or found on disk without one."""
    manifest = layout.read_manifest(root)
    if manifest is not None:
        return FolderCells(manifest.name or root.name, manifest.cells, manifest.repeats)
    if not layout.cells_root(root).is_dir():
        raise HarnessError(
            f"{root} is not a results folder: no {layout.MANIFEST_FILE} and no {layout.CELLS_DIR}/",
            "give the folder that `harness run` wrote (results/<name>-<time>/)",
        )
    cells: dict[str, layout.ManifestCell] = {}
    for run_json in layout.record_paths(root):
        cell_dir = run_json.parent.parent
        name, cid = layout.split_cell_dirname(cell_dir.name)
        if cid not in cells:
            spec = _spec_of(run_json)
            settings = {k: spec.get(k) for k in NAMES}
            cells[cid] = layout.ManifestCell(
                cid, name, layout.cell_relpath(cell_dir.name), settings
            )
    return FolderCells(root.name, list(cells.values()), None)


def _spec_of(run_json: Path) -> dict[str, Any]:
    """The spec in a run record, read leniently: a damaged record shows as a failed run."""
    try:
        data = json.loads(run_json.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    spec = data.get("spec") if isinstance(data, dict) else None
    return spec if isinstance(spec, dict) else {}


def cell_runs(root: Path, cell: layout.ManifestCell, repeats: int | None) -> list[RunResult]:
    """Every repeat of one cell, missing ones included when ``repeats`` says how many."""
    cell_dir = root / cell.dir
    return [run_result(d, k) for k, d in layout.repeat_dirs(cell_dir, repeats)]


def run_result(run_dir: Path, repeat: int) -> RunResult:
    """One repeat: missing (no record), failed (a failed or unreadable record), or ok."""
    try:
        record = load_record(run_dir)
    except RecordError as exc:
        missing = not (run_dir / RECORD_FILE).exists()
        error = None if missing else {"type": "corrupt", "message": str(exc), "log_tail": ""}
        return RunResult(repeat, "missing" if missing else "failed", run_dir, error=error)
    return _from_record(record, run_dir, repeat)


def _from_record(record: RunRecord, run_dir: Path, repeat: int) -> RunResult:
    d = record.digests
    epochs = record.epochs
    last_acc = next((e.val_acc for e in reversed(epochs) if e.val_acc is not None), None)
    return RunResult(
        repeat=repeat,
        status=record.status,
        run_dir=run_dir,
        trajectory=d.trajectory,
        init_weights=d.init_weights,
        final_weights=d.final_weights,
        steps=record.steps,
        ranks=record.ranks,
        epoch_starts=_epoch_starts(record),
        val_acc=last_acc,
        seconds_per_epoch=_seconds_per_epoch(record),
        error=dataclasses.asdict(record.error) if record.error else None,
        image_digest=record.provenance.image_digest,
        image_id=record.provenance.image_id,
        torch=record.provenance.torch,
    )


def _seconds_per_epoch(record: RunRecord) -> float | None:
    """Mean train + validation time of its epochs, else its wall time over its epochs."""
    epochs = record.epochs
    per_epoch = [
        (e.train_seconds or 0.0) + (e.val_seconds or 0.0)
        for e in epochs
        if e.train_seconds is not None
    ]
    if per_epoch:
        return statistics.fmean(per_epoch)
    if record.timing.wall_seconds and epochs:
        return record.timing.wall_seconds / len(epochs)
    return None


def _epoch_starts(record: RunRecord) -> list[tuple[int, int]]:
    """(epoch, first global step) of each epoch, from its summaries or its steps per epoch."""
    starts = [(e.epoch, e.first_step) for e in record.epochs]
    if not starts and record.steps_per_epoch:
        first = 0
        for i, n in enumerate(record.steps_per_epoch):
            starts.append((i, first))
            first += n
    return starts
