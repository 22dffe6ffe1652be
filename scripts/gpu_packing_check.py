"""Runs per GPU, measured (issue 32): ``bash scripts/gpu-check.sh OUT packing`` runs this.

For each count k of ``HARNESS_GPU_PACKING_RUNS`` (default 1,2,4,8): ``harness run`` of one cell
(``HARNESS_GPU_PACKING_MODEL``, default mlp; placement before_model; 2 epochs of
``HARNESS_GPU_PACKING_STEPS`` steps, default 1000) with k repeats and ``--gpus 0 --runs-per-gpu
k``, so the k runs start together on GPU 0. Meanwhile nvidia-smi's ``memory.used`` of GPU 0 is
read every 0.2 s: the peak above the idle GPU, over k, is one run's peak (it counts the CUDA
context, which torch's ``max_memory_allocated`` leaves out; the run records carry no memory).
Each run's step time is its last epoch's (the first absorbs the staggered start), and its
trajectory digest is compared with the run alone's (harness/run/gpu_packing.py, ``point_of``).

Writes ``OUT/gpu-packing.json`` (``harness run --runs-per-gpu auto --packing FILE`` reads it;
copy it to ~/.cache/harness/gpu-packing.json to make it the default) and ``OUT/gpu-packing.md``.
``HARNESS_GPU_CHECK_ACCELERATOR=cpu`` is the dry mode: counts 1,2 of 5 steps on the CPU, no
memory, no device, to try this script where there is no GPU. Exit 0 when every run ended ok
and every packed trajectory equals the alone run's; 1 otherwise.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.matrix import load_matrix  # noqa: E402
from harness.run.gpu_packing import (  # noqa: E402
    PACKING_FORMAT,
    Device,
    Measurement,
    Point,
    cell_key,
    measurement_json,
    point_of,
    runs_per_gpu,
)
from harness.run.schedule import gpu_device  # noqa: E402

PY = sys.executable
ACCELERATOR = os.environ.get("HARNESS_GPU_CHECK_ACCELERATOR", "gpu")
DRY = ACCELERATOR == "cpu"
COUNTS_TEXT = os.environ.get("HARNESS_GPU_PACKING_RUNS", "1,2" if DRY else "1,2,4,8")
COUNTS = [int(n) for n in COUNTS_TEXT.split(",")]
STEPS = int(os.environ.get("HARNESS_GPU_PACKING_STEPS", "5" if DRY else "1000"))
MODEL = os.environ.get("HARNESS_GPU_PACKING_MODEL", "mlp")
MIB = 1024 * 1024


def memory_used_mib() -> int | None:
    """GPU 0's used memory now (nvidia-smi), None where it cannot be read (the dry mode)."""
    if DRY:
        return None
    query = ["nvidia-smi", "-i", "0", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
    try:
        proc = subprocess.run(query, capture_output=True, text=True, timeout=10, check=False)
        return int(proc.stdout.strip().splitlines()[0]) if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


class PeakMemory:
    """The highest ``memory_used_mib`` seen while the runs go, read every 0.2 s."""

    def __init__(self) -> None:
        self.peak: int | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            used = memory_used_mib()
            if used is not None:
                self.samples += 1
                self.peak = used if self.peak is None else max(self.peak, used)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def matrix_for(k: int) -> dict[str, Any]:
    run = {"repeats": k, "epochs": 2, "max_steps_per_epoch": STEPS, "seed": 201014}
    axes = {"image": ["local"], "accelerator": [ACCELERATOR], "devices": [1]}
    axes.update(model=[MODEL], placement=["before_model"])
    return {
        "name": f"gpu-packing-{k}",
        "run": {**run, "threads": 1, "timeout_s": 600},
        "axes": axes,
    }


def side_by_side(k: int, out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """k runs of the cell at once on GPU 0: their records, and what the harness and
    nvidia-smi said."""
    folder = out / f"runs-{k}"
    folder.mkdir(parents=True, exist_ok=True)
    matrix = folder / "matrix.yaml"
    matrix.write_text(json.dumps(matrix_for(k)))  # JSON is YAML
    argv = [PY, "-m", "harness.cli", "run", str(matrix), "--out", str(folder / "results")]
    argv += ["--executor", "local", "--progress", "quiet", "--no-report", "--runs-per-gpu", str(k)]
    if not DRY:
        argv += ["--gpus", "0"]
    idle = memory_used_mib()
    with PeakMemory() as memory:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=400, check=False)
            code, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired:
            code, stderr = 124, "timed out after 400 s"
    records = []
    for path in sorted(folder.glob("results/**/run.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            records.append({"status": "unread", "error": str(exc)})
    seen = {"exit_code": code, "stderr_tail": stderr[-1500:]}
    seen.update(idle_mib=idle, peak_mib=memory.peak, memory_samples=memory.samples)
    return records, seen


def measure(out: Path) -> tuple[Measurement, list[dict[str, Any]]]:
    points: list[Point] = []
    details = []
    alone: str | None = None
    for k in COUNTS:
        records, seen = side_by_side(k, out)
        peak = None
        if seen["idle_mib"] is not None and seen["peak_mib"] is not None:
            peak = (seen["peak_mib"] - seen["idle_mib"]) * MIB // k
        point = point_of(records, alone, peak)
        if len(records) != k:  # a run left no record: nothing measured for this count
            point = Point(k, (), peak, False, False)
        if k == 1 and records:
            alone = (records[0].get("digests") or {}).get("trajectory")
        points.append(point)
        statuses = [r.get("status") for r in records]
        details.append({"runs": k, "statuses": statuses, **seen})
        print(f"packing {k}: {statuses}, exit {seen['exit_code']}", flush=True)
    device = gpu_device() if not DRY else None
    device = device or Device("none (dry mode)" if DRY else "unread", 0)
    cell = load_matrix(out / f"runs-{COUNTS[0]}" / "matrix.yaml").cells[0].settings
    return Measurement(device, cell_key(cell), tuple(points)), details


def table(measurement: Measurement, details: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| runs side by side | step ms (median, slowest) | slowest / alone | one run's peak MiB "
        "| bits equal alone | together | statuses |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = max(measurement.points[0].step_seconds, default=None) if measurement.points else None
    for p, d in zip(measurement.points, details, strict=True):
        ms = [s * 1000 for s in p.step_seconds]
        step = f"{statistics.median(ms):.3f}, {max(ms):.3f}" if ms else "none"
        ratio = f"{max(p.step_seconds) / base:.2f}" if ms and base else ""
        peak = "" if p.peak_memory_bytes is None else f"{p.peak_memory_bytes / MIB:.0f}"
        row = [str(p.runs), step, ratio, peak, str(p.bits_equal), str(p.together)]
        lines.append("| " + " | ".join([*row, ", ".join(map(str, d["statuses"]))]) + " |")
    return lines


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "gpu-check").resolve()
    out.mkdir(parents=True, exist_ok=True)
    measurement, details = measure(out / "packing")
    decision = runs_per_gpu(measurement.points, measurement.device.memory_bytes)
    rule = {"runs_per_gpu": decision.runs_per_gpu, "measured": decision.measured}
    entry = {**measurement_json(measurement), "steps": STEPS, "details": details}
    data = {
        "format": PACKING_FORMAT,
        "measurements": [entry],
        "rule": {**rule, "why": decision.reason},
    }
    (out / "gpu-packing.json").write_text(json.dumps(data, indent=2))
    dev = measurement.device
    lines = ["# Runs per GPU", "", f"{MODEL}, 2 epochs of {STEPS} steps, on {dev.name} "]
    lines[-1] += f"({dev.memory_bytes / MIB:.0f} MiB){' (CPU dry mode)' if DRY else ''}:"
    lines += ["", *table(measurement, details), "", f"The rule: {decision.reason}."]
    (out / "gpu-packing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    ok = all(d["exit_code"] == 0 and set(d["statuses"]) == {"ok"} for d in details)
    return 0 if ok and all(p.bits_equal for p in measurement.points) else 1


if __name__ == "__main__":
    sys.exit(main())
