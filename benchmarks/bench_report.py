"""`harness report` over 1,000 synthetic run records of 51,570 steps each (goal: <= 10 s).

250 cells x 4 repeats; half of the cells diverge (their losses.npy are read and plotted), half
reproduce (digests only). The records are generated in a temporary folder, never committed.

    .venv/bin/python benchmarks/bench_report.py [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.contract import RunSpec, write_json_atomic

STEPS = 51_570  # 30 epochs x 1,719 steps: the post's run
CELLS, REPEATS = 250, 4


def generate(root: Path) -> None:
    rng = np.random.default_rng(0)
    base = (2.3 * np.exp(-np.arange(STEPS) / 5000) + rng.random(STEPS) * 0.05).astype("<f4")
    cells = []
    for c in range(CELLS):
        settings = {"image": "local", "placement": "none" if c % 2 else "before_model", "seed": c}
        cid = hashlib.sha256(str(c).encode()).hexdigest()[:12]
        name = f"cell{c:03d}-{settings['placement']}"
        cell = {"id": cid, "name": name, "dir": f"cells/{name}--{cid}", "settings": settings}
        cells.append(cell)
        for k in range(REPEATS):
            losses = base.copy()
            if c % 2 and k:
                losses[1000 * k :] += np.float32(1e-6 * k)
            losses = losses.reshape(-1, 1)
            run_dir = root / cell["dir"] / f"repeat-{k}"
            run_dir.mkdir(parents=True)
            np.save(run_dir / "losses.npy", losses)
            traj = hashlib.sha256(losses.tobytes()).hexdigest()
            epochs = [
                {
                    "epoch": e,
                    "steps": 1719,
                    "first_step": e * 1719,
                    "val_acc": 0.97,
                    "train_seconds": 4.0,
                    "val_seconds": 0.4,
                }
                for e in range(30)
            ]
            spec = RunSpec(**settings, repeat=k, cell_id=cid, cell_name=name)
            write_json_atomic(
                run_dir / "run.json",
                {
                    "format_version": 1,
                    "status": "ok",
                    "error": None,
                    "spec": spec.to_dict(),
                    "steps": STEPS,
                    "ranks": 1,
                    "steps_per_epoch": [1719] * 30,
                    "digests": {
                        "trajectory": traj,
                        "init_weights": "i",
                        "final_weights": traj,
                        "epochs": [],
                        "split": "s",
                    },
                    "epochs": epochs,
                    "timing": {"wall_seconds": 132.0},
                },
            )
    write_json_atomic(
        root / "manifest.json",
        {"format_version": 1, "name": "bench", "repeats": REPEATS, "cells": cells},
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        generate(root)
        print(f"generated {CELLS * REPEATS} records in {time.perf_counter() - t0:.1f} s")
        for label, extra in (("md+json+csv, plots", []), ("md+json+csv, no plots", ["--no-plots"])):
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "harness.cli", "report", str(root), *extra],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                times.append(time.perf_counter() - t0)
            median = statistics.median(times)
            print(
                f"harness report ({label}): median {median:.2f} s of {times!r}; "
                f"goal 10 s, ratio {median / 10:.2f}"
            )


if __name__ == "__main__":
    main()
