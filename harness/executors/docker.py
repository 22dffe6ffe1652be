"""Run each repeat in its own container, through the docker SDK.

This module is the executor: it reaches the engine, builds (or reuses) one workload image per
base image, probes each GPU image (``gpu_probe``), then creates, starts, waits for and removes
one container per run. The pieces it uses each have a module of their own:

- ``docker_kwargs``: what a run's container is created with (mounts, GPUs, hardening, labels);
- ``docker_outcome``: waiting for a container and what its end means (timeout, OOM, lost engine);
- ``docker_containers``: following a container's logs, stopping (SIGINT, SIGTERM, SIGKILL), killing
  and removing it;
- ``gpu_probe``: whether a GPU image's torch computes on the GPUs a run gets;
- ``harness/results/untrusted_run_folder.py``: the run folder is not followed: the log is captured
outside the
  mount, and what the container left there (links, FIFOs, devices) is removed and fails the run.

Every container carries the labels of the harness invocation that owns it (``Owner``: a fresh
id per executor, its pid and host, the results folder), so that ``cleanup`` (also called on
Ctrl-C, SIGTERM and crashes) removes every container this invocation started and no other
harness's, and ``sweep`` (at the start of the next ``harness run`` or ``harness diagnose`` into
the same results folder, under its lock) removes what a harness killed with SIGKILL left there.
A container is always removed once its outcome is collected. The image ``local`` (the host's
own environment) is run as a local process, so one matrix can list it beside container images.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import stat
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.contract import ErrorType, RunSpec
from harness.errors import ExecutorError
from harness.executors.base import (
    Executor,
    ExecutorOptions,
    RunIdentity,
    RunOutcome,
    RunStatus,
    Slot,
)
from harness.executors.docker_containers import LogFollower, remove
from harness.executors.docker_kwargs import (
    LABEL_INVOCATION,
    LABEL_OUT,
    LABEL_OWNER_HOST,
    LABEL_OWNER_PID,
    UNPRIVILEGED_UID,
    Owner,
    container_kwargs,
    container_user,
)
from harness.executors.docker_outcome import (
    NO_GPU_RUNTIME_HINT,
    exit_outcome,
    is_no_gpu_runtime,
    lost,
    since,
    wait_for_exit,
)
from harness.executors.gpu_probe_host import run_container_probe
from harness.executors.images import WorkloadImage, connect, ensure_workload_image
from harness.results.store import log_tail
from harness.results.untrusted_run_folder import (
    capture_path,
    place_log,
    planted_message,
    reject_planted,
)
from harness.workload.entry_check import container_check

__all__ = ["DockerExecutor", "container_kwargs", "is_no_gpu_runtime"]

log = logging.getLogger(__name__)


class DockerExecutor(Executor):
    """One container per run from the workload image built for the run's base image."""

    name = "docker"

    def __init__(self, options: ExecutorOptions) -> None:
        super().__init__(options)
        self._client: Any = None
        self._images: dict[str, WorkloadImage] = {}
        self._local: Executor | None = None
        #: (image, GPU count) -> the failed GPU probe's message
        self._probe_failures: dict[tuple[str, int], str] = {}
        self.invocation = uuid.uuid4().hex  # one per executor: what cleanup removes
        #: the user's folder as given (``use_code`` points the runs at its snapshot)
        self._source: Path | None = options.code_dir

    @property
    def owner(self) -> Owner:
        """The labels this invocation puts on its containers (the results folder may be bound
        after construction, so it is read from the options each time)."""
        out = self.options.out
        return Owner(out=str(out) if out is not None else "", invocation=self.invocation)

    # -- setup -------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect()
        return self._client

    def data_dir(self) -> Path:
        """MNIST on the host, as the CLI resolved it (--data-dir, HARNESS_MNIST_DIR, ...)."""
        if self.options.data_dir is not None:
            return Path(self.options.data_dir)
        raise ExecutorError(
            "the Docker executor needs MNIST on the host to mount it read-only at /data",
            hint="pass --data-dir or set HARNESS_MNIST_DIR (containers have no network)",
        )

    def _given_data(self) -> Path | None:
        """The MNIST folder for a run of the user's own training: the one given, where it is a
        folder (mounted at /data as for the built-in); None: nothing mounted, nothing asked."""
        given = self.options.data_dir
        return Path(given) if given is not None and Path(given).is_dir() else None

    def prepare(self, specs: Sequence[RunSpec]) -> dict[str, RunIdentity]:
        """Reach the engine, build or reuse one image per base, probe each GPU image.

        A container run's identity is its workload image's id (its tag names the code digest);
        ``local`` runs get the local executor's (interpreter, torch, workload digest).
        """
        prepared: dict[str, RunIdentity] = {}
        local_specs = [s for s in specs if s.image == "local"]
        if local_specs:
            prepared.update(self._local_executor().prepare(local_specs))
        container_specs = [s for s in specs if s.image != "local"]
        if not container_specs:
            return prepared
        # MNIST is the built-in model's: a matrix of the user's own training only needs none
        needed = any(s.entry is None for s in container_specs)
        data_dir = self.data_dir() if needed else self._given_data()
        if data_dir is not None and not data_dir.is_dir():
            raise ExecutorError(
                f"MNIST folder {data_dir} does not exist",
                hint="pass --data-dir or set HARNESS_MNIST_DIR to the folder of IDX files",
            )
        if data_dir is not None:
            check_readable_by_others(data_dir)
        code = next((c for c in map(self.user_code, container_specs) if c is not None), None)
        if code is not None:
            check_code_readable_by_others(code[0])
            self._check_entries(container_specs, code[0])
        for base in sorted({s.image for s in container_specs}):
            image = self.workload_image(base)
            prepared[base] = RunIdentity(image_id=image.image_id, base_digest=image.base_digest)
        self.probe_gpus(container_specs)
        return prepared

    def _check_entries(self, specs: Sequence[RunSpec], code_dir: Path) -> None:
        """A misspelt build function of a container cell fails here, before any image is built
        or container started, naming the user's file (not the snapshot) and a "did you mean";
        anything the source alone cannot tell is the first run's to say."""
        for entry in sorted({s.entry for s in specs if s.entry is not None}):
            problem = container_check(entry, code_dir)
            if problem is None:
                continue
            if self._source is not None:
                problem = problem.replace(str(code_dir), str(self._source))
            raise ExecutorError(
                problem,
                hint="fix it (the matrix's workload.entry or your module), then rerun the same "
                "command: no run was started",
            )

    def workload_image(self, base: str) -> WorkloadImage:
        if base not in self._images:
            self._images[base] = ensure_workload_image(
                self.client, base, requirements=self.options.requirements
            )
        return self._images[base]

    def probe_gpus(self, specs: Sequence[RunSpec]) -> None:
        """Run the GPU probe once per (image, GPU count) of the GPU specs, before any run.

        A failed probe does not stop the matrix: its message is kept, and that image's GPU runs
        with that count fail at once with it (``run``); other images run as planned.
        """
        first: dict[tuple[str, int], RunSpec] = {}
        for spec in specs:
            if spec.accelerator == "gpu":
                first.setdefault((spec.image, spec.devices), spec)
        for (base, gpus), spec in sorted(first.items()):
            result = run_container_probe(self.client, spec, gpus, self._container_kwargs)
            if result.ok:
                log.info("GPU probe of %s with %d GPU(s): ok (%s)", base, gpus, result.facts)
                continue
            message = f"GPU probe of image {base} with {gpus} GPU(s) failed: {result.message}"
            self._probe_failures[(base, gpus)] = message
            log.warning("%s; its GPU runs fail without starting", message)

    def probe_failure(self, spec: RunSpec) -> str | None:
        """The message of the failed GPU probe that rules this spec's run out, if any."""
        if spec.accelerator != "gpu":
            return None
        return self._probe_failures.get((spec.image, spec.devices))

    def _container_kwargs(self, spec: RunSpec, slot: Slot, run_dir: Path) -> dict[str, Any]:
        """The one place a container's kwargs are made: for runs and for GPU probes alike."""
        return container_kwargs(
            spec,
            slot,
            run_dir,
            image=self.workload_image(spec.image),
            data_dir=self.data_dir() if spec.entry is None else self._given_data(),
            run_label=self.options.run_label,
            owner=self.owner,
            memory_limit=self.options.memory_limit,
            user_code=self.user_code(spec),
        )

    # -- one run -----------------------------------------------------------------------------

    def run(
        self,
        spec: RunSpec,
        slot: Slot,
        run_dir: Path,
        *,
        timeout_s: float,
        cancel: threading.Event,
    ) -> RunOutcome:
        if spec.image == "local":
            return self._local_executor().run(
                spec, slot, run_dir, timeout_s=timeout_s, cancel=cancel
            )
        failed_probe = self.probe_failure(spec)
        if failed_probe is not None:
            return RunOutcome(RunStatus.FAILED, 0.0, None, failed_probe)
        start = time.monotonic()
        container = self._create(spec, slot, run_dir, start)
        if isinstance(container, RunOutcome):
            return container
        try:
            if cancel.is_set():
                return RunOutcome(RunStatus.ABORTED, 0.0, None, "stopped before it started")
            return self._start_and_wait(container, start, timeout_s, cancel, run_dir)
        finally:
            remove(container)

    def _create(self, spec: RunSpec, slot: Slot, run_dir: Path, start: float) -> Any:
        """The created (not started) container, or the outcome of a run that could not have one."""
        import docker
        import requests

        kwargs = self._container_kwargs(spec, slot, run_dir)
        try:
            writable_for(run_dir, kwargs["user"])
        except OSError as exc:
            return RunOutcome(
                RunStatus.FAILED,
                since(start),
                None,
                f"cannot hand the run folder to the container's user {kwargs['user']}: {exc}",
            )
        try:
            return self.client.containers.create(**kwargs)
        except requests.exceptions.ConnectionError as exc:  # the engine went away
            return lost(since(start), exc)
        except docker.errors.DockerException as exc:
            return RunOutcome(
                RunStatus.FAILED, since(start), None, f"cannot create the container: {exc}"
            )

    def _start_and_wait(
        self,
        container: Any,
        start: float,
        timeout_s: float,
        cancel: threading.Event,
        run_dir: Path,
    ) -> RunOutcome:
        import docker
        import requests

        try:
            container.start()
        except requests.exceptions.ConnectionError as exc:
            return lost(since(start), exc)
        except docker.errors.APIError as exc:
            message = f"the container did not start: {exc.explanation or exc}"
            if is_no_gpu_runtime(exc):
                message += f"; no GPU runtime: {NO_GPU_RUNTIME_HINT}"
            return RunOutcome(RunStatus.FAILED, since(start), None, message)
        capture = capture_path(run_dir)
        follower = LogFollower(container, capture)
        follower.start()
        outcome = self._wait(container, start, timeout_s, cancel, run_dir)
        follower.join(timeout=10)  # the stream ends when the container has stopped
        outcome = self._check_run_folder(run_dir, outcome)
        place_log(capture, run_dir)
        if not outcome.log_tail and outcome.status is not RunStatus.OK:
            outcome.log_tail = log_tail(run_dir)
        return outcome

    @staticmethod
    def _check_run_folder(run_dir: Path, outcome: RunOutcome) -> RunOutcome:
        """The container has ended: remove, unfollowed, every symbolic link, FIFO, socket and
        device it left in its run folder; a run that left any has failed (also one that exited
        0), with a message naming each (harness/results/untrusted_run_folder.py)."""
        reclaim(run_dir)
        planted = reject_planted(run_dir)
        if not planted:
            return outcome
        message = planted_message(planted)
        log.warning("%s: %s", run_dir, message)
        if not outcome.ok and outcome.message:
            message = f"{message}; {outcome.message}"
        return RunOutcome(
            RunStatus.FAILED,
            outcome.seconds,
            outcome.exit_code,
            message,
            error_type=ErrorType.UNSAFE_RUN_FOLDER,
        )

    def _wait(
        self,
        container: Any,
        start: float,
        timeout_s: float,
        cancel: threading.Event,
        run_dir: Path,
    ) -> RunOutcome:
        """Wait for the container to end; its exit, or why it had to stop, as an outcome."""
        end = wait_for_exit(
            container,
            start=start,
            timeout_s=timeout_s,
            cancel=cancel,
            engine_answers=self._engine_answers,
        )
        if isinstance(end, RunOutcome):
            return end
        return exit_outcome(
            container,
            end,
            start=start,
            run_dir=run_dir,
            memory_limit=self.options.memory_limit,
            engine_answers=self._engine_answers,
        )

    def _engine_answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:  # any failure to answer means it is gone
            return False

    # -- teardown ----------------------------------------------------------------------------

    def _local_executor(self) -> Executor:
        if self._local is None:
            from harness.executors.local import LocalExecutor

            self._local = LocalExecutor(self.options)
        return self._local

    def containers(self) -> list[Any]:
        """Every container, running or not, that this invocation started (its id's label):
        never another harness's, even of the same matrix, folder or shard."""
        return self.client.containers.list(
            all=True, filters={"label": f"{LABEL_INVOCATION}={self.invocation}"}
        )

    def sweep(self) -> list[str]:
        """Remove the containers a harness that is gone left in this results folder.

        Called under the folder's lock, before ``prepare``. A container is swept when it is
        labelled with this results folder and this host, and is not this invocation's. Its
        owner is either no longer running, or alive but not holding this folder's lock (which
        this harness holds), so it cannot be running the matrix here: its pid was reused, or
        it is a process that ran here and could not remove its containers (the engine did not
        answer). Containers of other folders, and of other hosts (whose pids cannot be asked),
        are never touched. An engine that cannot be reached has nothing to sweep.
        """
        import docker
        import requests

        out = self.options.out
        if out is None:
            return []
        try:
            found = self.client.containers.list(all=True, filters={"label": f"{LABEL_OUT}={out}"})
        except ExecutorError as exc:  # no engine: nothing of this folder can run there
            log.debug("sweep: %s", exc.message)
            return []
        except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
            log.warning("sweep: cannot list containers: %s", exc)
            return []
        me = self.owner
        swept: Counter[tuple[str, bool]] = Counter()
        for container in found:
            labels = container.labels or {}
            if labels.get(LABEL_OUT) != str(out) or labels.get(LABEL_INVOCATION) == me.invocation:
                continue
            if labels.get(LABEL_OWNER_HOST) != me.host:
                log.info(
                    "sweep: container %s belongs to host %s",
                    container.short_id,
                    labels.get(LABEL_OWNER_HOST),
                )
                continue
            pid = labels.get(LABEL_OWNER_PID, "")
            log.info("sweep: removing container %s of harness pid %s", container.short_id, pid)
            remove(container)
            swept[(pid, pid_alive(pid))] += 1
        return [sweep_notice(n, pid, alive) for (pid, alive), n in sorted(swept.items())]

    def cleanup(self) -> None:
        """Kill and remove every container of this invocation (safe to call twice)."""
        if self._local is not None:
            self._local.cleanup()
        import docker
        import requests

        try:
            leftovers = self.containers()
        except ExecutorError as exc:  # no engine: nothing of ours can be running there
            log.debug("cleanup: %s", exc.message)
            return
        except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
            log.warning("cleanup: cannot list containers: %s", exc)
            return
        for container in leftovers:
            log.info("cleanup: removing container %s", container.short_id)
            remove(container)


