"""``harness doctor``: what this machine can do, before a matrix is started on it.

Docker reachable and its version, the GPU runtime, the GPUs seen, the GPU probe, the free disk,
and whether MNIST is found and matches its MD5s. Every check returns data; nothing here raises or
prints.

The GPU probe is the one ``harness run`` runs before a GPU image's runs
(``harness.executors.gpu_probe_host``): with ``image``, in that image's workload image (built or
reused) under the runs' hardening, with ``gpus`` GPUs; without, on the host's workload
interpreter when nvidia-smi sees a GPU (not applicable otherwise).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.mnist import DataError, missing_files, verify_mnist
from harness.run.schedule import NO_NVIDIA_SMI, nvidia_gpus

log = logging.getLogger(__name__)


@dataclass
class Check:
    """One line of the report: ``ok`` is None where the answer is "not applicable"."""

    name: str
    ok: bool | None
    detail: str
    hint: str = ""


@dataclass
class DoctorReport:
    docker_host: str
    docker_reachable: bool
    docker_version: str | None
    docker_error: str | None
    runtimes: list[str]
    gpu_runtime: bool
    gpus: list[str]
    gpu_error: str | None
    disk_path: str
    disk_free_bytes: int
    mnist_dir: str | None
    mnist_found: bool
    mnist_md5_ok: bool | None
    mnist_error: str | None
    #: the GPU probe's verdict: where it ran, ok, message, the probe's own facts; None: not run
    gpu_probe: dict[str, Any] | None = None
    checks: list[Check] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def docker_status() -> tuple[bool, str | None, list[str], str | None]:
    """(reachable, server version, runtimes, error) of the engine DOCKER_HOST points at."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        try:
            version = client.version().get("Version")
            runtimes = sorted(client.info().get("Runtimes", {}))
        finally:
            client.close()
    except Exception as exc:  # any failure means "not reachable", with the reason
        return False, None, [], docker_reason(exc)
    return True, version, runtimes, None


#: Words in the Docker client's exception, and what they mean, in the order they are tried.
_DOCKER_REASONS = (
    ("No such file or directory", "no Docker engine runs there (the socket does not exist)"),
    ("Connection refused", "no Docker engine answers there (connection refused)"),
    ("Permission denied", "the socket is there but this user may not use it (permission denied)"),
    ("timed out", "the engine did not answer in time"),
)


def docker_reason(exc: BaseException) -> str:
    """Why the engine is not reachable, as a sentence rather than the client's nested
    exception text (``('Connection aborted.', FileNotFoundError(2, ...))``)."""
    text = str(exc)
    for words, reason in _DOCKER_REASONS:
        if words.lower() in text.lower():
            return reason
    first = " ".join(text.split())[:160] or type(exc).__name__
    return f"the Docker client failed: {first}"


#: ``harness doctor``'s MNIST line when neither --data-dir nor HARNESS_MNIST_DIR names a folder.
NO_MNIST_DIR = (
    "no MNIST folder given (neither --data-dir nor HARNESS_MNIST_DIR); harness run downloads "
    "it into ~/.cache/harness/mnist"
)


def check_mnist(data_dir: Path | None) -> tuple[bool, bool | None, str | None]:
    """(found, md5 ok, error): the four IDX files (plain or .gz) against MNIST's known MD5s."""
    if data_dir is None or not data_dir.is_dir():
        if data_dir is None:
            return False, None, NO_MNIST_DIR
        return False, None, f"no MNIST folder at {data_dir}"
    missing = missing_files(data_dir)
    if missing:
        return False, None, f"{data_dir}: missing {', '.join(missing)} (raw or .gz)"
    try:
        verify_mnist(data_dir)
    except DataError as exc:
        return True, False, str(exc)
    return True, True, None


def gpu_probe(
    image: str | None, gpus: int, seen_gpus: list[str], data_dir: Path | None
) -> dict[str, Any] | None:
    """The GPU probe's verdict as data: in ``image``'s workload image (a run's container), or
    on the host's workload interpreter when a GPU is seen; None when neither applies."""
    from harness.executors.gpu_probe_host import ProbeResult, probe_host

    if image is None and not seen_gpus:
        return None
    if image is None or image == "local":  # "local": the host's own environment
        from harness.executors.local import default_python

        where = f"host ({default_python()})"
        result = probe_host(default_python(), gpus)
    else:
        where = f"container of image {image}"
        try:
            result = _container_probe(image, gpus, data_dir)
        except Exception as exc:  # no engine, no image, a failed build: the probe's answer
            result = ProbeResult(False, f"cannot run the probe in {image}: {exc}")
    return {
        "where": where,
        "gpus": gpus,
        "ok": result.ok,
        "message": result.message,
        "facts": result.facts,
    }


