"""The report's data: what ``analyze`` finds, before any format renders it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.contract.machine import Machine
from harness.contract.record import RunError
from harness.report.answer_data import Answer
from harness.report.machines import MachineInfo

if TYPE_CHECKING:
    import numpy as np

#: A field's metadata key: False keeps the field out of report.json (``flatten.to_jsonable``).
EXPORTED = "exported"


class _Word(str, enum.Enum):
    """An enum of the words the report writes: a ``str`` that equals, hashes, prints and
    serializes (JSON, CSV) as its value, so the report's files hold the words they always did."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    def __hash__(self) -> int:
        return hash(self.value)


class ResultStatus(_Word):
    """``RunResult.status``: what the report makes of a run, after checking its files."""

    OK = "ok"
    FAILED = "failed"
    MISSING = "missing"
    CORRUPT = "corrupt"


OK, FAILED, MISSING, CORRUPT = (
    ResultStatus.OK,
    ResultStatus.FAILED,
    ResultStatus.MISSING,
    ResultStatus.CORRUPT,
)


@dataclass(frozen=True, kw_only=True)
class CheckError:
    """Why the report holds a run to be not ok that its record does not name: its files do not
    bear the record out (``corrupt``), it made no step (``no_steps``), or its losses are not
    finite (``nonfinite``). report.json shows it as the run's ``error``, as it does a record's
    ``RunError``."""

    type: str
    message: str
    log_tail: str = ""


class Verdict(_Word):
    """``CellReport.verdict``."""

    REPRODUCES = "reproduces"
    DIVERGES = "diverges"
    UNKNOWN = "unknown"


REPRODUCES, DIVERGES, UNKNOWN = Verdict.REPRODUCES, Verdict.DIVERGES, Verdict.UNKNOWN
VERDICTS = tuple(Verdict)


class ReportSource(_Word):
    """``Report.source``: a results folder of ``harness run`` (its cells), or a folder of the
    user's own runs (run records ``harness.lightning.ReproRecorder`` wrote;
    harness/report/own_runs.py)."""

    MATRIX = "matrix"
    OWN_RUNS = "own_runs"


MATRIX, OWN_RUNS = ReportSource.MATRIX, ReportSource.OWN_RUNS


@dataclass(kw_only=True)
class RunResult:
    """One run as the report sees it: its record, checked against its losses.

    ``status`` is ``ok`` only for a record that says ok, whose ``losses.npy`` loads, has the
    recorded shape and hashes to ``digests.trajectory``, with at least one step and finite
    losses. A record that says ok but fails the files check is ``corrupt``; one with zero steps
    or a loss that is NaN or infinite is ``failed`` (error type ``no_steps`` / ``nonfinite``).
    ``recorded`` is what run.json itself says (None: no readable record); ``problem`` says in a
    few words why the run is not ok. ``copy`` names the ``conflicts/<k>-<input>`` folder of a
    copy that ``harness merge`` set aside (None: the run in ``cells/``).
    """

    repeat: int
    status: ResultStatus
    run_dir: Path
    path: str = ""  # the run folder, relative to the results folder
    recorded: str | None = None  # ok | failed | None
    problem: str | None = None
    copy: str | None = None
    trajectory: str | None = None
    init_weights: str | None = None
    final_weights: str | None = None
    steps: int = 0
    ranks: int = 1
    epoch_starts: list[tuple[int, int]] = field(default_factory=list)  # (epoch, first_step)
    val_acc: float | None = None
    #: the last epoch's validation loss (None: no epoch was validated)
    val_loss: float | None = None
    seconds_per_epoch: float | None = None
    #: the record's error, or what the report found wrong with a record that says ok
    error: RunError | CheckError | None = None
    image_digest: str | None = None
    image_id: str | None = None
    torch: str | None = None
    #: (name, SM count) of each GPU the run saw, from its provenance (SM count None in records
    #: written before it was recorded); empty for a CPU run
    gpus: list[tuple[str | None, int | None]] = field(default_factory=list)
    #: the record's ``provenance.determinism``: the flags and the cuBLAS workspace in force
    #: (None: the record has none, written before it existed or by a run that failed early)
    determinism: dict[str, Any] | None = None
    #: the record's ``weights``: the columns of its ``weights.npy`` and their hash kind (None:
    #: the run recorded no per-step parameter hashes)
    weights_parameters: list[str] | None = None
    weights_hash: str | None = None
    #: the record's ``provenance.machine`` (None: written before machines were recorded, or by
    #: a run that failed before it was read); report.json keeps only its fingerprint
    machine: Machine | None = None
    #: the record's ``provenance.user_seed``: the seed the user's build function set torch's
    #: generator to (None: it did not, or the record predates the field)
    user_seed: int | None = None
    #: ``losses.npy`` as the report read and verified it, once (harness/report/folder_runs.py),
    #: for the divergences and the plots; None where it was not read (a run that is not ok).
    #: Not part of the report's files (``EXPORTED``).
    losses: np.ndarray | None = field(
        default=None, repr=False, compare=False, metadata={EXPORTED: False}
    )

    def __post_init__(self) -> None:
        self.status = ResultStatus(self.status)


