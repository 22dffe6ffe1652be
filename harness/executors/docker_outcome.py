"""How a container run ends, as a ``RunOutcome``: the wait loop (cancel, timeout, an engine that
went away, a container removed by cleanup) and what its exit says (killed for memory, stopped
from outside, exited 0 without a record). A cancelled or timed-out container is stopped as a
local run is: SIGINT, then SIGTERM, then SIGKILL (``docker_containers.stop``)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.contract import RECORD_FILE, ErrorType
from harness.contract.record import STOPPED_BY_SIGNAL
from harness.executors.base import DEFAULT_MEMORY_LIMIT, RunOutcome, RunStatus
from harness.executors.docker_containers import stop

#: The record's error type of a workload that SIGTERM ended (harness/workload/signals.py).
TERMINATED = STOPPED_BY_SIGNAL[0]

#: How often the wait loop looks at the cancel event and the deadline.
POLL_S = 0.5

#: How long a container stopped from outside waits for its engine to go away: an engine that
#: shuts down stops its containers first and may still answer for a moment after.
ENGINE_GONE_GRACE_S = 5.0

NO_GPU_RUNTIME_HINT = (
    "install the NVIDIA Container Toolkit and restart the engine "
    "(https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/), "
    "or run the GPU cells without containers: --executor local"
)


def daemon_unreachable(exc: BaseException) -> str:
    """The message for a run whose engine went away (stopped, restarted, socket gone)."""
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return (
        f"Docker daemon unreachable at {where} ({type(exc).__name__}: {exc}); start it "
        "(scripts/docker-engine.sh start) or point DOCKER_HOST at a running engine, then rerun "
        "the same command to resume"
    )


def is_no_gpu_runtime(exc: BaseException) -> bool:
    """The engine's answer to a GPU request when no NVIDIA runtime/hook is installed."""
    text = str(exc)
    return "could not select device driver" in text or "nvidia-container-cli" in text


def lost(seconds: float, exc: BaseException) -> RunOutcome:
    """The outcome of a run whose engine went away, at any point of its life."""
    return RunOutcome(
        RunStatus.FAILED,
        seconds,
        None,
        daemon_unreachable(exc),
        error_type=ErrorType.DOCKER_UNREACHABLE,
    )


def since(start: float) -> float:
    return time.monotonic() - start


def wait_for_exit(
    container: Any,
    *,
    start: float,
    timeout_s: float,
    cancel: threading.Event,
    engine_answers: Callable[[], bool],
) -> int | RunOutcome:
    """The container's exit code once it exits, or the outcome of a run that had to be stopped
    (cancelled, timed out), lost its engine, or was removed by cleanup."""
    import docker
    import requests

    deadline = start + timeout_s
    while True:
        if cancel.is_set():
            # SIGINT first, as a local run gets: the workload records that it was interrupted
            stop(container)
            return RunOutcome(
                RunStatus.ABORTED, since(start), None, "stopped: the harness was interrupted"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            sent = stop(container)
            return RunOutcome(
                RunStatus.TIMEOUT,
                since(start),
                137 if sent == "SIGKILL" else None,
                f"timed out after {timeout_s:g} s and was stopped; raise run.timeout_s in "
                "the matrix if the run needs longer",
            )
        try:
            result = container.wait(timeout=max(0.05, min(POLL_S, remaining)))
            return int(result.get("StatusCode", -1))
        # docker SDK 7.x raises requests' ConnectionError, not ReadTimeout, on a timeout;
        # a ping tells a slow container from an engine that went away.
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
            if not engine_answers():
                return lost(since(start), exc)
        except docker.errors.NotFound:
            # cleanup() removed it from under us (Ctrl-C, SIGTERM)
            return RunOutcome(
                RunStatus.ABORTED,
                since(start),
                None,
                "stopped: the container was removed by cleanup",
            )


def exit_outcome(
    container: Any,
    code: int,
    *,
    start: float,
    run_dir: Path,
    memory_limit: str | None,
    engine_answers: Callable[[], bool],
) -> RunOutcome:
    """The outcome of a container that exited with ``code``: asks the engine whether it was
    killed for memory, then classifies the exit."""
    import docker
    import requests

    seconds = since(start)
    try:
        container.reload()
        oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
    except docker.errors.NotFound:
        oom = False
    except requests.exceptions.ConnectionError as exc:
        return lost(since(start), exc)
    return classify_exit(
        code,
        seconds,
        oom=oom,
        memory_limit=memory_limit,
        record_written=(run_dir / RECORD_FILE).is_file(),
        engine_answers=engine_answers,
        # only a failed exit can be a recorded SIGTERM: an ok run's record is read once, later
        terminated=code not in (0, 143) and not oom and _recorded_sigterm(run_dir),
    )


def _recorded_sigterm(run_dir: Path) -> bool:
    """The workload recorded that SIGTERM ended it: it handles the signal and exits 1, so its
    exit code alone does not say that something outside stopped the container."""
    from harness.results.run_reader import RecordError, load_record

    try:
        error = load_record(run_dir).error
    except RecordError:
        return False
    return error is not None and error.type == TERMINATED


def engine_goes_away(engine_answers: Callable[[], bool], grace_s: float) -> bool:
    """Whether the engine stops answering within ``grace_s`` (it is shutting down)."""
    deadline = time.monotonic() + grace_s
    while engine_answers():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def classify_exit(
    code: int,
    seconds: float,
    *,
    oom: bool,
    memory_limit: str | None,
    record_written: bool,
    engine_answers: Callable[[], bool],
    terminated: bool = False,
    grace_s: float = ENGINE_GONE_GRACE_S,
) -> RunOutcome:
    """What an exit code (and the engine's OOMKilled flag) means for the run. The harness
    stops its own containers only on cancel or timeout, before this is asked: a container
    that SIGTERM ended (exit 143, or ``terminated``: the workload recorded it) was stopped from
    outside, most often by its engine shutting down."""
    if oom:
        if memory_limit:
            message = (
                f"killed for memory (State.OOMKilled) at run.memory_limit {memory_limit} "
                f"(default {DEFAULT_MEMORY_LIMIT}); raise run.memory_limit in the matrix (the "
                "results folder resumes), or run fewer runs side by side"
            )
        else:  # run.memory_limit: null: the host itself ran out
            message = (
                "killed for memory (State.OOMKilled) with no container limit "
                "(run.memory_limit: null): the host ran out of memory; run fewer runs side by "
                "side, or set run.memory_limit in the matrix (the results folder resumes)"
            )
        return RunOutcome(RunStatus.FAILED, seconds, code, message, error_type=ErrorType.OOM)
    if code == 143 or (terminated and code != 0):
        if engine_goes_away(engine_answers, grace_s):
            return lost(seconds, RuntimeError(f"the engine stopped the container (exit {code})"))
        return RunOutcome(
            RunStatus.FAILED,
            seconds,
            code,
            f"the container was stopped from outside (SIGTERM, exit {code}): was the Docker "
            "daemon stopped or restarted, or `docker stop` run? Rerun the same command to "
            "resume",
            error_type=ErrorType.KILLED,
        )
    if code == 0 and not record_written:
        return RunOutcome(
            RunStatus.FAILED, seconds, code, f"the container exited 0 but wrote no {RECORD_FILE}"
        )
    if code == 0:
        return RunOutcome(RunStatus.OK, seconds, 0)
    return RunOutcome(RunStatus.FAILED, seconds, code, f"the container exited with code {code}")
