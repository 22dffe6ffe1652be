"""``harness report`` over 1,000 run records of 51,570 steps each (goal: <= 10 s), and its parts.

The results folder is made by the project's own writers, as ``harness run`` lays one out: the
matrix parsed by ``harness.matrix``, the manifest and each ``spec.json`` written by
``harness.results.store.ResultsDir``, each ``run.json`` by ``harness.contract.record.write_record``
with its trajectory digest from ``harness.contract.trajectory_hash``. A change of the results
format changes this folder with it: the script that wrote format-1 records by hand broke
silently. Only what training would compute is made up: 250 cells (``placement`` none and
before_model x 125 seeds) x 4 repeats, 30 epochs of 1,719 steps. The ``none`` cells' repeats
diverge (repeat k from step 1000 k), the others reproduce; every run has ``losses.npy`` and
``weights.npy`` (the built-in MLP's 4 parameter hashes per step), as the workload writes them
(``--no-weights``: as records were before they had it).

Timed per round, interleaved, medians of ``--repeats`` rounds: the whole ``harness report``
process (md, json and csv with plots, and with ``--no-plots``), and, in this process,
``analyze`` and each renderer on its result. The report's verdicts are checked against what was
made. ``--smoke``: the same on 8 runs of 100 steps, in seconds (tests/test_benchmarks_smoke.py).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_report.py --repeats 3 [--json FILE]
    .venv/bin/python benchmarks/bench_report.py --smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from harness.contract import LOSSES_FILE, WEIGHTS_FILE
from harness.contract.machine import Machine, machine_fingerprint
from harness.contract.record import (
    Digests,
    EpochSummary,
    Provenance,
    RunRecord,
    Timing,
    WeightDigests,
    write_record,
)
from harness.contract.spec import RunSpec
from harness.contract.trajectory_hash import trajectory_sha256
from harness.matrix import LoadedMatrix
from harness.matrix.load import parse_matrix
from harness.report import Report, analyze
from harness.report.exporters import EXPORTERS
from harness.report.heatmap import write_grid_plots
from harness.report.plots import MAX_PLOTS, write_plots
from harness.report.report_data import DIVERGES, REPRODUCES
from harness.report.terminal import print_summary
from harness.results.store import ResultsDir

T = TypeVar("T")
GOAL_S = 10.0
#: The built-in MLP's parameters, as the workload names weights.npy's columns.
PARAMETERS = ["model.1.weight", "model.1.bias", "model.3.weight", "model.3.bias"]
#: harness/workload/weights.py's HASH_KIND (importing it would import torch).
HASH_KIND = "mix64_sum"


@dataclass(frozen=True)
class Size:
    seeds: int  # cells = 2 placements x seeds
    repeats: int
    epochs: int
    steps_per_epoch: int
    #: each run has weights.npy, as the workload's runs do (``--no-weights``: as before it)
    weights: bool = True

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def runs(self) -> int:
        return 2 * self.seeds * self.repeats


FULL = Size(seeds=125, repeats=4, epochs=30, steps_per_epoch=1719)  # the post's 30 epochs
SMOKE = Size(seeds=2, repeats=2, epochs=2, steps_per_epoch=50)

MACHINE = Machine(
    cpu_vendor="GenuineIntel",
    cpu_name="Intel(R) Xeon(R) Processor",
    cpu_family=6,
    cpu_model=143,
    cpu_flags=["avx2", "avx512f", "amx_tile"],
    cpu_capability="AVX512",
    kernel="6.1.0",
    libc="glibc 2.36",
)
MACHINE.fingerprint = machine_fingerprint(MACHINE)


def matrix_of(size: Size, path: Path) -> LoadedMatrix:
    """The matrix ``harness run`` would have run, parsed and expanded by harness.matrix."""
    seeds = ", ".join(str(s) for s in range(size.seeds))
    text = (
        "name: bench-report\n"
        f"run: {{repeats: {size.repeats}, epochs: {size.epochs}, threads: 1, "
        f"max_runs: {size.runs}}}\n"
        f"axes: {{placement: [before_model, none], seed: [{seeds}]}}\n"
    )
    return parse_matrix(text, path)


def trajectory(size: Size, repeat: int, diverge: bool) -> tuple[np.ndarray, np.ndarray]:
    """Losses float32 [steps, 1] and parameter hashes uint64 [steps, 4] of one repeat: the same
    for every repeat of a reproducing cell; a diverging cell's repeat k differs from step
    ``k x min(1000, steps / (repeats + 1))`` on (its weights from the step before)."""
    rng = np.random.default_rng(0)
    steps = np.arange(size.steps)
    losses = (2.3 * np.exp(-steps / 5000) + rng.random(size.steps) * 0.05).astype("<f4")
    weights = rng.integers(0, 2**63, size=(size.steps, len(PARAMETERS)), dtype="<u8")
    if diverge and repeat:
        start = repeat * min(1000, size.steps // (size.repeats + 1))
        losses[start:] += np.float32(1e-6 * repeat)
        weights[max(start - 1, 0) :, 0] ^= np.uint64(repeat)
    return losses.reshape(-1, 1), weights


def record_of(spec: RunSpec, size: Size, losses: np.ndarray, weights: np.ndarray) -> RunRecord:
    """The run record the workload would write for these arrays (harness/contract/record.py)."""
    spe = size.steps_per_epoch
    epochs = [
        EpochSummary(
            epoch=e,
            steps=spe,
            first_step=e * spe,
            val_loss=0.1,
            val_acc=0.97,
            train_seconds=4.0,
            val_seconds=0.4,
            steps_per_second=spe / 4.0,
        )
        for e in range(size.epochs)
    ]
    return RunRecord(
        status="ok",
        spec=spec.to_dict(),
        steps=size.steps,
        ranks=1,
        steps_per_epoch=[spe] * size.epochs,
        digests=Digests(
            trajectory=trajectory_sha256(losses),
            init_weights=hashlib.sha256(b"init").hexdigest(),
            final_weights=hashlib.sha256(weights[-1].tobytes()).hexdigest(),
            epochs=[trajectory_sha256(losses[e * spe : (e + 1) * spe]) for e in range(size.epochs)],
            split=hashlib.sha256(b"split").hexdigest(),
        ),
        epochs=epochs,
        timing=Timing(wall_seconds=4.4 * size.epochs + 6.0, setup_seconds=6.0),
        weights=WeightDigests(parameters=list(PARAMETERS), hash=HASH_KIND)
        if size.weights
        else None,
        provenance=Provenance(
            python="3.11.2",
            torch="2.14.1",
            lightning="2.6.6",
            numpy=np.__version__,
            threads=1,
            interop_threads=1,
            world_size=1,
            machine=MACHINE,
        ),  # fmt: skip
        files={"losses": LOSSES_FILE, **({"weights": WEIGHTS_FILE} if size.weights else {})},
    )


def generate(root: Path, size: Size) -> LoadedMatrix:
    """A results folder at ``root`` as ``harness run`` would leave it; returns its matrix."""
    matrix = matrix_of(size, root.parent / f"{root.name}-matrix.yaml")
    store = ResultsDir(root)
    store.lock()
    try:
        store.write_manifest(matrix)
        made = {(d, k): trajectory(size, k, d) for d in (False, True) for k in range(size.repeats)}
        for cell in matrix.cells:
            diverge = cell.settings["placement"] == "none"
            for k in range(size.repeats):
                run_dir = store.run_dir(cell, k)
                store.prepare_run(run_dir, cell.spec(k))
                losses, weights = made[diverge, k]
                np.save(run_dir / LOSSES_FILE, losses)
                if size.weights:
                    np.save(run_dir / WEIGHTS_FILE, weights)
                write_record(run_dir, record_of(cell.spec(k), size, losses, weights))
    finally:
        store.unlock()
    return matrix


def check_verdicts(report: Report, matrix: LoadedMatrix) -> None:
    """The report must see what was made: the ``none`` cells diverge, the others reproduce."""
    expected = {
        c.name: DIVERGES if c.settings["placement"] == "none" else REPRODUCES for c in matrix.cells
    }
    got = {c.name: c.verdict for c in report.cells}
    if got != expected:
        wrong = sorted(n for n in expected if got.get(n) != expected[n])
        raise SystemExit(f"the report's verdicts are not the ones made: {wrong[:5]}")


def _timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def time_parts(root: Path, out: Path) -> tuple[dict[str, float], Report]:
    """``analyze`` and each renderer once, in this process; plots go to ``out``."""
    seconds, report = _timed(lambda: analyze(root))
    parts = {"analyze": seconds}
    for fmt, (_, render) in EXPORTERS.items():
        parts[fmt] = _timed(partial(render, report))[0]
    parts["terminal"] = _timed(lambda: print_summary(report, "plain", io.StringIO()))[0]
    parts["plots"] = _timed(lambda: write_plots(report, MAX_PLOTS, out))[0]
    parts["grid_plots"] = _timed(lambda: write_grid_plots(report, out))[0]
    return parts, report


def time_cli(root: Path, *extra: str) -> float:
    """One ``harness report`` process over ``root`` (one thread), wall seconds."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    argv = [sys.executable, "-m", "harness.cli", "report", str(root), "--progress", "plain"]
    seconds, proc = _timed(
        lambda: subprocess.run(
            [*argv, *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
        )
    )
    if proc.returncode != 0:
        raise SystemExit(f"harness report failed ({proc.returncode}): {proc.stderr.decode()}")
    return seconds


def measure(root: Path, matrix: LoadedMatrix, rounds: int) -> dict[str, list[float]]:
    """``rounds`` rounds, each: the report with plots, without, and its parts in-process (the
    order turned each round, so a change of load hits each alike)."""
    times: dict[str, list[float]] = {}
    tasks: list[Callable[[], dict[str, float]]] = [
        lambda: {"cli_plots": time_cli(root)},
        lambda: {"cli_no_plots": time_cli(root, "--no-plots")},
        lambda: parts_checked(root, matrix),
    ]
    for i in range(rounds):
        for task in tasks[i % 3 :] + tasks[: i % 3]:
            for name, seconds in task().items():
                times.setdefault(name, []).append(seconds)
    return times


def parts_checked(root: Path, matrix: LoadedMatrix) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-report-plots-") as out:
        parts, report = time_parts(root, Path(out))
    check_verdicts(report, matrix)
    return parts


def summary(times: dict[str, list[float]]) -> dict[str, Any]:
    return {
        name: {"median_s": round(statistics.median(ts), 3), "runs_s": [round(t, 3) for t in ts]}
        for name, ts in times.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds timed (medians of them)")
    parser.add_argument("--smoke", action="store_true", help="8 runs of 100 steps, 1 round")
    parser.add_argument("--json", type=Path, default=None, help="also write the times here")
    parser.add_argument("--no-weights", action="store_true", help="runs without weights.npy")
    args = parser.parse_args()
    size, rounds = (SMOKE, 1) if args.smoke else (FULL, args.repeats)
    size = dataclasses.replace(size, weights=not args.no_weights)
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        root = Path(tmp) / "results"
        seconds, matrix = _timed(lambda: generate(root, size))
        megabytes = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
        print(
            f"made {size.runs} runs x {size.steps} steps ({len(matrix.cells)} cells x "
            f"{size.repeats} repeats, {megabytes:.0f} MB) in {seconds:.1f} s",
            flush=True,
        )
        result = summary(measure(root, matrix, rounds))
    for name, row in result.items():
        print(f"  {name:12s} median {row['median_s']:7.3f} s  {row['runs_s']}")
    report_s = result["cli_plots"]["median_s"]
    if args.json:
        args.json.write_text(json.dumps({"size": vars(size) | {"runs": size.runs}, **result}))
    if args.smoke:
        print(f"smoke: bench_report ok: harness report over {size.runs} runs in {report_s:.2f} s")
        return 0
    ratio = report_s / GOAL_S
    print(f"harness report: median {report_s:.2f} s (goal <= {GOAL_S:.0f} s; ratio {ratio:.2f})")
    return 0 if report_s <= GOAL_S else 2


if __name__ == "__main__":
    sys.exit(main())
