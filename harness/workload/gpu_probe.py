"""The GPU probe: does torch in this environment compute on the GPUs a run will get?

Run where the runs run (in the workload image, with the runs' hardening, by
``harness.executors.gpu_probe_host``; on the host by ``harness doctor``), or by hand::

    python -m harness.workload.gpu_probe N     # N: the GPUs one run gets
    python harness/workload/gpu_probe.py N     # from a checkout: needs torch, nothing installed

It imports torch, checks ``torch.cuda.is_available()``, that ``torch.cuda.device_count()`` is N,
and runs one small matmul on each visible GPU followed by ``torch.cuda.synchronize``. It prints
one JSON line (``GPU_PROBE_MARK`` then the object: torch and CUDA versions, the driver's CUDA
version, device names and capabilities, torch's arch list, the stage that failed and its
error) and exits 0 only when every check passed. It states facts; the host
(``harness.executors.gpu_probe_host.classify``) turns them into a message with the fix.

Torch and the standard library only, and the mark its line starts with from
``harness.contract.probe_marks`` (stdlib only; run as a file, from the checkout it sits in): the
same probe runs in any image or venv.
"""

from __future__ import annotations

import ctypes
import json
import sys
import warnings
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: the contract is imported from the checkout it sits in
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
# The result line starts with this, so the host finds it among whatever torch prints.
from harness.contract.probe_marks import GPU_PROBE_MARK  # noqa: E402

#: The matmul's size: small, but a real kernel launch on each GPU.
SIZE = 64


def driver_cuda_version() -> str | None:
    """The CUDA version the installed driver supports (``cuDriverGetVersion``), e.g. "12.4";
    None where libcuda cannot be loaded (no driver, or no GPU runtime in the container)."""
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        try:
            if lib.cuDriverGetVersion(ctypes.byref(version)) != 0:
                return None
        except AttributeError:
            return None
        return f"{version.value // 1000}.{(version.value % 1000) // 10}"
    return None


def probe(expected: int) -> dict[str, Any]:
    """Every check in order; the first that fails sets ``stage`` and ``error`` and ends it.
    torch's warnings are kept: it says why CUDA is unusable (a driver too old, a GPU arch this
    build lacks) in warnings only."""
    result: dict[str, Any] = {
        "ok": False,
        "expected": expected,
        "stage": "import",
        "error": None,
        "warnings": [],
        "torch": None,
        "cuda": None,
        "driver_cuda": driver_cuda_version(),
        "arch_list": [],
        "device_count": None,
        "devices": [],
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _checks(result, expected)
        except Exception as exc:  # a failure of any kind, in torch's own words
            result["error"] = f"{type(exc).__name__}: {exc}"
    result["warnings"] = [str(w.message)[:2000] for w in caught]
    return result


def _checks(result: dict[str, Any], expected: int) -> None:
    import torch

    result["torch"] = str(torch.__version__)
    result["cuda"] = torch.version.cuda
    result["stage"] = "available"
    if not torch.cuda.is_available():
        result["error"] = "torch.cuda.is_available() is False"
        return
    result["arch_list"] = list(torch.cuda.get_arch_list())
    result["stage"] = "count"
    count = torch.cuda.device_count()
    result["device_count"] = count
    if count != expected:
        result["error"] = f"torch.cuda.device_count() is {count}, expected {expected}"
        return
    result["stage"] = "matmul"
    for index in range(count):
        props = torch.cuda.get_device_properties(index)
        capability = f"{props.major}.{props.minor}"
        result["devices"].append({"index": index, "name": props.name, "capability": capability})
        ones = torch.ones(SIZE, SIZE, device=f"cuda:{index}")
        product = ones @ ones
        torch.cuda.synchronize(index)
        value = float(product[0, 0].item())
        if value != float(SIZE):
            result["error"] = f"a {SIZE}x{SIZE} matmul of ones on GPU {index} gave {value}"
            return
    result["stage"] = "done"
    result["ok"] = True


def main(argv: list[str] | None = None) -> int:
    """Print the result line; 0 when the GPUs work, 1 when they do not, 2 on a bad argument."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit() or int(args[0]) < 1:
        print(
            "usage: python -m harness.workload.gpu_probe N  (N >= 1: GPUs per run)", file=sys.stderr
        )
        return 2
    result = probe(int(args[0]))
    print(GPU_PROBE_MARK + json.dumps(result, sort_keys=True), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
