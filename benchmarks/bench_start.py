"""Process start to the first optimizer step: the built-in workload against bare imports.

Alternates N rounds of fresh processes, one after another (never two at once), each started
the way the local executor starts a run (the environment of ``environment_for``: one thread,
its ``PYTHONHASHSEED``, so no re-exec):

- ``workload``: ``python -m harness.workload`` on a ``before_model`` cell of the built-in MLP,
  1 thread, ``--steps`` steps; from just before the process is started to the end of its first
  optimizer step, which the run logs (``first optimizer step at <unix time>``,
  harness/workload/run_callbacks.py);
- ``torch``: ``python -c "import torch"``, from start to the end of the import: the floor of
  any run;
- ``lightning``: ``import torch, pytorch_lightning`` as the built-in imports them (without
  torchmetrics: harness/workload/torchmetrics_standin.py), to the end of the import: the floor
  of a run that trains with Lightning.

Prints each round, the medians, the workload's ratio and difference to each floor, and the goal
(3 s). ``--importtime K`` also runs the workload once under ``python -X importtime`` and prints
the K packages that took longest to import. ``--smoke``: one round of 2-step runs, no goal.

    .venv/bin/python benchmarks/bench_start.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_workload import REPO, default_data_dir

from harness.contract import RunSpec, environment_for

#: The issue's goal for process start to the first optimizer step, in seconds.
GOAL_S = 3.0
FIRST_STEP = re.compile(r"first optimizer step at (\d+\.\d+) \(unix time\)")
FLOORS = {
    "torch": "import torch",
    "lightning": (
        "from harness.workload.torchmetrics_standin import import_lightning_without_torchmetrics"
        "\nimport torch\nimport_lightning_without_torchmetrics()"
    ),
}


def _spec(steps: int) -> dict[str, Any]:
    return {"placement": "before_model", "epochs": 1, "threads": 1, "max_steps_per_epoch": steps}


def _env(spec: dict[str, Any], data_dir: Path) -> dict[str, str]:
    """What the local executor gives the run (harness/executors/local.py)."""
    env = environment_for(RunSpec.from_dict(spec), os.environ)
    env["HARNESS_MNIST_DIR"] = str(data_dir)
    return env


def workload_start(out: Path, data_dir: Path, steps: int) -> float:
    """Seconds from just before a workload process starts to the end of its first step."""
    out.mkdir(parents=True)
    spec = _spec(steps)
    (out / "spec.json").write_text(json.dumps(spec))
    argv = [sys.executable, "-m", "harness.workload", "--spec", str(out / "spec.json")]
    argv += ["--out", str(out), "--data-dir", str(data_dir)]
    started = time.time()
    done = subprocess.run(
        argv, cwd=REPO, env=_env(spec, data_dir), capture_output=True, text=True, check=False
    )
    found = FIRST_STEP.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"the workload failed or logged no first step:\n{done.stderr[-3000:]}")
    return float(found.group(1)) - started


def floor_start(code: str, data_dir: Path) -> float:
    """Seconds from just before ``python -c CODE`` starts to the end of CODE (its exit, the
    interpreter's teardown, left out as the workload's is)."""
    env = _env(_spec(1), data_dir)
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport time\nprint(repr(time.time()))"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split()[-1]) - started


#: Packages whose own import time is told apart from their parent package's
SPLIT = ("torch._dynamo", "torch._inductor", "torch.distributed", "torch.fx")


def _package(module: str) -> str:
    top = module.split(".")[0]
    return next((p for p in SPLIT if module == p or module.startswith(p + ".")), top)


def importtime(data_dir: Path, count: int) -> list[tuple[float, str]]:
    """One workload run under ``python -X importtime``: the ``count`` packages whose modules
    took longest to import, by their own (self) seconds summed, torch's big subpackages apart."""
    with tempfile.TemporaryDirectory(prefix="bench-start-imports-") as tmp:
        out = Path(tmp)
        spec = _spec(2)
        (out / "spec.json").write_text(json.dumps(spec))
        argv = [sys.executable, "-X", "importtime", "-m", "harness.workload"]
        argv += ["--spec", str(out / "spec.json"), "--out", str(out / "run")]
        done = subprocess.run(
            argv, cwd=REPO, env=_env(spec, data_dir), capture_output=True, text=True, check=True
        )
    seconds: dict[str, float] = {}
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[0].strip().isdigit():
            package = _package(parts[2].strip())
            seconds[package] = seconds.get(package, 0.0) + int(parts[0]) / 1e6
    return sorted(((s, p) for p, s in seconds.items()), reverse=True)[:count]


def bench(args: argparse.Namespace) -> dict[str, Any]:
    times: dict[str, list[float]] = {"workload": [], **{name: [] for name in FLOORS}}
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
        for i in range(args.repeats):
            out = Path(tmp) / f"run{i}"
            times["workload"].append(workload_start(out, args.data_dir, args.steps))
            for name, code in FLOORS.items():
                times[name].append(floor_start(code, args.data_dir))
            row = ", ".join(f"{name} {t[-1]:.2f} s" for name, t in times.items())
            print(f"round {i}: {row}", flush=True)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {"runs": times, "medians": medians}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds (at least 5 to report)")
    parser.add_argument("--steps", type=int, default=20, help="steps of each workload run")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--importtime", type=int, default=0, metavar="K")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--smoke", action="store_true", help="one round of 2-step runs, no goal")
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.steps = 1, 2
    found = bench(args)
    m = found["medians"]
    print(f"\nmedian seconds from process start ({args.repeats} rounds, 1 thread):")
    print(f"  workload, to its first optimizer step: {m['workload']:.2f} s (goal <= {GOAL_S} s)")
    for name in FLOORS:
        print(
            f"  {name:9s} imports alone:             {m[name]:.2f} s: the workload is "
            f"{m['workload'] / m[name]:.2f}x, {m['workload'] - m[name]:+.2f} s"
        )
    if args.importtime:
        print(f"\nimports of one workload run, own seconds by package (top {args.importtime}):")
    for seconds, package in importtime(args.data_dir, args.importtime) if args.importtime else []:
        print(f"  {seconds:6.3f} s  {package}")
    if args.json is not None:
        args.json.write_text(json.dumps(found, indent=2))
    if args.smoke:
        print(f"smoke: bench_start ok: workload {m['workload']:.2f} s, torch {m['torch']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
