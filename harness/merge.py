"""``harness merge``: join the results folders of one matrix's shards into one folder.

Rules (docs/results.md, "Merging"):

- every input must hold results of the same matrix (the manifest's ``matrix_digest``);
- every repeat folder is copied, nothing is dropped:
  - a run found in one input is copied to the same run folder of the output;
  - the same run (cell id + repeat) in two inputs with identical records (run.json and
    losses.npy bytes) is kept once, and the duplicate is listed;
  - different records of the same run: the ok one goes to the output's run folder (the first
    one, in argument order, when both or neither are ok); the other is kept aside, in the
    conflicts folder of its input (``layout.conflict_run_dir``), and listed as a conflict;
- the merged manifest lists every cell of the matrix in matrix order, so the merged report
  equals the report of one unsharded run; it also names the inputs and the duplicates and
  conflicts found.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from harness import layout
from harness.contract import LOSSES_FILE, RECORD_FILE
from harness.errors import StoreError
from harness.layout import CONFLICTS_DIR, Manifest, ManifestCell
from harness.matrix import parse_matrix
from harness.record import RecordError, load_record
from harness.store import ResultsDir

__all__ = ["CONFLICTS_DIR", "Duplicate", "MergeResult", "RunKey", "merge"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunKey:
    """One run: a cell folder (``<name>--<id>``) and a repeat index."""

    cell_dir: str
    repeat: int

    def __str__(self) -> str:
        return str(layout.repeat_dir(Path(self.cell_dir), self.repeat))


@dataclass
class Duplicate:
    run: str
    kept: str  # the input folder whose copy is in the output's run folder
    other: str  # the other input folder
    identical: bool
    conflict_path: str | None = None  # where the other copy went (different records only)


@dataclass
class MergeResult:
    out: Path
    inputs: list[Path]
    runs: int
    cells: int
    duplicates: list[Duplicate] = field(default_factory=list)
    missing_cells: list[str] = field(default_factory=list)
    reports: list[Path] = field(default_factory=list)

    @property
    def conflicts(self) -> list[Duplicate]:
        return [d for d in self.duplicates if not d.identical]


def _manifest(folder: Path) -> Manifest:
    """An input's manifest; one of another results format is refused (layout.read_manifest)."""
    if not folder.is_dir():
        raise StoreError(f"{folder}: no such results folder", "give folders `harness run` wrote")
    manifest = layout.read_manifest(folder)
    if manifest is None or manifest.matrix_digest is None or manifest.matrix_text is None:
        raise StoreError(
            f"{folder} has no {layout.MANIFEST_FILE}: it is not a results folder of `harness run`",
            "give the folders that `harness run --shard I/N --out DIR` wrote",
        )
    return manifest


def _runs_of(folder: Path) -> dict[RunKey, Path]:
    return {RunKey(dirname, k): path for dirname, k, path in layout.run_dirs(folder)}


def _same_run(a: Path, b: Path) -> bool:
    """Identical records: the same run.json content and the same losses.npy bytes."""
    for name in (RECORD_FILE, LOSSES_FILE):
        pa, pb = a / name, b / name
        if pa.exists() != pb.exists():
            return False
        if pa.exists() and pa.read_bytes() != pb.read_bytes():
            return False
    return True


def _is_ok(run_dir: Path) -> bool:
    try:
        return load_record(run_dir).ok
    except RecordError:
        return False


