"""The container kwargs for one run, built without Docker: GPUs, cpuset, mounts, hardening."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.contract import RunSpec
from harness.executors.base import DEFAULT_MEMORY_LIMIT, Slot
from harness.executors.docker_kwargs import (
    UNPRIVILEGED_GID,
    UNPRIVILEGED_UID,
    Owner,
    container_kwargs,
    container_user,
)
from harness.executors.docker_outcome import is_no_gpu_runtime
from harness.executors.images import WorkloadImage

IMAGE = WorkloadImage(
    base="base:1",
    tag="img:tag",
    image_id="sha256:" + "1" * 64,
    base_digest="base@sha256:" + "2" * 64,
    base_digest_kind="repo_digest",
    code_digest="3" * 64,
    built=False,
)


#: the digest of "name: m / run: {repeats: 1} / axes: {seed: [1]}" before run.memory_limit had a
#: default (computed on main at 2b2ca20)
PRE_DEFAULT_DIGEST = "b6a35fc5dacc4d096aa8df035141eb23eed58384c788769a95b0c7fbe90fc1a8"

OWNER = Owner(out="/results/m", invocation="f" * 32, pid=4321, host="runner-7")


def kwargs_for(spec: RunSpec, slot: Slot, tmp_path: Path, **changes) -> dict:
    return container_kwargs(
        spec,
        slot,
        tmp_path / "run",
        image=IMAGE,
        data_dir=tmp_path / "mnist",
        run_label="lbl",
        **{"owner": OWNER, "uid": 1000, "gid": 1001, **changes},
    )


@settings(deadline=None)
@given(gpus=st.lists(st.integers(0, 15), min_size=1, max_size=8, unique=True))
def test_gpu_cell_requests_exactly_its_slot_gpus(gpus: list[int]) -> None:
    spec = RunSpec(accelerator="gpu", devices=len(gpus))
    kwargs = kwargs_for(spec, Slot(cpus=(0,), gpus=tuple(gpus)), Path("/tmp/x"))
    (request,) = kwargs["device_requests"]
    assert request["DeviceIDs"] == [str(g) for g in gpus]
    assert request["Capabilities"] == [["gpu"]]
    assert request["Count"] == 0  # device_ids, not "any N GPUs"
    assert kwargs["environment"]["CUDA_VISIBLE_DEVICES"] == ",".join(
        str(i) for i in range(len(gpus))
    )


def test_cpu_cell_has_no_device_request_and_a_cpuset(tmp_path: Path) -> None:
    kwargs = kwargs_for(RunSpec(threads=2), Slot(cpus=(3, 5)), tmp_path)
    assert "device_requests" not in kwargs
    assert kwargs["cpuset_cpus"] == "3,5"
    assert "nano_cpus" not in kwargs
    assert kwargs["environment"]["OMP_NUM_THREADS"] == "2"
    assert kwargs["environment"]["MKL_NUM_THREADS"] == "2"


def test_hardening_mounts_labels_and_command(tmp_path: Path) -> None:
    spec = RunSpec(cell_id="abc123", repeat=4, pythonhashseed=7)
    kwargs = kwargs_for(spec, Slot(cpus=(0,)), tmp_path)
    assert kwargs["network_mode"] == "none"
    assert kwargs["read_only"] is True
    assert "/tmp" in kwargs["tmpfs"]
    assert kwargs["cap_drop"] == ["ALL"]
    assert kwargs["security_opt"] == ["no-new-privileges"]
    assert kwargs["pids_limit"] > 0
    assert kwargs["user"] == "1000:1001"
    assert kwargs["labels"] == {
        "harness.run": "lbl",
        "harness.cell": "abc123",
        "harness.repeat": "4",
        "harness.invocation": "f" * 32,
        "harness.owner.pid": "4321",
        "harness.owner.host": "runner-7",
        "harness.out": "/results/m",
    }
    mounts = {m["Target"]: m for m in kwargs["mounts"]}
    assert mounts["/data"]["ReadOnly"] is True
    assert mounts["/data"]["Source"] == str((tmp_path / "mnist").resolve())
    assert mounts["/out"]["ReadOnly"] is False
    assert kwargs["command"] == ["--spec", "/out/spec.json", "--out", "/out", "--data-dir", "/data"]
    env = kwargs["environment"]
    assert env["PYTHONHASHSEED"] == "7" and env["HOME"] == "/tmp"
    # what the host knows of the image reaches the record's provenance, outside the spec
    assert env["HARNESS_IMAGE_ID"] == IMAGE.image_id
    assert env["HARNESS_IMAGE_DIGEST"] == IMAGE.base_digest
    assert kwargs["image"] == IMAGE.image_id  # never the tag, which a build can move
    assert "CUBLAS_WORKSPACE_CONFIG" not in env
    assert "/opt/harness-user" not in mounts and "HARNESS_USER_CODE_DIGEST" not in env


def test_the_users_code_is_mounted_read_only_and_nothing_else_changes(tmp_path: Path) -> None:
    """A run of a build function: the user's folder read-only at /opt/harness-user, passed as
    --code-dir, its digest in the environment; the container wall is the built-in run's."""
    spec = RunSpec(entry="convnet:build", cell_id="abc123")
    code = tmp_path / "code"
    plain = kwargs_for(spec, Slot(cpus=(0,)), tmp_path)
    own = kwargs_for(spec, Slot(cpus=(0,)), tmp_path, user_code=(code, "9" * 64))
    user = [m for m in own["mounts"] if m["Target"] == "/opt/harness-user"]
    assert len(user) == 1 and user[0]["ReadOnly"] is True and user[0]["Type"] == "bind"
    assert user[0]["Source"] == str(code.resolve())
    assert own["command"] == [*plain["command"], "--code-dir", "/opt/harness-user"]
    assert own["environment"] == {**plain["environment"], "HARNESS_USER_CODE_DIGEST": "9" * 64}
    assert [m for m in own["mounts"] if m not in user] == plain["mounts"]
    for key in set(plain) | set(own):
        if key not in ("mounts", "command", "environment"):
            assert own.get(key) == plain.get(key), key  # network none, read-only, uid, caps...


