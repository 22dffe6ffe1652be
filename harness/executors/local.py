"""Run one repeat as a child process on this machine: no containers.

The child gets its own session (so the terminal's Ctrl-C reaches only the harness, which then
stops runs in order), is pinned to its slot's cores, and dies with the harness even on SIGKILL
(PR_SET_PDEATHSIG, set by ``harness.workload.child_launcher`` before it execs the workload).
Stopping escalates SIGINT -> SIGTERM -> SIGKILL over the whole process group, since Lightning's
DDP starts children. What it asks the interpreter before any run is in ``local_probes``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from harness.contract import (
    LOG_FILE,
    SPEC_FILE,
    USER_CODE_ENV,
    ErrorType,
    RunSpec,
    environment_for,
)
from harness.contract.record import STOPPED_BY_SIGNAL, read_rank_errors
from harness.executors.base import (
    Executor,
    ExecutorOptions,
    RunIdentity,
    RunJob,
    RunOutcome,
    RunStatus,
    Slot,
)
from harness.executors.local_probes import check_entries, check_requirements, probe_identity

log = logging.getLogger(__name__)

#: Seconds to wait after each signal of the SIGINT -> SIGTERM -> SIGKILL escalation.
GRACE_S = 5.0
POLL_S = 0.1
#: what the child runs first: ``python -m LAUNCHER_MODULE <harness pid> <workload argv...>``
LAUNCHER_MODULE = "harness.workload.child_launcher"


def default_python() -> str:
    return os.environ.get("HARNESS_WORKLOAD_PYTHON") or sys.executable


def run_env(spec: RunSpec, slot: Slot, base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: pinned threads, visible GPUs, hash seed, cuBLAS workspace (an
    exported ``CUBLAS_WORKSPACE_CONFIG`` is removed where the spec leaves it unset)."""
    env = environment_for(spec, os.environ if base is None else base)
    env.update(CUDA_VISIBLE_DEVICES=",".join(map(str, slot.gpus)), PYTHONUNBUFFERED="1")
    return env


