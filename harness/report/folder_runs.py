"""Loading a results folder for the report: its cells (from the manifest, or found on disk when
it has none) and each repeat's run record, as ``RunResult``s.

A record is checked before it is trusted: an ok record's ``losses.npy`` must load, have the
recorded shape and hash to ``digests.trajectory`` (``harness.results.run_reader.verified_losses``),
else the run is *corrupt*; an ok record with zero steps, or whose losses are NaN or infinite at some
step, is a *failed* run that says so. Neither ever ends the report in a traceback.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.contract import LOSSES_FILE, RECORD_FILE
from harness.contract.settings import NAMES
from harness.errors import HarnessError
from harness.report.inert_text import clean
from harness.report.report_data import CORRUPT, FAILED, MISSING, OK, CheckError, RunResult
from harness.report.trajectories import epoch_batch
from harness.results import layout
from harness.results.manifest import ManifestCell, read_manifest
from harness.results.merge_inputs import Mixed
from harness.results.run_reader import (
    CorruptRun,
    RecordError,
    RunRecord,
    first_nonfinite_step,
    lenient_spec,
    load_record,
    verified_losses,
)

log = logging.getLogger(__name__)


@dataclass
class FolderCells:
    """What the report reads of a results folder: its name, cells and repeats per cell
    (None: as many as were found)."""

    name: str
    cells: list[ManifestCell]
    repeats: int | None
    mixed_code: list[str] = dataclasses.field(default_factory=list)


def folder_cells(root: Path) -> FolderCells:
    """The cells of a results folder: from its manifest, or found on disk without one."""
    manifest = read_manifest(root)
    if manifest is not None:
        mixed = _mixed_code(manifest.merge)
        return FolderCells(manifest.name or root.name, manifest.cells, manifest.repeats, mixed)
    if not layout.cells_root(root).is_dir():
        raise HarnessError(
            f"{root} is not a results folder: no {layout.MANIFEST_FILE} and no {layout.CELLS_DIR}/",
            "give the folder that `harness run` wrote (results/<name>-<time>/)",
        )
    cells: dict[str, ManifestCell] = {}
    for run_json in layout.record_paths(root):
        cell_dir = run_json.parent.parent
        name, cid = layout.split_cell_dirname(cell_dir.name)
        if cid not in cells:
            spec = lenient_spec(run_json.parent, root=root)  # damaged: a corrupt run
            settings = {k: spec.get(k) for k in NAMES}
            cells[cid] = ManifestCell(cid, name, layout.cell_relpath(cell_dir.name), settings)
    return FolderCells(root.name, list(cells.values()), None)


def _mixed_code(merge: Any) -> list[str]:
    """What differs between the inputs of a merge made with ``--allow-mixed`` (the manifest's
    ``merge.mixed``), one line each, worded as ``harness merge`` said it."""
    mixed = merge.get("mixed") if isinstance(merge, dict) else None
    if not isinstance(mixed, list):
        return []
    entries = [(entry, Mixed.from_json(entry)) for entry in mixed]
    return [m.describe() if m is not None else str(entry) for entry, m in entries]


def cell_runs(root: Path, cell: ManifestCell, repeats: int | None) -> list[RunResult]:
    """Every repeat of one cell, missing ones included when ``repeats`` says how many."""
    cell_dir = root / cell.dir
    return [run_result(d, k, root=root) for k, d in layout.repeat_dirs(cell_dir, repeats)]


def conflict_runs(root: Path, cell: ManifestCell) -> list[RunResult]:
    """The copies of this cell's runs that ``harness merge`` kept under ``conflicts/``."""
    dirname = Path(cell.dir).name
    return [
        run_result(d, k, root=root, copy=source)
        for source, k, d in layout.conflict_copies(root, dirname)
    ]


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def run_result(
    run_dir: Path, repeat: int, *, root: Path | None = None, copy: str | None = None
) -> RunResult:
    """One run: missing (no record), corrupt (an unreadable record, or an ok record whose
    losses.npy does not bear it out), failed (a failed record, or an ok one with zero steps or
    losses that are not finite), or ok."""
    path = _relative(run_dir, root)
    try:
        record = load_record(run_dir, root=root)  # never through a link below the root
    except RecordError as exc:
        if not (run_dir / RECORD_FILE).exists():
            return RunResult(
                repeat=repeat,
                status=MISSING,
                run_dir=run_dir,
                path=path,
                copy=copy,
                problem="no run record",
            )
        why = _without_path(str(exc), run_dir / RECORD_FILE, RECORD_FILE)
        log.warning("%s: corrupt run: %s", clean(path), clean(why))
        return RunResult(
            repeat=repeat,
            status=CORRUPT,
            run_dir=run_dir,
            path=path,
            copy=copy,
            problem=f"corrupt {why}",
            error=CheckError(type="corrupt", message=why),
        )
    result = _from_record(record, run_dir, repeat, path, copy)
    if record.ok:
        _check_losses(result, record)
    else:
        kind = record.error.type if record.error else "failed"
        result.problem = f"failed ({kind})"
    return result


