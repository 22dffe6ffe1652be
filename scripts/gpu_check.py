"""What only a GPU shows, checked on a GPU machine in one go (scripts/gpu-check.sh runs it).

Each check runs the real workload (``python -m harness.workload``) or the harness CLI with the
local executor, and writes what it saw to ``OUT/gpu-check.json`` and ``OUT/gpu-check.md``:

- ``facts``: the GPU, driver, torch, CUDA and cuDNN of this machine;
- ``probe``: the GPU probe the Docker executor runs in each GPU image, run here directly;
- ``run_ok``: one GPU run ends ok, with the GPU in its provenance;
- ``cuda_error``: a sticky CUDA error (device-side assert, the spec's test-only fault switch)
  still leaves a failed ``run.json`` naming it;
- ``sigterm`` / ``sigint``: SIGTERM or SIGINT to a GPU run during training leaves a failed
  ``run.json`` saying it was terminated / interrupted;
- ``matrix``: a small GPU matrix through ``harness run --executor local``, with its verdicts.

Exit code 0 when every check passed, 1 otherwise; the files say which failed and why.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
RUN_S = 300  # no single check may take longer than this
#: "cpu" runs the same checks on a CPU, to try this script where no GPU is (the GPU-only ones fail)
ACCELERATOR = os.environ.get("HARNESS_GPU_CHECK_ACCELERATOR", "gpu")


def sh(argv: list[str], timeout: float = RUN_S, **kwargs: Any) -> subprocess.CompletedProcess:
    """argv (never a shell string), its text output captured; a missing program is exit 127."""
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
    except FileNotFoundError as exc:
        return subprocess.CompletedProcess(argv, 127, "", str(exc))


def make_spec(folder: Path, run: dict[str, Any], **settings: Any) -> Path:
    """A spec.json for one GPU run, made the way the host makes it: from a matrix."""
    from harness.matrix import load_matrix

    axes = {
        "image": ["local"],
        "accelerator": [ACCELERATOR],
        "placement": ["before_model"],
        "cudnn_deterministic": [True],
        "cudnn_benchmark": [False],
        "deterministic_algorithms": ["off"],
        "devices": [1],
    }
    axes.update({k: [v] for k, v in settings.items()})
    matrix = {
        "name": "gpu-check",
        "run": {"repeats": 1, "seed": 201014, "threads": 1, **run},
        "axes": axes,
        "include": [],
        "exclude": [],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "matrix.yaml"
    path.write_text(json.dumps(matrix))  # JSON is YAML
    spec = load_matrix(path).cells[0].spec(0)
    out = folder / "spec.json"
    out.write_text(json.dumps(spec.to_dict(), indent=2))
    return out


def workload(spec: Path, out: Path) -> list[str]:
    return [PY, "-m", "harness.workload", "--spec", str(spec), "--out", str(out)]


def record(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / "run.json").read_text())
    except (OSError, ValueError) as exc:
        return {"status": "missing", "error": {"type": "NoRecord", "message": str(exc)}}


def short(rec: dict[str, Any]) -> dict[str, Any]:
    error = rec.get("error") or {}
    prov = rec.get("provenance") or {}
    return {
        "status": rec.get("status"),
        "steps": rec.get("steps"),
        "error_type": error.get("type"),
        "error_message": (error.get("message") or "")[:400],
        "gpu": prov.get("gpu") or prov.get("gpus"),
        "trajectory": (rec.get("digests") or {}).get("trajectory"),
    }


def check_facts(work: Path) -> dict[str, Any]:
    smi = sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"])
    torch_facts = sh(
        [
            PY,
            "-c",
            "import json, torch; print(json.dumps({'torch': torch.__version__, "
            "'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(), "
            "'devices': torch.cuda.device_count(), "
            "'name': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))",
        ]
    )
    facts = json.loads(torch_facts.stdout.strip().splitlines()[-1]) if torch_facts.stdout else {}
    return {"ok": torch_facts.returncode == 0, "nvidia_smi": smi.stdout.strip(), **facts}


def check_probe(work: Path) -> dict[str, Any]:
    from harness.workload import gpu_probe  # the script the Docker executor runs per image

    proc = sh([PY, gpu_probe.__file__, "1"])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"stdout": proc.stdout, "stderr": proc.stderr}
    return {"ok": proc.returncode == 0, "exit_code": proc.returncode, "result": result}


def check_run_ok(work: Path) -> dict[str, Any]:
    spec = make_spec(work, {"epochs": 1, "max_steps_per_epoch": 200})
    proc = sh(workload(spec, work))
    rec = short(record(work))
    return {"ok": proc.returncode == 0 and rec["status"] == "ok", **rec}


def check_cuda_error(work: Path) -> dict[str, Any]:
    spec = make_spec(
        work,
        {"epochs": 1, "max_steps_per_epoch": 200, "test_fault": {"kind": "cuda_error", "step": 20}},
    )
    started = time.monotonic()
    proc = sh(workload(spec, work))
    rec = short(record(work))
    said = (rec["error_type"] or "") + " " + (rec["error_message"] or "")
    return {
        "ok": proc.returncode != 0 and rec["status"] == "failed" and "CUDA" in said.upper(),
        "exit_code": proc.returncode,
        "seconds": round(time.monotonic() - started, 1),
        **rec,
    }


def check_signal(sig: signal.Signals, expected: str) -> Callable[[Path], dict[str, Any]]:
    def check(work: Path) -> dict[str, Any]:
        spec = make_spec(work, {"epochs": 50, "max_steps_per_epoch": 400})
        log = open(work / "run.log", "wb")
        proc = subprocess.Popen(workload(spec, work), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if b"epoch 2/" in (work / "run.log").read_bytes():
                break  # in fit, between epochs 2 and 3
            time.sleep(0.2)
        sent = time.monotonic()
        proc.send_signal(sig)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log.close()
        rec = short(record(work))
        return {
            "ok": rec["status"] == "failed" and rec["error_type"] == expected,
            "exit_code": code,
            "seconds_to_exit": round(time.monotonic() - sent, 1),
            **rec,
        }

    return check


MATRIX = """\
name: gpu-check-matrix
run: {repeats: 2, epochs: 1, max_steps_per_epoch: 300, seed: 201014, threads: 1, timeout_s: 600}
axes:
  image: [local]
  accelerator: [ACCELERATOR]
  placement: [none, before_model]
  cudnn_deterministic: [true]
  cudnn_benchmark: [false]
  deterministic_algorithms: ["off", "on"]
  devices: [1]
