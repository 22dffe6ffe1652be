"""A folder of your own runs: the report of run records that ``harness.lightning.ReproRecorder``
wrote from the user's own ``Trainer``, outside any matrix.

Such a folder has no manifest: each subfolder (one level, sorted by name) holds one run's
``run.json``, ``losses.npy`` and ``weights.npy``, and the record's spec says ``"external":
true`` and names the run's group (``cell_name``). Runs with the same name are the repeats of
one group, in folder-name order (repeat index = position), and each group becomes one
``CellReport`` through the matrix report's own code: the runs checked against their files
(folder_runs.py), the verdict and the first divergence (verdicts.py, trajectories.py), the
failures and images (summaries.py). What a group adds is what its runs differ in
(own_run_differences.py: the flags, threads, torch, CUDA, cuDNN, the GPU...), since that is
usually why they diverge. Each record is read by harness/results/run_reader.py.

A folder that is neither a results folder nor holds such records, one that mixes them with a
matrix's runs, and a record that cannot be read are a ``HarnessError`` (exit 2) that names the
folder or file and why, before anything is written.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.contract.files import LOSSES_FILE, RECORD_FILE, WEIGHTS_FILE
from harness.contract.record import RunRecord
from harness.contract.settings import NAMES
from harness.errors import HarnessError
from harness.report import summaries
from harness.report.folder_runs import run_result
from harness.report.inert_text import clean
from harness.report.own_run_differences import describe_difference, differences, value_text
from harness.report.report_data import (
    DIVERGES,
    OWN_RUNS,
    REPRODUCES,
    CellReport,
    Report,
)
from harness.report.verdicts import analyze_cell
from harness.results import layout
from harness.results.manifest import ManifestCell
from harness.results.run_reader import RecordError, lenient_spec, load_record

log = logging.getLogger(__name__)

#: The "image" of every group of own runs: the report groups its cells per image, and own runs
#: come from wherever the user trained (their torch, CUDA and GPU are compared run by run).
OWN_RUNS_IMAGE = "own runs"

#: The hint where a folder is neither: the two kinds of folder the report reads.
_HINT = (
    "give the folder `harness run` wrote (results/<name>-<time>/), or a folder whose "
    "subfolders each hold one run's record written by harness.lightning.ReproRecorder"
)


@dataclass
class OwnRun:
    """One subfolder's record: its folder, the record, and its group's name."""

    dir: Path
    record: RunRecord
    name: str


def record_dirs(root: Path) -> list[Path]:
    """The subfolders of ``root`` (one level, sorted by name; hidden ones left out) that hold a
    ``run.json`` (what it is, is not looked at here)."""
    try:
        entries = sorted(root.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        why = exc.strerror or exc
        raise HarnessError(f"{clean(root)}: cannot list the folder ({why})") from exc
    found = []
    for path in entries:
        if path.name.startswith(".") or not path.is_dir():
            continue
        record = path / RECORD_FILE
        if record.exists() or record.is_symlink():
            found.append(path)
    return found


def is_external(spec: Any) -> bool:
    """A spec ReproRecorder wrote: ``"external": true``."""
    return isinstance(spec, dict) and spec.get("external") is True


def refuse_own_runs_in(root: Path) -> None:
    """A results folder (it has a manifest or cells/) whose subfolders also hold records of own
    runs is refused: the report would show one and silently drop the other."""
    own = [d.name for d in record_dirs(root) if is_external(lenient_spec(d, root=root))]
    if own:
        raise HarnessError(
            f"{clean(root)} mixes a results folder of `harness run` with records of your own "
            f"runs (ReproRecorder: {clean(', '.join(own))}); nothing was written",
            "move your runs' folders into a folder of their own and report it apart",
        )


def read_own_run(run_dir: Path, root: Path | None = None) -> RunRecord:
    """``run.json`` of ``run_dir`` as a RunRecord; a HarnessError naming the file and why when it
    cannot be read or is not a run record (the group it belongs to is in it, so a record that
    cannot be read cannot be shown as a failed repeat of its group). A link at ``run_dir``
    (below ``root``) is not followed."""
    try:
        return load_record(run_dir, root=root)
    except RecordError as exc:
        raise HarnessError(
            f"cannot read the run record {clean(run_dir / RECORD_FILE)}: {clean(exc.why)}; "
            "nothing was written",
            "rerun that training, or move its folder out of the folder reported",
        ) from exc


def _warn_unrecorded(root: Path, recorded: list[Path]) -> None:
    """Say which subfolders look like runs (losses.npy or weights.npy) but hold no run.json:
    a training that died before its record was written is left out, and the user should know."""
    for path in sorted(root.iterdir(), key=lambda p: p.name):
        if path in recorded or path.name.startswith(".") or not path.is_dir():
            continue
        if any((path / name).exists() for name in (LOSSES_FILE, WEIGHTS_FILE)):
            log.warning("%s: no %s (the run did not finish?): left out", clean(path), RECORD_FILE)


def own_runs(root: Path) -> list[OwnRun]:
    """The records of a folder without a manifest: every subfolder's, each ReproRecorder's.

    HarnessError when no subfolder holds a record (said apart when ``root`` is one run's own
    folder: a mistake that is easy to make), when some records are a matrix's runs (not
    ``external``), or when a record cannot be read or names no group."""
    dirs = record_dirs(root)
    _warn_unrecorded(root, dirs)
    if not dirs and ((root / RECORD_FILE).exists() or (root / RECORD_FILE).is_symlink()):
        raise HarnessError(
            f"{clean(root)} holds {RECORD_FILE} itself: this is one run; give its parent folder "
            f"({clean(root.parent)}), whose subfolders are the runs to compare",
            f"harness report {clean(root.parent)}",
        )
    if not dirs:
        raise HarnessError(
            f"{clean(root)} is not a results folder (no {layout.MANIFEST_FILE}, no "
            f"{layout.CELLS_DIR}/) and none of its subfolders holds a run record ({RECORD_FILE})",
            _HINT,
        )
    records = [(d, read_own_run(d, root)) for d in dirs]
    matrix = [d.name for d, r in records if not is_external(r.spec)]
    if matrix:
        own = [d.name for d, r in records if is_external(r.spec)]
        if own:
            raise HarnessError(
                f"{clean(root)} mixes records of your own runs (ReproRecorder: "
                f"{clean(', '.join(own))}) with runs of a matrix ({clean(', '.join(matrix))}); "
                "nothing was written",
                "report them apart: your runs' folders in one folder, `harness run`'s results "
                "folder as it was written",
            )
        raise HarnessError(
            f"{clean(root)} is not a results folder (no {layout.MANIFEST_FILE}) and its "
            f"subfolders' records ({clean(', '.join(matrix))}) are runs of a matrix, not "
            'ReproRecorder\'s (their spec has no "external": true)',
            _HINT,
        )
    out = []
    for d, record in records:
        name = record.spec.get("cell_name")
        if not isinstance(name, str) or not name:
            raise HarnessError(
                f"cannot read the run record {clean(d / RECORD_FILE)}: spec.cell_name is not a "
                "name (ReproRecorder's name=...); nothing was written",
                "rerun that training, or move its folder out of the folder reported",
            )
        out.append(OwnRun(d, record, name))
    return out


# ---------------------------------------------------------------- the report


def group_id(name: str) -> str:
    """A group's id: the first 12 hex of sha256 of its name (plot files stay apart even where
    two names are made the same file name)."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def group_settings(runs: list[OwnRun]) -> dict[str, Any]:
    """The settings every run of a group has (from their specs, only those of the settings
    table), as a matrix cell's: ``image`` is ``own runs`` and ``external`` true; a setting the
    runs disagree on is left out (it is in ``differences``)."""
    settings: dict[str, Any] = {"image": OWN_RUNS_IMAGE, "external": True}
    for key in NAMES:
        if key == "image" or not all(key in r.record.spec for r in runs):
            continue
        values = {value_text(r.record.spec[key]) for r in runs}
        if len(values) == 1:
            settings[key] = runs[0].record.spec[key]
    return settings


