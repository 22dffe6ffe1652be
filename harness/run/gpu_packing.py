"""Runs per GPU: how many one-GPU runs of a cell may share one device, from a measurement.

The MLP uses well under 1% of an H100, so several of its runs could share one GPU, but only a
measurement can say how many before they slow each other or fill its memory. The GPU check
(``bash scripts/gpu-check.sh OUT packing``) runs 1, 2, 4 and 8 copies of one cell side by side
on one GPU and writes ``OUT/gpu-packing.json``: per count, each run's step time, one run's peak
device memory, whether every run's trajectory equals the run alone's, and whether the runs
really overlapped. ``runs_per_gpu`` turns one such measurement into a number:

- the largest measured count ``k`` such that, for it and every smaller measured count, each
  run's step time is within ``tolerance`` (1.25x) of one run alone, every trajectory is the
  alone run's bit for bit, the runs overlapped, and ``k`` runs' peak memory leaves ``margin``
  (10%) of the device free;
- never more than the largest count measured (no extrapolation), never a guess: where no
  measurement matches the device and the cell, the answer is 1 (one run per GPU, as without
  packing), with the reason;
- DDP cells (``devices`` > 1) are never packed: a matrix with one gets 1.

Nothing here runs anything: ``harness run --runs-per-gpu auto`` reads the file and this
machine's GPUs (harness/run/matrix_runner.py) and gives the slots to the scheduler as
``--gpus 0,0,0,0`` would (``pack_gpus``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.contract.settings import TRAINS
from harness.errors import HarnessError

#: The measurement file's format (``format`` in the JSON).
PACKING_FORMAT = 1
#: A packed run may be at most this much slower per step than one run alone.
DEFAULT_TOLERANCE = 1.25
#: The share of the device's memory that packed runs leave free.
DEFAULT_MARGIN = 0.10
#: The most runs one GPU may be asked to hold (``--runs-per-gpu N``).
MAX_RUNS_PER_GPU = 64
#: The settings that decide a run's memory and work on the device: what is trained
#: (``Setting.trains``) but for its length and learning rate, and cuDNN's autotuner. A
#: measurement holds for the cells that agree with it on all of them (the other flags, the seed
#: and the placement do not change what is allocated, and the check confirms the bits).
CELL_KEYS = (
    *sorted(TRAINS - {"epochs", "max_steps_per_epoch", "learning_rate"}),
    "cudnn_benchmark",
)
GIB = 1024**3


@dataclass(frozen=True)
class Device:
    """A GPU model as nvidia-smi names it, and its total memory."""

    name: str
    memory_bytes: int


@dataclass(frozen=True)
class Point:
    """``runs`` copies of one cell side by side on one GPU."""

    runs: int
    #: each run's seconds per training step (its last epoch)
    step_seconds: tuple[float, ...]
    #: one run's peak device memory (the device's peak above idle, over ``runs``); None: unread
    peak_memory_bytes: int | None
    #: every run's trajectory is the alone run's, bit for bit
    bits_equal: bool
    #: the runs' last epochs overlapped (they trained side by side, not one after another)
    together: bool


@dataclass(frozen=True)
class Measurement:
    device: Device
    cell: dict[str, Any]
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Decision:
    """How many runs may share one GPU, whether a measurement says so, and why."""

    runs_per_gpu: int
    measured: bool
    reason: str


def default_packing_file() -> Path:
    """Where ``--runs-per-gpu auto`` looks without ``--packing``: the user cache, beside MNIST."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "harness" / "gpu-packing.json"