@dataclass(kw_only=True)
class Divergence:
    """Where a trajectory first differs from the reference one (0-based epoch, batch, step)."""

    repeat: int
    step: int
    epoch: int | None
    batch: int | None
    max_abs_delta: float | None
    max_ulps: int | None
    shape_differs: bool = False
    copy: str | None = None  # the differing run is a merge conflict copy (its folder)


@dataclass(kw_only=True)
class WeightsDivergence:
    """The first step after which a repeat's parameters differ from the reference repeat's
    (``weights.npy``, bit for bit), and the first parameter that differs there. It can come
    steps before the losses' first divergence: a difference in the low bits of a weight takes
    a while to reach a float32 loss."""

    repeat: int
    step: int
    epoch: int | None
    batch: int | None
    parameter: str | None
    copy: str | None = None  # the differing run is a merge conflict copy (its folder)


@dataclass(kw_only=True)
class RunDifference:
    """Something the runs of one group of own runs differ in (a flag, the thread count, torch,
    CUDA, cuDNN, the GPU...): ``what`` names it, ``values`` maps each run folder (relative to
    the folder reported) to its value; runs whose record does not say are left out."""

    what: str
    values: dict[str, Any]


@dataclass(kw_only=True)
class CellReport:
    """One cell's verdict (harness/report/verdicts.py): ``verdict`` is ``reproduces``,
    ``diverges`` or ``unknown``; ``reproducible`` is True, False or None (None exactly when
    unknown); ``unknown_because`` says why a cell has no verdict; ``detail`` says the verdict in
    words. ``runs`` holds one run per repeat (those in ``cells/``), ``conflict_copies`` the
    other copies ``harness merge`` kept; the verdict counts both."""

    id: str
    name: str
    settings: dict[str, Any]
    repeats: int
    ok_runs: int
    distinct_trajectories: int
    verdict: Verdict
    reproducible: bool | None
    unknown_because: str | None
    first_divergence: Divergence | None
    divergences: list[Divergence]
    init_equal: bool | None
    final_equal: bool | None
    val_acc_mean: float | None
    val_acc_sd: float | None
    seconds_per_epoch: float | None
    detail: str
    runs: list[RunResult] = field(default_factory=list)
    conflict_copies: list[RunResult] = field(default_factory=list)
    plot: str | None = None
    #: where the repeats' parameters first differ (``weights.npy``); None when they do not,
    #: or when they were not compared (``weights_compared``)
    weights_divergence: WeightsDivergence | None = None
    #: True when every trusted run recorded comparable parameter hashes and they were compared
    #: (only where the runs' digests disagree: a cell that reproduces has equal weights)
    weights_compared: bool = False
    #: a group of own runs only: what its runs differ in, from their records (empty for a
    #: matrix's cells, whose runs share their settings by construction)
    differences: list[RunDifference] = field(default_factory=list)
    #: set when its trusted runs ran on different machines: how they differ (a divergence
    #: between them may be the machines', not the settings')
    machines_differ: str | None = None
    #: a control cell (``control: true``, ``harness run --control``): one per image that must
    #: not reproduce (harness/report/controls.py)
    control: bool = False

    def __post_init__(self) -> None:
        self.verdict = Verdict(self.verdict)