class LocalExecutor(Executor):
    """``python -m harness.workload`` per run, with ``options.python`` as the interpreter."""

    name = "local"

    def __init__(self, options: ExecutorOptions) -> None:
        super().__init__(options)
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._identity: RunIdentity | None = None
        #: the user's folder as given (``use_code`` points the runs at its snapshot)
        self._source: Path | None = options.code_dir

    @property
    def python(self) -> str:
        return self.options.python or default_python()

    def prepare(self, specs: Sequence[RunSpec]) -> dict[str, RunIdentity]:
        """Every image of these specs runs on this machine's interpreter: one identity."""
        if not specs:
            return {}
        if any(s.entry is not None for s in specs):
            # the entry first: its check reads the source (no torch), so a typo fails at once
            code = self.user_code(next(s for s in specs if s.entry is not None))
            entries = [s.entry for s in specs if s.entry is not None]
            check_entries(self.python, entries, code[0] if code else None, self._source)
            check_requirements(self.python, self.options.requirements)
        identity = self.identity()
        return {image: identity for image in sorted({s.image for s in specs})}

    def identity(self) -> RunIdentity:
        """What this executor's runs would record now: the interpreter's Python and torch
        versions and the digest of the workload code it imports (asked once, of the interpreter
        itself, from an empty folder as each run starts from its own run folder)."""
        if self._identity is None:
            self._identity = probe_identity(self.python)
        return self._identity

    def argv(self, run_dir: Path, spec: RunSpec | None = None) -> list[str]:
        """The workload's command line; a run of a build function gets ``--code-dir``, the
        user's folder as an absolute host path (put on its import path)."""
        python = self.python
        argv = [
            python,
            "-m",
            "harness.workload",
            "--spec",
            str(run_dir / SPEC_FILE),
            "--out",
            str(run_dir),
        ]
        if self.options.data_dir is not None:
            argv += ["--data-dir", str(self.options.data_dir)]
        code = self.user_code(spec) if spec is not None else None
        if code is not None:
            argv += ["--code-dir", str(code[0])]
        return argv

    def env(self, spec: RunSpec, slot: Slot) -> dict[str, str]:
        """``run_env``, and for a run of a build function the digest of the user's code (its
        record's ``provenance.user_code_digest``)."""
        env = run_env(spec, slot)
        env.pop(USER_CODE_ENV, None)  # the host's own is never the digest of this folder
        code = self.user_code(spec)
        if code is not None:
            env[USER_CODE_ENV] = code[1]
        return env

    def execute(self, job: RunJob) -> RunOutcome:
        spec, slot, run_dir = job.spec, job.slot, job.run_dir
        workload = self.argv(run_dir, spec)
        # the launcher makes the run die with the harness, then execs the workload
        argv = [workload[0], "-m", LAUNCHER_MODULE, str(os.getpid()), *workload]
        start = time.monotonic()
        with open(run_dir / LOG_FILE, "ab") as log_file:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=self.env(spec, slot),
                    cwd=run_dir,
                    start_new_session=True,
                )
            except OSError as exc:
                return RunOutcome(
                    RunStatus.FAILED, 0.0, None, f"cannot start {workload[0]}: {exc.strerror}"
                )
        with self._lock:
            self._procs[proc.pid] = proc
        try:
            if slot.cpus:
                try:
                    os.sched_setaffinity(proc.pid, slot.cpus)
                except OSError as exc:  # the child may already be gone
                    log.debug("sched_setaffinity(%d): %s", proc.pid, exc)
            return _name_the_failed_rank(
                self._wait(proc, start, job.timeout_s, job.cancel), spec, run_dir
            )
        finally:
            _stop_group(proc, grace_s=0.0)  # stragglers (DDP ranks) of a finished run
            with self._lock:
                self._procs.pop(proc.pid, None)

    def _wait(
        self, proc: subprocess.Popen[bytes], start: float, timeout_s: float, cancel: threading.Event
    ) -> RunOutcome:
        deadline = start + timeout_s
        while True:
            try:
                code = proc.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if cancel.is_set():
                _stop_group(proc)
                return RunOutcome(
                    RunStatus.ABORTED,
                    time.monotonic() - start,
                    proc.returncode,
                    "stopped: the harness was interrupted",
                )
            if time.monotonic() > deadline:
                _stop_group(proc)
                return RunOutcome(
                    RunStatus.TIMEOUT,
                    time.monotonic() - start,
                    proc.returncode,
                    f"timed out after {timeout_s:g} s; raise run.timeout_s in the "
                    "matrix if the run needs longer",
                )
        seconds = time.monotonic() - start
        if code == 0:
            return RunOutcome(RunStatus.OK, seconds, 0)
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return RunOutcome(
                RunStatus.FAILED,
                seconds,
                code,
                f"killed by {name} from outside the harness (if no one sent it, the kernel's "
                "out-of-memory killer may have: see dmesg); rerun the same command to resume",
                error_type=ErrorType.KILLED,
            )
        return RunOutcome(RunStatus.FAILED, seconds, code, f"exited with code {code}")

    def cleanup(self) -> None:
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            _stop_group(proc)


def _name_the_failed_rank(outcome: RunOutcome, spec: RunSpec, run_dir: Path) -> RunOutcome:
    """Lightning's launcher SIGKILLs rank 0 when another rank exits with an error: say so,
    rather than blame someone outside the harness (the record then names that rank's error)."""
    if outcome.error_type is not ErrorType.KILLED or spec.devices < 2:
        return outcome
    failed = [
        f.rank
        for f in read_rank_errors(run_dir, spec.devices)
        if f.rank != 0 and f.error.type not in STOPPED_BY_SIGNAL
    ]
    if failed:
        code = outcome.exit_code
        name = signal.Signals(-code).name if code and -code in signal.valid_signals() else code
        outcome.message = (
            f"killed by {name} after DDP rank {failed[0]} failed (Lightning's launcher kills "
            "the other ranks when one exits with an error)"
        )
    return outcome


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float = GRACE_S) -> None:
    """SIGINT, SIGTERM, then SIGKILL to the run's process group, and reap the leader."""
    pgid = proc.pid  # start_new_session: the child leads its own group
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if grace_s == 0.0 and sig is not signal.SIGKILL:
            continue
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            break
        if _group_gone(proc, pgid, grace_s if sig is not signal.SIGKILL else GRACE_S):
            break
    try:
        proc.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        log.warning("process %d did not exit after SIGKILL", proc.pid)


def _group_gone(proc: subprocess.Popen[bytes], pgid: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        proc.poll()  # reap the leader so its group can empty
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
