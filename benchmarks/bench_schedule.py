"""K runs on K free slots finish within 1.1 x (longest run + harness start-up).

Real: K = this host's cores, the quick example's before_model cell at 200 steps, threads 1,
one run per core. "Longest run" is the longest of the K runs' own wall time (from the run
records); "start-up" is the wall time of `harness plan` on the same file (import + parse).

    .venv/bin/python benchmarks/bench_schedule.py [--repeats 3] [--steps 200]
    .venv/bin/python benchmarks/bench_schedule.py --smoke   # one round of 5-step runs
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MATRIX = """\
name: bench-schedule
run: {{repeats: {k}, epochs: 1, max_steps_per_epoch: {steps}, threads: 1, timeout_s: 900}}
axes: {{placement: [before_model]}}
"""


def wall(argv: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    return time.perf_counter() - t0, proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="one round of 5-step runs")
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.steps = 1, 5
    k = len(os.sched_getaffinity(0))
    harness = [sys.executable, "-m", "harness.cli"]
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        matrix = Path(tmp) / "m.yaml"
        matrix.write_text(MATRIX.format(k=k, steps=args.steps))
        for i in range(args.repeats):
            startup, _ = wall([*harness, "plan", str(matrix)])
            out = Path(tmp) / f"r{i}"
            total, log = wall(
                [
                    *harness,
                    "run",
                    str(matrix),
                    "--out",
                    str(out),
                    "--progress",
                    "plain",
                    "--no-report",
                ]
            )
            # each run's own wall time, from process start to exit (torch import included)
            runs = [float(m) for m in re.findall(r"\] ok .* in ([0-9.]+) s", log)]
            assert len(runs) == k, log
            longest = max(runs)
            bound = longest + startup
            ratios.append(total / bound)
            print(
                f"K={k}: total {total:.2f} s, longest run {longest:.2f} s, start-up "
                f"{startup:.2f} s, total / (longest + start-up) = {total / bound:.2f}"
            )
    print(f"median ratio {statistics.median(ratios):.2f} (goal <= 1.10)")
    if args.smoke:  # 5-step runs are all start-up: the ratio is no measure here
        print(f"smoke: bench_schedule ok: {k} runs on {k} slots, ratio {ratios[0]:.2f}")


if __name__ == "__main__":
    main()
