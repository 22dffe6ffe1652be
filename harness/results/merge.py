"""``harness merge``: join the results folders of one matrix's shards into one folder.

Rules (docs/results.md, "Merging"):

- every input must hold results of the same matrix (the manifest's ``matrix_digest``);
- no input may be in use: a folder whose results lock (``.lock``, flock) is held by a running
  harness is refused, naming the pid in the lock file; the merge holds a shared lock on every
  input while it reads them, so no harness starts writing there meanwhile;
- the inputs must be made by the same code: the same ``harness_version`` in their manifests, the
  same workload code (``provenance.workload_digest`` of their run records), the same user's code
  for runs of a build function (``provenance.user_code_digest``) and, for each image
  name, the same image (``provenance.image_digest``: the base image's registry digest, or its
  id where it has none). Otherwise they are refused, unless ``allow_mixed``; then the merged
  manifest lists what differs (``merge.mixed``);
- every repeat folder is copied, nothing is dropped:
  - a run found in one input is copied to the same run folder of the output;
  - the same run (cell id + repeat) in two inputs with identical records (run.json and
    losses.npy bytes) is kept once, and the duplicate is listed;
  - different records of the same run: the ok one goes to the output's run folder (the first
    one, in argument order, when both or neither are ok); the other is kept aside, in the
    conflicts folder of its input (``layout.conflict_run_dir``), and listed as a conflict;
  - a conflict whose two copies are both ok and hold different results (losses.npy bytes or
    the record's digests) is a *result conflict*: ``MergeResult.result_conflicts``, which makes
    ``harness merge`` exit EXIT_CONFLICT. Copies that differ only elsewhere (timing, host, a
    failed attempt beside an ok one) are listed, not fatal;
- the merged manifest lists every cell of the matrix in matrix order, so the merged report
  equals the report of one unsharded run; it also names the inputs and the duplicates,
  conflicts and mixed code found;
- each input's snapshots of the user's code (``code/<digest>/``) that still match their digest
  are copied too, so ``harness diagnose`` on the merged folder replays the code that ran.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import stat
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from harness.contract import LOSSES_FILE, RECORD_FILE, WEIGHTS_FILE
from harness.contract.code import snapshot_user_code, user_code_digest
from harness.contract.files import UnsafeFile, read_regular
from harness.contract.machine import Machine, machines_differ
from harness.errors import StoreError
from harness.matrix import LoadedMatrix, parse_matrix
from harness.report.exporters import REPORT_FORMATS
from harness.results import layout
from harness.results.layout import CONFLICTS_DIR
from harness.results.manifest import Manifest, ManifestCell, write_manifest, write_matrix_text
from harness.results.merge_inputs import (
    Mixed,
    check_inputs,
    machines_of,
    manifest_of,
    mixed_code,
    records_of,
    shared_lock,
    short_digest,
)
from harness.results.out_folder import MERGE_OUT, check_out_folder
from harness.results.run_reader import record_or_none
from harness.results.safe_paths import real_dir
from harness.results.store import ResultsDir

__all__ = [
    "CONFLICTS_DIR",
    "Duplicate",
    "MergeResult",
    "Mixed",
    "RunKey",
    "describe_conflict",
    "merge",
]

log = logging.getLogger(__name__)

#: Duplicate.kind: what two copies of one run are to each other.
IDENTICAL = "identical"  # the same run.json and losses.npy bytes: kept once
SAME_RESULT = "same_result"  # both ok, same losses and digests; other fields differ (timing, host)
NOT_BOTH_OK = "not_both_ok"  # one copy (or both) failed: the ok one is kept in cells/
RESULT_CONFLICT = "result_conflict"  # both ok, different losses or digests: merge exits non-zero


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
    #: IDENTICAL, SAME_RESULT, NOT_BOTH_OK or RESULT_CONFLICT
    kind: str = IDENTICAL
    #: for a result conflict: the trajectory digest of the kept copy and of the other one
    trajectories: list[str | None] | None = None
    #: for a result conflict whose copies ran on different machines: how the machines differ
    machines_differ: str | None = None


@dataclass
class MergeResult:
    out: Path
    inputs: list[Path]
    runs: int
    cells: int
    duplicates: list[Duplicate] = field(default_factory=list)
    missing_cells: list[str] = field(default_factory=list)
    reports: list[Path] = field(default_factory=list)
    mixed: list[Mixed] = field(default_factory=list)
    #: each input's machines: fingerprint -> its facts (merge_inputs.machines_of)
    machines: dict[str, dict[str, Machine]] = field(default_factory=dict)

    @property
    def conflicts(self) -> list[Duplicate]:
        """Every run with two different copies (one of them is under ``conflicts/``)."""
        return [d for d in self.duplicates if not d.identical]

    @property
    def result_conflicts(self) -> list[Duplicate]:
        """Runs with two successful copies that hold different results: ``merge`` fails."""
        return [d for d in self.duplicates if d.kind == RESULT_CONFLICT]


def _runs_of(folder: Path) -> dict[RunKey, Path]:
    return {RunKey(dirname, k): path for dirname, k, path in layout.run_dirs(folder)}


def _same_run(a: Path, b: Path) -> bool:
    """Identical records: the same run.json content and the same losses.npy and weights.npy
    bytes (weights.npy missing from both: older records)."""
    for name in (RECORD_FILE, LOSSES_FILE, WEIGHTS_FILE):
        if not _same_file(a / name, b / name):
            return False
    return True


def _same_file(a: Path, b: Path) -> bool:
    """Byte-equal regular files, or both missing; a link or special file is never the same."""
    if a.exists() != b.exists():
        return False
    try:
        return not a.exists() or read_regular(a) == read_regular(b)
    except UnsafeFile:
        return False


def _copy_run(src: Path, dest: Path) -> None:
    """Copy a run folder's regular files and folders; a link or special file in a merge input
    (a hand-made one: the harness leaves none) is left behind, never followed, and logged."""

    def unsafe(folder: str, names: list[str]) -> list[str]:
        skipped = []
        for name in names:
            mode = (Path(folder) / name).lstat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                log.warning("not copied: %s is not a regular file or folder", Path(folder, name))
                skipped.append(name)
        return skipped

    shutil.copytree(src, dest, ignore=unsafe)


def _is_ok(run_dir: Path) -> bool:
    record = record_or_none(run_dir)
    return record is not None and record.ok


def merge(
    inputs: list[Path],
    out: Path,
    *,
    formats: tuple[str, ...] = REPORT_FORMATS,
    plots: bool = True,
    allow_mixed: bool = False,
) -> MergeResult:
    """Merge ``inputs`` into the new folder ``out``; see the module docstring for the rules."""
    if not inputs:
        raise StoreError("nothing to merge", "give one or more results folders")
    inputs = [Path(p) for p in inputs]
    out = Path(out)
    manifests = [manifest_of(p) for p in inputs]
    check_inputs(inputs, manifests, out)
    base = manifests[0]
    # the user's code folder as the runs recorded it; merging needs no code, so it may be gone
    code_dir = Path(base.workload_path) if base.workload_path else None
    matrix = parse_matrix(
        base.matrix_text or "",  # manifest_of made sure there is one
        Path(base.matrix_path or layout.MATRIX_FILE),
        code_dir=code_dir,
        check_code_dir=False,
    )
    with ExitStack() as held:
        for folder in inputs:
            held.enter_context(shared_lock(folder))
        records = records_of(inputs)
        mixed = _refuse_mixed(mixed_code(inputs, manifests, records), allow_mixed)
        store = ResultsDir(out)
        store.lock()
        try:
            check_out_folder(out, MERGE_OUT, ignore=lambda p: p.name == layout.LOCK_FILE)
            result = _copy_runs(inputs, out)
            _copy_code_snapshots(inputs, out)
            result.mixed = mixed
            result.machines = machines_of(records)
            _write_merged_manifest(out, matrix, inputs, manifests, result)
        finally:
            store.unlock()
    result.cells = len(matrix.cells)
    if formats:
        from harness.report import write_reports

        result.reports = write_reports(out, formats, plots=plots)
    return result


def _refuse_mixed(mixed: list[Mixed], allow_mixed: bool) -> list[Mixed]:
    """``mixed``, when the inputs' code may differ (``allow_mixed``) or does not."""
    if mixed and not allow_mixed:
        raise StoreError(
            "these folders were made by different code: " + " | ".join(m.describe() for m in mixed),
            "merge results of one harness and workload version (rerun the odd shard with "
            "the others' code), or pass --allow-mixed to merge them anyway; the merged "
            "manifest then lists what differs (merge.mixed)",
        )
    return mixed


