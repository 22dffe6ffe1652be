"""``harness merge``: join the results folders of one matrix's shards into one folder.

Rules (docs/results.md, "Merging"):

- every input must hold results of the same matrix (the manifest's ``matrix_digest``);
- every repeat folder is copied, nothing is dropped:
  - a run found in one input is copied to ``cells/`` of the output;
  - the same run (cell id + repeat) in two inputs with identical records (run.json and
    losses.npy bytes) is kept once, and the duplicate is listed;
  - different records of the same run: the ok one goes to ``cells/`` (the first one, in
    argument order, when both or neither are ok); the other goes to
    ``conflicts/<k>-<input folder name>/cells/...`` and is listed as a conflict;
- the merged manifest lists every cell of the matrix in matrix order, so the merged report
  equals the report of one unsharded run; it also names the inputs and the duplicates and
  conflicts found.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.contract import LOSSES_FILE, RECORD_FILE, write_bytes_atomic, write_json_atomic
from harness.errors import StoreError
from harness.matrix import parse_matrix
from harness.record import RecordError, load_record
from harness.store import CELLS_DIR, MANIFEST_FILE, ResultsDir

log = logging.getLogger(__name__)

CONFLICTS_DIR = "conflicts"


@dataclass(frozen=True)
class RunKey:
    """One run: a cell folder (``<name>--<id>``) and a repeat index."""

    cell_dir: str
    repeat: int

    def __str__(self) -> str:
        return f"{self.cell_dir}/repeat-{self.repeat}"


@dataclass
class Duplicate:
    run: str
    kept: str  # the input folder whose copy is in cells/
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


def _manifest(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise StoreError(f"{folder}: no such results folder", "give folders `harness run` wrote")
    manifest = ResultsDir(folder).read_manifest()
    if manifest is None or "matrix_digest" not in manifest:
        raise StoreError(
            f"{folder} has no manifest.json: it is not a results folder of `harness run`",
            "give the folders that `harness run --shard I/N --out DIR` wrote",
        )
    return manifest


def _runs_of(folder: Path) -> dict[RunKey, Path]:
    found = {}
    for run_dir in sorted((folder / CELLS_DIR).glob("*--*/repeat-*")):
        try:
            repeat = int(run_dir.name.split("-", 1)[1])
        except ValueError:
            log.warning("ignoring %s: not a repeat folder", run_dir)
            continue
        if run_dir.is_dir():
            found[RunKey(run_dir.parent.name, repeat)] = run_dir
    return found


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
    digests = {m["matrix_digest"] for m in manifests}
    if len(digests) > 1:
        lines = "; ".join(
            f"{p} ({m.get('name')!r}, digest {m['matrix_digest'][:12]})"
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

    base = manifests[0]
    matrix = parse_matrix(base["matrix_text"], Path(base.get("matrix_path") or "matrix.yaml"))
    store = ResultsDir(out)
    store.lock()
    try:
        result = _copy_runs(inputs, out)
        present = {key.cell_dir for key in _runs_of(out)}
        result.missing_cells = [c.dirname for c in matrix.cells if c.dirname not in present]
        for name in result.missing_cells:
            log.warning("no input holds cell %s: the report lists its runs as missing", name)
        manifest = {
            **base,
            "shard": None,
            "cells": [
                {
                    "id": c.id,
                    "name": c.name,
                    "dir": f"{CELLS_DIR}/{c.dirname}",
                    "settings": c.settings,
                }
                for c in matrix.cells
            ],
            "merged_from": [
                {"path": str(p), "shard": m.get("shard"), "created_at": m.get("created_at")}
                for p, m in zip(inputs, manifests, strict=True)
            ],
            "merge": {
                "duplicates": [d.__dict__ for d in result.duplicates if d.identical],
                "conflicts": [d.__dict__ for d in result.conflicts],
                "missing_cells": result.missing_cells,
            },
        }
        write_json_atomic(out / MANIFEST_FILE, manifest)
        write_bytes_atomic(out / "matrix.yaml", base["matrix_text"].encode("utf-8"))
    finally:
        store.unlock()
    result.cells = len(matrix.cells)
    if formats:
        from harness.report import write_reports

        result.reports = write_reports(out, formats, plots=plots)
    return result


def _copy_runs(inputs: list[Path], out: Path) -> MergeResult:
    result = MergeResult(out=out, inputs=inputs, runs=0, cells=0)
    placed: dict[RunKey, Path] = {}  # run -> the input folder its copy in cells/ came from
    for k, folder in enumerate(inputs, start=1):
        for key, src in _runs_of(folder).items():
            dest = out / CELLS_DIR / key.cell_dir / f"repeat-{key.repeat}"
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
            # Different records of one run: the ok one stays in cells/, the other is kept aside.
            keep_new = _is_ok(src) and not _is_ok(dest)
            aside_root = out / CONFLICTS_DIR / f"{k}-{folder.name}" / CELLS_DIR / key.cell_dir
            aside = aside_root / f"repeat-{key.repeat}"
            if keep_new:
                other_root = out / CONFLICTS_DIR / f"{inputs.index(first) + 1}-{first.name}"
                aside = other_root / CELLS_DIR / key.cell_dir / f"repeat-{key.repeat}"
                aside.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(dest), str(aside))
                shutil.copytree(src, dest, symlinks=True)
                placed[key] = folder
                kept, other = folder, first
            else:
                aside.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(src, aside, symlinks=True)
                kept, other = first, folder
            log.warning(
                "%s differs between %s and %s: kept %s, the other is in %s",
                key,
                first,
                folder,
                kept,
                aside,
            )
            result.duplicates.append(
                Duplicate(str(key), str(kept), str(other), False, str(aside.relative_to(out)))
            )
    return result