def cell_key(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a measurement must share with a cell (``CELL_KEYS``)."""
    return {k: settings.get(k) for k in CELL_KEYS}


def pack_gpus(gpus: Sequence[int], runs_per_gpu: int) -> tuple[int, ...]:
    """Each GPU id ``runs_per_gpu`` times, in order: (0, 1) x 2 -> (0, 0, 1, 1), the slots
    ``--gpus 0,0,1,1`` gives (harness/run/schedule.py)."""
    return tuple(g for g in gpus for _ in range(runs_per_gpu))


def runs_per_gpu(
    points: Sequence[Point],
    memory_bytes: int,
    *,
    run_memory_bytes: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    margin: float = DEFAULT_MARGIN,
) -> Decision:
    """The rule (module docstring) on one cell's measured ``points`` for a device of
    ``memory_bytes``; ``run_memory_bytes`` overrides the measured peak of one run."""
    ordered = sorted(points, key=lambda p: p.runs)
    alone = next((p for p in ordered if p.runs == 1), None)
    if alone is None or not alone.step_seconds:
        return Decision(1, False, "no measurement of one run alone")
    peaks = [p.peak_memory_bytes for p in ordered]
    one = run_memory_bytes if run_memory_bytes is not None else _largest(peaks)
    if one is None:
        return Decision(1, False, "no peak memory measured")
    budget = (1 - margin) * memory_bytes
    base = max(alone.step_seconds)
    chosen, why = 1, ""
    for point in ordered:
        why = _refusal(point, base, one, budget, tolerance, margin, memory_bytes)
        if why:
            break
        chosen = point.runs
    if not why:
        why = f"{chosen} is the most measured side by side"
    return Decision(chosen, True, why)


def _largest(peaks: Sequence[int | None]) -> int | None:
    return None if any(p is None for p in peaks) else max(p for p in peaks if p is not None)


def _refusal(
    point: Point,
    base: float,
    one: int,
    budget: float,
    tolerance: float,
    margin: float,
    memory_bytes: int,
) -> str:
    """Why ``point.runs`` may not share a GPU, or '' where they may."""
    k = point.runs
    if not point.bits_equal:
        return f"{k} side by side changed a trajectory's bits"
    if not point.together:
        return f"the {k} runs measured did not train side by side"
    if not point.step_seconds:
        return f"no step time measured for {k} side by side"
    slower = max(point.step_seconds) / base
    if slower > tolerance:
        return f"{k} side by side slowed a run {slower:.2f}x (over {tolerance}x)"
    if k * one > budget:
        return (
            f"{k} runs of {one / GIB:.2f} GiB exceed {1 - margin:.0%} of the "
            f"{memory_bytes / GIB:.1f} GiB device"
        )
    return ""


def decide(
    cells: Sequence[Mapping[str, Any]],
    measurements: Sequence[Measurement],
    device: Device | None,
    **rule: Any,
) -> Decision:
    """Runs per GPU for a matrix's ``cells`` (their settings): the smallest of its GPU cells'
    answers, each from the measurement of that cell on this ``device`` (``rule``: the keyword
    arguments of ``runs_per_gpu``)."""
    unpackable = not_packable(cells)
    if unpackable is not None:
        return unpackable
    gpu = [c for c in cells if c.get("accelerator") == "gpu"]
    if device is None:
        return Decision(1, False, "this machine's GPU could not be read (nvidia-smi)")
    answers = []
    for cell in gpu:
        found = [m for m in measurements if _matches(m, cell, device)]
        if not found:
            return Decision(
                1, False, f"no packing measurement of cell {_name(cell)} on {device.name}"
            )
        answers += [runs_per_gpu(m.points, device.memory_bytes, **rule) for m in found]
    return min(answers, key=lambda d: d.runs_per_gpu)


def not_packable(cells: Sequence[Mapping[str, Any]]) -> Decision | None:
    """1 where nothing may be packed whatever was measured: no GPU cell, or a DDP cell (its
    ranks need a GPU each); None otherwise."""
    gpu = [c for c in cells if c.get("accelerator") == "gpu"]
    if not gpu:
        return Decision(1, False, "no GPU cell to pack")
    ddp = next((c for c in gpu if int(c.get("devices", 1)) > 1), None)
    if ddp is not None:
        return Decision(1, False, f"cell {_name(ddp)} is DDP, and DDP runs are never packed")
    return None


def _name(cell: Mapping[str, Any]) -> str:
    return str(cell.get("cell_name") or cell.get("name") or cell.get("model"))


def _matches(measurement: Measurement, cell: Mapping[str, Any], device: Device) -> bool:
    same_device = measurement.device.name == device.name
    return same_device and measurement.cell == cell_key(cell)


def read_measurements(path: Path) -> list[Measurement]:
    """The measurements in a file the GPU check wrote; a HarnessError names what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HarnessError(
            f"cannot read the packing measurement {path}: {exc}",
            "pass the gpu-packing.json that `bash scripts/gpu-check.sh OUT packing` wrote",
        ) from exc
    try:
        if data["format"] != PACKING_FORMAT:
            raise ValueError(f"format {data['format']!r}, not {PACKING_FORMAT}")
        return [_measurement(m) for m in data["measurements"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise HarnessError(
            f"{path} is not a packing measurement this harness reads ({exc!r})",
            "measure again: `bash scripts/gpu-check.sh OUT packing` on the GPU",
        ) from exc


def _measurement(data: Mapping[str, Any]) -> Measurement:
    device = Device(str(data["device"]["name"]), int(data["device"]["memory_bytes"]))
    points = tuple(
        Point(
            runs=int(p["runs"]),
            step_seconds=tuple(float(s) for s in p["step_seconds"]),
            peak_memory_bytes=None
            if p["peak_memory_bytes"] is None
            else int(p["peak_memory_bytes"]),
            bits_equal=p["bits_equal"] is True,
            together=p["together"] is True,
        )
        for p in data["points"]
    )
    return Measurement(device, cell_key(data["cell"]), points)


def measurement_json(measurement: Measurement) -> dict[str, Any]:
    """One measurement as the file holds it (``read_measurements`` reads it back)."""
    return {
        "device": {
            "name": measurement.device.name,
            "memory_bytes": measurement.device.memory_bytes,
        },
        "cell": measurement.cell,
        "points": [
            {
                "runs": p.runs,
                "step_seconds": list(p.step_seconds),
                "peak_memory_bytes": p.peak_memory_bytes,
                "bits_equal": p.bits_equal,
                "together": p.together,
            }
            for p in measurement.points
        ],
    }


def point_of(
    records: Sequence[Mapping[str, Any]], alone: str | None, peak_memory_bytes: int | None
) -> Point:
    """The point of ``len(records)`` runs that went side by side, from their run records:
    each run's step time is its last epoch's training seconds over its steps; ``alone`` is the
    trajectory digest of the run alone (None: this is it). The runs count as together when
    their last epochs overlapped for at least half of the shortest (``_together``)."""
    steps: list[float] = []
    trajectories = []
    for rec in records:
        last = (rec.get("epochs") or [{}])[-1]
        if rec.get("status") == "ok" and last.get("train_seconds") and last.get("steps"):
            steps.append(float(last["train_seconds"]) / int(last["steps"]))
        trajectories.append((rec.get("digests") or {}).get("trajectory"))
    reference = alone if alone is not None else trajectories[0] if trajectories else None
    bits_equal = reference is not None and all(t == reference for t in trajectories)
    if len(steps) != len(records):
        steps = []  # a run that failed or timed nothing: no step time for this count
    return Point(len(records), tuple(steps), peak_memory_bytes, bits_equal, _together(records))


def _together(records: Sequence[Mapping[str, Any]]) -> bool:
    """The runs' last epochs overlapped for at least half of the shortest one. A last epoch
    ends at its record's ``finished_at`` less its validation, and lasts its training seconds
    (the record's writing, after it, is left in: a fraction of a second)."""
    windows = []
    try:
        for rec in records:
            last = rec["epochs"][-1]
            end = datetime.fromisoformat(rec["timing"]["finished_at"]).timestamp()
            end -= float(last.get("val_seconds") or 0.0)
            windows.append((end - float(last["train_seconds"]), end))
    except (KeyError, IndexError, TypeError, ValueError):
        return False
    if not windows:
        return False
    shortest = min(end - start for start, end in windows)
    return min(e for _, e in windows) - max(s for s, _ in windows) >= shortest / 2