@pytest.mark.parametrize(
    ("accelerator", "algorithms", "expected"),
    [
        ("gpu", "on", True),
        ("gpu", "warn", True),
        ("gpu", "off", False),
        ("cpu", "on", True),
        ("cpu", "off", False),
    ],
)
def test_cublas_workspace_exactly_when_deterministic_algorithms_are_asked_for(
    tmp_path: Path, accelerator: str, algorithms: str, expected: bool
) -> None:
    spec = RunSpec(accelerator=accelerator, deterministic_algorithms=algorithms)
    env = kwargs_for(spec, Slot(cpus=(0,), gpus=(1,)), tmp_path)["environment"]
    assert ("CUBLAS_WORKSPACE_CONFIG" in env) is expected


def test_no_gpu_runtime_error_is_recognised() -> None:
    assert is_no_gpu_runtime(
        Exception('500 Server Error: could not select device driver "" with capabilities: [[gpu]]')
    )
    assert not is_no_gpu_runtime(Exception("No such image: foo"))


@pytest.mark.parametrize("accelerator", ["cpu", "gpu"])
def test_containers_order_cuda_devices_by_pci_bus_id(tmp_path: Path, accelerator: str) -> None:
    """Inside the container as outside it, CUDA numbers the GPUs as nvidia-smi does."""
    spec = RunSpec(accelerator=accelerator)
    gpus = (2, 0) if accelerator == "gpu" else ()
    env = kwargs_for(spec, Slot(cpus=(0,), gpus=gpus), tmp_path)["environment"]
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


# -- least privilege -----------------------------------------------------------------------


