"""``run_matrix``: the library behind ``harness run``. Plan, resume, schedule, record, report.

``make_executor`` builds the executor a matrix needs (the CLI calls it, then hands the executor
to ``run_matrix``). Neither exits: ``run_matrix`` returns a RunSummary whose ``exit_code`` the
CLI uses, and both raise HarnessError for input they cannot use. ``run_matrix`` writes only its
progress and, whatever the progress mode, one notice per reason it set finished runs aside and
per dead harness whose containers it swept (``RunConfig.notice_stream``, default stderr).

The pieces: harness/run/matrix_plan.py (the config, the planned runs, the summary),
harness/run/run_execution.py (the runs through the scheduler), harness/run/mnist_source.py
(where MNIST comes from).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.contract.code import snapshot_user_code
from harness.errors import HarnessError, StoreError
from harness.executors import Executor, ExecutorOptions, choose_executor, get_executor_class
from harness.matrix import Cell, LoadedMatrix
from harness.results.layout import code_store
from harness.results.safe_paths import real_dir
from harness.results.store import ResultsDir, RunState, default_out, set_aside_notices
from harness.run.gpu_packing import (
    Decision,
    Device,
    decide,
    default_packing_file,
    not_packable,
    pack_gpus,
    read_measurements,
)
from harness.run.matrix_plan import PlannedRun, RunConfig, RunSummary, plan_runs
from harness.run.mnist_source import default_data_dir, mnist_for
from harness.run.run_execution import DISK_FULL, execute_runs
from harness.run.schedule import Host, check_fits, detect_host, gpu_device
from harness.run.shard import ShardSpec, cells_of_shard

__all__ = [
    "RunConfig",
    "RunSummary",
    "make_executor",
    "packed_gpus",
    "plan_runs",
    "run_matrix",
]

log = logging.getLogger(__name__)


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


def packed_gpus(
    matrix: LoadedMatrix,
    runs_per_gpu: str,
    *,
    gpus: str | None = None,
    shard: ShardSpec | None = None,
    packing: Path | None = None,
    device: Callable[[], Device | None] = gpu_device,
) -> tuple[str | None, str | None]:
    """``--runs-per-gpu``: the ``--gpus`` list that gives each GPU that many slots (the
    scheduler runs as many 1-GPU runs side by side on it), and a notice saying how many and why.
    ``1`` changes nothing; ``auto`` asks harness/run/gpu_packing.py's rule, with the measurement
    in ``packing`` (default: ``default_packing_file()``) and ``device()``'s GPU; ``N`` is taken
    as asked, except with a DDP cell, which is refused."""
    if packing is not None and runs_per_gpu != "auto":
        raise HarnessError(
            "--packing is read only with --runs-per-gpu auto", "add it, or drop --packing"
        )
    if runs_per_gpu == "1":
        return gpus, None
    cells = matrix.cells if shard is None else cells_of_shard(matrix, shard)
    settings = [{**c.settings, "cell_name": c.name} for c in cells]
    notice = None
    if runs_per_gpu == "auto":
        decision = _auto(settings, packing, device)
        runs = decision.runs_per_gpu
        said = "measured" if decision.measured else "unmeasured"
        notice = f"runs per GPU: {runs} ({said}: {decision.reason})"
    else:
        runs = int(runs_per_gpu)
        refused = not_packable(settings)
        if refused is not None and "DDP" in refused.reason:
            raise HarnessError(
                f"--runs-per-gpu {runs}: {refused.reason}",
                "use --runs-per-gpu 1 (or auto) for a matrix with DDP cells, or run them apart",
            )
    visible = detect_host(gpus).gpus if runs > 1 else ()
    if not visible:
        return gpus, notice
    return ",".join(str(g) for g in pack_gpus(visible, runs)), notice


def _auto(
    settings: list[dict[str, object]], packing: Path | None, device: Callable[[], Device | None]
) -> Decision:
    early = not_packable(settings)
    if early is not None:
        return early
    path = packing or default_packing_file()
    if packing is None and not path.is_file():
        return Decision(
            1,
            False,
            f"no packing measurement at {path} (`bash scripts/gpu-check.sh OUT packing` on "
            "this GPU writes one; pass it with --packing)",
        )
    return decide(settings, read_measurements(path), device())


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
        summary = execute_runs(config, store, executor, runs, todo, host)
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


def _default_python() -> str:
    from harness.executors.local import default_python

    return default_python()
