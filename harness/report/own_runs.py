"""A folder of your own runs: the report of run records that ``harness.lightning.ReproRecorder``
wrote from the user's own ``Trainer``, outside any matrix.

Such a folder has no manifest: each subfolder (one level, sorted by name) holds one run's
``run.json``, ``losses.npy`` and ``weights.npy``, and the record's spec says ``"external":
true`` and names the run's group (``cell_name``). Runs with the same name are the repeats of
one group, in folder-name order (repeat index = position), and each group becomes one
``CellReport`` through the matrix report's own code: the runs checked against their files
(runs.py), the verdict and the first divergence (verdicts.py, trajectories.py), the failures
and images (summaries.py). What a group adds is what its runs differ in (``differences``: the
flags, threads, torch, CUDA, cuDNN, the GPU...), since that is usually why they diverge.

A folder that is neither a results folder nor holds such records, one that mixes them with a
matrix's runs, and a record that cannot be read are a ``HarnessError`` (exit 2) that names the
folder or file and why, before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.contract.files import (
    LOSSES_FILE,
    RECORD_FILE,
    WEIGHTS_FILE,
    UnsafeFile,
    read_regular,
)
from harness.contract.machine import limits_text
from harness.contract.record import RECORD_FORMAT_VERSION, RunRecord
from harness.contract.settings import NAMES
from harness.errors import HarnessError
from harness.report import summaries
from harness.report.folder_runs import gpu_kinds, run_result
from harness.report.inert_text import clean
from harness.report.report_data import (
    DIVERGES,
    OWN_RUNS,
    REPRODUCES,
    CellReport,
    Report,
    RunDifference,
    RunResult,
)
from harness.report.verdicts import analyze_cell
from harness.results import layout
from harness.results.run_reader import validate_record

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


def _peek_spec(run_dir: Path) -> dict[str, Any]:
    """The spec of a run.json read leniently (a results folder's checks; nothing raised)."""
    try:
        data = json.loads(read_regular(run_dir / RECORD_FILE).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    spec = data.get("spec") if isinstance(data, dict) else None
    return spec if isinstance(spec, dict) else {}


def refuse_own_runs_in(root: Path) -> None:
    """A results folder (it has a manifest or cells/) whose subfolders also hold records of own
    runs is refused: the report would show one and silently drop the other."""
    own = [d.name for d in record_dirs(root) if is_external(_peek_spec(d))]
    if own:
        raise HarnessError(
            f"{clean(root)} mixes a results folder of `harness run` with records of your own "
            f"runs (ReproRecorder: {clean(', '.join(own))}); nothing was written",
            "move your runs' folders into a folder of their own and report it apart",
        )


def read_own_run(run_dir: Path) -> RunRecord:
    """``run.json`` of ``run_dir`` as a RunRecord; a HarnessError naming the file and why when it
    cannot be read or is not a run record (the group it belongs to is in it, so a record that
    cannot be read cannot be shown as a failed repeat of its group)."""
    path = run_dir / RECORD_FILE
    try:
        data = json.loads(read_regular(path).decode("utf-8"))
    except UnsafeFile as exc:
        why = exc.strerror
    except OSError as exc:
        why = f"unreadable ({exc.strerror or exc})"
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        why = f"not valid JSON ({exc})"
    else:
        try:
            return validate_record(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"])) or "record"
            why = f"not a run record of format {RECORD_FORMAT_VERSION} ({where}: {first['msg']})"
    raise HarnessError(
        f"cannot read the run record {clean(path)}: {clean(why)}; nothing was written",
        "rerun that training, or move its folder out of the folder reported",
    )


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
    records = [(d, read_own_run(d)) for d in dirs]
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


# ---------------------------------------------------------------- what the runs differ in


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


#: What a reader returns where the record does not say (no evidence either way).
NOT_SAID: Any = object()


def _spec(key: str) -> Callable[[RunRecord], Any]:
    """A key of the spec; null is a value there (``seed: null``: no seed was given)."""
    return lambda r: r.spec.get(key, NOT_SAID)


def _provenance(key: str) -> Callable[[RunRecord], Any]:
    """A field of the provenance; null there is unknown (a run that failed early)."""

    def read(record: RunRecord) -> Any:
        value = getattr(record.provenance, key)
        return NOT_SAID if value is None else value

    return read


def _threads(record: RunRecord) -> Any:
    """The torch thread count: the spec's (read from torch at fit start), else provenance's."""
    value = record.spec.get("threads")
    return _provenance("threads")(record) if value is None else value


def _gpus(record: RunRecord) -> Any:
    """The GPUs a run saw, each as model and SM count; ``none`` for a run that recorded its
    provenance and saw none (a record without provenance, torch unknown, says nothing)."""
    if not record.provenance.gpus:
        return "none" if record.provenance.torch is not None else NOT_SAID
    return ", ".join(
        f"{name or 'unnamed GPU'}" + (f" ({sms} SMs)" if sms is not None else "")
        for name, sms in gpu_kinds(record.provenance.gpus)
    )


def _machine(key: str) -> Callable[[RunRecord], Any]:
    """A field of ``provenance.machine``; a record without one says nothing. The ISA limits
    are those set (``none`` where none is)."""

    def read(record: RunRecord) -> Any:
        machine = record.provenance.machine
        if machine is None:
            return NOT_SAID
        if key == "isa_limits":
            return limits_text(machine.isa_limits)
        value = getattr(machine, key)
        return NOT_SAID if value is None else value

    return read


def _in_force(key: str) -> Callable[[RunRecord], Any]:
    """A flag of ``provenance.determinism`` (read back from torch when fit returned); the cuBLAS
    workspace ``unset`` where the record has the flags but no variable."""

    def read(record: RunRecord) -> Any:
        flags = record.provenance.determinism
        if flags is None:
            return NOT_SAID
        value = getattr(flags, key)
        return "unset" if value is None and key == "cublas_workspace_config" else value

    return read


#: What the runs of a group are compared in, in the order a reader checks them: the flags and
#: threads first (the usual cause), then the software, then the hardware. A value a record does
#: not hold (a key its spec lacks, a provenance field left null) is no evidence either way, and
#: is left out; a null in the spec is a value (``seed: null``: no seed).
DIFFERENCE_FIELDS: tuple[tuple[str, Callable[[RunRecord], Any]], ...] = (
    ("cudnn_deterministic", _spec("cudnn_deterministic")),
    ("cudnn_benchmark", _spec("cudnn_benchmark")),
    ("deterministic_algorithms", _spec("deterministic_algorithms")),
    ("matmul_allow_tf32", _in_force("matmul_allow_tf32")),
    ("cudnn_allow_tf32", _in_force("cudnn_allow_tf32")),
    ("cublas_workspace_config", _in_force("cublas_workspace_config")),
    ("threads", _threads),
    ("seed", _spec("seed")),
    ("entry", _spec("entry")),
    ("params", _spec("params")),
    ("ranks", lambda r: r.ranks),
    ("torch", _provenance("torch")),
    ("cuda", _provenance("cuda")),
    ("cudnn", _provenance("cudnn")),
    ("nccl", _provenance("nccl")),
    ("lightning", _provenance("lightning")),
    ("python", _provenance("python")),
    ("numpy", _provenance("numpy")),
    ("gpus", _gpus),
    ("gpu_driver", _provenance("gpu_driver")),
    ("cpu_model", _provenance("cpu_model")),
    ("cpu_capability", _machine("cpu_capability")),
    ("isa_limits", _machine("isa_limits")),
    ("machine", _machine("fingerprint")),
)


def differences(runs: list[OwnRun], results: list[RunResult]) -> list[RunDifference]:
    """What the runs of one group differ in, each run named by its folder."""
    out = []
    for what, read in DIFFERENCE_FIELDS:
        values = {
            res.path: value
            for run, res in zip(runs, results, strict=True)
            if (value := read(run.record)) is not NOT_SAID
        }
        if len({_text(v) for v in values.values()}) > 1:
            out.append(RunDifference(what, values))
    return out


def values_text(values: dict[str, Any]) -> str:
    """``1 (a, c), 2 (b)``: each value once, with the run folders that had it."""
    by_value: dict[str, list[str]] = {}
    for path, value in values.items():
        by_value.setdefault(_text(value), []).append(path)
    return ", ".join(f"{v} ({', '.join(paths)})" for v, paths in by_value.items())


def describe_difference(diff: RunDifference) -> str:
    """``threads: 1 (a, c), 2 (b)``."""
    return f"{diff.what}: {values_text(diff.values)}"


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
        values = {_text(r.record.spec[key]) for r in runs}
        if len(values) == 1:
            settings[key] = runs[0].record.spec[key]
    return settings


def analyze_group(root: Path, name: str, runs: list[OwnRun]) -> CellReport:
    """One group's verdict, as a matrix cell's, with what its runs differ in."""
    results = [run_result(run.dir, k, root=root) for k, run in enumerate(runs)]
    cell = layout.ManifestCell(group_id(name), name, "", group_settings(runs))
    report = analyze_cell(cell, results)
    report.differences = differences(runs, results)
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
        root.name,
        root,
        cells,
        {OWN_RUNS_IMAGE: describe_groups(cells)},
        [],  # no image or GPU-count axis to compare across
        summaries.costs(cells),
        summaries.failures(cells),
        summaries.images({OWN_RUNS_IMAGE: cells}),
        source=OWN_RUNS,
        machines=summaries.machines(cells),
    )