@pytest.mark.parametrize(("accelerator", "void"), [("cpu", True), ("gpu", False)])
def test_only_cpu_cells_hide_every_gpu_from_the_nvidia_runtime(
    tmp_path: Path, accelerator: str, void: bool
) -> None:
    """A CPU cell on an engine whose default runtime is nvidia would see every GPU without
    NVIDIA_VISIBLE_DEVICES=void; a GPU cell's device request must not be overridden by it."""
    spec = RunSpec(accelerator=accelerator)
    env = kwargs_for(spec, Slot(cpus=(0,), gpus=(2,) if void is False else ()), tmp_path)[
        "environment"
    ]
    assert (env.get("NVIDIA_VISIBLE_DEVICES") == "void") is void
    assert ("NVIDIA_VISIBLE_DEVICES" in env) is void


@pytest.mark.parametrize(
    ("uid", "gid", "user"),
    [
        (0, 0, f"{UNPRIVILEGED_UID}:{UNPRIVILEGED_GID}"),  # a root harness: never uid 0
        (0, 1001, f"{UNPRIVILEGED_UID}:1001"),
        (1000, 0, f"1000:{UNPRIVILEGED_GID}"),  # nor the root group
        (1000, 1001, "1000:1001"),  # anyone else: the invoking user, who owns the results
    ],
)
def test_containers_never_run_as_root(tmp_path: Path, uid: int, gid: int, user: str) -> None:
    kwargs = kwargs_for(RunSpec(), Slot(cpus=(0,)), tmp_path, uid=uid, gid=gid)
    assert kwargs["user"] == user
    assert container_user(uid, gid) == tuple(int(p) for p in user.split(":"))
    assert UNPRIVILEGED_UID != 0 and UNPRIVILEGED_GID != 0


def test_the_default_user_is_this_process_unless_it_is_root(tmp_path: Path) -> None:
    kwargs = container_kwargs(
        RunSpec(), Slot(cpus=(0,)), tmp_path, image=IMAGE, data_dir=tmp_path, run_label="l"
    )
    uid, gid = (int(p) for p in kwargs["user"].split(":"))
    assert uid != 0 and gid != 0
    if os.getuid() != 0:
        assert uid == os.getuid()


def test_a_memory_limit_by_default_the_matrix_s_otherwise_none_only_when_asked(
    tmp_path: Path,
) -> None:
    """No memory_limit: the default (swap counted in it); a given one wins; None (the
    matrix's ``memory_limit: null``) is no limit at all."""
    default = kwargs_for(RunSpec(), Slot(cpus=(0,)), tmp_path)
    assert default["mem_limit"] == default["memswap_limit"] == DEFAULT_MEMORY_LIMIT == "8g"
    given_ = kwargs_for(RunSpec(), Slot(cpus=(0,)), tmp_path, memory_limit="3g")
    assert given_["mem_limit"] == given_["memswap_limit"] == "3g"
    none = kwargs_for(RunSpec(), Slot(cpus=(0,)), tmp_path, memory_limit=None)
    assert "mem_limit" not in none and "memswap_limit" not in none


def test_the_matrix_default_memory_limit_and_null(tmp_path: Path) -> None:
    """``run.memory_limit`` left out is the default; ``null`` is no limit; neither changes the
    matrix digest (results folders of matrices written before the default still resume)."""
    from harness.matrix import load_matrix

    texts = {
        "unset": "name: m\nrun: {repeats: 1}\naxes: {seed: [1]}\n",
        "null": "name: m\nrun: {repeats: 1, memory_limit: null}\naxes: {seed: [1]}\n",
        "2g": "name: m\nrun: {repeats: 1, memory_limit: 2g}\naxes: {seed: [1]}\n",
    }
    loaded = {}
    for key, text in texts.items():
        (tmp_path / f"{key}.yaml").write_text(text)
        loaded[key] = load_matrix(tmp_path / f"{key}.yaml")
    assert loaded["unset"].model.run.memory_limit == DEFAULT_MEMORY_LIMIT
    assert loaded["null"].model.run.memory_limit is None
    assert loaded["2g"].model.run.memory_limit == "2g"
    assert len({m.digest for m in loaded.values()}) == 1
    # the digest this matrix had before the default existed (memory_limit never counted)
    assert loaded["unset"].digest == PRE_DEFAULT_DIGEST