def writable_for(run_dir: Path, user: str) -> None:
    """Give the run folder itself (not what it holds, never through a link) to the container's
    ``uid:gid`` when it is not the harness's own: a root harness runs containers as
    UNPRIVILEGED_UID, which must write its results there."""
    uid, gid = (int(part) for part in user.split(":"))
    if (uid, gid) != (os.getuid(), os.getgid()):
        os.chown(run_dir, uid, gid, follow_symlinks=False)


def reclaim(run_dir: Path) -> None:
    """Take the run folder back from the container that has ended: the harness's own owner and
    mode 0o755, so a container that ran ``chmod 000 /out`` cannot lock the host out of its
    checks, its log and the failure record. The folder itself only; it is the mount point, which
    the container cannot replace with a link."""
    try:
        if os.stat(run_dir, follow_symlinks=False).st_uid != os.getuid():
            os.chown(run_dir, os.getuid(), os.getgid(), follow_symlinks=False)
        os.chmod(run_dir, 0o755)
    except OSError as exc:  # the checks that follow report what they cannot read
        log.warning("cannot take back %s: %s", run_dir, exc)


def check_readable_by_others(data_dir: Path) -> None:
    """A root harness runs containers as UNPRIVILEGED_UID, which reads MNIST at /data only if
    its files are readable by others: say so before any run, not as every run's failure."""
    if container_user(os.getuid(), os.getgid()) == (os.getuid(), os.getgid()):
        return  # the containers run as this user, who reads the folder already
    unreadable = [
        path.name
        for path in sorted(data_dir.iterdir())
        if path.is_file() and not path.stat().st_mode & stat.S_IROTH
    ]
    if not data_dir.stat().st_mode & stat.S_IXOTH or unreadable:
        what = ", ".join(unreadable[:4]) or "the folder itself"
        raise ExecutorError(
            f"MNIST in {data_dir} is not readable by the containers' user "
            f"{UNPRIVILEGED_UID} (harness runs as root, its containers never do): {what}",
            hint=f"chmod -R a+rX {shlex.quote(str(data_dir))}",
        )


