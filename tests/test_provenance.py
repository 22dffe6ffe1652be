"""GPU provenance, the pure parts: which CUDA libraries /proc/self/maps shows and what they say
their version is, each device's entry, and that what cannot be known is null with a reason
(never an exception). The real run records are checked in tests/test_workload_runs.py."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from harness.contract import RunSpec
from harness.contract.record import Libraries
from harness.executors.base import Slot
from harness.executors.local import run_env
from harness.workload import provenance
from harness.workload.provenance import (
    gpu_entry,
    libraries,
    library_version,
    mapped_libraries,
    pci_bus_id,
)

WHEELS = "/venv/nvidia"
#: /proc/self/maps lines as Linux writes them: address perms offset dev inode, then the path
#: padded to a column; a path may hold spaces and end in " (deleted)"
MAPS = f"""\
7f0000000000-7f0000001000 r--p 00000000 00:00 0
7f0000001000-7f0000002000 rw-p 00000000 00:00 0      [heap]
7f1000000000-7f1000100000 r--p 00000000 103:02 4201      {WHEELS}/cu13/lib/libcublasLt.so.13
7f1000100000-7f1000200000 r-xp 00100000 103:02 4201      {WHEELS}/cu13/lib/libcublasLt.so.13
7f2000000000-7f2000100000 r--p 00000000 103:02 4202      /o/cuda 12/libcublas.so.12.4.5.8 (deleted)
7f3000000000-7f3000100000 r--p 00000000 103:02 4203      {WHEELS}/cudnn/lib/libcudnn_graph.so.9
7f3000100000-7f3000200000 r--p 00000000 103:02 4204      {WHEELS}/cudnn/lib/libcudnn.so.9
7f4000000000-7f4000100000 r--p 00000000 103:02 4205      {WHEELS}/nccl/lib/libnccl.so.2
7f5000000000-7f5000100000 r--p 00000000 103:02 4206      /usr/lib/libcublas_extra.so.1
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0      [stack]
"""

FIELDS = list(Libraries.__dataclass_fields__)


def test_mapped_libraries_finds_each_library_by_its_file_name():
    """cuBLAS and cuBLASLt apart, cuDNN's main library and not its sub-libraries, a path with a
    space and one replaced since it was mapped; anonymous mappings and look-alikes ignored."""
    assert mapped_libraries(MAPS) == {
        "cublaslt": f"{WHEELS}/cu13/lib/libcublasLt.so.13",
        "cublas": "/o/cuda 12/libcublas.so.12.4.5.8",
        "cudnn": f"{WHEELS}/cudnn/lib/libcudnn.so.9",
        "nccl": f"{WHEELS}/nccl/lib/libnccl.so.2",
    }
    assert mapped_libraries("") == {}
    only_lt = "\n".join(line for line in MAPS.splitlines() if "libcublasLt" in line)
    assert mapped_libraries(only_lt) == {"cublaslt": f"{WHEELS}/cu13/lib/libcublasLt.so.13"}


def test_libraries_asks_each_mapped_library_and_says_why_the_rest_are_null():
    asked = []

    def ask(path: str, getter: str) -> str:
        asked.append((Path(path).name, getter))
        if getter == "cublasLtGetProperty":
            raise OSError("undefined symbol: cublasLtGetProperty")
        return "12.4.5"

    libs, reasons = libraries(MAPS, None, ask=ask, cudnn=lambda: "90100", nccl=lambda: None)
    assert asked == [
        ("libcublas.so.12.4.5.8", "cublasGetProperty"),
        ("libcublasLt.so.13", "cublasLtGetProperty"),
    ]
    assert (libs.cublas, libs.cublaslt, libs.cudnn, libs.nccl) == ("12.4.5", None, "90100", None)
    assert libs.nccl_path == f"{WHEELS}/nccl/lib/libnccl.so.2"
    assert reasons == {
        "libraries.cublaslt": "cublasLtGetProperty failed: OSError: undefined symbol: "
        "cublasLtGetProperty",
        "libraries.nccl": "this torch has no NCCL (torch.cuda.nccl.version() failed)",
    }


@pytest.mark.parametrize(
    ("maps", "no_cuda", "cublas_why"),
    [
        ("", "no CUDA device visible", "not loaded: no libcublas file mapped in this process "
         "(no CUDA device visible)"),
        ("", None, "not loaded: no libcublas file mapped in this process (no GPU matmul ran in "
         "it)"),
        (None, None, "/proc/self/maps could not be read: no libcublas file mapped in this "
         "process (no GPU matmul ran in it)"),
    ],
)  # fmt: skip
def test_without_the_libraries_every_field_is_null_with_a_reason(maps, no_cuda, cublas_why):
    def broken() -> str:
        raise RuntimeError("no cuDNN here")

    libs, reasons = libraries(maps, no_cuda, ask=pytest.fail, cudnn=broken, nccl=lambda: None)
    assert libs == Libraries()
    assert set(reasons) == {f"libraries.{name}" for name in FIELDS}
    assert reasons["libraries.cublas"] == cublas_why
    assert reasons["libraries.cudnn"] == "RuntimeError: no cuDNN here"


def test_library_version_never_loads_a_library():
    """RTLD_NOLOAD: asking a library that exists but is not loaded (an extension module of the
    standard library that nothing imports) fails, and leaves it unloaded."""
    spec = importlib.util.find_spec("xxlimited")
    assert spec is not None and spec.origin is not None, "CPython's xxlimited is missing"
    real = os.path.realpath(spec.origin)
    assert real not in Path("/proc/self/maps").read_text()
    with pytest.raises(OSError):
        library_version(real, "cublasGetProperty")
    assert real not in Path("/proc/self/maps").read_text()


def test_the_loaded_cublas_says_its_version_itself():
    """In this process: cuBLAS's major version is CUDA's (11 and later); a CUDA build of torch
    maps libcublas at import, a CPU build does not and gets a reason."""
    path = mapped_libraries(Path("/proc/self/maps").read_text()).get("cublas")
    libs, reasons = libraries(Path("/proc/self/maps").read_text(), None)
    if torch.version.cuda is None:
        assert path is None and libs.cublas is None and "libraries.cublas" in reasons
        return
    assert path is not None and libs.cublas_path == path
    assert re.fullmatch(r"\d+\.\d+\.\d+", libs.cublas or ""), reasons
    assert libs.cublas.split(".")[0] == torch.version.cuda.split(".")[0]
    assert libs.cublaslt == library_version(libs.cublaslt_path, "cublasLtGetProperty")


def test_pci_bus_id_is_written_as_nvidia_smi_writes_it():
    props = SimpleNamespace(pci_domain_id=0, pci_bus_id=0x3B, pci_device_id=0)
    assert pci_bus_id(props) == "00000000:3B:00.0"
    assert pci_bus_id(SimpleNamespace(pci_bus_id=0x3B)) is None  # an older torch


def test_a_gpu_entry_has_every_field_and_a_reason_for_each_null():
    h100 = SimpleNamespace(
        name="NVIDIA H100 80GB HBM3",
        major=9,
        minor=0,
        multi_processor_count=132,
        total_memory=85 * 2**30,
        uuid="a1b2c3d4-0000-1111-2222-333344445555",
        pci_domain_id=0,
        pci_bus_id=0x19,
        pci_device_id=0,
    )
    entry, reasons = gpu_entry(0, h100)
    assert entry == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "capability": "9.0",
        "sm_count": 132,
        "memory_bytes": 85 * 2**30,
        "uuid": "a1b2c3d4-0000-1111-2222-333344445555",
        "pci_bus_id": "00000000:19:00.0",
    }
    assert reasons == {}
    old = SimpleNamespace(name="Tesla V100", major=7, minor=0, total_memory=16 * 2**30)
    entry, reasons = gpu_entry(1, old)
    assert (entry["sm_count"], entry["uuid"], entry["pci_bus_id"]) == (None, None, None)
    assert set(reasons) == {"gpus[1].sm_count", "gpus[1].uuid", "gpus[1].pci_bus_id"}


def test_every_local_run_orders_cuda_devices_by_pci_bus_id():
    """So that the slot's GPU indices (nvidia-smi's) are CUDA's: also when the user's own
    environment says otherwise."""
    for spec in (RunSpec(), RunSpec(accelerator="gpu", devices=2)):
        env = run_env(spec, Slot(cpus=(0,), gpus=(1, 3)), {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})
        assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert env["CUDA_VISIBLE_DEVICES"] == "1,3"


@pytest.mark.gpu
def test_on_a_gpu_every_device_and_the_used_cublas_are_recorded():
    """Only on a GPU: each visible device's SM count and PCI bus id, and cuBLAS/cuBLASLt's
    versions asked of the libraries after a GPU matmul loaded them."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the GPU branch of provenance runs only on a GPU")
    x = torch.ones(64, 64, device="cuda")
    assert (x @ x).sum().item() == 64**3  # the first GPU matmul loads cuBLAS
    gpus, reasons = provenance._gpus("gpu")
    assert len(gpus) == torch.cuda.device_count() and reasons == {}
    assert all(g["sm_count"] > 0 and g["pci_bus_id"] and g["uuid"] for g in gpus)
    libs, why = libraries(Path("/proc/self/maps").read_text(), None)
    assert libs.cublas and libs.cublaslt and libs.cublas_path and libs.cublaslt_path, why
