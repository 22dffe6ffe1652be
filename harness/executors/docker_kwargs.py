"""What one run's container is created with: a pure function of the spec, the slot and the
image, tested without Docker (tests/test_docker_kwargs.py).

One container per run: the GPUs of its slot as a device request (a CPU cell: none, and
``NVIDIA_VISIBLE_DEVICES=void`` so that an engine whose default runtime is nvidia exposes none
either), a cpuset on its cores, no network, MNIST read-only at /data, the run folder read-write
at /out, the user's code folder (a build function's runs) read-only at /opt/harness-user,
the invoking uid:gid (never uid 0: a root harness runs containers as
``UNPRIVILEGED_USER``), a memory limit, a read-only root file system with a tmpfs /tmp, no
capabilities, and labels that name the matrix run, the cell, the repeat and the harness process
that owns the container (``Owner``).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.contract import IMAGE_ENV, SPEC_FILE, USER_CODE_ENV, RunSpec, run_environment
from harness.contract.spec import isa_passthrough
from harness.executors.base import DEFAULT_MEMORY_LIMIT, Slot
from harness.executors.images import WorkloadImage

#: the matrix run: ``<matrix name>-<digest12>``, the same for every --out and shard
LABEL_RUN = "harness.run"
LABEL_CELL = "harness.cell"
LABEL_REPEAT = "harness.repeat"
#: the one harness invocation (executor) that started the container: ``cleanup`` removes these
LABEL_INVOCATION = "harness.invocation"
#: the pid and host name of that harness process: the start-up sweep asks whether it still lives
LABEL_OWNER_PID = "harness.owner.pid"
LABEL_OWNER_HOST = "harness.owner.host"
#: the resolved results folder the container writes into: the sweep looks only at its own
LABEL_OUT = "harness.out"

#: uid:gid of containers started by a harness that runs as root (uid 0): ``nobody:nogroup``
UNPRIVILEGED_UID = 65534
UNPRIVILEGED_GID = 65534
DATA_MOUNT = "/data"
OUT_MOUNT = "/out"
#: the user's code folder (``workload.path``), read-only, for the runs of a build function
USER_CODE_MOUNT = "/opt/harness-user"
SHM_SIZE = "1g"
TMPFS_TMP = "rw,exec,nosuid,nodev,size=4g,mode=1777"
PIDS_LIMIT = 4096


@dataclass(frozen=True)
class Owner:
    """Who owns a container: one harness invocation (a fresh id per executor), its process and
    host, and the results folder its runs write into. Every container carries these labels."""

    out: str = ""
    invocation: str = field(default_factory=lambda: uuid.uuid4().hex)
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)

    def labels(self) -> dict[str, str]:
        return {
            LABEL_INVOCATION: self.invocation,
            LABEL_OWNER_PID: str(self.pid),
            LABEL_OWNER_HOST: self.host,
            LABEL_OUT: self.out,
        }


def container_user(uid: int, gid: int) -> tuple[int, int]:
    """The uid:gid a container runs as: the harness's own, except that root (uid or gid 0)
    becomes ``UNPRIVILEGED_UID``/``UNPRIVILEGED_GID``, so a workload never runs as root."""
    return (
        UNPRIVILEGED_UID if uid == 0 else uid,
        UNPRIVILEGED_GID if gid == 0 else gid,
    )


def container_environment(
    spec: RunSpec, slot: Slot, image: WorkloadImage | None = None
) -> dict[str, str]:
    """The run's environment inside the container: pinned threads, hash seed, writable HOME,
    no GPU for a CPU cell, and what the host knows of the image (its record's provenance).

    A variable the spec leaves unset (``CUBLAS_WORKSPACE_CONFIG``) is not here, and the host's
    own is never passed, but for the CPU ISA limits a ``native`` run keeps (``isa_passthrough``:
    the host's code path is the machine's); one the image itself sets is removed by the
    workload's entry point before torch starts (``harness.workload.__main__.numerics_env``)."""
    env = {
        "PYTHONUNBUFFERED": "1",
        # The runtime exposes only the requested GPUs, renumbered from 0.
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(slot.gpus))),
        "HOME": "/tmp",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "XDG_CACHE_HOME": "/tmp/.cache",
        "TORCHINDUCTOR_CACHE_DIR": "/tmp/torchinductor",
    }
    if spec.accelerator == "cpu":
        # The nvidia runtime exposes every GPU unless told otherwise; "void" means none.
        env["NVIDIA_VISIBLE_DEVICES"] = "void"
    env.update(run_environment(spec))
    env.update(isa_passthrough(spec, os.environ))
    if image is not None:
        env[IMAGE_ENV["image_digest"]] = image.base_digest
        env[IMAGE_ENV["image_id"]] = image.image_id
    return env