def test_every_owner_is_a_new_invocation_of_this_process() -> None:
    a, b = Owner(out="/r"), Owner(out="/r")
    assert a.invocation != b.invocation and len(a.invocation) == 32
    assert a.pid == os.getpid()
    import socket

    assert a.host == socket.gethostname()


def test_the_run_folder_itself_is_given_to_the_container_user_never_through_a_link(
    tmp_path: Path,
) -> None:
    """A root harness hands the run folder (only it) to UNPRIVILEGED_UID; a run folder that is a
    symlink is changed as a link, never the folder it points to; a container that runs as the
    harness's own user changes nothing. (Needs root, as CI and the dev container run.)"""
    from harness.executors.docker_host_folders import writable_for

    assert os.getuid() == 0, "handing a folder to another uid needs root: run the tests as root"
    user = f"{UNPRIVILEGED_UID}:{UNPRIVILEGED_GID}"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "spec.json").write_text("{}")
    writable_for(run_dir, user)
    assert (run_dir.stat().st_uid, run_dir.stat().st_gid) == (UNPRIVILEGED_UID, UNPRIVILEGED_GID)
    assert (run_dir / "spec.json").stat().st_uid == 0  # what it holds stays the harness's

    outside = tmp_path / "outside"
    outside.mkdir()
    link = tmp_path / "link"
    link.symlink_to(outside)
    writable_for(link, user)
    assert outside.stat().st_uid == 0
    assert link.lstat().st_uid == UNPRIVILEGED_UID

    mine = tmp_path / "mine"
    mine.mkdir()
    writable_for(mine, f"{os.getuid()}:{os.getgid()}")
    assert mine.stat().st_uid == os.getuid()


@pytest.mark.parametrize(
    ("limit", "says", "never"),
    [
        ("8g", ["at run.memory_limit 8g", "raise run.memory_limit"], ["no container limit"]),
        (None, ["no container limit", "run.memory_limit: null", "the host ran out"], ["raise"]),
    ],
)
def test_the_oom_message_names_the_limit_in_force(
    limit: str | None, says: list[str], never: list[str]
) -> None:
    """Killed for memory under the default (or a matrix's) limit: raise it; with no limit
    (``null``) there is nothing to raise: the host ran out."""
    from harness.contract import ErrorType
    from harness.executors.docker_outcome import classify_exit

    outcome = classify_exit(
        137, 1.0, oom=True, memory_limit=limit, record_written=False, engine_answers=lambda: True
    )
    assert outcome.error_type is ErrorType.OOM
    assert "killed for memory" in outcome.message
    assert all(s in outcome.message for s in says), outcome.message
    assert not any(s in outcome.message for s in never), outcome.message


