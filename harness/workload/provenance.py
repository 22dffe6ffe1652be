"""Where and with what a run ran: versions, hardware, numerics-relevant env, code digest.

Two runs that should match but don't are first compared here, so every field is read from the
running process, not from what the host believes it started.
"""

from __future__ import annotations

import ast
import ctypes
import dataclasses
import importlib.util
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from harness.contract import IMAGE_ENV, NUMERIC_ENV_VARS, USER_CODE_ENV
from harness.contract.code import workload_digest
from harness.contract.record import Determinism, Libraries
from harness.workload.machine_probe import read_machine

log = logging.getLogger(__name__)


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


def no_gpu_reason(accelerator: str) -> str:
    """Why this process sees no CUDA device (the reason a GPU field is null or empty)."""
    if not torch.backends.cuda.is_built():
        return f"this torch ({torch.__version__}) is built without CUDA"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (
        f"no CUDA device visible to this run (accelerator {accelerator}, "
        f"CUDA_VISIBLE_DEVICES={visible!r})"
    )


def pci_bus_id(props: Any) -> str | None:
    """The device's PCI address as ``nvidia-smi`` writes it (``00000000:3B:00.0``), from the
    ``pci_domain_id``/``pci_bus_id``/``pci_device_id`` properties recent torch exposes; None
    when this torch has not all three."""
    ids = [getattr(props, name, None) for name in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ids):
        return None
    domain, bus, device = ids
    return f"{domain:08X}:{bus:02X}:{device:02X}.0"