def _write_merged_manifest(
    out: Path,
    matrix: LoadedMatrix,
    inputs: list[Path],
    manifests: list[Manifest],
    result: MergeResult,
) -> None:
    """The merged manifest: every cell of the matrix, in its order (the cells no input holds
    go to ``result.missing_cells``), the inputs, and what the merge found."""
    present = {key.cell_dir for key in _runs_of(out)}
    dirnames = [layout.cell_dirname(c.name, c.id) for c in matrix.cells]
    result.missing_cells = [d for d in dirnames if d not in present]
    for name in result.missing_cells:
        log.warning("no input holds cell %s: the report lists its runs as missing", name)
    merged = dataclasses.replace(
        manifests[0],
        shard=None,
        cells=[ManifestCell.of(c) for c in matrix.cells],
        merged_from=[
            {
                "path": str(p),
                "shard": m.shard,
                "created_at": m.created_at,
                "harness_version": m.harness_version,
            }
            for p, m in zip(inputs, manifests, strict=True)
        ],
        merge={
            "duplicates": [dataclasses.asdict(d) for d in result.duplicates if d.identical],
            "conflicts": [dataclasses.asdict(d) for d in result.conflicts],
            "result_conflicts": [d.run for d in result.result_conflicts],
            "missing_cells": result.missing_cells,
            "mixed": [dataclasses.asdict(m) for m in result.mixed],
            "machines": {k: sorted(v) for k, v in result.machines.items()},
        },
    )
    write_manifest(out, merged)
    write_matrix_text(out, manifests[0].matrix_text or "")