def test_a_root_harness_refuses_mnist_its_containers_cannot_read(tmp_path: Path) -> None:
    """Containers of a root harness run as UNPRIVILEGED_UID: MNIST readable by root alone fails
    before any run, with the chmod that fixes it. (Needs root, as CI runs.)"""
    from harness.errors import ExecutorError
    from harness.executors.docker_host_folders import check_readable_by_others

    assert os.getuid() == 0, "this is the root harness's check: run the tests as root"
    mnist = tmp_path / "mnist dir"
    mnist.mkdir()
    (mnist / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    (mnist / "train-images-idx3-ubyte.gz").chmod(0o644)
    mnist.chmod(0o755)
    check_readable_by_others(mnist)
    (mnist / "train-images-idx3-ubyte.gz").chmod(0o600)
    with pytest.raises(ExecutorError) as info:
        check_readable_by_others(mnist)
    assert "train-images-idx3-ubyte.gz" in info.value.message
    assert info.value.hint == f"chmod -R a+rX '{mnist}'"
    # prepare checks it before it reaches the engine or builds an image
    from harness.executors.base import ExecutorOptions
    from harness.executors.docker import DockerExecutor

    executor = DockerExecutor(ExecutorOptions(data_dir=mnist))
    with pytest.raises(ExecutorError, match="not readable by the containers' user"):
        executor.prepare([RunSpec(image="harness-test/never-built:1")])
    (mnist / "train-images-idx3-ubyte.gz").chmod(0o644)
    mnist.chmod(0o700)
    with pytest.raises(ExecutorError, match="the folder itself"):
        check_readable_by_others(mnist)


def test_a_root_harness_refuses_user_code_its_containers_cannot_read(tmp_path: Path) -> None:
    """The user's folder is mounted for UNPRIVILEGED_UID too: a file or folder below it that
    only root reads stops the matrix before any run, naming it. (Needs root, as CI runs.)"""
    from harness.errors import ExecutorError
    from harness.executors.base import ExecutorOptions
    from harness.executors.docker import DockerExecutor
    from harness.executors.docker_host_folders import check_code_readable_by_others

    assert os.getuid() == 0, "this is the root harness's check: run the tests as root"
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "pkg" / "__init__.py").write_text("x = 1\n")
    for path in (code, code / "pkg"):
        path.chmod(0o755)
    (code / "pkg" / "__init__.py").chmod(0o644)
    check_code_readable_by_others(code)
    (code / "pkg" / "__init__.py").chmod(0o600)
    with pytest.raises(ExecutorError) as info:
        check_code_readable_by_others(code)
    assert "pkg/__init__.py" in info.value.message and "workload.path" in info.value.message
    assert info.value.hint == f"chmod -R a+rX {code}"
    (code / "pkg" / "__init__.py").chmod(0o644)
    (code / "pkg").chmod(0o700)
    with pytest.raises(ExecutorError) as info:
        check_code_readable_by_others(code)
    assert info.value.message.endswith("never do): pkg")
    # prepare checks it before it reaches the engine, for a run of a build function only
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    mnist.chmod(0o755)
    options = ExecutorOptions(data_dir=mnist, code_dir=code, code_digest="c" * 64)
    with pytest.raises(ExecutorError, match="is not readable by the containers' user"):
        DockerExecutor(options).prepare([RunSpec(image="harness-test/never:1", entry="pkg:b")])


@pytest.mark.parametrize(
    ("code", "terminated", "answers", "error_type", "says"),
    [
        # the engine shut down: it stopped the container, then stopped answering
        (143, False, [True, True, False], "docker_unreachable", "Docker daemon unreachable"),
        (1, True, [True, False], "docker_unreachable", "Docker daemon unreachable"),
        (1, True, [False], "docker_unreachable", "Docker daemon unreachable"),
        # `docker stop`: the engine stays
        (143, False, [True] * 100, "killed", "stopped from outside (SIGTERM, exit 143)"),
        (1, True, [True] * 100, "killed", "stopped from outside (SIGTERM, exit 1)"),
        # the run's own failure is not a signal from outside
        (1, False, [True] * 100, None, "the container exited with code 1"),
    ],
)
def test_a_container_sigterm_ended_is_told_apart_from_its_own_failure(
    code: int, terminated: bool, answers: list[bool], error_type: str | None, says: str
) -> None:
    """The workload answers SIGTERM with a record and exit 1, and a shutting-down engine may
    still answer as its containers exit: a SIGTERM exit waits a moment for the engine to go."""
    from harness.executors.docker_outcome import classify_exit

    replies = iter(answers)
    outcome = classify_exit(
        code,
        1.0,
        oom=False,
        memory_limit="8g",
        record_written=True,
        engine_answers=lambda: next(replies),
        terminated=terminated,
        grace_s=0.6,
    )
    assert outcome.status.value == "failed"
    assert (outcome.error_type.value if outcome.error_type else None) == error_type
    assert says in outcome.message, outcome.message
    if error_type:
        assert "resume" in outcome.message