def merge(
    inputs: list[Path],
    out: Path,
    *,
    formats: tuple[str, ...] = ("md", "json", "csv"),
    plots: bool = True,
) -> MergeResult:
    """Merge ``inputs`` into the new folder ``out``; see the module docstring for the rules."""
    if not inputs:
        raise StoreError("nothing to merge", "give one or more results folders")
    inputs = [Path(p) for p in inputs]
    out = Path(out)
    manifests = [_manifest(p) for p in inputs]
    _check_inputs(inputs, manifests, out)
    base = manifests[0]
    matrix_text = base.matrix_text or ""  # _manifest made sure there is one
    matrix = parse_matrix(matrix_text, Path(base.matrix_path or layout.MATRIX_FILE))
    store = ResultsDir(out)
    store.lock()
    try:
        result = _copy_runs(inputs, out)
        present = {key.cell_dir for key in _runs_of(out)}
        cells = [ManifestCell.of(c) for c in matrix.cells]
        dirnames = [layout.cell_dirname(c.name, c.id) for c in matrix.cells]
        result.missing_cells = [d for d in dirnames if d not in present]
        for name in result.missing_cells:
            log.warning("no input holds cell %s: the report lists its runs as missing", name)
        merged = dataclasses.replace(
            base,
            shard=None,
            cells=cells,
            merged_from=[
                {"path": str(p), "shard": m.shard, "created_at": m.created_at}
                for p, m in zip(inputs, manifests, strict=True)
            ],
            merge={
                "duplicates": [dataclasses.asdict(d) for d in result.duplicates if d.identical],
                "conflicts": [dataclasses.asdict(d) for d in result.conflicts],
                "missing_cells": result.missing_cells,
            },
        )
        layout.write_manifest(out, merged)
        layout.write_matrix_text(out, matrix_text)
    finally:
        store.unlock()
    result.cells = len(matrix.cells)
    if formats:
        from harness.report import write_reports

        result.reports = write_reports(out, formats, plots=plots)
    return result


def _check_inputs(inputs: list[Path], manifests: list[Manifest], out: Path) -> None:
    """One matrix in every input, and an output that is new (or empty) and none of them."""
    if len({m.matrix_digest for m in manifests}) > 1:
        lines = "; ".join(
            f"{p} ({m.name!r}, digest {(m.matrix_digest or '')[:12]})"
            for p, m in zip(inputs, manifests, strict=True)
        )
        raise StoreError(
            f"these folders hold results of different matrices: {lines}",
            "merge only the shards of one matrix run",
        )
    resolved_out = out.resolve()
    for p in inputs:
        if p.resolve() == resolved_out:
            raise StoreError(f"{out} is one of the inputs", "merge into a new folder (-o DIR)")
    if out.exists() and any(out.iterdir()):
        raise StoreError(f"{out} is not empty", "merge into a new or empty folder (-o DIR)")


def _copy_runs(inputs: list[Path], out: Path) -> MergeResult:
    result = MergeResult(out=out, inputs=inputs, runs=0, cells=0)
    placed: dict[RunKey, Path] = {}  # run -> the input folder its copy in the output came from
    for k, folder in enumerate(inputs, start=1):
        for key, src in _runs_of(folder).items():
            dest = layout.run_dir(out, key.cell_dir, key.repeat)
            if key not in placed:
                shutil.copytree(src, dest, symlinks=True)
                placed[key] = folder
                result.runs += 1
                continue
            first = placed[key]
            if _same_run(dest, src):
                log.info("%s: identical in %s and %s; kept one", key, first, folder)
                result.duplicates.append(Duplicate(str(key), str(first), str(folder), True))
                continue
            k_first = inputs.index(first) + 1
            duplicate, placed[key] = _keep_one(out, key, (k_first, first), (k, folder), src)
            result.duplicates.append(duplicate)
    return result


def _keep_one(
    out: Path, key: RunKey, first: tuple[int, Path], new: tuple[int, Path], src: Path
) -> tuple[Duplicate, Path]:
    """Different records of one run: the ok one stays in the output's run folder, the other is
    kept aside in the conflicts folder. ``first`` is the (1-based input index, folder) whose copy
    is in the run folder now, ``new`` the one whose copy is ``src``; returns the duplicate and
    the folder kept."""
    dest = layout.run_dir(out, key.cell_dir, key.repeat)
    if _is_ok(src) and not _is_ok(dest):
        (_, kept), (k_other, other) = new, first
        aside = layout.conflict_run_dir(out, k_other, other.name, key.cell_dir, key.repeat)
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(dest), str(aside))
        shutil.copytree(src, dest, symlinks=True)
    else:
        (_, kept), (k_other, other) = first, new
        aside = layout.conflict_run_dir(out, k_other, other.name, key.cell_dir, key.repeat)
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, aside, symlinks=True)
    log.warning(
        "%s differs between %s and %s: kept %s, the other is in %s",
        key,
        first[1],
        new[1],
        kept,
        aside,
    )
    duplicate = Duplicate(str(key), str(kept), str(other), False, str(aside.relative_to(out)))
    return duplicate, kept
