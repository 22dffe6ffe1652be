"""Each harness run owns its containers, which run with least privilege and stop as local runs
do; on a real engine, with the stand-in image and real MNIST.

- two ``harness run`` of one matrix into two folders, side by side: neither removes the other's
  containers (the engine's events show no container of either was killed);
- a harness killed with SIGKILL leaves its container running; the next ``harness run`` into that
  folder sweeps it and says so, while a live harness's container (another folder) runs on;
- a CPU cell's container, inspected live: no GPU (``NVIDIA_VISIBLE_DEVICES=void``), not uid 0
  (the tests run as root: the root case), a memory limit;
- stopping a container sends SIGINT, then SIGTERM, then SIGKILL, with the local grace times; an
  engine that is gone does not hang it; Ctrl-C to ``harness run`` reaches the container as SIGINT
  first and leaves nothing running.
"""

from __future__ import annotations

import calendar
import os
import signal
import threading
import time
from pathlib import Path

import docker
import pytest
from conftest import BASE_IMAGE
from fault_tools import Harness, no_processes_left, records, write_matrix
from test_docker_executor import MNIST, cell_spec, write_spec

from harness.executors.base import ExecutorOptions, RunStatus, Slot
from harness.executors.docker import DockerExecutor
from harness.executors.docker_containers import stop
from harness.executors.docker_kwargs import (
    LABEL_INVOCATION,
    LABEL_OUT,
    LABEL_OWNER_HOST,
    LABEL_OWNER_PID,
    UNPRIVILEGED_UID,
)
from harness.executors.local import GRACE_S
from harness.matrix import load_matrix
from harness.run.progress import last_epoch
from harness.run.shard import ShardSpec, cells_of_shard

pytestmark = pytest.mark.docker


def of_folder(client, out: Path) -> list:
    """The containers labelled with results folder ``out``, running or not."""
    return client.containers.list(all=True, filters={"label": f"{LABEL_OUT}={out.resolve()}"})


def running(client, out: Path) -> list:
    return [c for c in of_folder(client, out) if c.status == "running"]


def wait_running(client, out: Path, harness: Harness | None = None, timeout: float = 300) -> list:
    deadline = time.monotonic() + timeout
    while True:
        found = running(client, out)
        if found:
            return found
        if harness is not None:
            assert harness.proc.poll() is None, harness.text[-3000:]
        assert time.monotonic() < deadline, f"no running container for {out} in {timeout} s"
        time.sleep(0.2)


def wait_training(out: Path, harness: Harness, timeout: float = 180) -> None:
    """Until the run's first epoch is done: a fixed sleep after the container starts can end
    while the workload is still importing torch on a loaded machine, where its exit after a
    signal can take longer than the stop's grace before SIGTERM."""
    deadline = time.monotonic() + timeout
    while not any(last_epoch(run) for run in out.glob("cells/*/repeat-*")):
        assert harness.proc.poll() is None, harness.text[-3000:]
        assert time.monotonic() < deadline, f"no epoch finished in {out} in {timeout} s"
        time.sleep(0.2)


def kills(client, since: int, out: Path) -> list[tuple[str, int]]:
    """(container id, signal number) of every ``kill`` the engine logged since ``since`` (unix
    seconds) for containers of results folder ``out``, in order."""
    events = client.events(
        since=since,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "kill", "label": f"{LABEL_OUT}={out.resolve()}"},
    )
    return [(e["Actor"]["ID"], int(e["Actor"]["Attributes"]["signal"])) for e in events]


def docker_run(matrix: Path, out: Path, *args: str, cpus: str | None = None) -> Harness:
    return Harness(matrix, out, "--executor", "docker", *args, cpus=cpus)