@dataclass(kw_only=True)
class Comparison:
    """The same settings across one axis (image or devices): are the trajectories equal?"""

    axis: str
    settings: dict[str, Any]
    cells: list[tuple[str, str]]  # (axis value, cell name)
    equal: bool | None
    divergence: Divergence | None
    #: set when the compared runs ran on GPUs of different models or SM counts: which ones
    gpus_differ: str | None = None
    #: set when the compared runs ran on different machines (CPUs, code paths): how they differ
    machines_differ: str | None = None


@dataclass(kw_only=True)
class Cost:
    cell: str
    twin: str
    seconds_per_epoch: float | None
    twin_seconds_per_epoch: float | None

    @property
    def ratio(self) -> float | None:
        if not self.seconds_per_epoch or not self.twin_seconds_per_epoch:
            return None
        return self.seconds_per_epoch / self.twin_seconds_per_epoch


@dataclass(kw_only=True)
class Failure:
    """A run that is not ok: failed, missing, corrupt (``path``: its folder in the results)."""

    cell: str
    repeat: int
    type: str
    message: str
    log_tail: str
    path: str = ""


@dataclass(kw_only=True)
class ConflictCopy:
    """A copy of a run that ``harness merge`` kept under ``conflicts/`` beside the one in
    ``cells/``: ``same_result`` is True when both are ok with the same trajectory and final
    weights, False when both are ok and differ, None when either is not ok."""

    cell: str
    repeat: int
    path: str  # the copy's folder, relative to the results folder
    kept: str  # the run in cells/, relative to the results folder
    status: ResultStatus
    kept_status: ResultStatus
    same_result: bool | None
    problem: str | None = None


@dataclass(kw_only=True)
class ImageInfo:
    """What each image of the matrix was, as its run records say: the digest pins it."""

    image: str
    digests: list[str]  # provenance.image_digest of its ok runs (one, unless it changed)
    image_ids: list[str]
    torch: list[str]
    cells: int


@dataclass(kw_only=True)
class DiagnosisEntry:
    """One ``harness diagnose`` of the folder (``diagnoses/<name>/diagnosis.json``)."""

    name: str
    title: str
    cells: list[str]  # the ids of the cells it compared
    kind: str
    sentences: list[str]
    op: dict[str, Any] | None
    path: str  # diagnosis.json, relative to the results folder

    @property
    def anchor(self) -> str:
        return f"diagnosis-{self.name}"


@dataclass(kw_only=True)
class Report:
    name: str
    root: Path
    cells: list[CellReport]
    summaries: dict[str, str]
    comparisons: list[Comparison]
    costs: list[Cost]
    failures: list[Failure]
    images: list[ImageInfo] = field(default_factory=list)
    conflicts: list[ConflictCopy] = field(default_factory=list)
    #: what differs between merged inputs made by different code (``harness merge
    #: --allow-mixed``; the manifest's ``merge.mixed``), one line each
    mixed_code: list[str] = field(default_factory=list)
    #: image -> its verdict grid's heatmap (``plots/grid-<image>.png``, relative to the
    #: folder), where one was drawn (harness/report/heatmap.py)
    grid_plots: dict[str, str] = field(default_factory=dict)
    #: the diagnoses ``harness diagnose`` wrote into the folder, oldest name first
    diagnoses: list[DiagnosisEntry] = field(default_factory=list)
    #: ``matrix`` (a results folder) or ``own_runs`` (a folder of ReproRecorder's records)
    source: ReportSource = MATRIX
    #: the machines that ran the runs (harness/report/machines.py), in the order first seen
    machines: list[MachineInfo] = field(default_factory=list)
    #: what changes the bits, the recipe per image, the noise against the seeds, the controls
    #: (harness/report/answer_data.py)
    answer: Answer = field(default_factory=Answer)

    def __post_init__(self) -> None:
        self.source = ReportSource(self.source)