def _container_probe(image: str, gpus: int, data_dir: Path | None) -> Any:
    """The probe exactly as ``harness run`` runs it before ``image``'s GPU runs."""
    import tempfile

    from harness.contract import RunSpec
    from harness.executors.base import ExecutorOptions
    from harness.executors.docker import DockerExecutor
    from harness.executors.gpu_probe_host import run_container_probe

    with tempfile.TemporaryDirectory(prefix="harness-doctor-") as empty:
        mount = data_dir if data_dir is not None and data_dir.is_dir() else Path(empty)
        executor = DockerExecutor(
            ExecutorOptions(run_label=f"doctor-{os.getpid()}", data_dir=mount)
        )
        try:
            spec = RunSpec(image=image, accelerator="gpu", devices=gpus)
            return run_container_probe(executor.client, spec, gpus, executor._container_kwargs)
        finally:
            executor.cleanup()


def run_doctor(
    data_dir: Path | None = None,
    disk_path: Path | None = None,
    *,
    image: str | None = None,
    gpus: int = 1,
) -> DoctorReport:
    """Collect every check; ``data_dir`` defaults to the runner's MNIST default; ``image`` and
    ``gpus`` aim the GPU probe at an image (see the module's docstring)."""
    if data_dir is None:
        from harness.run.mnist_source import default_data_dir

        data_dir = default_data_dir()
    disk_path = Path(disk_path or Path.cwd())
    reachable, version, runtimes, docker_error = docker_status()
    gpus_list, gpu_error = nvidia_gpus()
    free = shutil.disk_usage(disk_path).free
    found, md5_ok, mnist_error = check_mnist(data_dir)
    report = DoctorReport(
        docker_host=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
        docker_reachable=reachable,
        docker_version=version,
        docker_error=docker_error,
        runtimes=runtimes,
        gpu_runtime="nvidia" in runtimes,
        gpus=gpus_list,
        gpu_error=gpu_error,
        disk_path=str(disk_path),
        disk_free_bytes=free,
        mnist_dir=str(data_dir) if data_dir else None,
        mnist_found=found,
        mnist_md5_ok=md5_ok,
        mnist_error=mnist_error,
        gpu_probe=gpu_probe(image, gpus, gpus_list, data_dir),
    )
    report.checks = _checks(report)
    return report


def _checks(r: DoctorReport) -> list[Check]:
    gib = r.disk_free_bytes / 2**30
    return [
        Check(
            "docker",
            r.docker_reachable,
            f"engine {r.docker_version} at {r.docker_host}"
            if r.docker_reachable
            else f"not reachable at {r.docker_host}: {r.docker_error}.",
            ""
            if r.docker_reachable
            else 'eval "$(scripts/docker-engine.sh start)", set DOCKER_HOST, or --executor local',
        ),
        Check(
            "gpu runtime",
            r.gpu_runtime if r.docker_reachable else None,
            "nvidia" if r.gpu_runtime else f"none (runtimes: {', '.join(r.runtimes) or '-'})",
            ""
            if r.gpu_runtime
            else "GPU cells in containers need the NVIDIA Container Toolkit; or --executor local",
        ),
        Check(
            "gpus",
            bool(r.gpus) if r.gpus or r.gpu_error != NO_NVIDIA_SMI else None,
            "; ".join(r.gpus) if r.gpus else (r.gpu_error or "none"),
        ),
        _probe_check(r.gpu_probe),
        Check(
            "disk",
            gib >= 10,
            f"{gib:.1f} GiB free at {r.disk_path}",
            "" if gib >= 10 else "a workload image needs about 7 GB",
        ),
        Check(
            "mnist",
            r.mnist_found and r.mnist_md5_ok is not False,
            (f"{r.mnist_dir}: " if r.mnist_dir else "")
            + ("MD5 ok" if r.mnist_md5_ok else (r.mnist_error or "found")),
            "" if r.mnist_found else "set HARNESS_MNIST_DIR or pass --data-dir",
        ),
    ]


def _probe_check(probe: dict[str, Any] | None) -> Check:
    if probe is None:
        return Check("gpu probe", None, "not run: no GPU seen (--image IMAGE probes an image)")
    if not probe["ok"]:
        return Check("gpu probe", False, f"{probe['where']}: {probe['message']}")
    facts = probe["facts"]
    names = ", ".join(d.get("name", "?") for d in facts.get("devices", []))
    return Check(
        "gpu probe",
        True,
        f"{probe['where']}: torch {facts.get('torch')} (CUDA {facts.get('cuda')}, driver's CUDA "
        f"{facts.get('driver_cuda')}) ran a matmul on {probe['gpus']} GPU(s): {names}",
    )