def _without_path(message: str, path: Path, name: str) -> str:
    """An error message about ``path`` with the path shortened to its file name."""
    return message.replace(f"{path}:", f"{name}:", 1)


def _check_losses(result: RunResult, record: RunRecord) -> None:
    """Hold an ok record to its losses.npy: corrupt, no steps or not finite is not ok; an ok
    run keeps the losses it was held to (``RunResult.losses``)."""
    try:
        losses = verified_losses(result.run_dir, record)
    except CorruptRun as exc:
        why = _without_path(str(exc), result.run_dir / LOSSES_FILE, LOSSES_FILE)
        log.warning("%s: corrupt run: %s", clean(result.path), clean(why))
        result.status = CORRUPT
        result.problem = f"corrupt {why}"
        result.error = CheckError(type="corrupt", message=why)
        return
    if record.steps == 0:
        result.status = FAILED
        result.problem = "zero steps"
        result.error = CheckError(
            type="no_steps", message="the record says ok, but the run made no optimizer step"
        )
        return
    step = first_nonfinite_step(losses)
    if step is not None:
        epoch, batch = epoch_batch(step, result.epoch_starts)
        where = f" (epoch {epoch}, batch {batch})" if epoch is not None else ""
        result.status = FAILED
        result.problem = f"losses not finite from step {step}"
        result.error = CheckError(
            type="nonfinite", message=f"the loss is NaN or infinite from step {step}{where} on"
        )
        return
    result.losses = losses  # read once: the divergences and the plots use these


def _from_record(
    record: RunRecord, run_dir: Path, repeat: int, path: str, copy: str | None
) -> RunResult:
    d = record.digests
    epochs = record.epochs
    last_acc = next((e.val_acc for e in reversed(epochs) if e.val_acc is not None), None)
    last_loss = next((e.val_loss for e in reversed(epochs) if e.val_loss is not None), None)
    return RunResult(
        repeat=repeat,
        status=OK if record.ok else FAILED,
        run_dir=run_dir,
        path=path,
        recorded=record.status,
        copy=copy,
        trajectory=d.trajectory,
        init_weights=d.init_weights,
        final_weights=d.final_weights,
        steps=record.steps,
        ranks=record.ranks,
        epoch_starts=_epoch_starts(record),
        val_acc=last_acc,
        val_loss=last_loss,
        seconds_per_epoch=_seconds_per_epoch(record),
        error=record.error,
        image_digest=record.provenance.image_digest,
        image_id=record.provenance.image_id,
        torch=record.provenance.torch,
        gpus=gpu_kinds(record.provenance.gpus),
        determinism=(
            dataclasses.asdict(record.provenance.determinism)
            if record.provenance.determinism is not None
            else None
        ),
        weights_parameters=list(record.weights.parameters) if record.weights else None,
        weights_hash=record.weights.hash if record.weights else None,
        machine=record.provenance.machine,
        user_seed=record.provenance.user_seed,
    )


def gpu_kinds(gpus: list[dict[str, Any]]) -> list[tuple[str | None, int | None]]:
    """(name, SM count) of each GPU in a record's provenance; what is not a string (a name) or
    an integer (an SM count) is None."""
    out: list[tuple[str | None, int | None]] = []
    for gpu in gpus:
        name, sms = gpu.get("name"), gpu.get("sm_count")
        out.append(
            (
                name if isinstance(name, str) else None,
                sms if isinstance(sms, int) and not isinstance(sms, bool) else None,
            )
        )
    return out


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