include: []
exclude: []
"""


def check_matrix(work: Path) -> dict[str, Any]:
    matrix = work / "matrix.yaml"
    matrix.write_text(MATRIX.replace("ACCELERATOR", ACCELERATOR))
    out = work / "results"
    proc = sh(
        [PY, "-m", "harness.cli", "run", str(matrix), "--out", str(out), "--progress", "plain"],
        timeout=RUN_S * 2,
    )
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        report = None
    cells = []
    for cell in (report or {}).get("cells", []):
        cells.append({k: cell.get(k) for k in ("name", "verdict", "reproducible", "runs_ok")})
    md = (out / "report.md").read_text() if (out / "report.md").is_file() else ""
    return {
        "ok": proc.returncode in (0, 1) and report is not None,
        "exit_code": proc.returncode,
        "cells": cells,
        "report_md": md[:6000],
        "stderr_tail": proc.stderr[-2000:],
    }


CHECKS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "facts": check_facts,
    "probe": check_probe,
    "run_ok": check_run_ok,
    "cuda_error": check_cuda_error,
    "sigterm": check_signal(signal.SIGTERM, "Terminated"),
    "sigint": check_signal(signal.SIGINT, "Interrupted"),
    "matrix": check_matrix,
}


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "gpu-check"))
    out.mkdir(parents=True, exist_ok=True)
    only = sys.argv[2:] or list(CHECKS)
    results: dict[str, Any] = {}
    for name in only:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"gpu-check-{name}-") as tmp:
            try:
                results[name] = CHECKS[name](Path(tmp))
            except Exception as exc:  # one broken check must not hide the others
                results[name] = {"ok": False, "exception": f"{type(exc).__name__}: {exc}"}
        results[name]["check_seconds"] = round(time.monotonic() - started, 1)
        print(f"{name}: {'ok' if results[name].get('ok') else 'FAILED'}", flush=True)
        (out / "gpu-check.json").write_text(json.dumps(results, indent=2, default=str))
    lines = ["# GPU check", "", "| check | ok | seconds | detail |", "| --- | --- | --- | --- |"]
    for name, result in results.items():
        detail = {k: v for k, v in result.items() if k not in ("ok", "check_seconds", "report_md")}
        text = json.dumps(detail, default=str).replace("|", "\\|")[:600]
        lines.append(f"| {name} | {result.get('ok')} | {result.get('check_seconds')} | {text} |")
    if "matrix" in results and results["matrix"].get("report_md"):
        lines += ["", "## The small GPU matrix's report", "", results["matrix"]["report_md"]]
    (out / "gpu-check.md").write_text("\n".join(lines) + "\n")
    return 0 if all(r.get("ok") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
