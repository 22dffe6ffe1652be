"""Run each repeat in its own container, through the docker SDK.

This module is the executor: it reaches the engine, builds (or reuses) one workload image per
base image, probes each GPU image (``gpu_probe``), then creates, starts, waits for and removes
one container per run. The pieces it uses each have a module of their own:

- ``docker_kwargs``: what a run's container is created with (mounts, GPUs, hardening, labels);
- ``docker_outcome``: waiting for a container and what its end means (timeout, OOM, lost engine);
- ``docker_containers``: following a container's logs, killing and removing it;
- ``gpu_probe``: whether a GPU image's torch computes on the GPUs a run gets.

Every container carries a ``harness.run`` label, so that ``cleanup`` (also called on Ctrl-C,
SIGTERM and crashes) finds every container this matrix run started. A container is always
removed once its outcome is collected. The image ``local`` (the host's own environment) is run
as a local process, so one matrix can list it beside container images.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.contract import LOG_FILE, RunSpec
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
from harness.executors.docker_kwargs import LABEL_RUN, container_kwargs
from harness.executors.docker_outcome import (
    NO_GPU_RUNTIME_HINT,
    exit_outcome,
    is_no_gpu_runtime,
    lost,
    since,
    wait_for_exit,
)
from harness.executors.gpu_probe import run_container_probe
from harness.images import WorkloadImage, connect, ensure_workload_image
from harness.store import log_tail

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
        data_dir = self.data_dir()
        if not data_dir.is_dir():
            raise ExecutorError(
                f"MNIST folder {data_dir} does not exist",
                hint="pass --data-dir or set HARNESS_MNIST_DIR to the folder of IDX files",
            )
        for base in sorted({s.image for s in container_specs}):
            image = self.workload_image(base)
            prepared[base] = RunIdentity(image_id=image.image_id, base_digest=image.base_digest)
        self.probe_gpus(container_specs)
        return prepared

    def workload_image(self, base: str) -> WorkloadImage:
        if base not in self._images:
            self._images[base] = ensure_workload_image(self.client, base)
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
            data_dir=self.data_dir(),
            run_label=self.options.run_label,
            memory_limit=self.options.memory_limit,
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
        follower = LogFollower(container, run_dir / LOG_FILE)
        follower.start()
        outcome = self._wait(container, start, timeout_s, cancel, run_dir)
        follower.join(timeout=10)
        if not outcome.log_tail and outcome.status is not RunStatus.OK:
            outcome.log_tail = log_tail(run_dir)
        return outcome

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
        """Every container, running or not, that carries this matrix run's label."""
        return self.client.containers.list(
            all=True, filters={"label": f"{LABEL_RUN}={self.options.run_label}"}
        )

    def cleanup(self) -> None:
        """Kill and remove every container with this run's label (safe to call twice)."""
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