# -- two harnesses on one engine -------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_of_one_matrix_side_by_side_keep_their_containers(
    client, workload_image, tmp_path
) -> None:
    """The same matrix into two folders at once, as two shards of it are: they share the matrix
    label, and today one's cleanup removed the other's running containers. Shard 1 holds a short
    cell, shard 2 a long one, so the first harness ends (and cleans up) while the second's
    container still trains; both finish ok, and the engine killed no container of either."""
    since = int(time.time()) - 1
    matrix = write_matrix(
        tmp_path / "m.yaml",
        f"twins-{os.getpid()}-{time.monotonic_ns() % 10**6}",
        epochs=3,
        steps=None,
        image=BASE_IMAGE,
        tail="  max_steps_per_epoch: [5, null]\n",
    )
    loaded = load_matrix(matrix)
    short = {
        i
        for i in (1, 2)
        for c in cells_of_shard(loaded, ShardSpec(i, 2))
        if c.settings["max_steps_per_epoch"] == 5
    }
    assert len(loaded.cells) == 2 and len(short) == 1, "one short and one long shard"
    (first_shard,) = short
    outs = {first_shard: tmp_path / "short", 3 - first_shard: tmp_path / "long"}
    runs = {i: docker_run(matrix, out, "--shard", f"{i}/2") for i, out in outs.items()}
    try:
        long_out = outs[3 - first_shard]
        wait_running(client, long_out, runs[3 - first_shard])
        assert runs[first_shard].finish(timeout=600) == 0, runs[first_shard].text[-3000:]
        ended = time.time()
        assert runs[3 - first_shard].proc.poll() is None, "no overlap: the long run ended first"
        # the long run's container was there before the short harness cleaned up, and still is
        survivors = running(client, long_out)
        assert survivors, "the short harness's cleanup removed the long run's container"
        assert all(_created(c) < ended for c in survivors)
        assert runs[3 - first_shard].finish(timeout=600) == 0, runs[3 - first_shard].text[-3000:]
    finally:
        for run in runs.values():
            run.kill()
    for out in outs.values():
        got = records(out)
        assert got and all(r.ok for r in got.values()), got
        assert of_folder(client, out) == []
        assert kills(client, since, out) == []  # every container exited by itself


def _created(container) -> float:
    """When the engine created the container (its ``Created``: RFC 3339 in UTC, the fraction's
    trailing zeros cut), in unix seconds."""
    stamp = container.attrs["Created"].rstrip("Z")
    whole, _, fraction = stamp.partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds + float(f"0.{fraction or '0'}")


@pytest.mark.slow
def test_a_sigkilled_harness_s_container_is_swept_by_the_next_start_only(
    client, workload_image, tmp_path
) -> None:
    """SIGKILL leaves the harness's container training into its folder. The next ``harness run``
    into that folder removes it before anything else and says so; the container of another live
    harness of the same matrix (another folder) keeps running, untouched."""
    matrix = write_matrix(
        tmp_path / "m.yaml", f"sweep-{os.getpid()}", epochs=20, steps=None, image=BASE_IMAGE
    )
    killed_out, live_out = tmp_path / "killed", tmp_path / "live"
    killed, live = docker_run(matrix, killed_out), docker_run(matrix, live_out)
    resumed = None
    try:
        (orphan,) = wait_running(client, killed_out, killed)
        (other,) = wait_running(client, live_out, live)
        assert orphan.labels[LABEL_OWNER_PID] == str(killed.pid)
        os.killpg(killed.pid, signal.SIGKILL)  # its own session: the harness, nothing else
        killed.proc.wait(timeout=30)
        time.sleep(1)
        orphan.reload()
        assert orphan.status == "running"  # SIGKILL gave it no cleanup

        resumed = docker_run(matrix, killed_out)
        line = resumed.wait_for("harness: removed")
        assert line.strip() == (
            f"harness: removed 1 container left by harness pid {killed.pid} (no longer "
            "running) for this results folder"
        )
        with pytest.raises(docker.errors.NotFound):
            orphan.reload()
        other.reload()
        assert other.status == "running"  # the live harness's container, inspected live
        assert other.labels[LABEL_OWNER_PID] == str(live.pid)
        (fresh,) = wait_running(client, killed_out, resumed)
        assert fresh.labels[LABEL_OWNER_PID] == str(resumed.pid)
        assert fresh.labels[LABEL_INVOCATION] != orphan.labels[LABEL_INVOCATION]
        assert resumed.text.count("harness: removed") == 1
    finally:
        for run in (killed, live, resumed):
            if run is not None:
                run.kill()
    assert of_folder(client, killed_out) == [] and of_folder(client, live_out) == []


