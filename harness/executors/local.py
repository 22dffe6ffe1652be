"""Run one repeat as a child process on this machine: no containers.

The child gets its own session (so the terminal's Ctrl-C reaches only the harness, which then
stops runs in order), is pinned to its slot's cores, and dies with the harness even on SIGKILL
(PR_SET_PDEATHSIG, set by a tiny launcher before it execs the workload). Stopping escalates
SIGINT -> SIGTERM -> SIGKILL over the whole process group, since Lightning's DDP starts children.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.contract import (
    LOG_FILE,
    SPEC_FILE,
    USER_CODE_ENV,
    ErrorType,
    RunSpec,
    environment_for,
)
from harness.contract.record import STOPPED_BY_SIGNAL, read_rank_errors
from harness.errors import ExecutorError
from harness.executors.base import (
    Executor,
    ExecutorOptions,
    RunIdentity,
    RunOutcome,
    RunStatus,
    Slot,
)

log = logging.getLogger(__name__)

#: Seconds to wait after each signal of the SIGINT -> SIGTERM -> SIGKILL escalation.
GRACE_S = 5.0
POLL_S = 0.1

# Runs in the child before the workload: die with the harness, then become the workload.
# argv: [python, -c, LAUNCHER, <expected parent pid>, <workload argv...>]
LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(137)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


#: Seconds the interpreter may take to say what it would run (importing torch, cold: ~20 s).
PROBE_TIMEOUT_S = 300.0
IDENTITY_MARK = "harness-identity: "
# Asked of the workload's interpreter once per matrix run (``LocalExecutor.prepare``): what its
# runs would record as provenance.python, provenance.torch and provenance.workload_digest.
IDENTITY_PROBE = (
    "import json, sys\n"
    "from harness.contract.code import workload_digest\n"
    "try:\n"
    "    import torch\n"
    "    version = str(torch.__version__)\n"
    "except ImportError:\n"
    "    version = None\n"
    "identity = {'python': sys.version.split()[0], 'torch': version, "
    "'workload_digest': workload_digest()}\n"
    f"print({IDENTITY_MARK!r} + json.dumps(identity), flush=True)\n"
)


REQUIREMENTS_MARK = "harness-requirements: "
# Asked of the workload's interpreter once per matrix run with the matrix's
# ``workload.requirements`` as argv (never a shell line): for each, the installed version of its
# distribution (null: none) and whether it satisfies the requirement. ``packaging`` comes with
# Lightning; without it, only presence is checked.
REQUIREMENTS_PROBE = (
    "import json, re, sys\n"
    "from importlib.metadata import PackageNotFoundError, version\n"
    "try:\n"
    "    from packaging.requirements import Requirement\n"
    "except ImportError:\n"
    "    Requirement = None\n"
    "found = []\n"
    "for text in sys.argv[1:]:\n"
    "    name = re.match(r'[A-Za-z0-9][A-Za-z0-9._-]*', text).group(0)\n"
    "    try:\n"
    "        have = version(name)\n"
    "    except PackageNotFoundError:\n"
    "        have = None\n"
    "    ok = have is not None\n"
    "    if ok and Requirement is not None:\n"
    "        ok = Requirement(text).specifier.contains(have, prereleases=True)\n"
    "    found.append([text, have, ok])\n"
    f"print({REQUIREMENTS_MARK!r} + json.dumps(found), flush=True)\n"
)


def default_python() -> str:
    return os.environ.get("HARNESS_WORKLOAD_PYTHON") or sys.executable


def run_env(spec: RunSpec, slot: Slot, base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: pinned threads, visible GPUs, hash seed, cuBLAS workspace (an
    exported ``CUBLAS_WORKSPACE_CONFIG`` is removed where the spec leaves it unset)."""
    env = environment_for(spec, os.environ if base is None else base)
    env.update(CUDA_VISIBLE_DEVICES=",".join(map(str, slot.gpus)), PYTHONUNBUFFERED="1")
    return env


#: how long importing the user's module may take before the check gives up (and the runs say)
ENTRY_CHECK_TIMEOUT_S = 120.0