def analyze_group(root: Path, name: str, runs: list[OwnRun]) -> CellReport:
    """One group's verdict, as a matrix cell's, with what its runs differ in."""
    results = [run_result(run.dir, k, root=root) for k, run in enumerate(runs)]
    cell = ManifestCell(group_id(name), name, "", group_settings(runs))
    report = analyze_cell(cell, results)
    report.differences = differences([run.record for run in runs], results)
    if report.differences:
        report.detail += "; the runs differ in " + ", ".join(d.what for d in report.differences)
    return report


def _group_sentence(cell: CellReport) -> str:
    """One group in a sentence or two: its verdict, where it diverges, what its runs differ in."""
    n = len(cell.runs)
    runs = f"{n} run{'s' if n != 1 else ''}"
    if cell.verdict == REPRODUCES:
        text = f"{cell.name}: {runs} reproduce bit for bit."
    elif cell.verdict == DIVERGES:
        text = f"{cell.name}: {runs} diverge: {cell.detail.split('; the runs differ', 1)[0]}"
        d = cell.first_divergence
        if d is not None and d.max_abs_delta is not None:
            text += f", max |Δloss| {d.max_abs_delta:.3g}"
            text += f" ({d.max_ulps} ULPs)" if d.max_ulps is not None else ""
        w = cell.weights_divergence
        if w is not None and (d is None or w.step < d.step):
            text += f"; the weights differ from step {w.step}"
            text += f" ({w.parameter})" if w.parameter else ""
        text += "."
    else:
        text = f"{cell.name}: {runs}, no verdict: {cell.unknown_because}."
    if cell.differences:
        listed = "; ".join(describe_difference(d) for d in cell.differences)
        why = " (that can be why)" if cell.verdict == DIVERGES else ""
        text += f" Its runs differ in {listed}{why}."
    return text


def describe_groups(cells: list[CellReport]) -> str:
    """The summary of a folder of own runs: how many groups reproduce, then each group."""
    good = sum(c.verdict == REPRODUCES for c in cells)
    bad = sum(c.verdict == DIVERGES for c in cells)
    unknown = len(cells) - good - bad
    counts = [
        f"{good} reproduce{'s' if good == 1 else ''} bit for bit",
        f"{bad} diverge{'s' if bad == 1 else ''}",
    ]
    if unknown:
        counts.append(f"{unknown} {'has' if unknown == 1 else 'have'} no verdict")
    groups = f"{len(cells)} group{'s' if len(cells) != 1 else ''}"
    head = f"Of {groups} of your own runs, {', '.join(counts)}."
    return " ".join([head, *(_group_sentence(c) for c in cells)])


def analyze_own_runs(root: Path, runs: list[OwnRun]) -> Report:
    """The report of a folder of own runs: one cell per group (``cell_name``), its repeats in
    folder-name order."""
    groups: dict[str, list[OwnRun]] = {}
    for run in runs:
        groups.setdefault(run.name, []).append(run)
    cells = [analyze_group(root, name, members) for name, members in groups.items()]
    return Report(
        name=root.name,
        root=root,
        cells=cells,
        summaries={OWN_RUNS_IMAGE: describe_groups(cells)},
        comparisons=[],
        costs=summaries.costs(cells),
        failures=summaries.failures(cells),
        images=summaries.images({OWN_RUNS_IMAGE: cells}),
        source=OWN_RUNS,
        machines=summaries.machines(cells),
    )
