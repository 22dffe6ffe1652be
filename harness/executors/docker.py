"""Run each repeat in its own container, through the docker SDK.

One container per run: the GPUs of its slot as a device request, a cpuset on its cores, no
network, MNIST read-only at /data, the run folder read-write at /out, the invoking uid:gid, a
read-only root file system with a tmpfs /tmp, no capabilities, and a ``harness.run`` label so
that ``cleanup`` (also called on Ctrl-C, SIGTERM and crashes) finds every container this matrix
run started. A container is always removed once its outcome is collected.

The image ``local`` (the host's own environment) is run as a local process, so one matrix can
list it beside container images.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.contract import LOG_FILE, RECORD_FILE, SPEC_FILE, RunSpec, run_environment
from harness.errors import ExecutorError
from harness.executors.base import Executor, ExecutorOptions, RunOutcome, RunStatus, Slot
from harness.images import WorkloadImage, connect, ensure_workload_image
from harness.store import log_tail

log = logging.getLogger(__name__)

LABEL_RUN = "harness.run"
LABEL_CELL = "harness.cell"
LABEL_REPEAT = "harness.repeat"
DATA_MOUNT = "/data"
OUT_MOUNT = "/out"
SHM_SIZE = "1g"
TMPFS_TMP = "rw,exec,nosuid,nodev,size=4g,mode=1777"
PIDS_LIMIT = 4096
#: How often the wait loop looks at the cancel event and the deadline.
POLL_S = 0.5

NO_GPU_RUNTIME_HINT = (
    "install the NVIDIA Container Toolkit and restart the engine "
    "(https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/), "
    "or run the GPU cells without containers: --executor local"
)


def container_environment(spec: RunSpec, slot: Slot) -> dict[str, str]:
    """The run's environment inside the container: pinned threads, hash seed, writable HOME."""
    env = {
        "PYTHONUNBUFFERED": "1",
        # The runtime exposes only the requested GPUs, renumbered from 0.
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(slot.gpus))),
        "HOME": "/tmp",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "XDG_CACHE_HOME": "/tmp/.cache",
        "TORCHINDUCTOR_CACHE_DIR": "/tmp/torchinductor",
    }
    env.update(run_environment(spec))
    return env


def container_kwargs(
    spec: RunSpec,
    slot: Slot,
    run_dir: Path,
    *,
    image: str,
    data_dir: Path,
    run_label: str,
    user: str | None = None,
    memory_limit: str | None = None,
) -> dict[str, Any]:
    """Everything ``containers.create`` gets for one run: a pure function, tested without Docker."""
    from docker.types import DeviceRequest, Mount

    kwargs: dict[str, Any] = {
        "image": image,
        "command": [
            "--spec",
            f"{OUT_MOUNT}/{SPEC_FILE}",
            "--out",
            OUT_MOUNT,
            "--data-dir",
            DATA_MOUNT,
        ],
        "detach": True,
        "environment": container_environment(spec, slot),
        "labels": {
            LABEL_RUN: run_label,
            LABEL_CELL: spec.cell_id,
            LABEL_REPEAT: str(spec.repeat),
        },
        "mounts": [
            Mount(DATA_MOUNT, str(Path(data_dir).resolve()), type="bind", read_only=True),
            Mount(OUT_MOUNT, str(Path(run_dir).resolve()), type="bind", read_only=False),
        ],
        "network_mode": "none",
        "user": user or f"{os.getuid()}:{os.getgid()}",
        "working_dir": "/tmp",
        "shm_size": SHM_SIZE,
        "read_only": True,
        "tmpfs": {"/tmp": TMPFS_TMP},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": PIDS_LIMIT,
        "stdin_open": False,
        "tty": False,
    }
    if slot.cpus:
        # cpuset, never nano_cpus: under a CPU quota torch still starts a thread per core and
        # is throttled about tenfold (ENVIRONMENT.md).
        kwargs["cpuset_cpus"] = ",".join(str(c) for c in slot.cpus)
    if memory_limit:
        # Swap counted in the limit too, so a run over it is killed rather than swapping.
        kwargs["mem_limit"] = memory_limit
        kwargs["memswap_limit"] = memory_limit
    if spec.accelerator == "gpu":
        kwargs["device_requests"] = [
            DeviceRequest(device_ids=[str(g) for g in slot.gpus], capabilities=[["gpu"]])
        ]
    return kwargs


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


