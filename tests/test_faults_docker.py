"""Docker faults under a real ``harness run --executor docker`` on a real engine: a container
killed for memory (2), the daemon stopped mid-matrix and started again (5), an image that does
not exist (9), a GPU cell on an engine with no GPU runtime (10).

SIGINT and SIGTERM to a docker matrix (fault 4) are in test_docker_cli.py; timeouts of a
container in test_docker_executor.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import BASE_IMAGE
from fault_tools import ROOT, Harness, finished_files, records, resume_completes, write_matrix
from test_docker_cli import ours

from harness.results.run_reader import load_record

pytestmark = pytest.mark.docker

ENGINE = ROOT / "scripts" / "docker-engine.sh"


def docker_run(matrix: Path, out: Path, *args: str, cpus: str | None = None) -> Harness:
    return Harness(matrix, out, "--executor", "docker", *args, cpus=cpus)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def by_image(out: Path) -> dict[str, object]:
    """The run record of each image's (single) run."""
    found = {}
    for run_dir in sorted(out.glob("cells/*/repeat-0")):
        record = load_record(run_dir)
        found[record.spec["image"]] = record
    return found


@pytest.mark.slow
def test_container_killed_for_memory(client, workload_image, tmp_path):
    """Fault 2: run.memory_limit far below what training needs; raising it resumes. The matrix
    also holds a ``local`` cell, which the Docker executor runs as a process on the host
    (docs/docker.md): the memory limit of containers does not reach it, and it is kept."""
    name = unique("oom")
    images = ["local", BASE_IMAGE]
    matrix = write_matrix(tmp_path / "m.yaml", name, image=images, run_extra=", memory_limit: 64m")
    out = tmp_path / "out"
    first = docker_run(matrix, out)
    try:
        assert first.finish(timeout=600) == 1, first.text[-3000:]
    finally:
        first.kill()
    assert ours(client, name) == []
    got = by_image(out)
    record = got[BASE_IMAGE]
    assert record.status == "failed" and record.error.type == "oom"
    assert "killed for memory" in record.error.message
    assert "raise run.memory_limit" in record.error.message and "64m" in record.error.message
    assert "killed for memory" in first.text and "Traceback" not in first.text
    local = got["local"]  # trained in 64m-limited company, outside any container
    assert local.ok, local.error
    assert local.provenance.image == "local" and local.provenance.image_id is None
    assert local.provenance.hostname == socket.gethostname()  # a container's is its id
    kept = finished_files(out)
    assert kept

    write_matrix(matrix, name, image=images, run_extra=", memory_limit: 4g")
    # same folder: the limit is not part of the identity; only the container run is redone
    text = resume_completes(docker_run(matrix, out), out, kept, already_done=1)
    assert text.count("] start ") == 1
    assert ours(client, name) == []
    container = by_image(out)[BASE_IMAGE]
    assert container.provenance.image_id == workload_image.image_id
    assert container.provenance.hostname != socket.gethostname()
    # The same cell, the same wheels: the container trains what the host trains, bit for bit.
    assert container.digests.trajectory == local.digests.trajectory
    assert container.digests.final_weights == local.digests.final_weights


def engine(action: str) -> subprocess.CompletedProcess:
    return subprocess.run(  # argv list
        ["bash", str(ENGINE), action], capture_output=True, text=True, timeout=180, check=False
    )


@pytest.fixture
def own_engine(client):
    """The engine of scripts/docker-engine.sh, which this test may stop; restarted after."""
    root = os.environ.get("HARNESS_DOCKER_ROOT", "/var/lib/harness-docker")
    how = (
        'start it with eval "$(scripts/docker-engine.sh start)", which exports '
        f"DOCKER_HOST=unix://{root}/run/docker.sock (HARNESS_DOCKER_ROOT names another root); "
        "this test stops and restarts that engine, never another one"
    )
    if os.environ.get("DOCKER_HOST") != f"unix://{root}/run/docker.sock":
        pytest.fail(
            f"DOCKER_HOST={os.environ.get('DOCKER_HOST')} is not the engine of "
            f"scripts/docker-engine.sh: {how}",
            pytrace=False,
        )
    status = engine("status")
    if status.returncode != 0:
        pytest.fail(
            f"scripts/docker-engine.sh status says its engine is not running "
            f"({status.stdout.strip()} {status.stderr.strip()}): {how}",
            pytrace=False,
        )
    try:
        yield
    finally:
        started = engine("start")  # whatever happened: the other tests need it
        assert started.returncode == 0, started.stderr


