"""What one run's container is created with: a pure function of the spec, the slot and the
image, tested without Docker (tests/test_docker_kwargs.py).

One container per run: the GPUs of its slot as a device request, a cpuset on its cores, no
network, MNIST read-only at /data, the run folder read-write at /out, the invoking uid:gid, a
read-only root file system with a tmpfs /tmp, no capabilities, and labels that name the matrix
run, the cell and the repeat.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.contract import IMAGE_ENV, SPEC_FILE, RunSpec, run_environment
from harness.executors.base import Slot
from harness.images import WorkloadImage

LABEL_RUN = "harness.run"
LABEL_CELL = "harness.cell"
LABEL_REPEAT = "harness.repeat"
DATA_MOUNT = "/data"
OUT_MOUNT = "/out"
SHM_SIZE = "1g"
TMPFS_TMP = "rw,exec,nosuid,nodev,size=4g,mode=1777"
PIDS_LIMIT = 4096


def container_environment(
    spec: RunSpec, slot: Slot, image: WorkloadImage | None = None
) -> dict[str, str]:
    """The run's environment inside the container: pinned threads, hash seed, writable HOME,
    and what the host knows of the image (its record's provenance)."""
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
    data_dir: Path,
    run_label: str,
    user: str | None = None,
    memory_limit: str | None = None,
) -> dict[str, Any]:
    """Everything ``containers.create`` gets for one run."""
    from docker.types import DeviceRequest, Mount

    kwargs: dict[str, Any] = {
        "image": image.tag,
        "command": [
            "--spec",
            f"{OUT_MOUNT}/{SPEC_FILE}",
            "--out",
            OUT_MOUNT,
            "--data-dir",
            DATA_MOUNT,
        ],
        "detach": True,
        "init": True,  # tini is PID 1, so Lightning can SIGKILL rank 0 when a rank fails
        "environment": container_environment(spec, slot, image),
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
