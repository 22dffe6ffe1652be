"""Where and with what a run ran: versions, hardware, numerics-relevant env, code digest.

Two runs that should match but don't are first compared here, so every field is read from the
running process, not from what the host believes it started.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.contract import IMAGE_ENV, NUMERIC_ENV_VARS, RunSpec
from harness.contract.code import workload_digest
from harness.contract.record import Determinism


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def gpu_driver() -> str | None:
    """The NVIDIA driver version from ``nvidia-smi``, if it is installed and answers."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        result = subprocess.run(  # fixed argv, no shell
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = result.stdout.strip().splitlines()
    return lines[0].strip() if result.returncode == 0 and lines else None


def _gpus() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            {
                "index": index,
                "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "memory_bytes": int(props.total_memory),
                "uuid": str(getattr(props, "uuid", "")) or None,
            }
        )
    return gpus


def _nccl() -> str | None:
    try:
        version = torch.cuda.nccl.version()
    except Exception:  # no NCCL in this build
        return None
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def determinism_in_force() -> Determinism:
    """The determinism flags as torch has them now: read when ``fit`` has returned, so they are
    what training ran with, whoever set them (the workload, or Lightning's Trainer)."""
    return Determinism(
        cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
        deterministic_algorithms_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        matmul_allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
        cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32),
        cublas_workspace_config=os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )


def collect(
    spec: RunSpec, world_size: int, determinism: Determinism | None = None
) -> dict[str, Any]:
    """The ``provenance`` object of run.json (see docs/run-record.md); ``determinism`` is what
    ``determinism_in_force`` read after ``fit`` (None when the run failed before that)."""
    import pytorch_lightning
    import torchvision

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_git": torch.version.git_version,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "nccl": _nccl(),
        "lightning": pytorch_lightning.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "gpus": _gpus(),
        "gpu_driver": gpu_driver(),
        "cpu_model": cpu_model(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "env": {name: os.environ.get(name) for name in NUMERIC_ENV_VARS},
        "image": spec.image,
        "image_digest": os.environ.get(IMAGE_ENV["image_digest"]),
        "image_id": os.environ.get(IMAGE_ENV["image_id"]),
        "workload_digest": workload_digest(),
        "initial_seed": torch.initial_seed(),
        "world_size": world_size,
        "determinism": determinism,
    }
