"""``run_matrix``: the library behind ``harness run``. Plan, resume, schedule, record, report.

``make_executor`` builds the executor a matrix needs (the CLI calls it, then hands the executor
to ``run_matrix``). Neither exits: ``run_matrix`` returns a RunSummary whose ``exit_code`` the
CLI uses, and both raise HarnessError for input they cannot use. ``run_matrix`` writes only its
progress and, whatever the progress mode, one notice per reason it set finished runs aside and
per dead harness whose containers it swept (``RunConfig.notice_stream``, default stderr).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from harness.contract import LOG_FILE, ErrorType, RunSpec
from harness.contract.code import snapshot_user_code
from harness.contract.record import USER_WORKLOAD_ERRORS
from harness.errors import HarnessError, StoreError
from harness.executors import (
    Executor,
    ExecutorOptions,
    RunOutcome,
    RunStatus,
    Slot,
    choose_executor,
    get_executor_class,
)
from harness.exit_codes import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNS_FAILED
from harness.matrix import Cell, LoadedMatrix
from harness.mnist import MIRRORS, DataError, default_cache_dir, download_mnist
from harness.results.layout import code_store
from harness.results.safe_paths import real_dir
from harness.results.store import (
    ResultsDir,
    RunState,
    default_out,
    record_failure,
    set_aside_notices,
)
from harness.run.progress import make_progress
from harness.run.schedule import Host, Job, SlotPool, check_fits, detect_host, need_of, run_jobs
from harness.run.shard import ShardSpec, cells_of_shard

if TYPE_CHECKING:
    from harness.report.report_data import Report

log = logging.getLogger(__name__)

#: errno values that mean "the results disk is full": the matrix stops, finished runs stay.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def default_data_dir() -> Path | None:
    """HARNESS_MNIST_DIR, else None: the caller downloads MNIST into the user cache
    (``fetch_mnist(default_cache_dir())``)."""
    env = os.environ.get("HARNESS_MNIST_DIR")
    return Path(env).resolve() if env else None


def fetch_mnist(cache: Path, mirrors: tuple[str, ...] = MIRRORS) -> Path:
    """Download MNIST on the host, verified, once: containers have no network to do it."""
    try:
        return download_mnist(cache, mirrors)
    except DataError as exc:
        raise HarnessError(
            f"MNIST is not on this machine and could not be downloaded: {exc}",
            hint="copy the four IDX files (raw or .gz) to a folder, then pass --data-dir "
            "or set HARNESS_MNIST_DIR",
        ) from exc


def mnist_for(cells: list[Cell]) -> Path | None:
    """The user cache's MNIST, downloaded and verified once where a cell trains the built-in
    model; a matrix of the user's own training only (every cell an ``entry``) downloads
    nothing: it gets the cache where it already is, else None (docs/workload.md)."""
    cache = default_cache_dir()
    if any(cell.settings.get("entry") is None for cell in cells):
        return fetch_mnist(cache)
    return cache if cache.is_dir() else None


@dataclass
class RunConfig:
    """Everything ``harness run`` takes besides the executor, as one object."""

    matrix: LoadedMatrix
    out: Path | None = None
    progress: str | None = None
    gpus: str | None = None
    formats: tuple[str, ...] = ("md", "json", "csv")
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


def make_executor(
    matrix: LoadedMatrix,
    choice: str = "auto",
    *,
    shard: ShardSpec | None = None,
    data_dir: Path | None = None,
    python: str | None = None,
) -> Executor:
    """The executor for this matrix (or shard): ``choice`` is ``auto`` (local when every image is
    ``local``, else docker) or an executor's name. MNIST comes from ``data_dir``, else
    HARNESS_MNIST_DIR, else the user cache (``mnist_for``)."""
    cells = matrix.cells if shard is None else cells_of_shard(matrix, shard)
    name = choose_executor(choice, {c.settings["image"] for c in cells} or {"local"})
    options = ExecutorOptions(
        run_label=f"{matrix.model.name}-{matrix.digest[:12]}",
        data_dir=data_dir or default_data_dir() or mnist_for(cells),
        python=python or _default_python(),
        memory_limit=matrix.model.run.memory_limit,
        # the user's folder: run_matrix copies it into the results folder under the lock and
        # runs from that snapshot, whose digest each run records and resume compares
        code_dir=matrix.code_dir,
        requirements=tuple(matrix.model.workload.requirements),
    )
    return get_executor_class(name)(options)


def run_matrix(config: RunConfig, executor: Executor) -> RunSummary:
    """Run every repeat of the matrix's (or the shard's) cells that is not already done with
    ``executor``, then write the report. Once runs start, ``executor.cleanup()`` runs whatever
    happens (Ctrl-C, a full disk, a harness error)."""
    matrix = config.matrix
    out = (config.out or default_out(matrix.model.name)).resolve()
    executor.bind_results(out)  # its containers name the folder: the next start sweeps them
    store = ResultsDir(out)
    # a folder of an older format, or one that is not a results folder, is refused before any
    # image is built or anything is written
    store.check_out()
    cells = matrix.cells if config.shard is None else cells_of_shard(matrix, config.shard)
    if config.shard is not None:
        log.info("shard %s: %d of %d cells", config.shard, len(cells), len(matrix.cells))
    runs = plan_runs(matrix, store, cells)
    host = detect_host(config.gpus)
    check_fits([r.spec for r in runs], host)

    with _disk_full_stops(out):
        return _run_locked(config, store, executor, runs, host, cells)


@contextlib.contextmanager
def _disk_full_stops(out: Path) -> Iterator[None]:
    """A full results disk is the user's to fix: one clear error, not a traceback."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        where = exc.filename or out
        raise StoreError(
            f"disk full at {where}: the harness stopped; finished runs are kept, and no "
            "half-written run record is left",
            f"free space on that disk, or use --out on a bigger one (copy {out} there first); "
            "then rerun the same command to resume",
        ) from exc