def ask_python(
    python: str, code: str, mark: str, args: Sequence[str] = (), timeout_s: float = PROBE_TIMEOUT_S
) -> tuple[subprocess.CompletedProcess[str], Any]:
    """Run ``python -c code *args`` in an empty temporary folder (argv list, no shell) and read
    the JSON that its last line starting with ``mark`` carries (None: no such line, or not
    JSON). OSError and TimeoutExpired propagate: each caller says what it asked."""
    with tempfile.TemporaryDirectory(prefix="harness-probe-") as cwd:
        proc = subprocess.run(  # argv list, no shell
            [python, "-c", code, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            cwd=cwd,
            timeout=timeout_s,
            check=False,
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(mark)]
    try:
        data = json.loads(lines[-1].removeprefix(mark)) if lines else None
    except json.JSONDecodeError:
        data = None
    return proc, data


def _last_words(proc: subprocess.CompletedProcess[str]) -> str:
    """The last line a failed probe printed: the error, not its traceback."""
    last = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
    return last[0] if last else "no output"


def probe_identity(python: str, timeout_s: float = PROBE_TIMEOUT_S) -> RunIdentity:
    """Ask ``python`` (argv list, no shell) what its runs would record; ExecutorError when it
    cannot say, since then it cannot run the workload either."""
    hint = (
        "pass --python (or set HARNESS_WORKLOAD_PYTHON to) an interpreter that has this harness "
        "installed with its workload extra: pip install -e '.[workload]'"
    )
    try:
        proc, data = ask_python(python, IDENTITY_PROBE, IDENTITY_MARK, timeout_s=timeout_s)
    except OSError as exc:
        raise ExecutorError(f"cannot start {python}: {exc.strerror or exc}", hint) from exc
    except subprocess.TimeoutExpired as exc:
        raise ExecutorError(
            f"{python} did not say within {timeout_s:g} s which workload code and torch it "
            "would run",
            hint,
        ) from exc
    if proc.returncode != 0 or not isinstance(data, dict):
        raise ExecutorError(
            f"{python} cannot say which workload code and torch it would run "
            f"(exit code {proc.returncode}): {_last_words(proc)}",
            hint,
        )

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    return RunIdentity(
        workload_digest=text("workload_digest"), python=text("python"), torch=text("torch")
    )


def check_requirements(python: str, requirements: Sequence[str]) -> None:
    """Refuse, before any run, a matrix whose ``workload.requirements`` the interpreter lacks
    (the local executor installs nothing): one subprocess asks ``python`` for them all (argv,
    no shell); an ExecutorError (exit 2) names each missing one and the fix."""
    if not requirements:
        return
    try:
        proc, found = ask_python(python, REQUIREMENTS_PROBE, REQUIREMENTS_MARK, requirements)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExecutorError(
            f"cannot ask {python} which of workload.requirements it has: {exc}",
            "pass --python an interpreter that runs (HARNESS_WORKLOAD_PYTHON)",
        ) from exc
    if proc.returncode != 0 or not isinstance(found, list):
        raise ExecutorError(
            f"cannot ask {python} which of workload.requirements it has "
            f"(exit code {proc.returncode}): {_last_words(proc)}",
            "pass --python an interpreter that runs (HARNESS_WORKLOAD_PYTHON)",
        )
    missing = [(text, have) for text, have, ok in found if not ok]
    if not missing:
        return
    said = "; ".join(
        f"{text} ({'not installed' if have is None else f'{have} installed'})"
        for text, have in missing
    )
    wanted = " ".join(shlex.quote(text) for text, _ in missing)
    raise ExecutorError(
        f"the workload needs {said} in {python}, which runs the local cells "
        "(workload.requirements; the local executor installs nothing)",
        f"pip install {wanted} into {python} ({shlex.quote(python)} -m pip install {wanted}), "
        "or run in a container, where the workload image installs it",
    )


def check_entries(
    python: str, entries: Sequence[str], code_dir: Path | None, source: Path | None = None
) -> None:
    """Import each build function (``entry``) once in ``python``, the runs' interpreter, before
    any run (harness/workload/entry_check.py): a typo or a broken module is an ExecutorError
    (exit 2) with the user's file and line or a "did you mean", not a failed first run.
    ``source``: the user's folder that ``code_dir`` is a snapshot of, named in the message."""
    from harness.workload.entry_check import EXIT_ENTRY_BROKEN

    for entry in sorted(set(entries)):
        argv = [python, "-m", "harness.workload.entry_check", entry, str(code_dir or "")]
        with tempfile.TemporaryDirectory(prefix="harness-entry-") as cwd:
            try:
                proc = subprocess.run(  # argv list, no shell
                    argv,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    errors="replace",
                    cwd=cwd,
                    timeout=ENTRY_CHECK_TIMEOUT_S,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.warning("could not check the entry %r before the runs: %s", entry, exc)
                continue  # the runs themselves say what is wrong
        if proc.returncode == EXIT_ENTRY_BROKEN:
            said = (proc.stdout.strip().splitlines() or [f"entry {entry!r} does not load"])[-1]
            if code_dir is not None and source is not None:
                said = said.replace(str(code_dir), str(source))
            raise ExecutorError(
                said,
                "fix it (the matrix's workload.entry or your module), then rerun the same "
                "command: no run was started",
            )
        if proc.returncode != 0:
            log.warning("could not check the entry %r: %s", entry, _last_words(proc))


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

    def run(
        self,
        spec: RunSpec,
        slot: Slot,
        run_dir: Path,
        *,
        timeout_s: float,
        cancel: threading.Event,
    ) -> RunOutcome:
        workload = self.argv(run_dir, spec)
        argv = [workload[0], "-c", LAUNCHER, str(os.getpid()), *workload]
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
            return _name_the_failed_rank(self._wait(proc, start, timeout_s, cancel), spec, run_dir)
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
