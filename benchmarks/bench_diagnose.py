"""What a diagnosis replay costs against a plain run of the same steps, at step 0 and step 1000.

``harness diagnose`` replays each of the two runs up to the step it must log: every step hashes
the parameters and the optimizer state, and the logged step records every operation
(DebugMode) with its inputs' and outputs' hashes and a copy of its outputs. For a divergence at
step S, each replay is S + 1 steps. This script alternates, side by side in one process, N
fresh workload processes of

- ``plain``: a ``before_model`` cell trained for S + 1 steps, as ``harness run`` does;
- ``replay``: the same spec with ``diagnose: {steps: S + 1, log_step: S}``, as
  ``harness diagnose`` runs it;

for S = 0 and S = 1000 (``--steps``), at 1 thread, and prints the medians of the training time
(the record's first epoch, from its start to the first validation hook) and of the process's
wall time, and the ratios replay / plain. The loss bits of the two must be equal (checked).

    .venv/bin/python benchmarks/bench_diagnose.py --repeats 3
    .venv/bin/python benchmarks/bench_diagnose.py --smoke   # one pair at step 2: seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_workload import REPO, _env, default_data_dir


def run(out: Path, data_dir: Path, steps: int, log_step: int | None) -> tuple[float, float]:
    """One workload process; (train seconds of its epoch, wall seconds)."""
    out.mkdir(parents=True)
    spec: dict = {
        "placement": "before_model",
        "epochs": 1,
        "threads": 1,
        "max_steps_per_epoch": steps,
    }
    if log_step is not None:
        spec["diagnose"] = {"steps": steps, "log_step": log_step, "level": "ops", "rank": 0}
    (out / "spec.json").write_text(json.dumps(spec))
    argv = [sys.executable, "-m", "harness.workload", "--spec", str(out / "spec.json")]
    argv += ["--out", str(out), "--data-dir", str(data_dir)]
    start = time.perf_counter()
    subprocess.run(argv, cwd=REPO, env=_env(1), check=True, capture_output=True)
    wall = time.perf_counter() - start
    record = json.loads((out / "run.json").read_text())
    return record["epochs"][0]["train_seconds"], wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 1000])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true", help="one pair, divergence at step 2")
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.steps = 1, [2]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for step in args.steps:
            times: dict[str, list[tuple[float, float]]] = {"plain": [], "replay": []}
            for k in range(args.repeats):
                for kind in ("plain", "replay"):
                    out = Path(tmp) / f"{step}-{kind}-{k}"
                    times[kind].append(
                        run(out, args.data_dir, step + 1, step if kind == "replay" else None)
                    )
                plain = np.load(Path(tmp) / f"{step}-plain-{k}" / "losses.npy")
                replay = np.load(Path(tmp) / f"{step}-replay-{k}" / "losses.npy")
                assert plain.tobytes() == replay.tobytes(), "a replay changed the loss bits"
            row: dict[str, Any] = {}
            for kind, pairs in times.items():
                row[kind] = {
                    "train_s": statistics.median(p[0] for p in pairs),
                    "wall_s": statistics.median(p[1] for p in pairs),
                }
            row["train_ratio"] = row["replay"]["train_s"] / row["plain"]["train_s"]
            row["wall_ratio"] = row["replay"]["wall_s"] / row["plain"]["wall_s"]
            results[step] = row
            print(
                f"divergence at step {step} ({step + 1} steps, {args.repeats} repeats): "
                f"train {row['plain']['train_s']:.3f} s plain, {row['replay']['train_s']:.3f} s "
                f"replay (x{row['train_ratio']:.2f}); wall {row['plain']['wall_s']:.1f} s plain, "
                f"{row['replay']['wall_s']:.1f} s replay (x{row['wall_ratio']:.2f})"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.smoke:  # one pair is no measure: both ran, the replay kept the loss bits
        print(f"smoke: bench_diagnose ok: replay x{results[2]['wall_ratio']:.2f} wall, same bits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
