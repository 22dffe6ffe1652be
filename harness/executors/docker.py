"""Run each repeat in its own container, through the docker SDK.

This module is the executor: it reaches the engine, builds (or reuses) one workload image per
base image, checks the GPU runtime, then creates, starts, waits for and removes one container
per run. The pieces it uses each have a module of their own:

- ``docker_kwargs``: what a run's container is created with (mounts, GPUs, hardening, labels);
- ``docker_outcome``: waiting for a container and what its end means (timeout, OOM, lost engine);
- ``docker_containers``: following a container's logs, killing and removing it;
- ``harness/run_folder.py``: the run folder is not followed: the log is captured outside the
  mount, and what the container left there (links, FIFOs, devices) is removed and fails the run.

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
from harness.executors.docker_kwargs import LABEL_CELL, LABEL_RUN, container_kwargs
from harness.executors.docker_outcome import (
    NO_GPU_RUNTIME_HINT,
    exit_outcome,
    is_no_gpu_runtime,
    lost,
    since,
    wait_for_exit,
)
from harness.images import WorkloadImage, connect, ensure_workload_image
from harness.run_folder import capture_path, place_log, planted_message, reject_planted
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
        """Reach the engine, build or reuse one image per base, check the GPU runtime.

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
        gpu_images = sorted({s.image for s in container_specs if s.accelerator == "gpu"})
        if gpu_images:
            self.check_gpu_runtime(self._images[gpu_images[0]].tag)
        return prepared

    def workload_image(self, base: str) -> WorkloadImage:
        if base not in self._images:
            self._images[base] = ensure_workload_image(self.client, base)
        return self._images[base]

    def check_gpu_runtime(self, image: str) -> None:
        """Start a throwaway container with a GPU request: the one sure test of the runtime."""
        import docker
        from docker.types import DeviceRequest

        container = None
        try:
            container = self.client.containers.create(
                image,
                entrypoint=["python", "-c", "pass"],
                device_requests=[DeviceRequest(count=1, capabilities=[["gpu"]])],
                network_mode="none",
                labels={LABEL_RUN: self.options.run_label, LABEL_CELL: "gpu-probe"},
            )
            container.start()
            container.wait(timeout=60)
        except docker.errors.APIError as exc:
            if is_no_gpu_runtime(exc):
                runtimes = ", ".join(sorted(self.client.info().get("Runtimes", {})))
                raise ExecutorError(
                    "the matrix has GPU cells, but this Docker engine has no GPU runtime "
                    f"(runtimes: {runtimes or 'none'}; engine said: {exc.explanation or exc})",
                    hint=NO_GPU_RUNTIME_HINT,
                ) from exc
            raise ExecutorError(f"a GPU test container failed to start: {exc}") from exc
        finally:
            if container is not None:
                remove(container)

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

        kwargs = container_kwargs(
            spec,
            slot,
            run_dir,
            image=self.workload_image(spec.image),
            data_dir=self.data_dir(),
            run_label=self.options.run_label,
            memory_limit=self.options.memory_limit,
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
        0), with a message naming each (harness/run_folder.py)."""
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