def _copy_code_snapshots(inputs: list[Path], out: Path) -> None:
    """Each input's ``code/<digest>/`` snapshot (a real folder whose files still give its
    digest) into ``out/code/``, once per digest; anything else there is left behind, logged."""
    for folder in inputs:
        store = layout.code_store(folder)
        if not store.is_dir() or store.is_symlink():
            continue
        for entry in sorted(store.iterdir()):
            if (layout.code_store(out) / entry.name).is_dir() or entry.name.startswith("."):
                continue
            if entry.is_symlink() or not entry.is_dir() or user_code_digest(entry) != entry.name:
                log.warning("not copied: %s is not a snapshot of your code", entry)
                continue
            where = real_dir(out, layout.code_store(out), what="the snapshots of your code")
            snapshot_user_code(entry, where)


def _copy_runs(inputs: list[Path], out: Path) -> MergeResult:
    result = MergeResult(out=out, inputs=inputs, runs=0, cells=0)
    placed: dict[RunKey, Path] = {}  # run -> the input folder its copy in the output came from
    for k, folder in enumerate(inputs, start=1):
        for key, src in _runs_of(folder).items():
            dest = layout.run_dir(out, key.cell_dir, key.repeat)
            if key not in placed:
                real_dir(out, dest.parent, what="a merged cell")  # never through a link
                _copy_run(src, dest)
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


def _kind(a: Path, b: Path) -> tuple[str, list[str | None] | None, str | None]:
    """How two different copies of one run differ: RESULT_CONFLICT (with both trajectory
    digests, and how their machines differ where they do) when both are ok and their losses
    or digests differ."""
    ra, rb = record_or_none(a), record_or_none(b)
    if ra is None or rb is None or not (ra.ok and rb.ok):
        return NOT_BOTH_OK, None, None
    same = (
        _same_file(a / LOSSES_FILE, b / LOSSES_FILE)
        and dataclasses.asdict(ra.digests) == dataclasses.asdict(rb.digests)
        and (ra.steps, ra.ranks) == (rb.steps, rb.ranks)
    )
    if same:
        return SAME_RESULT, None, None
    machines = machines_differ((ra.provenance.machine, rb.provenance.machine), with_gpus=True)
    return RESULT_CONFLICT, [ra.digests.trajectory, rb.digests.trajectory], machines


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
        real_dir(out, aside.parent, what="a conflict copy")  # never through a link
        shutil.move(str(dest), str(aside))
        _copy_run(src, dest)
    else:
        (_, kept), (k_other, other) = first, new
        aside = layout.conflict_run_dir(out, k_other, other.name, key.cell_dir, key.repeat)
        real_dir(out, aside.parent, what="a conflict copy")  # never through a link
        _copy_run(src, aside)
    kind, trajectories, machines = _kind(dest, aside)
    log.warning(
        "%s differs between %s and %s%s: kept %s, the other is in %s",
        key,
        first[1],
        new[1],
        " (two successful copies with different results)" if kind == RESULT_CONFLICT else "",
        kept,
        aside,
    )
    duplicate = Duplicate(
        str(key),
        str(kept),
        str(other),
        False,
        str(aside.relative_to(out)),
        kind,
        trajectories,
        machines,
    )
    return duplicate, kept


def describe_conflict(d: Duplicate) -> str:
    """One line for a conflict, for the terminal."""
    if d.kind == RESULT_CONFLICT:
        kept, other = (short_digest(t) if t else "none" for t in (d.trajectories or [None, None]))
        where = f"; they {d.machines_differ}" if d.machines_differ else ""
        return (
            f"{d.run}: two successful copies with different results (trajectory {kept} in "
            f"{d.kept}, {other} in {d.other}{where})"
        )
    if d.kind == SAME_RESULT:
        return f"{d.run}: different records in {d.kept} and {d.other} (same losses and digests)"
    return f"{d.run}: different records in {d.kept} and {d.other} (not both ok)"
