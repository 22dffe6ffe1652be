"""What ``harness run`` takes (``RunConfig``), the runs it plans (``PlannedRun``,
``plan_runs``) and what it returns (``RunSummary``, with the user's ``WorkloadFailure``): the
types shared by planning, executing and the command line."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from harness.contract import LOG_FILE, RunSpec
from harness.executors import RunStatus
from harness.exit_codes import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNS_FAILED
from harness.matrix import Cell, LoadedMatrix
from harness.report.exporters import REPORT_FORMATS
from harness.results.store import ResultsDir
from harness.run.shard import ShardSpec

if TYPE_CHECKING:
    from harness.report.report_data import Report


@dataclass
class RunConfig:
    """Everything ``harness run`` takes besides the executor, as one object."""

    matrix: LoadedMatrix
    out: Path | None = None
    progress: str | None = None
    gpus: str | None = None
    formats: tuple[str, ...] = REPORT_FORMATS
    plots: bool = True
    cancel: threading.Event = field(default_factory=threading.Event)
    progress_stream: TextIO | None = None
    #: ``harness run --shard I/N``: run only that shard's cells (harness/run/shard.py).
    shard: ShardSpec | None = None
    #: where the notices of runs set aside go, whatever ``progress`` says (None: stderr)
    notice_stream: TextIO | None = None


@dataclass
class PlannedRun:
    cell: Cell
    spec: RunSpec
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.cell.name} #{self.spec.repeat}"


@dataclass(frozen=True)
class WorkloadFailure:
    """A run whose record says the user's training failed (``error.type`` in
    ``USER_WORKLOAD_ERRORS``): which run, the error's type and message, where its record is."""

    label: str
    type: str
    message: str
    run_dir: Path

    def text(self) -> str:
        """What ``harness run`` prints (no traceback: the record keeps it)."""
        return f"{self.label}: {self.type}: {self.message}"

    def hint(self, out: Path) -> str:
        return (
            f"fix your training code (the run's log: {self.run_dir / LOG_FILE}), then rerun the "
            f"same command with --out {out}: finished runs are kept and not run again"
        )


@dataclass
class RunSummary:
    """``skipped``: runs already done (resume); ``statuses``: the runs started, counted by their
    ``RunStatus`` value; ``set_aside``: finished runs moved to ``superseded`` (the folder) to be
    run again."""

    out: Path
    total: int
    skipped: int
    statuses: Counter[str]
    interrupted: bool
    reports: list[Path] = field(default_factory=list)
    #: the report written at the end (None: ``--no-report``), for the terminal summary
    report: Report | None = None
    set_aside: int = 0
    superseded: Path | None = None
    #: the first run that failed through the user's own training (``USER_WORKLOAD_ERRORS``):
    #: no run was started after it; None when none did
    workload_error: WorkloadFailure | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.workload_error is not None:
            return EXIT_BAD_INPUT
        bad = sum(n for s, n in self.statuses.items() if s != RunStatus.OK.value)
        return EXIT_RUNS_FAILED if bad else EXIT_OK


def plan_runs(
    matrix: LoadedMatrix, store: ResultsDir, cells: list[Cell] | None = None
) -> list[PlannedRun]:
    """Every repeat of every cell (default: all of the matrix's), in cell then repeat order."""
    return [
        PlannedRun(cell, cell.spec(k), store.run_dir(cell, k))
        for cell in (matrix.cells if cells is None else cells)
        for k in range(matrix.model.run.repeats)
    ]