def test_the_sweep_leaves_live_owners_other_hosts_and_other_folders(
    client, workload_image, tmp_path
) -> None:
    """The sweep's choices on real containers: in this folder and of this host, a dead pid's
    and a live process's (not this invocation: the folder's lock proves it is not running the
    matrix here) are removed; another host's, another folder's and its own are kept."""
    out = tmp_path / "out"
    executor = DockerExecutor(ExecutorOptions(run_label="sweep-test", data_dir=MNIST))
    executor.bind_results(out.resolve())
    me = executor.owner
    dead = _dead_pid()
    made = {
        "dead": {**me.labels(), LABEL_INVOCATION: "a" * 32, LABEL_OWNER_PID: str(dead)},
        "alive": {**me.labels(), LABEL_INVOCATION: "b" * 32, LABEL_OWNER_PID: "1"},
        "other host": {**me.labels(), LABEL_INVOCATION: "c" * 32, LABEL_OWNER_HOST: "elsewhere"},
        "other folder": {**me.labels(), LABEL_INVOCATION: "d" * 32, LABEL_OUT: f"{out}-2"},
        "own": me.labels(),
    }
    ids = {
        what: client.containers.create(workload_image.tag, labels=labels, network_mode="none").id
        for what, labels in made.items()
    }
    try:
        notices = executor.sweep()
        left = {c.id for c in client.containers.list(all=True, filters={"label": "harness.out"})}
        assert {w for w, i in ids.items() if i in left} == {"other host", "other folder", "own"}
        assert notices == [
            "removed 1 container left by harness pid 1 (alive, but not the harness that holds "
            "this results folder) for this results folder",
            f"removed 1 container left by harness pid {dead} (no longer running) for this "
            "results folder",
        ]
    finally:
        for cid in ids.values():
            try:
                client.containers.get(cid).remove(force=True)
            except docker.errors.NotFound:
                pass


def _dead_pid() -> int:
    """A pid no process has: a child that has exited and been reaped."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


# -- least privilege, inspected live ---------------------------------------------------------


def test_a_cpu_container_has_no_gpu_no_root_and_a_memory_limit(
    client, workload_image, tmp_path
) -> None:
    """With harness as root (as the tests run), the container's process is not uid 0; a CPU
    cell's environment hides every GPU from an nvidia runtime; the default memory limit holds."""
    assert os.getuid() == 0, "this test shows the root case: run it as root"
    executor = DockerExecutor(ExecutorOptions(run_label="priv-test", data_dir=MNIST))
    executor.bind_results(tmp_path.resolve())
    spec = cell_spec(max_steps_per_epoch=None, epochs=5)
    run_dir = write_spec(tmp_path / "run", spec)
    cancel = threading.Event()
    result: dict = {}
    thread = threading.Thread(
        target=lambda: result.update(
            outcome=executor.run(spec, Slot(cpus=(0,)), run_dir, timeout_s=300, cancel=cancel)
        )
    )
    thread.start()
    try:
        deadline = time.monotonic() + 300
        live: list = []
        while not live:
            assert time.monotonic() < deadline, "the container never ran (300 s)"
            live = [
                c
                for c in client.containers.list(
                    filters={"label": f"{LABEL_INVOCATION}={executor.invocation}"}
                )
                if c.status == "running"
            ]
            time.sleep(0.2)
        (container,) = live
        attrs = container.attrs
        assert "NVIDIA_VISIBLE_DEVICES=void" in attrs["Config"]["Env"]
        assert attrs["Config"]["User"] == f"{UNPRIVILEGED_UID}:{UNPRIVILEGED_UID}"
        assert attrs["HostConfig"]["Memory"] == 8 * 2**30
        assert attrs["HostConfig"]["MemorySwap"] == 8 * 2**30  # no swap beyond it
        status = container.exec_run(["cat", "/proc/1/status"]).output.decode()
        uids = next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1:]
        assert uids == [str(UNPRIVILEGED_UID)] * 4  # real, effective, saved, fs
        assert container.exec_run(["id", "-u"]).output.decode().strip() == str(UNPRIVILEGED_UID)
        assert run_dir.stat().st_uid == UNPRIVILEGED_UID  # the run folder only, given to it
        assert (run_dir / "spec.json").stat().st_uid == 0
    finally:
        cancel.set()
        thread.join(timeout=120)
    assert result["outcome"].status is RunStatus.ABORTED
    assert executor.containers() == []


# -- stopping: SIGINT, SIGTERM, SIGKILL ------------------------------------------------------

#: A stand-in for the workload: logs each signal it gets to /m/signals; ``exit_on`` names the
#: signal that ends it (none: only SIGKILL does).
TRAP = (
    "import signal, sys, time\n"
    "exit_on = sys.argv[1]\n"
    "def got(sig, frame):\n"
    "    with open('/m/signals', 'a') as f:\n"
    "        f.write(signal.Signals(sig).name + '\\n')\n"
    "    if signal.Signals(sig).name == exit_on:\n"
    "        sys.exit(3)\n"
    "signal.signal(signal.SIGINT, got)\n"
    "signal.signal(signal.SIGTERM, got)\n"
    "open('/m/ready', 'w').close()\n"
    "while True:\n"
    "    time.sleep(0.05)\n"
)