class DockerExecutor(Executor):
    """One container per run from the workload image built for the run's base image."""

    name = "docker"

    def __init__(self, options: ExecutorOptions) -> None:
        super().__init__(options)
        self._client: Any = None
        self._images: dict[str, WorkloadImage] = {}
        self._live: set[str] = set()
        self._lock = threading.Lock()
        self._local: Executor | None = None

    # -- setup -------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect()
        return self._client

    def data_dir(self) -> Path:
        """MNIST on the host, as the runner resolved it (--data-dir, HARNESS_MNIST_DIR, ...)."""
        if self.options.data_dir is not None:
            return Path(self.options.data_dir)
        raise ExecutorError(
            "the Docker executor needs MNIST on the host to mount it read-only at /data",
            hint="pass --data-dir or set HARNESS_MNIST_DIR (containers have no network)",
        )

    def prepare(self, specs: Sequence[RunSpec]) -> dict[str, dict[str, str | None]]:
        """Reach the engine, build or reuse one image per base, check the GPU runtime."""
        container_specs = [s for s in specs if s.image != "local"]
        if not container_specs:
            return {}
        data_dir = self.data_dir()
        if not data_dir.is_dir():
            raise ExecutorError(
                f"MNIST folder {data_dir} does not exist",
                hint="pass --data-dir or set HARNESS_MNIST_DIR to the folder of IDX files",
            )
        provenance: dict[str, dict[str, str | None]] = {}
        for base in sorted({s.image for s in container_specs}):
            image = self.workload_image(base)
            provenance[base] = {"image_digest": image.base_digest, "image_id": image.image_id}
        gpu_images = sorted({s.image for s in container_specs if s.accelerator == "gpu"})
        if gpu_images:
            self.check_gpu_runtime(self._images[gpu_images[0]].tag)
        return provenance

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
                _remove(container)

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
        import docker
        import requests

        start = time.monotonic()
        image = self.workload_image(spec.image)
        kwargs = container_kwargs(
            spec,
            slot,
            run_dir,
            image=image.tag,
            data_dir=self.data_dir(),
            run_label=self.options.run_label,
            memory_limit=self.options.extra.get("memory_limit"),
        )
        extra = {"image": image.tag, "image_id": image.image_id}
        try:
            container = self.client.containers.create(**kwargs)
        except requests.exceptions.ConnectionError as exc:  # the engine went away
            return self._lost(start, exc, extra)
        except docker.errors.DockerException as exc:
            return RunOutcome(
                RunStatus.FAILED,
                time.monotonic() - start,
                None,
                f"cannot create the container: {exc}",
                extra=extra,
            )
        with self._lock:
            self._live.add(container.id)
        extra["container_id"] = container.id
        try:
            if cancel.is_set():
                return RunOutcome(
                    RunStatus.ABORTED, 0.0, None, "stopped before it started", extra=extra
                )
            try:
                container.start()
            except requests.exceptions.ConnectionError as exc:
                return self._lost(start, exc, extra)
            except docker.errors.APIError as exc:
                message = f"the container did not start: {exc.explanation or exc}"
                if is_no_gpu_runtime(exc):
                    message += f"; no GPU runtime: {NO_GPU_RUNTIME_HINT}"
                return RunOutcome(
                    RunStatus.FAILED, time.monotonic() - start, None, message, extra=extra
                )
            follower = _LogFollower(container, run_dir / LOG_FILE)
            follower.start()
            outcome = self._wait(container, start, timeout_s, cancel, run_dir)
            follower.join(timeout=10)
            outcome.extra.update(extra)
            if not outcome.log_tail and outcome.status is not RunStatus.OK:
                outcome.log_tail = log_tail(run_dir)
            return outcome
        finally:
            _remove(container)
            with self._lock:
                self._live.discard(container.id)

    def _wait(
        self,
        container: Any,
        start: float,
        timeout_s: float,
        cancel: threading.Event,
        run_dir: Path,
    ) -> RunOutcome:
        import docker
        import requests

        deadline = start + timeout_s
        while True:
            if cancel.is_set():
                _kill(container)
                return RunOutcome(
                    RunStatus.ABORTED,
                    time.monotonic() - start,
                    None,
                    "stopped: the harness was interrupted",
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _kill(container)
                return RunOutcome(
                    RunStatus.TIMEOUT,
                    time.monotonic() - start,
                    137,
                    f"timed out after {timeout_s:g} s and was killed; raise run.timeout_s in "
                    "the matrix if the run needs longer",
                )
            try:
                result = container.wait(timeout=max(0.05, min(POLL_S, remaining)))
                break
            # docker SDK 7.x raises requests' ConnectionError, not ReadTimeout, on a timeout;
            # a ping tells a slow container from an engine that went away.
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
                if self._engine_answers():
                    continue
                return self._lost(start, exc)
            except docker.errors.NotFound:
                # cleanup() removed it from under us (Ctrl-C, SIGTERM)
                return RunOutcome(
                    RunStatus.ABORTED,
                    time.monotonic() - start,
                    None,
                    "stopped: the container was removed by cleanup",
                )
        seconds = time.monotonic() - start
        code = int(result.get("StatusCode", -1))
        try:
            container.reload()
            oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        except docker.errors.NotFound:
            oom = False
        except requests.exceptions.ConnectionError as exc:
            return self._lost(start, exc)
        if oom:
            limit = self.options.extra.get("memory_limit")
            at = f" at run.memory_limit {limit}" if limit else " (no run.memory_limit set)"
            return RunOutcome(
                RunStatus.FAILED,
                seconds,
                code,
                f"killed for memory (State.OOMKilled){at}; raise run.memory_limit in the "
                "matrix (the results folder resumes), or run fewer runs side by side",
                extra={"error_type": "oom"},
            )
        if code == 143 and not self._engine_answers():
            return self._lost(start, RuntimeError("the engine stopped the container (exit 143)"))
        if code == 143:
            return RunOutcome(
                RunStatus.FAILED,
                seconds,
                code,
                "the container was stopped from outside (SIGTERM, exit 143): was the Docker "
                "daemon stopped or restarted, or `docker stop` run? Rerun the same command to "
                "resume",
            )
        if code == 0:
            if not (run_dir / RECORD_FILE).is_file():
                return RunOutcome(
                    RunStatus.FAILED,
                    seconds,
                    code,
                    f"the container exited 0 but wrote no {RECORD_FILE}",
                )
            return RunOutcome(RunStatus.OK, seconds, 0)
        return RunOutcome(RunStatus.FAILED, seconds, code, f"the container exited with code {code}")

    def _engine_answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:  # noqa: BLE001 - any failure to answer means it is gone
            return False

    def _lost(
        self, start: float, exc: BaseException, extra: dict[str, str] | None = None
    ) -> RunOutcome:
        """The outcome of a run whose engine went away, at any point of its life."""
        return RunOutcome(
            RunStatus.FAILED,
            time.monotonic() - start,
            None,
            daemon_unreachable(exc),
            extra={**(extra or {}), "error_type": "docker_unreachable"},
        )

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
            _remove(container)


class _LogFollower(threading.Thread):
    """Appends the container's stdout and stderr to run.log as they arrive."""

    def __init__(self, container: Any, path: Path) -> None:
        super().__init__(name=f"logs-{container.short_id}", daemon=True)
        self.container = container
        self.path = path

    def run(self) -> None:
        try:
            with open(self.path, "ab") as handle:
                for chunk in self.container.logs(stream=True, follow=True):
                    handle.write(chunk)
                    handle.flush()
        except Exception as exc:  # noqa: BLE001 - a lost log line must not fail the run
            log.debug("log stream of %s ended: %s", self.container.short_id, exc)


def _kill(container: Any) -> None:
    import docker
    import requests

    try:
        container.kill()
    except (docker.errors.APIError, requests.exceptions.ConnectionError) as exc:  # gone
        log.debug("kill %s: %s", container.short_id, exc)


def _remove(container: Any) -> None:
    import docker
    import requests

    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except requests.exceptions.ConnectionError as exc:
        # The engine is gone; the next `harness run` of this matrix removes it by its label.
        log.warning("could not remove container %s: %s", container.short_id, exc)
    except docker.errors.APIError as exc:
        if "already in progress" not in str(exc):
            log.warning("could not remove container %s: %s", container.short_id, exc)