def check_code_readable_by_others(code_dir: Path) -> None:
    """As ``check_readable_by_others``, for the user's code folder mounted at /opt/harness-user
    (every folder and file below it): a run that cannot import its code fails every run the
    same way, so it is said once, before any."""
    if container_user(os.getuid(), os.getgid()) == (os.getuid(), os.getgid()):
        return
    unreadable = []
    for folder, _dirs, files in os.walk(code_dir):
        here = Path(folder)
        if not here.stat().st_mode & stat.S_IROTH or not here.stat().st_mode & stat.S_IXOTH:
            unreadable.append(here)
        unreadable += [
            here / name
            for name in files
            if (here / name).is_file() and not (here / name).stat().st_mode & stat.S_IROTH
        ]
    if unreadable:
        shown = ", ".join(str(p.relative_to(code_dir)) for p in unreadable[:4])
        raise ExecutorError(
            f"your code in {code_dir} (workload.path) is not readable by the containers' user "
            f"{UNPRIVILEGED_UID} (harness runs as root, its containers never do): {shown}",
            hint=f"chmod -R a+rX {shlex.quote(str(code_dir))}",
        )


def pid_alive(pid: str) -> bool:
    """Whether a process with this pid runs on this host (one that is not ours counts); a
    label that is no positive pid names no process."""
    if not re.fullmatch(r"[0-9]{1,10}", pid) or int(pid) == 0:
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: asks, sends nothing
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def sweep_notice(count: int, pid: str, alive: bool) -> str:
    """The line the start-up sweep prints per owner (after ``harness: ``)."""
    containers = "container" if count == 1 else "containers"
    pid = pid if re.fullmatch(r"[0-9]{1,10}", pid) else "(unknown)"  # a label, shown on stderr
    why = (
        "alive, but not the harness that holds this results folder"
        if alive
        else "no longer running"
    )
    return f"removed {count} {containers} left by harness pid {pid} ({why}) for this results folder"
