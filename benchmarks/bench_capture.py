"""The workload's capture against a plain PyTorch loop: per-epoch training time, per model.

For each model, alternates side by side (capture, plain, capture, plain, ...) N fresh
processes of

- ``capture``: a real workload run (``python -m harness.workload``, a ``before_model`` cell):
  Lightning's loop, the loss copied into the device buffer every step; its time is the
  record's ``epochs[0].train_seconds`` (epoch start to the first validation hook);
- ``plain``: the same LightningModule class (so the same network), data, split, batch order,
  optimizer and seed placement, trained by a plain ``for`` loop in this script (no Trainer, no
  capture, no validation), timed over the same steps (the device synchronised at both ends).

Both train ``--steps`` optimizer steps (default: the whole epoch, 1,719 steps) at ``--threads``
(1) on ``--device``; per-epoch seconds are the measured seconds scaled to 1,719 steps. Prints the
medians, the ratio capture / plain, and whether the two gave the same loss bits (on the CPU
they should; it is reported, not required). ``--json`` writes the numbers too.

    .venv/bin/python benchmarks/bench_capture.py --models mlp --repeats 5     # whole epochs
    python benchmarks/bench_capture.py --device cuda --repeats 2 --steps 300   # on a GPU
    .venv/bin/python benchmarks/bench_capture.py --smoke   # one pair of 5-step runs: seconds
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
from bench_workload import REPO, _env, default_data_dir, run_workload

#: steps of one full epoch (55,000 training samples in batches of 32)
EPOCH_STEPS = 1719
MODELS = ("mlp", "cnn")


def _settings(model: str, device: str, steps: int | None) -> dict[str, Any]:
    settings: dict[str, Any] = {"accelerator": "gpu" if device == "cuda" else "cpu", "model": model}
    if steps:
        settings["max_steps_per_epoch"] = steps
    return settings


def run_capture(
    out: Path, data_dir: Path, threads: int, model: str, device: str, steps: int | None
) -> tuple[float, float, np.ndarray]:
    return run_workload(out, data_dir, threads, **_settings(model, device, steps))


def run_plain(
    out: Path, data_dir: Path, threads: int, model: str, device: str, steps: int | None
) -> tuple[float, float, np.ndarray]:
    """This script as ``--plain-child`` in a fresh process; (train s, wall s, losses)."""
    out.mkdir(parents=True)
    argv = [sys.executable, __file__, "--plain-child", str(out), "--data-dir", str(data_dir)]
    argv += ["--threads", str(threads), "--device", device, "--steps", str(steps or 0)]
    argv += ["--models", model]
    start = time.perf_counter()
    subprocess.run(argv, cwd=REPO, env=_env(threads), check=True, capture_output=True)
    wall = time.perf_counter() - start
    result = json.loads((out / "plain.json").read_text())
    return result["train_seconds"], wall, np.load(out / "losses.npy")


def plain_child(out: Path, data_dir: Path, threads: int, model: str, device: str, steps: int):
    """Train like the workload's ``before_model`` cell, in a plain loop, and write the time."""
    import os

    import torch

    from harness.contract import RunSpec
    from harness.workload.data import Batches, Mnist, load_mnist, shard_indices
    from harness.workload.networks import LitMNIST
    from harness.workload.recorder import Stopwatch
    from harness.workload.seeding import apply_determinism, pin_threads, seed_all

    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)  # as the workload does
    spec = RunSpec.from_dict(
        {"placement": "before_model", "epochs": 1, "threads": threads}
        | _settings(model, device, steps)
    )
    pin_threads(spec.threads)
    apply_determinism(spec)
    mnist = load_mnist(data_dir, train=True)
    seed_all(spec.seed)  # before_model
    module = LitMNIST(
        mnist,
        hidden_size=spec.hidden_size,
        learning_rate=spec.learning_rate,
        batch_size=spec.batch_size,
        model=spec.model,
    )
    module.setup("fit")  # the split, as Lightning calls it before training
    dev = torch.device(device)
    module.to(dev).train()
    optimizer = module.configure_optimizers()
    data = Mnist(mnist.images.to(dev), mnist.labels.to(dev))
    indices = shard_indices(torch.tensor(module.train_indices, dtype=torch.int64), 0, 1)
    batches = Batches(data, indices, spec.batch_size)
    losses = []
    watch = Stopwatch(dev)
    watch.start()
    for i, (x, y) in enumerate(batches):
        if steps and i >= steps:
            break
        loss = torch.nn.functional.nll_loss(module(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    seconds = watch.stop()
    host = torch.stack(losses).to("cpu", torch.float32).numpy()[:, None]
    np.save(out / "losses.npy", np.ascontiguousarray(host, dtype="<f4"))
    (out / "plain.json").write_text(json.dumps({"train_seconds": seconds, "steps": len(losses)}))


def per_epoch(seconds: float, steps: int | None) -> float:
    """Seconds for ``steps`` steps scaled to a full epoch."""
    return seconds / (steps or EPOCH_STEPS) * EPOCH_STEPS


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate capture and plain per model; medians, ratio and bit equality per model."""
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        for model in args.models:
            times: dict[str, list[float]] = {"capture": [], "plain": []}
            walls: dict[str, list[float]] = {"capture": [], "plain": []}
            bits: dict[str, np.ndarray] = {}
            for i in range(args.repeats):
                for name, runner in (("capture", run_capture), ("plain", run_plain)):
                    out = Path(tmp) / f"{model}-{name}{i}"
                    train, wall, losses = runner(
                        out, args.data_dir, args.threads, model, args.device, args.steps
                    )
                    times[name].append(per_epoch(train, args.steps))
                    walls[name].append(wall)
                    bits.setdefault(name, losses)
                    print(
                        f"{model} {name:7s} repeat {i}: {times[name][-1]:.3f} s per epoch, "
                        f"process wall {wall:.1f} s",
                        flush=True,
                    )
            capture, plain = statistics.median(times["capture"]), statistics.median(times["plain"])
            a, b = bits["capture"], bits["plain"]
            same = a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))
            found[model] = {
                "capture_s_per_epoch": capture,
                "plain_s_per_epoch": plain,
                "ratio": capture / plain,
                "capture_ms_per_step": capture / EPOCH_STEPS * 1000,
                "plain_ms_per_step": plain / EPOCH_STEPS * 1000,
                "capture_runs": times["capture"],
                "plain_runs": times["plain"],
                "capture_wall_median": statistics.median(walls["capture"]),
                "plain_wall_median": statistics.median(walls["plain"]),
                "same_loss_bits": bool(same),
            }
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=0, help="steps per run (0: whole epoch)")
    parser.add_argument("--repeats", type=int, default=5, help="alternated pairs per model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--plain-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="one pair of 5-step mlp runs")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.steps, args.repeats = ["mlp"], 5, 1
    if args.plain_child is not None:
        plain_child(
            args.plain_child, args.data_dir, args.threads, args.models[0], args.device, args.steps
        )
        return 0
    found = bench(args)
    steps = args.steps or EPOCH_STEPS
    print(
        f"\nmedian train seconds per epoch ({args.device}, {args.threads} thread(s), "
        f"{args.repeats} repeats, {steps} steps a run scaled to {EPOCH_STEPS}):"
    )
    for model, r in found.items():
        print(
            f"  {model}: capture {r['capture_s_per_epoch']:.3f} s, plain "
            f"{r['plain_s_per_epoch']:.3f} s, ratio {r['ratio']:.3f}; "
            f"{r['capture_ms_per_step']:.3f} vs {r['plain_ms_per_step']:.3f} ms/step; "
            f"same loss bits: {r['same_loss_bits']}"
        )
    if args.json is not None:
        meta = {"device": args.device, "threads": args.threads, "repeats": args.repeats}
        meta["steps"] = steps
        args.json.write_text(json.dumps({"settings": meta, "models": found}, indent=2))
    if args.smoke:
        r = found["mlp"]
        print(f"smoke: bench_capture ok: ratio {r['ratio']:.2f}, same bits {r['same_loss_bits']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
