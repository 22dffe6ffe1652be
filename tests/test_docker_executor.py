"""The Docker executor on a real engine, a real workload image and real MNIST.

Fails when no engine answers (CI always starts one: scripts/docker-engine.sh start).
The base image is the CPU stand-in (scripts/build-standin-base.sh) unless HARNESS_TEST_BASE_IMAGE
names another; the workload image is built through harness.executors.images (HARNESS_WHEELHOUSE
offline).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import BASE_IMAGE

from harness.contract import (
    LOG_FILE,
    LOSSES_FILE,
    RECORD_FILE,
    SPEC_FILE,
    RunSpec,
    write_json_atomic,
)
from harness.errors import ExecutorError
from harness.executors.base import ExecutorOptions, RunIdentity, RunStatus, Slot
from harness.executors.docker_kwargs import container_user
from harness.results.run_reader import load_record

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[1]
MNIST = Path(os.environ.get("HARNESS_MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))
STEPS = 200


def make_executor(label: str | None = None):
    from harness.executors.docker import DockerExecutor

    return DockerExecutor(
        ExecutorOptions(run_label=label or f"test-{uuid.uuid4().hex[:8]}", data_dir=MNIST)
    )


def labelled(client, label: str) -> list:
    return client.containers.list(all=True, filters={"label": f"harness.run={label}"})


def write_spec(run_dir: Path, spec: RunSpec) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / SPEC_FILE, spec.to_dict())
    return run_dir


def cell_spec(**changes) -> RunSpec:
    base = RunSpec(
        placement="before_model",
        max_steps_per_epoch=STEPS,
        threads=1,
        image=BASE_IMAGE,
        cell_id="dockertest",
        cell_name="docker-test",
    )
    return base.replace(**changes)


def trajectory_digest(run_dir: Path) -> str:
    losses = np.load(run_dir / LOSSES_FILE)
    return hashlib.sha256(np.ascontiguousarray(losses, dtype="<f4").tobytes()).hexdigest()


@pytest.mark.slow
def test_a_container_run_records_its_image_and_is_removed(client, workload_image, tmp_path) -> None:
    """One run in a container: an ok record with the image's provenance and the thread count,
    losses owned by the container's user (the invoking user; a root harness's: the unprivileged
    uid), the log streamed, the container removed. (That the
    container trains bit for bit what a local process trains, and that repeats in containers
    reproduce: test_faults_docker.py, whose matrices run them anyway.)"""
    executor = make_executor()
    provenance = executor.prepare([cell_spec()])
    assert provenance[BASE_IMAGE] == RunIdentity(
        base_digest=workload_image.base_digest,
        image_id=workload_image.image_id,
    )
    spec = cell_spec()
    run_dir = write_spec(tmp_path / "docker-0", spec)
    outcome = executor.run(spec, Slot(cpus=(0,)), run_dir, timeout_s=600, cancel=threading.Event())
    assert outcome.status is RunStatus.OK, outcome.message + outcome.log_tail
    record = load_record(run_dir)
    assert record.ok and record.steps == STEPS
    assert record.provenance.image_digest == workload_image.base_digest
    assert record.provenance.image_id == workload_image.image_id
    assert record.provenance.env.get("OMP_NUM_THREADS") == "1"
    assert record.digests.trajectory == trajectory_digest(run_dir)
    assert (run_dir / LOG_FILE).stat().st_size > 0  # logs streamed from the container
    assert (run_dir / LOSSES_FILE).stat().st_uid == container_user(os.getuid(), os.getgid())[0]
    assert labelled(client, executor.options.run_label) == []  # removed after a normal run


def test_failed_run_is_an_outcome_and_leaves_nothing(client, workload_image, tmp_path) -> None:
    empty = tmp_path / "no-mnist"
    empty.mkdir()
    from harness.executors.docker import DockerExecutor

    executor = DockerExecutor(
        ExecutorOptions(run_label=f"test-{uuid.uuid4().hex[:8]}", data_dir=empty)
    )
    spec = cell_spec()
    run_dir = write_spec(tmp_path / "run", spec)
    outcome = executor.run(spec, Slot(cpus=(0,)), run_dir, timeout_s=300, cancel=threading.Event())
    assert outcome.status is RunStatus.FAILED
    assert outcome.exit_code not in (0, None)
    assert "MNIST" in (run_dir / LOG_FILE).read_text() + outcome.log_tail
    assert labelled(client, executor.options.run_label) == []


def test_timeout_kills_and_removes(client, workload_image, tmp_path) -> None:
    executor = make_executor()
    spec = cell_spec(max_steps_per_epoch=None, epochs=5)
    run_dir = write_spec(tmp_path / "run", spec)
    outcome = executor.run(spec, Slot(cpus=(0,)), run_dir, timeout_s=4, cancel=threading.Event())
    assert outcome.status is RunStatus.TIMEOUT
    assert "timed out after 4 s" in outcome.message
    # stopped mid-run (5 whole epochs take minutes): SIGINT first, so the workload may record
    # its interruption, but never an ok run
    if (run_dir / RECORD_FILE).exists():
        assert json.loads((run_dir / RECORD_FILE).read_text())["status"] == "failed"
    assert labelled(client, executor.options.run_label) == []


def test_live_container_is_hardened_and_cancel_aborts(client, workload_image, tmp_path) -> None:
    """docker inspect of a running run's container, then a cancel: aborted and removed."""
    executor = make_executor()
    spec = cell_spec(max_steps_per_epoch=None, epochs=5)
    run_dir = write_spec(tmp_path / "run", spec)
    cancel = threading.Event()
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(
            outcome=executor.run(spec, Slot(cpus=(0,)), run_dir, timeout_s=300, cancel=cancel)
        )
    )
    thread.start()
    try:
        deadline = time.monotonic() + 300
        running = []
        while time.monotonic() < deadline and not running:
            running = [
                c for c in labelled(client, executor.options.run_label) if c.status == "running"
            ]
            time.sleep(0.2)
        assert running, "the run's container never showed up as running (300 s)"
        attrs = client.api.inspect_container(running[0].id)
        host = attrs["HostConfig"]
        assert host["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in host["SecurityOpt"]
        assert host["ReadonlyRootfs"] is True
        assert "/tmp" in host["Tmpfs"]
        assert host["PidsLimit"] and host["PidsLimit"] > 0
        assert host["NetworkMode"] == "none"
        assert host["CpusetCpus"] == "0"
        assert host["ShmSize"] >= 2**30
        assert not host.get("NanoCpus")
        uid, gid = container_user(os.getuid(), os.getgid())
        assert attrs["Config"]["User"] == f"{uid}:{gid}"
        assert attrs["Config"]["Labels"]["harness.cell"] == "dockertest"
        mounts = {m["Destination"]: m for m in attrs["Mounts"]}
        assert mounts["/data"]["RW"] is False
        assert mounts["/out"]["RW"] is True
        assert mounts["/out"]["Source"] == str(run_dir.resolve())
    finally:
        cancel.set()
        thread.join(timeout=60)
    assert result["outcome"].status is RunStatus.ABORTED
    assert labelled(client, executor.options.run_label) == []


@pytest.mark.gpu  # about the GPU runtime (its absence): skipped on an engine that has one
def test_gpu_cell_without_nvidia_runtime_is_a_clear_error(client, workload_image, tmp_path) -> None:
    """The GPU probe in prepare fails (and is removed); prepare does not raise, the image's GPU
    run then fails at once with the probe's message, without a container."""
    if "nvidia" in client.info().get("Runtimes", {}):
        pytest.skip("this engine has an NVIDIA runtime: the fault cannot be made here")
    executor = make_executor()
    spec = cell_spec(accelerator="gpu")
    identities = executor.prepare([spec])
    assert identities[spec.image].image_id == workload_image.image_id
    message = executor.probe_failure(spec)
    assert message is not None and "this Docker engine has no GPU runtime" in message
    assert "NVIDIA Container Toolkit" in message and "--executor local" in message
    assert labelled(client, executor.options.run_label) == []
    run_dir = write_spec(tmp_path / "run", spec)
    outcome = executor.run(
        spec, Slot(cpus=(0,), gpus=(0,)), run_dir, timeout_s=60, cancel=threading.Event()
    )
    assert outcome.status is RunStatus.FAILED and outcome.message == message
    assert outcome.seconds == 0.0
    # Started without prepare (no probe): a failed outcome, and the created container is removed.
    unprobed = make_executor()
    outcome = unprobed.run(
        spec, Slot(cpus=(0,), gpus=(0,)), run_dir, timeout_s=60, cancel=threading.Event()
    )
    assert outcome.status is RunStatus.FAILED
    assert "NVIDIA Container Toolkit" in outcome.message
    assert labelled(client, unprobed.options.run_label) == []


def test_missing_base_image_is_a_clear_error(client) -> None:
    executor = make_executor()
    with pytest.raises(ExecutorError) as info:
        executor.prepare([cell_spec(image=f"harness-test/no-such-image:{uuid.uuid4().hex[:8]}")])
    assert "no such image" in info.value.message
    assert "build-standin-base.sh" in (info.value.hint or "")


def test_unreachable_daemon_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    executor = make_executor()
    with pytest.raises(ExecutorError) as info:
        executor.prepare([cell_spec()])
    assert "cannot reach a Docker engine" in info.value.message
    assert "docker-engine.sh start" in (info.value.hint or "")


def test_cleanup_removes_its_own_containers_only(client, workload_image) -> None:
    """Two executors of one matrix run (the same ``harness.run`` label, as two shards or two
    --out folders have): each one's cleanup removes only the containers of its invocation."""
    executor, other = make_executor(), make_executor()
    label = executor.options.run_label
    other.options = dataclasses.replace(other.options, run_label=label)
    for owner in (executor, other, executor):
        client.containers.create(
            workload_image.tag,
            labels={"harness.run": label, **owner.owner.labels()},
            network_mode="none",
        )
    assert len(labelled(client, label)) == 3
    try:
        executor.cleanup()  # never ran anything: the client is connected here
        left = labelled(client, label)
        assert [c.labels["harness.invocation"] for c in left] == [other.invocation]
    finally:
        other.cleanup()
    assert labelled(client, label) == []
    assert json.dumps(workload_image.to_dict())  # the image's provenance is serialisable


def test_an_exception_in_the_harness_stops_and_removes_its_containers(
    client, workload_image, tmp_path, monkeypatch
) -> None:
    """docs/docker.md: an exception in harness sets the cancel event, the running container is
    killed, and cleanup removes it. Harness's own progress display is made to raise (in the
    scheduler's thread) while a container of a long run trains; run_matrix re-raises it."""
    from harness.matrix import load_matrix
    from harness.run.matrix_runner import RunConfig, make_executor, run_matrix
    from harness.run.progress import QuietProgress

    name = f"boom-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "m.yaml"
    path.write_text(
        f"name: {name}\n"  # 20 whole epochs: minutes, unless it is stopped
        "run: {repeats: 1, epochs: 20, max_steps_per_epoch: null, threads: 1, timeout_s: 900}\n"
        f"axes:\n  image: ['{BASE_IMAGE}']\n"
    )
    matrix = load_matrix(path)
    executor = make_executor(matrix, "docker", data_dir=MNIST)
    label = executor.options.run_label
    raised = []

    def tick(self) -> None:
        if not raised and [c for c in labelled(client, label) if c.status == "running"]:
            raised.append(True)
            raise RuntimeError("injected: the harness broke while a container trained")

    monkeypatch.setattr(QuietProgress, "tick", tick)
    config = RunConfig(matrix=matrix, out=tmp_path / "out", progress="quiet", formats=())
    with pytest.raises(RuntimeError, match="injected"):
        run_matrix(config, executor)
    assert raised and config.cancel.is_set()
    assert labelled(client, label) == []
    record = load_record(next((tmp_path / "out").glob("cells/*/repeat-0")))
    # SIGINT first: a workload that already had its handlers in place records its own
    # interruption, one still importing torch dies and the host records the stop (a race of
    # the container's start-up, as in test_faults_process.py's SIGTERM test)
    assert record.status == "failed", record
    assert record.error.type in ("killed", "Interrupted"), record.error
    if record.error.type == "killed":
        assert "stopped" in record.error.message, record.error