@pytest.mark.slow
@pytest.mark.parametrize("after_s", [0.0, 3.0])
def test_daemon_stopped_mid_matrix_then_started(
    client, workload_image, own_engine, tmp_path, after_s
):
    """Fault 5: the engine stops while the second run's container starts (its exit is 143) or
    trains (the workload records SIGTERM and exits 1, and the engine may still answer for a
    moment): either way the run failed because the engine went away."""
    name = unique("daemon")
    matrix = write_matrix(
        tmp_path / "m.yaml", name, repeats=2, steps=600, epochs=4, image=BASE_IMAGE
    )
    out = tmp_path / "out"
    first = docker_run(matrix, out, cpus="0")  # one core: one container after the other
    try:
        first.wait_for("] ok ")
        kept = finished_files(out)
        deadline = time.monotonic() + 120
        while not [c for c in ours(client, name) if c.status == "running"]:
            assert time.monotonic() < deadline, first.text
            time.sleep(0.2)
        time.sleep(after_s)
        stopped = engine("stop")
        assert stopped.returncode == 0, stopped.stderr
        code = first.finish(timeout=300)
    finally:
        first.kill()
    assert code == 1, first.text[-3000:]
    assert "Docker daemon" in first.text and "Traceback" not in first.text
    failed = [r for r in records(out).values() if not r.ok]
    assert len(failed) == 1 and "Docker daemon" in failed[0].error.message
    assert "docker-engine.sh start" in failed[0].error.message or "resume" in (
        failed[0].error.message
    )
    assert finished_files(out) == kept

    started = engine("start")
    assert started.returncode == 0, started.stderr
    resume_completes(docker_run(matrix, out), out, kept, already_done=1)
    assert ours(client, name) == []  # the resumed run also removed what the stop left


@pytest.mark.slow
def test_image_that_does_not_exist(client, workload_image, tmp_path):
    """Fault 9: a clear error before anything starts, nothing written but the lock; the
    corrected matrix runs both its repeats in the same folder. They also show what any container
    run must: the repeats reproduce bit for bit, each record names the base image's digest and
    the workload image's id, and the report lists the digest."""
    name = unique("noimage")
    missing = f"harness-test/no-such-image:{uuid.uuid4().hex[:8]}"
    matrix = write_matrix(tmp_path / "m.yaml", name, repeats=2, image=missing)
    out = tmp_path / "out"
    first = docker_run(matrix, out)
    try:
        assert first.finish(timeout=300) == 2, first.text
    finally:
        first.kill()
    assert "no such image" in first.text and missing in first.text
    assert "hint:" in first.text and "Traceback" not in first.text
    assert ours(client, name) == []
    assert [p.name for p in out.iterdir()] == [".lock"]

    write_matrix(matrix, name, repeats=2, image=BASE_IMAGE)  # the fix: an image that exists
    fixed = Harness(matrix, out, "--executor", "docker", report=True)
    text = resume_completes(fixed, out, {}, already_done=0)
    assert text.count("] start ") == 2
    assert ours(client, name) == []
    got = list(records(out).values())
    assert len({r.digests.trajectory for r in got}) == 1  # the repeats reproduce
    for record in got:
        assert record.provenance.image_digest == workload_image.base_digest
        assert record.provenance.image_id == workload_image.image_id
    assert workload_image.base_digest[:19] in (out / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.gpu  # about the GPU runtime (its absence): skipped on an engine that has one
def test_gpu_cell_without_gpu_runtime(client, workload_image, tmp_path):
    """Fault 10: the CPU stand-in asked for a GPU, on an engine with no GPU runtime. The GPU
    probe fails that image's GPU runs up front (no container for them, no training) with the
    probe's message; its CPU run and the other image's run (``local``) train; exit 1; the
    report shows the message; no container left, the probe's included."""
    if "nvidia" in client.info().get("Runtimes", {}):
        pytest.skip("this engine has an NVIDIA runtime: the fault cannot be made here")
    name = unique("nogpu")
    matrix = write_matrix(
        tmp_path / "m.yaml",
        name,
        image=[BASE_IMAGE, "local"],
        tail="  accelerator: [cpu, gpu]\nexclude:\n  - {image: local, accelerator: gpu}\n",
    )
    out = tmp_path / "out"
    started = time.monotonic()
    first = Harness(matrix, out, "--executor", "docker", "--gpus", "0", report=True)
    try:
        line = first.wait_for("] failed ", timeout=300)
        failed_after = time.monotonic() - started
        assert first.finish(timeout=600) == 1, first.text[-3000:]
    finally:
        first.kill()
    assert "no GPU runtime" in line and "Traceback" not in first.text
    assert failed_after < 120, f"the GPU run failed {failed_after:.0f} s after the start"
    got = {}
    for run_dir in sorted(out.glob("cells/*/repeat-0")):
        record = load_record(run_dir)
        got[(record.spec["image"], record.spec["accelerator"])] = (run_dir, record)
    assert sorted(got) == [(BASE_IMAGE, "cpu"), (BASE_IMAGE, "gpu"), ("local", "cpu")]
    gpu_dir, gpu = got[(BASE_IMAGE, "gpu")]
    assert gpu.status == "failed" and gpu.steps == 0
    message = gpu.error.message
    assert message.startswith(f"GPU probe of image {BASE_IMAGE} with 1 GPU(s) failed:"), message
    assert "this Docker engine has no GPU runtime" in message
    assert "NVIDIA Container Toolkit" in message and "--executor local" in message
    assert gpu.timing.wall_seconds < 5 and not (gpu_dir / "losses.npy").exists()  # no training
    for key in [(BASE_IMAGE, "cpu"), ("local", "cpu")]:
        assert got[key][1].ok, got[key][1].error
    assert "this Docker engine has no GPU runtime" in (out / "report.md").read_text()
    assert ours(client, name) == []
