"""Run each repeat in its own container, through the docker SDK.

This module is the executor: it reaches the engine, builds (or reuses) one workload image per
base image, probes each GPU image (``gpu_probe``), then creates, starts, waits for and removes
one container per run. The pieces it uses each have a module of their own:

- ``docker_kwargs``: what a run's container is created with (mounts, GPUs, hardening, labels);
- ``docker_outcome``: waiting for a container and what its end means (timeout, OOM, lost engine);
- ``docker_containers``: following a container's logs, stopping (SIGINT, SIGTERM, SIGKILL), killing
  and removing it;
- ``docker_host_folders``: the host folders the containers' (never root) user must read or write;
- ``docker_sweep``: removing at start what a harness that is gone left in the results folder;
- ``gpu_probe_host``: whether a GPU image's torch computes on the GPUs a run gets;
- ``harness/results/untrusted_run_folder.py``: the run folder is not followed: the log is captured
  outside the mount, and what the container left there (links, FIFOs, devices) is removed and
  fails the run.

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
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.contract import ErrorType, RunSpec
from harness.errors import ExecutorError
from harness.executors.base import (
    Executor,
    ExecutorOptions,
    RunIdentity,
    RunJob,
    RunOutcome,
    RunStatus,
    Slot,
)
from harness.executors.docker_containers import LogFollower, remove
from harness.executors.docker_host_folders import (
    check_code_readable_by_others,
    check_readable_by_others,
    reclaim,
    writable_for,
)
from harness.executors.docker_kwargs import LABEL_INVOCATION, Owner, container_kwargs
from harness.executors.docker_outcome import (
    NO_GPU_RUNTIME_HINT,
    exit_outcome,
    is_no_gpu_runtime,
    lost,
    since,
    wait_for_exit,
)
from harness.executors.docker_sweep import sweep_folder
from harness.executors.gpu_probe_host import run_container_probe
from harness.executors.images import WorkloadImage, connect, ensure_workload_image
from harness.results.run_reader import log_tail
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

    def execute(self, job: RunJob) -> RunOutcome:
        spec, slot, run_dir = job.spec, job.slot, job.run_dir
        if spec.image == "local":
            return self._local_executor().execute(job)
        failed_probe = self.probe_failure(spec)
        if failed_probe is not None:
            return RunOutcome(RunStatus.FAILED, 0.0, None, failed_probe)
        start = time.monotonic()
        container = self._create(spec, slot, run_dir, start)
        if isinstance(container, RunOutcome):
            return container
        try:
            if job.cancel.is_set():
                return RunOutcome(RunStatus.ABORTED, 0.0, None, "stopped before it started")
            return self._start_and_wait(container, start, job)
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

    def _start_and_wait(self, container: Any, start: float, job: RunJob) -> RunOutcome:
        run_dir = job.run_dir
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
        outcome = self._wait(container, start, job)
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

    def _wait(self, container: Any, start: float, job: RunJob) -> RunOutcome:
        """Wait for the container to end; its exit, or why it had to stop, as an outcome."""
        end = wait_for_exit(
            container,
            start=start,
            timeout_s=job.timeout_s,
            cancel=job.cancel,
            engine_answers=self._engine_answers,
        )
        if isinstance(end, RunOutcome):
            return end
        return exit_outcome(
            container,
            end,
            start=start,
            run_dir=job.run_dir,
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
        found = self.client.containers.list(
            all=True, filters={"label": f"{LABEL_INVOCATION}={self.invocation}"}
        )
        return list(found)

    def sweep(self) -> list[str]:
        """Remove the containers a harness that is gone left in this results folder
        (``docker_sweep.sweep_folder``); called under the folder's lock, before ``prepare``."""
        if self.options.out is None:
            return []
        return sweep_folder(lambda: self.client, self.options.out, self.owner)

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