def _snapshot_code(out: Path, executor: Executor, runs: list[PlannedRun]) -> None:
    """Copy the user's code folder into ``<out>/code/<digest>/`` and have the runs of the build
    function import that copy: an edit to the folder while the matrix runs reaches no run, and
    each record's ``user_code_digest`` is that of the code it ran (harness/contract/code.py)."""
    source = executor.options.code_dir
    if source is None or all(r.spec.entry is None for r in runs):
        return
    where = real_dir(out, code_store(out), what="the snapshots of your code")
    try:
        folder, digest = snapshot_user_code(source, where)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise
        raise StoreError(
            f"cannot copy your code ({source}, workload.path) into {where}: {exc}",
            "make every file of the folder readable (chmod -R u+r), or move what cannot be "
            "read out of it; then rerun",
        ) from exc
    executor.use_code(folder, digest)


def _run_locked(
    config: RunConfig,
    store: ResultsDir,
    executor: Executor,
    runs: list[PlannedRun],
    host: Host,
    cells: list[Cell],
) -> RunSummary:
    """Everything that writes to the folder, the report included, under its lock."""
    store.lock()
    try:
        store.check_out()  # again, now that no other harness can write here
        store.check_folders(r.run_dir for r in runs)  # no link leads a write out of the folder
        # What a harness killed with SIGKILL left running here goes first: it would write into
        # the run folders that resume is about to judge.
        _notify(config, executor.sweep())
        shard = None
        if config.shard is not None:
            shard = {"index": config.shard.index, "total": config.shard.total}
        _snapshot_code(store.root, executor, runs)
        # prepare first: a matrix that cannot start (no image, no GPU runtime) leaves no
        # manifest behind, so its corrected version can use the same --out.
        identities = executor.prepare([r.spec for r in runs])
        store.write_manifest(config.matrix, cells, shard)
        states = [
            store.check_run(r.run_dir, r.spec, executor.identity_for(r.spec, identities))
            for r in runs
        ]
        superseded = _set_aside(config, store, runs, states)
        todo = [r for r, state in zip(runs, states, strict=True) if state.action != "reuse"]
        summary = _execute(config, store, executor, runs, todo, host)
        summary.set_aside = sum(state.action == "set_aside" for state in states)
        summary.superseded = superseded
        if config.formats:
            from harness.report import make_reports

            summary.report, summary.reports = make_reports(
                store.root, config.formats, plots=config.plots
            )
    finally:
        store.unlock()
    return summary


def _set_aside(
    config: RunConfig, store: ResultsDir, runs: list[PlannedRun], states: list[RunState]
) -> Path | None:
    """Move the finished runs that will not be reused to ``superseded/<time>/``, and say so,
    one line per reason, on the notice stream (stderr), whatever the progress mode."""
    stale = [(r, s) for r, s in zip(runs, states, strict=True) if s.action == "set_aside"]
    if not stale:
        return None
    where = store.set_aside([r.run_dir for r, _ in stale])
    groups = Counter(s.why or ("run", "") for _, s in stale)
    _notify(config, set_aside_notices(dict(groups), where or store.root))
    return where


def _notify(config: RunConfig, lines: list[str]) -> None:
    """One ``harness: <line>`` per notice on the notice stream (stderr), whatever the progress
    mode: runs set aside, containers swept."""
    if not lines:
        return
    stream = config.notice_stream or sys.stderr
    for line in lines:
        stream.write(f"harness: {line}\n")
    stream.flush()


def _check_outcome(run: PlannedRun, outcome: RunOutcome) -> None:
    """An ok outcome must have an ok record; any other gets a failed record (``run.json``)."""
    if outcome.ok:
        from harness.results.run_reader import RecordError, load_record

        try:
            if load_record(run.run_dir).ok:
                return
            outcome.status, outcome.message = RunStatus.FAILED, "the run recorded a failure"
        except RecordError as exc:
            outcome.status, outcome.message = RunStatus.FAILED, f"exited 0 but {exc}"
    error_type = {
        RunStatus.TIMEOUT: ErrorType.TIMEOUT,
        RunStatus.ABORTED: ErrorType.KILLED,
    }.get(outcome.status, outcome.error_type or ErrorType.FAILED)
    record_failure(
        run.run_dir,
        run.spec,
        error_type,
        outcome.message,
        outcome.seconds,
        # a run the host stopped (timeout, interrupt) keeps the host's error; a run that died
        # is named by the DDP rank that failed first, if one wrote its error
        first_rank_error=outcome.status is RunStatus.FAILED,
    )
    _add_recorded_error(run.run_dir, outcome)


