"""Overhead per run of the container path over the local path, on a warm workload image.

Runs the same short cell alternately through the local executor and the Docker executor
(alternating, so a load change on the shared machine hits both alike), and prints each path's
median wall time, the difference (the overhead per run) and the ratio. Goal: overhead <= 1.5 s.

    DOCKER_HOST=... HARNESS_WHEELHOUSE=... .venv/bin/python benchmarks/bench_container_overhead.py \
        [--repeats 5] [--steps 20] [--base harness-standin/pytorch:2.14.1-cpu] [--json]
    .venv/bin/python benchmarks/bench_container_overhead.py --smoke   # one pair of 2-step runs

``--smoke`` (tests/test_benchmarks_smoke.py, a ``docker`` test) checks that both paths run and
exits 0 whatever the overhead; without an engine it says so and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from harness.contract import SPEC_FILE, RunSpec, write_json_atomic
from harness.errors import HarnessError
from harness.executors.base import Executor, ExecutorOptions, RunStatus, Slot
from harness.executors.docker import DockerExecutor
from harness.executors.local import LocalExecutor

GOAL_S = 1.5
REPO = Path(__file__).resolve().parents[1]


def timed_run(executor: Executor, spec: RunSpec, root: Path, name: str) -> float:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    write_json_atomic(run_dir / SPEC_FILE, spec.to_dict())
    start = time.perf_counter()
    outcome = executor.run(spec, Slot(cpus=(0,)), run_dir, timeout_s=600, cancel=threading.Event())
    seconds = time.perf_counter() - start
    if outcome.status is not RunStatus.OK:
        raise SystemExit(f"{name} failed: {outcome.message}\n{outcome.log_tail}")
    return seconds


def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    """Warm-up runs (not with ``--smoke``), then ``--repeats`` alternated docker/local pairs."""
    data_dir = Path(os.environ.get("HARNESS_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
    options = ExecutorOptions(
        run_label=f"bench-{uuid.uuid4().hex[:8]}", data_dir=data_dir, python=sys.executable
    )
    docker_ex, local_ex = DockerExecutor(options), LocalExecutor(options)
    spec = RunSpec(
        placement="before_model",
        max_steps_per_epoch=args.steps,
        threads=1,
        image=args.base,
        cell_id="bench",
    )
    docker_ex.prepare([spec])  # builds or reuses the image: warm from here on
    times: dict[str, list[float]] = {"local": [], "docker": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            if not args.smoke:  # page cache, first container start
                timed_run(docker_ex, spec, root, "warmup-docker")
                timed_run(local_ex, spec.replace(image="local"), root, "warmup-local")
            for i in range(args.repeats):
                times["docker"].append(timed_run(docker_ex, spec, root, f"docker-{i}"))
                times["local"].append(
                    timed_run(local_ex, spec.replace(image="local"), root, f"local-{i}")
                )
    finally:
        docker_ex.cleanup()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--base", default="harness-standin/pytorch:2.14.1-cpu")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--smoke", action="store_true", help="one pair of 2-step runs, no warm-up, no goal"
    )
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.steps = 1, 2
    try:
        times = measure(args)
    except HarnessError as exc:  # no engine, no base image: say so, no traceback
        print(f"bench_container_overhead: {exc}", file=sys.stderr)
        return 1
    local_s, docker_s = statistics.median(times["local"]), statistics.median(times["docker"])
    result = {
        "base_image": args.base,
        "steps": args.steps,
        "repeats": args.repeats,
        "local_median_s": round(local_s, 3),
        "docker_median_s": round(docker_s, 3),
        "overhead_s": round(docker_s - local_s, 3),
        "ratio": round(docker_s / local_s, 3),
        "goal_s": GOAL_S,
        "meets_goal": docker_s - local_s <= GOAL_S,
        "local_s": [round(t, 3) for t in times["local"]],
        "docker_s": [round(t, 3) for t in times["docker"]],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"local  median {local_s:7.3f} s  {result['local_s']}")
        print(f"docker median {docker_s:7.3f} s  {result['docker_s']}")
        print(
            f"overhead per run {docker_s - local_s:+.3f} s (goal <= {GOAL_S} s), "
            f"ratio {docker_s / local_s:.2f}x"
        )
    if args.smoke:  # two runs are no measure: it ran, both paths gave a record
        print(f"smoke: bench_container_overhead ok: local {local_s:.2f} s, docker {docker_s:.2f} s")
        return 0
    return 0 if result["meets_goal"] else 1


if __name__ == "__main__":
    sys.exit(main())