def container_kwargs(
    spec: RunSpec,
    slot: Slot,
    run_dir: Path,
    *,
    image: WorkloadImage,
    data_dir: Path | None,
    run_label: str,
    owner: Owner | None = None,
    memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
    uid: int | None = None,
    gid: int | None = None,
    user_code: tuple[Path, str] | None = None,
) -> dict[str, Any]:
    """Everything ``containers.create`` gets for one run. ``owner``: the labels of the harness
    invocation that owns it (the executor passes its own; None: a new one); ``memory_limit``
    None means no limit (``run.memory_limit: null``); ``uid``/``gid`` are the harness's
    (default: this process's), root's becoming ``UNPRIVILEGED_UID``/``GID``. ``user_code``:
    (folder, digest) of the user's code for a run of a build function: the folder is mounted
    read-only at ``USER_CODE_MOUNT`` and passed as ``--code-dir``, the digest as
    ``USER_CODE_ENV``; nothing else of the container changes. ``data_dir`` None (a user's own
    training, no MNIST given): no ``/data`` mount and no ``--data-dir``."""
    user = container_user(os.getuid() if uid is None else uid, os.getgid() if gid is None else gid)
    environment = container_environment(spec, slot, image)
    if user_code is not None:
        environment[USER_CODE_ENV] = user_code[1]
    kwargs: dict[str, Any] = {
        "image": image.image_id,  # the id: a tag can be moved by another build
        "command": container_command(data_dir, user_code),
        "detach": True,
        "init": True,  # tini is PID 1, so Lightning can SIGKILL rank 0 when a rank fails
        "environment": environment,
        "labels": {
            LABEL_RUN: run_label,
            LABEL_CELL: spec.cell_id,
            LABEL_REPEAT: str(spec.repeat),
            **(owner or Owner()).labels(),
        },
        "mounts": container_mounts(run_dir, data_dir, user_code),
        "network_mode": "none",
        "user": f"{user[0]}:{user[1]}",
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
    kwargs.update(resource_kwargs(spec, slot, memory_limit))
    return kwargs


def container_command(data_dir: Path | None, user_code: tuple[Path, str] | None) -> list[str]:
    """The workload's arguments (the image's entry point is ``python -m harness.workload``)."""
    return [
        "--spec",
        f"{OUT_MOUNT}/{SPEC_FILE}",
        "--out",
        OUT_MOUNT,
        # no MNIST for a user's own training where none is given: nothing mounted
        *(["--data-dir", DATA_MOUNT] if data_dir is not None else []),
        *(["--code-dir", USER_CODE_MOUNT] if user_code is not None else []),
    ]


def container_mounts(
    run_dir: Path, data_dir: Path | None, user_code: tuple[Path, str] | None
) -> list[Any]:
    """MNIST read-only at /data (where given), the run folder read-write at /out, the user's
    code read-only at ``USER_CODE_MOUNT`` (a build function's runs)."""
    from docker.types import Mount

    mounts = []
    if data_dir is not None:
        mounts.append(Mount(DATA_MOUNT, str(Path(data_dir).resolve()), type="bind", read_only=True))
    mounts.append(Mount(OUT_MOUNT, str(Path(run_dir).resolve()), type="bind", read_only=False))
    if user_code is not None:
        folder = str(Path(user_code[0]).resolve())
        mounts.append(Mount(USER_CODE_MOUNT, folder, type="bind", read_only=True))
    return mounts


def resource_kwargs(spec: RunSpec, slot: Slot, memory_limit: str | None) -> dict[str, Any]:
    """The slot's cores as a cpuset, the memory limit (swap counted in it), the slot's GPUs."""
    from docker.types import DeviceRequest

    kwargs: dict[str, Any] = {}
    if slot.cpus:
        # cpuset, never nano_cpus: under a CPU quota torch still starts one thread per core of
        # the machine and is throttled about tenfold.
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