def _add_recorded_error(run_dir: Path, outcome: RunOutcome) -> None:
    """Show what the workload recorded (e.g. a DataError naming the MNIST file), not only its
    exit code, in the progress line."""
    from harness.results.run_reader import RecordError, load_record

    try:
        error = load_record(run_dir).error
    except RecordError:
        return
    said = outcome.message
    if error is None or not error.message or error.message in said:
        return
    if said and error.message.startswith(said):  # the host's own words, e.g. "(after writing
        return  # its record)" added: not a second error
    outcome.message = f"{said}: {error.type}: {error.message}"


def _says_disk_full(run_dir: Path, outcome: RunOutcome) -> bool:
    """The workload itself hit the full disk (its record or log says so)."""
    from harness.results.store import log_tail

    return os.strerror(errno.ENOSPC) in outcome.message + log_tail(run_dir)


def _default_python() -> str:
    from harness.executors.local import default_python

    return default_python()


def _execute(
    config: RunConfig,
    store: ResultsDir,
    executor: Executor,
    runs: list[PlannedRun],
    todo: list[PlannedRun],
    host: Host,
) -> RunSummary:
    progress = make_progress(config.progress, config.progress_stream)
    per_cell = Counter(r.cell.id for r in runs)
    skipped = Counter(r.cell.id for r in runs) - Counter(r.cell.id for r in todo)
    statuses: Counter[str] = Counter()
    progress.start(dict(per_cell), dict(skipped))
    timeout_s = config.matrix.model.run.timeout_s

    full: list[OSError] = []

    def work(run: PlannedRun, slot: Slot) -> RunOutcome:
        try:
            outcome = _work(run, slot)
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            exc.filename = exc.filename or str(run.run_dir)
            full.append(exc)
            outcome = RunOutcome(RunStatus.FAILED, 0.0, None, f"disk full at {exc.filename}")
        else:
            if outcome.ok or not _says_disk_full(run.run_dir, outcome):
                return outcome
            full.append(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run.run_dir)))
        config.cancel.set()  # start nothing more: every later write would fail too
        return outcome

    stop = threading.Event()  # start no more runs; those in flight finish
    user_failures: list[WorkloadFailure] = []
    failures_lock = threading.Lock()

    def _work(run: PlannedRun, slot: Slot) -> RunOutcome:
        store.prepare_run(run.run_dir, run.spec)
        key = f"{run.cell.id}/{run.spec.repeat}"
        progress.run_started(key, run.cell.id, run.label, run.run_dir)
        outcome = executor.run(
            run.spec, slot, run.run_dir, timeout_s=timeout_s, cancel=config.cancel
        )
        _check_outcome(run, outcome)
        failure = _user_workload_failure(run)
        if failure is not None:
            with failures_lock:
                user_failures.append(failure)
            stop.set()  # every other run of the user's training would fail the same way
        return outcome

    def done(run: PlannedRun, result: RunOutcome | BaseException) -> None:
        if isinstance(result, BaseException):
            status, seconds, message = RunStatus.FAILED.value, 0.0, f"harness error: {result}"
            try:
                if not isinstance(result, StoreError):  # a link at the run folder: write nothing
                    record_failure(run.run_dir, run.spec, ErrorType.FAILED, message)
            except Exception:  # the scheduler has logged the harness error already
                log.exception("could not record the failure of %s", run.label)
        else:
            status, seconds, message = result.status.value, result.seconds, result.message
        statuses[status] += 1
        progress.run_finished(
            f"{run.cell.id}/{run.spec.repeat}", run.cell.id, run.label, status, seconds, message
        )

    jobs = [Job(r, need_of(r.spec)) for r in todo]
    try:
        run_jobs(
            jobs,
            SlotPool(host),
            work,
            config.cancel,
            on_done=done,
            on_tick=progress.tick,
            stop=stop,
        )
    finally:
        executor.cleanup()
        progress.close()
    if full:
        raise full[0]  # _disk_full_stops turns it into the user's error
    return RunSummary(
        store.root,
        len(runs),
        len(runs) - len(todo),
        statuses,
        interrupted=config.cancel.is_set(),
        workload_error=user_failures[0] if user_failures else None,
    )


def _user_workload_failure(run: PlannedRun) -> WorkloadFailure | None:
    """The run's failure when its record blames the user's training (``USER_WORKLOAD_ERRORS``)."""
    from harness.results.run_reader import RecordError, load_record

    try:
        error = load_record(run.run_dir).error
    except RecordError:
        return None
    if error is None or error.type not in USER_WORKLOAD_ERRORS:
        return None
    return WorkloadFailure(run.label, error.type, error.message, run.run_dir)
