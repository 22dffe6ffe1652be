"""The planned runs through the scheduler: each run started on its slot, its outcome checked
against its record (a failure record where the run left none), the progress told, and the
matrix stopped early where the disk is full (every later write would fail) or the user's own
training failed (every other run of it would fail the same way)."""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness.contract import ErrorType
from harness.contract.record import USER_WORKLOAD_ERRORS, RunRecord
from harness.errors import StoreError
from harness.executors import Executor, RunOutcome, RunStatus, Slot
from harness.results.store import ResultsDir, record_failure
from harness.run.matrix_plan import PlannedRun, RunConfig, RunSummary, WorkloadFailure
from harness.run.progress import Progress, make_progress
from harness.run.schedule import Host, Job, SlotPool, need_of, run_jobs

log = logging.getLogger(__name__)

#: errno values that mean "the results disk is full": the matrix stops, finished runs stay.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass
class MatrixExecution:
    """What the scheduler's threads share while the runs go: the counts, a full disk seen, the
    user's training failures, and ``stop`` (start no more runs; those in flight finish)."""

    config: RunConfig
    store: ResultsDir
    executor: Executor
    progress: Progress
    statuses: Counter[str] = field(default_factory=Counter)
    full: list[OSError] = field(default_factory=list)
    user_failures: list[WorkloadFailure] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    failures_lock: threading.Lock = field(default_factory=threading.Lock)

    def work(self, run: PlannedRun, slot: Slot) -> RunOutcome:
        """One run; a full disk (raised, or said by the workload) cancels every later start."""
        try:
            outcome = self._run_one(run, slot)
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            exc.filename = exc.filename or str(run.run_dir)
            self.full.append(exc)
            outcome = RunOutcome(RunStatus.FAILED, 0.0, None, f"disk full at {exc.filename}")
        else:
            if outcome.ok or not _says_disk_full(run.run_dir, outcome):
                return outcome
            self.full.append(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run.run_dir)))
        self.config.cancel.set()  # start nothing more: every later write would fail too
        return outcome

    def _run_one(self, run: PlannedRun, slot: Slot) -> RunOutcome:
        self.store.prepare_run(run.run_dir, run.spec)
        key = f"{run.cell.id}/{run.spec.repeat}"
        self.progress.run_started(key, run.cell.id, run.label, run.run_dir)
        outcome = self.executor.run(
            run.spec,
            slot,
            run.run_dir,
            timeout_s=self.config.matrix.model.run.timeout_s,
            cancel=self.config.cancel,
        )
        record = _check_outcome(run, outcome)  # run.json read once, or as written
        failure = _user_workload_failure(run, record)
        if failure is not None:
            with self.failures_lock:
                self.user_failures.append(failure)
            self.stop.set()  # every other run of the user's training would fail the same way
        return outcome

    def done(self, run: PlannedRun, result: RunOutcome | BaseException) -> None:
        """Count the run and tell the progress; a harness error gets a failure record."""
        if isinstance(result, BaseException):
            status, seconds, message = RunStatus.FAILED.value, 0.0, f"harness error: {result}"
            try:
                if not isinstance(result, StoreError):  # a link at the run folder: write nothing
                    record_failure(run.run_dir, run.spec, ErrorType.FAILED, message)
            except Exception:  # the scheduler has logged the harness error already
                log.exception("could not record the failure of %s", run.label)
        else:
            status, seconds, message = result.status.value, result.seconds, result.message
        self.statuses[status] += 1
        self.progress.run_finished(
            f"{run.cell.id}/{run.spec.repeat}", run.cell.id, run.label, status, seconds, message
        )


def execute_runs(
    config: RunConfig,
    store: ResultsDir,
    executor: Executor,
    runs: list[PlannedRun],
    todo: list[PlannedRun],
    host: Host,
) -> RunSummary:
    """Run ``todo`` (of ``runs``, the rest reused) on ``host``'s slots; ``executor.cleanup()``
    and the progress's close run whatever happens. A full disk is raised at the end, once every
    run in flight has finished."""
    progress = make_progress(config.progress, config.progress_stream)
    per_cell = Counter(r.cell.id for r in runs)
    skipped = Counter(r.cell.id for r in runs) - Counter(r.cell.id for r in todo)
    progress.start(dict(per_cell), dict(skipped))
    execution = MatrixExecution(config, store, executor, progress)
    jobs = [Job(r, need_of(r.spec)) for r in todo]
    try:
        run_jobs(
            jobs,
            SlotPool(host),
            execution.work,
            config.cancel,
            on_done=execution.done,
            on_tick=progress.tick,
            stop=execution.stop,
        )
    finally:
        executor.cleanup()
        progress.close()
    if execution.full:
        raise execution.full[0]  # the runner's _disk_full_stops turns it into the user's error
    return RunSummary(
        store.root,
        len(runs),
        len(runs) - len(todo),
        execution.statuses,
        interrupted=config.cancel.is_set(),
        workload_error=execution.user_failures[0] if execution.user_failures else None,
    )


def _check_outcome(run: PlannedRun, outcome: RunOutcome) -> RunRecord:
    """An ok outcome must have an ok record; any other gets a failed record (``run.json``).
    The run's record, as read (once) or as written, is returned."""
    record: RunRecord | None = None
    if outcome.ok:
        from harness.results.run_reader import RecordError, load_record

        try:
            record = load_record(run.run_dir)
            if record.ok:
                return record
            outcome.status, outcome.message = RunStatus.FAILED, "the run recorded a failure"
        except RecordError as exc:
            outcome.status, outcome.message = RunStatus.FAILED, f"exited 0 but {exc}"
    error_type = {
        RunStatus.TIMEOUT: ErrorType.TIMEOUT,
        RunStatus.ABORTED: ErrorType.KILLED,
    }.get(outcome.status, outcome.error_type or ErrorType.FAILED)
    record = record_failure(
        run.run_dir,
        run.spec,
        error_type,
        outcome.message,
        outcome.seconds,
        # a run the host stopped (timeout, interrupt) keeps the host's error; a run that died
        # is named by the DDP rank that failed first, if one wrote its error
        first_rank_error=outcome.status is RunStatus.FAILED,
        known_record=record,
    )
    _add_recorded_error(record, outcome)
    return record


def _add_recorded_error(record: RunRecord, outcome: RunOutcome) -> None:
    """Show what the workload recorded (e.g. a DataError naming the MNIST file), not only its
    exit code, in the progress line."""
    error = record.error
    said = outcome.message
    if error is None or not error.message or error.message in said:
        return
    if said and error.message.startswith(said):  # the host's own words, e.g. "(after writing
        return  # its record)" added: not a second error
    outcome.message = f"{said}: {error.type}: {error.message}"


def _says_disk_full(run_dir: Path, outcome: RunOutcome) -> bool:
    """The workload itself hit the full disk (its record or log says so)."""
    from harness.results.run_reader import log_tail

    return os.strerror(errno.ENOSPC) in outcome.message + log_tail(run_dir)


def _user_workload_failure(run: PlannedRun, record: RunRecord) -> WorkloadFailure | None:
    """The run's failure when its record blames the user's training (``USER_WORKLOAD_ERRORS``)."""
    error = record.error
    if error is None or error.type not in USER_WORKLOAD_ERRORS:
        return None
    return WorkloadFailure(run.label, error.type, error.message, run.run_dir)