@pytest.fixture
def trap(client, workload_image, tmp_path):
    """``trap(exit_on)``: a running container of TRAP (the workload image's python, as an
    unprivileged user, no network), with its signal log folder; removed after the test."""
    made = []

    def start(exit_on: str):
        folder = tmp_path / f"m-{len(made)}"
        folder.mkdir()
        os.chown(folder, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        container = client.containers.run(
            workload_image.tag,
            entrypoint=["python", "-c", TRAP, exit_on],
            detach=True,
            network_mode="none",
            user=f"{UNPRIVILEGED_UID}:{UNPRIVILEGED_UID}",
            volumes={str(folder): {"bind": "/m", "mode": "rw"}},
            labels={"harness.test": "stop"},
        )
        made.append(container)
        deadline = time.monotonic() + 120
        while not (folder / "ready").exists():
            assert time.monotonic() < deadline, container.logs().decode()[-2000:]
            time.sleep(0.05)
        return container, folder

    yield start
    for container in made:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass


@pytest.mark.parametrize(
    ("exit_on", "sent", "received"),
    [
        ("SIGINT", "SIGINT", ["SIGINT"]),
        ("SIGTERM", "SIGTERM", ["SIGINT", "SIGTERM"]),
        ("never", "SIGKILL", ["SIGINT", "SIGTERM"]),
    ],
)
def test_stop_escalates_sigint_sigterm_sigkill(trap, exit_on, sent, received) -> None:
    """The container gets SIGINT first; a SIGTERM only if it is still running a grace later,
    a SIGKILL only after another; it is not signalled once it has exited."""
    container, folder = trap(exit_on)
    grace = 1.0
    began = time.monotonic()
    assert stop(container, grace_s=grace) == sent
    took = time.monotonic() - began
    assert (folder / "signals").read_text().split() == received
    container.reload()
    assert container.status == "exited"
    assert container.attrs["State"]["ExitCode"] == (137 if sent == "SIGKILL" else 3)
    steps = len(received) - 1 if sent != "SIGKILL" else 2
    assert steps * grace <= took < steps * grace + 10


def test_stop_uses_the_local_grace_time(trap) -> None:
    """Without a grace given, a container that ignores SIGINT gets SIGTERM after GRACE_S, the
    local executor's constant."""
    container, folder = trap("SIGTERM")
    began = time.monotonic()
    assert stop(container) == "SIGTERM"
    assert GRACE_S <= time.monotonic() - began < GRACE_S + 10
    assert (folder / "signals").read_text().split() == ["SIGINT", "SIGTERM"]


def test_stop_does_not_hang_when_the_engine_is_gone(trap, tmp_path) -> None:
    """A client whose engine is gone (its socket no longer exists): ``stop`` returns at once,
    having sent nothing."""
    container, _ = trap("never")
    gone = docker.DockerClient(base_url=f"unix://{tmp_path}/gone.sock", version="1.41")
    orphan = gone.containers.prepare_model(container.attrs)
    began = time.monotonic()
    assert stop(orphan) is None
    assert time.monotonic() - began < 5


@pytest.mark.slow
def test_ctrl_c_reaches_the_container_as_sigint_first(client, workload_image, tmp_path) -> None:
    """Ctrl-C (SIGINT) to ``harness run`` while a container trains: the engine's first kill of
    that container is SIGINT, the run's record says it was interrupted, exit 130, no container
    and no process left.

    The record's ``error.type == "Interrupted"`` needs the workload to record a SIGINT (the
    wall-workload branch of issue 12); the engine's kill events show SIGINT-first on their own.
    """
    since = int(time.time()) - 1
    matrix = write_matrix(
        tmp_path / "m.yaml", f"ctrlc-{os.getpid()}", epochs=20, steps=None, image=BASE_IMAGE
    )
    out = tmp_path / "out"
    run = docker_run(matrix, out)
    try:
        (container,) = wait_running(client, out, run)
        wait_training(out, run)  # its first epoch done: training, its signal handlers in place
        run.signal(signal.SIGINT)
        assert run.finish(timeout=120) == 130, run.text[-3000:]
    finally:
        run.kill()
    signals = [sig for cid, sig in kills(client, since, out) if cid == container.id]
    assert signals and signals[0] == signal.SIGINT, signals
    assert of_folder(client, out) == []
    assert no_processes_left(out, run.pid) == []
    (record,) = records(out).values()
    assert record.status == "failed"
    assert record.error.type == "Interrupted", record.error