def gpu_entry(index: int, props: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """One visible device's entry in ``provenance.gpus`` from its ``get_device_properties``,
    and the reasons for its null fields (keyed ``gpus[<index>].<field>``)."""
    sm_count = getattr(props, "multi_processor_count", None)
    uuid = getattr(props, "uuid", None)
    entry = {
        "index": index,
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "sm_count": int(sm_count) if isinstance(sm_count, int) else None,
        "memory_bytes": int(props.total_memory),
        "uuid": str(uuid) if uuid is not None and str(uuid) else None,
        "pci_bus_id": pci_bus_id(props),
    }
    reasons = {
        f"gpus[{index}].{key}": f"torch {torch.__version__} does not expose it in its device "
        "properties"
        for key in ("sm_count", "uuid", "pci_bus_id")
        if entry[key] is None
    }
    return entry, reasons


def _gpus(accelerator: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The devices this run can see (CUDA_VISIBLE_DEVICES applies), by their visible index."""
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return [], {"gpus": no_gpu_reason(accelerator)}
        gpus, reasons = [], {}
        for index in range(count):
            entry, why = gpu_entry(index, torch.cuda.get_device_properties(index))
            gpus.append(entry)
            reasons.update(why)
        return gpus, reasons
    except Exception as exc:  # noqa: BLE001 - provenance never fails a run
        return [], {"gpus": f"could not read the devices: {type(exc).__name__}: {exc}"}


def _nccl() -> str | None:
    try:
        version = torch.cuda.nccl.version()
    except Exception:  # no NCCL in this build
        return None
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


# ---------------------------------------------------------------- loaded CUDA libraries

#: The libraries looked for among the files mapped into the process: key -> file name. The
#: file name, not the directory: pip wheels, conda and system CUDA put them in different places.
LIBRARY_FILES = {
    "cublas": re.compile(r"libcublas\.so(\.\d+)*"),
    "cublaslt": re.compile(r"libcublasLt\.so(\.\d+)*"),
    "cudnn": re.compile(r"libcudnn\.so(\.\d+)*"),
    "nccl": re.compile(r"libnccl\.so(\.\d+)*"),
}
_DELETED = " (deleted)"


def mapped_libraries(maps: str) -> dict[str, str]:
    """Which of LIBRARY_FILES are mapped, from ``/proc/<pid>/maps`` text: key -> the file's
    path (the first mapping of it). A line is ``address perms offset dev inode [path]``; the path
    may hold spaces, and ends in `` (deleted)`` when the file was replaced since it was mapped."""
    found: dict[str, str] = {}
    for line in maps.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 6 or not fields[5].startswith("/"):
            continue  # anonymous memory, [heap], [stack], [vdso]
        path = fields[5].rstrip("\n")
        path = path.removesuffix(_DELETED)
        name = path.rsplit("/", 1)[-1]
        for key, pattern in LIBRARY_FILES.items():
            if key not in found and pattern.fullmatch(name):
                found[key] = path
    return found


#: ``libraryPropertyType``: MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL
_VERSION_PROPERTIES = (0, 1, 2)


def library_version(path: str, getter: str) -> str:
    """``MAJOR.MINOR.PATCH`` from an already loaded library's own ``<getter>(type, int*)``
    (``cublasGetProperty``, ``cublasLtGetProperty``). RTLD_NOLOAD: a library that is not
    loaded is never loaded by asking; raises OSError or RuntimeError when it cannot say."""
    lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    function = getattr(lib, getter)
    function.restype = ctypes.c_int
    parts = []
    for prop in _VERSION_PROPERTIES:
        value = ctypes.c_int(-1)
        status = function(ctypes.c_int(prop), ctypes.byref(value))
        if status != 0:
            raise RuntimeError(f"{getter}({prop}) returned status {status}")
        parts.append(str(value.value))
    return ".".join(parts)


#: key -> the function of the library that says its version (library_version)
_VERSION_GETTERS = {"cublas": "cublasGetProperty", "cublaslt": "cublasLtGetProperty"}


def _cudnn_version() -> str | None:
    if not torch.backends.cudnn.is_available():
        return None
    version = torch.backends.cudnn.version()
    return str(version) if version is not None else None


def libraries(
    maps: str | None,
    no_cuda: str | None,
    *,
    ask: Callable[[str, str], str] = library_version,
    cudnn: Callable[[], str | None] = _cudnn_version,
    nccl: Callable[[], str | None] = _nccl,
) -> tuple[Libraries, dict[str, str]]:
    """The CUDA libraries mapped in this process (``maps``: its /proc/self/maps, None when it
    could not be read) with their versions, and why each null field is null (keyed
    ``libraries.<field>``). ``no_cuda``: why the run has no CUDA device (None: it has one).
    Never raises: a library that cannot say its version gets null and the error as reason."""
    paths = mapped_libraries(maps) if maps is not None else {}
    values: dict[str, str | None] = {}
    reasons: dict[str, str] = {}
    for key in LIBRARY_FILES:
        path = paths.get(key)
        values[f"{key}_path"] = path
        if path is None:
            why = "/proc/self/maps could not be read" if maps is None else "not loaded"
            reasons[f"libraries.{key}_path"] = f"{why}: no lib{key} file mapped in this process"
    for key, getter in _VERSION_GETTERS.items():
        path = paths.get(key)
        if path is None:
            reasons[f"libraries.{key}"] = reasons[f"libraries.{key}_path"] + (
                f" ({no_cuda})" if no_cuda else " (no GPU matmul ran in it)"
            )
            values[key] = None
            continue
        try:
            values[key] = ask(path, getter)
        except Exception as exc:  # noqa: BLE001 - provenance never fails a run
            values[key] = None
            reasons[f"libraries.{key}"] = f"{getter} failed: {type(exc).__name__}: {exc}"
    for key, read, why in (
        ("cudnn", cudnn, "torch.backends.cudnn is not available in this torch"),
        ("nccl", nccl, "this torch has no NCCL (torch.cuda.nccl.version() failed)"),
    ):
        try:
            values[key] = read()
        except Exception as exc:  # noqa: BLE001
            values[key], why = None, f"{type(exc).__name__}: {exc}"
        if values[key] is None:
            reasons[f"libraries.{key}"] = why
    return Libraries(**values), reasons


def _read_maps() -> str | None:
    try:
        return Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


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


class RankFlags(Callback):
    """Every rank's determinism flags, read on each rank as training ends and gathered to all.

    ``on_train_end`` runs on every rank after the last epoch, which every rank reaches: each
    step's gradient all-reduce keeps them in step, and a rank that fails before it ends the run
    (Lightning kills the others). ``ranks`` stays None, with ``reason``, when the gather fails.
    """

    def __init__(self) -> None:
        self.ranks: list[Determinism] | None = None
        self.reason: str | None = "the run failed before training ended"

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        own = determinism_in_force()
        if trainer.world_size == 1:
            self.ranks, self.reason = [own], None
            return
        try:
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, dataclasses.asdict(own))
            self.ranks, self.reason = [Determinism(**flags) for flags in gathered], None
        except Exception as exc:  # noqa: BLE001 - provenance never fails a run
            self.reason = f"gathering the ranks' flags failed: {type(exc).__name__}: {exc}"
            log.warning("%s", self.reason)


def torchvision_version() -> str | None:
    """``torchvision.__version__`` without importing torchvision where the run has not (its
    import is about a second, and the built-in never uses it): the literal its ``version.py``
    assigns, which is what the attribute holds; None when torchvision is not installed."""
    module = sys.modules.get("torchvision")
    if module is not None:
        return str(module.__version__)
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        try:
            tree = ast.parse((Path(location) / "version.py").read_text())
        except (OSError, SyntaxError, ValueError):
            continue
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and [ast.unparse(t) for t in node.targets] == ["__version__"]
                and isinstance(node.value, ast.Constant)
            ):
                return str(node.value.value)
    import torchvision  # a version.py of another shape: ask the package itself

    return str(torchvision.__version__)


def collect(
    accelerator: str,
    image: str | None,
    world_size: int,
    determinism: Determinism | None = None,
    flags: RankFlags | None = None,
) -> dict[str, Any]:
    """The ``provenance`` object of run.json (see docs/run-record.md); ``accelerator`` and
    ``image``: the spec's (a run outside the harness: the Trainer's, and None);
    ``determinism`` is what ``determinism_in_force`` read after ``fit`` (None when the run
    failed before that),
    ``flags`` the callback that read every rank's. Read after ``fit``: cuBLAS is loaded lazily,
    at the first GPU matmul."""
    import pytorch_lightning

    gpus, unavailable = _gpus(accelerator)
    no_cuda = unavailable.get("gpus")
    libs, why = libraries(_read_maps(), no_cuda)
    unavailable.update(why)
    machine, why = read_machine(gpus, no_cuda)
    unavailable.update(why)
    if determinism is None:
        unavailable["determinism"] = "the run failed before fit returned"
    ranks = flags.ranks if flags is not None else None
    if ranks is None:
        unavailable["determinism_ranks"] = (
            flags.reason if flags is not None and flags.reason else "not read in this run"
        )
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_git": torch.version.git_version,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "nccl": _nccl(),
        "lightning": pytorch_lightning.__version__,
        "torchvision": torchvision_version(),
        "numpy": np.__version__,
        "gpus": gpus,
        "gpu_driver": gpu_driver(),
        "cpu_model": cpu_model(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "env": {name: os.environ.get(name) for name in NUMERIC_ENV_VARS},
        "image": image,
        "image_digest": os.environ.get(IMAGE_ENV["image_digest"]),
        "image_id": os.environ.get(IMAGE_ENV["image_id"]),
        "workload_digest": workload_digest(),
        "user_code_digest": os.environ.get(USER_CODE_ENV),
        "initial_seed": torch.initial_seed(),
        "world_size": world_size,
        "determinism": determinism,
        "determinism_ranks": ranks,
        "libraries": libs,
        "machine": machine,
        "unavailable": unavailable,
    }
