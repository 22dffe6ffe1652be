"""``run_matrix``: the library behind ``harness run``. Plan, resume, schedule, record, report.

It never prints and never exits: it returns a RunSummary whose ``exit_code`` the CLI uses, and
it raises HarnessError for input it cannot use.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import harness
from harness.contract import RunSpec
from harness.executors import (
    ExecutorOptions,
    RunOutcome,
    RunStatus,
    Slot,
    choose_executor,
    get_executor_class,
)
from harness.matrix import Cell, LoadedMatrix, load_matrix
from harness.progress import make_progress
from harness.schedule import Job, SlotPool, check_fits, detect_host, need_of, run_jobs
from harness.store import ResultsDir, default_out, record_failure

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_RUNS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def default_data_dir() -> Path | None:
    """HARNESS_MNIST_DIR, else ../shared/data/mnist beside the checkout, else None (download)."""
    env = os.environ.get("HARNESS_MNIST_DIR")
    if env:
        return Path(env).resolve()
    beside = Path(harness.__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    return beside if beside.is_dir() else None


@dataclass
class RunConfig:
    """Everything ``harness run`` takes, as one object."""

    matrix: Path
    out: Path | None = None
    executor: str = "auto"
    progress: str | None = None
    gpus: str | None = None
    data_dir: Path | None = None
    python: str | None = None
    formats: tuple[str, ...] = ("md", "json", "csv")
    plots: bool = True
    cancel: threading.Event = field(default_factory=threading.Event)
    executor_extra: dict[str, str] = field(default_factory=dict)
    progress_stream: TextIO | None = None


@dataclass
class PlannedRun:
    cell: Cell
    spec: RunSpec
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.cell.name} #{self.spec.repeat}"


@dataclass
class RunSummary:
    out: Path
    total: int
    skipped: int
    statuses: Counter[str]
    interrupted: bool
    reports: list[Path] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        bad = sum(n for s, n in self.statuses.items() if s not in ("ok", "skipped"))
        return EXIT_RUNS_FAILED if bad else EXIT_OK


def plan_runs(matrix: LoadedMatrix, store: ResultsDir, data_dir: Path | None) -> list[PlannedRun]:
    """Every repeat of every cell, in cell order then repeat order."""
    return [
        PlannedRun(cell, cell.spec(k, str(data_dir) if data_dir else None), store.run_dir(cell, k))
        for cell in matrix.cells
        for k in range(matrix.model.run.repeats)
    ]


def run_matrix(config: RunConfig) -> RunSummary:
    matrix = load_matrix(config.matrix)
    out = config.out or default_out(matrix.model.name)
    store = ResultsDir(out)
    data_dir = config.data_dir or default_data_dir()
    runs = plan_runs(matrix, store, data_dir)
    host = detect_host(config.gpus)
    check_fits([r.spec for r in runs], host)
    name = choose_executor(config.executor, {c.settings["image"] for c in matrix.cells})
    options = ExecutorOptions(
        run_label=f"{matrix.model.name}-{matrix.digest[:12]}",
        data_dir=data_dir,
        python=config.python or _default_python(),
        extra=config.executor_extra,
    )
    executor = get_executor_class(name)(options)

    store.lock()
    try:
        store.write_manifest(matrix)
        images = executor.prepare([r.spec for r in runs])
        for r in runs:
            provenance = images.get(r.spec.image) or {}
            if provenance:
                r.spec = r.spec.replace(
                    image_digest=provenance.get("image_digest"), image_id=provenance.get("image_id")
                )
        todo = [r for r in runs if not store.finished(r.run_dir, r.spec)]
        summary = _execute(config, matrix, store, executor, runs, todo, host)
    finally:
        store.unlock()
    if config.formats:
        from harness.report import write_reports

        summary.reports = write_reports(out, config.formats, plots=config.plots)
    return summary


def _default_python() -> str:
    from harness.executors.local import default_python

    return default_python()


def _execute(config, matrix, store, executor, runs, todo, host) -> RunSummary:  # noqa: ANN001
    progress = make_progress(config.progress, config.progress_stream)
    per_cell = Counter(r.cell.id for r in runs)
    skipped = Counter(r.cell.id for r in runs) - Counter(r.cell.id for r in todo)
    statuses: Counter[str] = Counter(skipped=len(runs) - len(todo))
    progress.start(dict(per_cell), dict(skipped))
    timeout_s = matrix.model.run.timeout_s

    def work(run: PlannedRun, slot: Slot) -> RunOutcome:
        store.prepare_run(run.run_dir, run.spec)
        key = f"{run.cell.id}/{run.spec.repeat}"
        progress.run_started(key, run.cell.id, run.label, run.run_dir)
        outcome = executor.run(
            run.spec, slot, run.run_dir, timeout_s=timeout_s, cancel=config.cancel
        )
        _finish(run, outcome)
        return outcome

    def _finish(run: PlannedRun, outcome: RunOutcome) -> None:
        if outcome.ok:
            from harness.record import RecordError, load_record

            try:
                if load_record(run.run_dir).ok:
                    return
                outcome.status, outcome.message = RunStatus.FAILED, "the run recorded a failure"
            except RecordError as exc:
                outcome.status, outcome.message = RunStatus.FAILED, f"exited 0 but {exc}"
        error_type = {
            RunStatus.TIMEOUT: "timeout",
            RunStatus.ABORTED: "killed",
        }.get(outcome.status, outcome.extra.get("error_type", "failed"))
        record_failure(run.run_dir, run.spec, error_type, outcome.message, outcome.seconds)

    def done(run: PlannedRun, result: RunOutcome | BaseException) -> None:
        if isinstance(result, BaseException):
            status, seconds, message = "failed", 0.0, f"harness error: {result}"
            try:
                record_failure(run.run_dir, run.spec, "failed", message)
            except Exception:  # noqa: BLE001 - already logged by the scheduler
                log.exception("could not record the failure of %s", run.label)
        else:
            status, seconds, message = result.status.value, result.seconds, result.message
        statuses[status] += 1
        progress.run_finished(
            f"{run.cell.id}/{run.spec.repeat}", run.cell.id, run.label, status, seconds, message
        )

    jobs = [Job(r, need_of(r.spec)) for r in todo]
    try:
        run_jobs(jobs, SlotPool(host), work, config.cancel, on_done=done, on_tick=progress.tick)
    finally:
        executor.cleanup()
        progress.close()
    return RunSummary(
        store.root, len(runs), len(runs) - len(todo), statuses, interrupted=config.cancel.is_set()
    )
