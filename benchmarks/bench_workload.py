"""One epoch of the post's Lightning 2.x port vs the workload, side by side, at 1 thread.

Alternates the two (port, workload, port, workload, ...) N times, each a fresh process, one
full epoch (1,719 steps) of a ``before_model`` cell, and compares the training part of the
epoch: from the epoch's start to its first validation hook, as both measure it. Process start,
imports, data loading and validation are not in that number (they are printed as wall time).
Fails if the two give different loss bits.

    .venv/bin/python benchmarks/bench_workload.py --repeats 5
    .venv/bin/python benchmarks/bench_workload.py --smoke   # one pair of 5-step runs: seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_port(
    out: Path, data_dir: Path, threads: int, steps: int | None = None
) -> tuple[float, float, np.ndarray]:
    argv = [
        sys.executable,
        str(REPO / "benchmarks" / "post_port.py"),
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        "--placement",
        "before_model",
        "--epochs",
        "1",
        "--threads",
        str(threads),
    ]
    argv += ["--max-steps", str(steps)] if steps else []
    start = time.perf_counter()
    subprocess.run(argv, cwd=REPO, env=_env(threads), check=True, capture_output=True)
    wall = time.perf_counter() - start
    train = json.loads((out / "timing.json").read_text())["train_seconds"][0]
    return train, wall, np.load(out / "losses.npy")


def default_data_dir() -> Path:
    """HARNESS_MNIST_DIR, else the shared checkout's MNIST."""
    return Path(os.environ.get("HARNESS_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))


def run_workload(
    out: Path, data_dir: Path, threads: int, **settings: object
) -> tuple[float, float, np.ndarray]:
    """One real workload run (a ``before_model`` epoch, ``settings`` over it) in a fresh
    process: its first epoch's train seconds, the process's wall seconds, its losses."""
    from harness.contract import RunSpec, environment_for

    out.mkdir(parents=True)
    spec = {"placement": "before_model", "epochs": 1, "threads": threads, **settings}
    (out / "spec.json").write_text(json.dumps(spec))
    env = environment_for(RunSpec.from_dict(spec), _env(threads))  # as the local executor does
    argv = [
        sys.executable,
        "-m",
        "harness.workload",
        "--spec",
        str(out / "spec.json"),
        "--out",
        str(out),
        "--data-dir",
        str(data_dir),
    ]
    start = time.perf_counter()
    subprocess.run(argv, cwd=REPO, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    record = json.loads((out / "run.json").read_text())
    return record["epochs"][0]["train_seconds"], wall, np.load(out / "losses.npy")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--smoke", action="store_true", help="one pair of 5-step runs, no goal")
    args = parser.parse_args()
    steps = 5 if args.smoke else None
    if args.smoke:
        args.repeats = 1
    results: dict[str, list[tuple[float, float]]] = {"port": [], "workload": []}
    reference = None
    with tempfile.TemporaryDirectory(prefix="bench-workload-") as tmp:
        for i in range(args.repeats):
            for name in ("port", "workload"):
                out = Path(tmp) / f"{name}{i}"
                if name == "port":
                    train, wall, losses = run_port(out, args.data_dir, args.threads, steps)
                else:
                    limit = {"max_steps_per_epoch": steps} if steps else {}
                    train, wall, losses = run_workload(out, args.data_dir, args.threads, **limit)
                if reference is None:
                    reference = losses
                same = np.array_equal(reference.view(np.uint32), losses.view(np.uint32))
                if not same:
                    print(f"{name} repeat {i}: loss bits differ from the first run")
                    return 1
                results[name].append((train, wall))
                print(
                    f"{name:8s} repeat {i}: train {train:.3f} s, process wall {wall:.1f} s",
                    flush=True,
                )
    port = statistics.median(t for t, _ in results["port"])
    ours = statistics.median(t for t, _ in results["workload"])
    print(f"\nmedian train seconds per epoch ({args.threads} thread(s), {args.repeats} each):")
    print(f"  post port: {port:.3f} s   (min {min(t for t, _ in results['port']):.3f})")
    print(f"  workload : {ours:.3f} s   (min {min(t for t, _ in results['workload']):.3f})")
    print(f"  ratio    : {ours / port:.3f}  (goal <= 0.25: the workload 4x faster)")
    print(
        f"  median process wall: port {statistics.median(w for _, w in results['port']):.1f}"
        f" s, workload {statistics.median(w for _, w in results['workload']):.1f} s"
    )
    print(f"  loss bits: identical in all runs (before_model, {steps or 1719:,} steps)")
    if args.smoke:
        print(f"smoke: bench_workload ok: ratio {ours / port:.2f}, same loss bits")
        return 0
    return 0 if ours <= port / 4 else 2


if __name__ == "__main__":
    sys.exit(main())
