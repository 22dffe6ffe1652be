"""The built-in workload's epoch in two checkouts, side by side: did a change slow the step?

Alternates (before, after, after, before, ...) N fresh processes of ``python -m
harness.workload`` (``bench_workload.run_workload``: one ``before_model`` epoch at 1 thread, run
from each checkout's folder, so each runs its own ``harness``), compares the records'
``epochs[0].train_seconds`` (epoch start to the first validation hook) by their medians, and
checks that every run gave the same loss bits.

    git archive BASE | tar -x -C /tmp/before
    .venv/bin/python benchmarks/bench_trees.py /tmp/before . --repeats 7
    .venv/bin/python benchmarks/bench_trees.py --smoke   # this checkout against itself, 5 steps
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import bench_workload
import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, nargs="?", help="the checkout before the change")
    parser.add_argument("after", type=Path, nargs="?", help="the checkout after it")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="steps a run (default: 1,719)")
    parser.add_argument("--data-dir", type=Path, default=bench_workload.default_data_dir())
    parser.add_argument(
        "--smoke", action="store_true", help="this checkout against itself, one pair of 5 steps"
    )
    args = parser.parse_args()
    if args.smoke:
        here = Path(__file__).resolve().parents[1]
        args.before, args.after = args.before or here, args.after or here
        args.repeats, args.steps = 1, 5
    if args.before is None or args.after is None:
        parser.error("give the two checkouts: BEFORE AFTER (or --smoke)")
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    times: dict[str, list[float]] = {name: [] for name in trees}
    reference = None
    settings = {"max_steps_per_epoch": args.steps} if args.steps else {}
    with tempfile.TemporaryDirectory(prefix="bench-trees-") as tmp:
        for i in range(args.repeats):
            order = list(trees) if i % 2 == 0 else list(reversed(trees))
            for name in order:
                bench_workload.REPO = trees[name]  # run_workload's cwd: that checkout's harness
                out = Path(tmp) / f"{name}{i}"
                train, _, losses = bench_workload.run_workload(out, args.data_dir, 1, **settings)
                reference = losses if reference is None else reference
                if not np.array_equal(reference.view(np.uint32), losses.view(np.uint32)):
                    print(f"{name} repeat {i}: loss bits differ from the first run")
                    return 1
                times[name].append(train)
                print(f"{name:6s} {i}: train {train:.3f} s ({len(losses)} steps)", flush=True)
    before, after = statistics.median(times["before"]), statistics.median(times["after"])
    for name in trees:
        runs = ", ".join(f"{t:.3f}" for t in times[name])
        print(f"{name:6s}: median {statistics.median(times[name]):.3f} s ({runs})")
    print(f"ratio of medians after / before: {after / before:.3f}; loss bits identical")
    if args.smoke:
        print(f"smoke: bench_trees ok: one pair of {args.steps} steps, loss bits identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
