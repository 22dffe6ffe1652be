"""What the per-step parameter digest (``weights.npy``) costs: the MLP's training step with and
without ``WeightRecorder``, side by side in one process, at 1 thread.

The step is the workload's own: the ``before_model`` cell's LitMNIST network, data, split,
batch order and Adam, trained by a plain loop (as benchmarks/bench_capture.py's ``plain``),
the ``bare`` step, without Lightning's loop around it (the strictest denominator); and the
``workload`` step, a real Lightning fit of ``--block`` steps with the workload's callbacks,
timed as the workload times an epoch (EpochRecorder's train seconds). For each, ``--rounds``
times a block of ``--block`` steps without the digest and a block with it
(``WeightRecorder.on_train_batch_end``, the callback's own code: it sees the optimizer step and
hashes every parameter into its device buffer), the order swapped every round; the medians of
the per-step times, their difference and the ratio are printed. The issue's bound: the digest
costs at most 5% of a step on the CPU.

    .venv/bin/python benchmarks/weight_digest.py --rounds 30 --block 100
    python benchmarks/weight_digest.py --device cuda      # on a GPU
    .venv/bin/python benchmarks/weight_digest.py --smoke   # 2 rounds of 5 steps: seconds
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench_workload import default_data_dir


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate blocks of steps without and with the digest; per-step medians and ratio."""
    import torch

    from harness.contract import RunSpec
    from harness.workload.data import Batches, Mnist, load_mnist, shard_indices
    from harness.workload.loss_capture import LossCapture
    from harness.workload.networks import LitMNIST
    from harness.workload.recorder import EpochRecorder, LossRecorder, Stopwatch
    from harness.workload.seeding import apply_determinism, pin_threads, seed_all
    from harness.workload.training import _build_trainer
    from harness.workload.weights import HASH_KIND, WeightRecorder

    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)  # as the workload does
    for name in ("lightning.pytorch", "pytorch_lightning", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)  # no banner per fit
    spec = RunSpec.from_dict(
        {"placement": "before_model", "epochs": 1, "threads": args.threads}
        | ({"accelerator": "gpu"} if args.device == "cuda" else {})
    )
    pin_threads(spec.threads)
    apply_determinism(spec)
    mnist = load_mnist(args.data_dir, train=True)
    seed_all(spec.seed)
    module = LitMNIST(mnist, hidden_size=spec.hidden_size)
    module.setup("fit")
    dev = torch.device(args.device)
    module.to(dev).train()
    optimizer = module.configure_optimizers()
    data = Mnist(mnist.images.to(dev), mnist.labels.to(dev))
    indices = shard_indices(torch.tensor(module.train_indices, dtype=torch.int64), 0, 1)
    batches = list(itertools.islice(Batches(data, indices, spec.batch_size), args.block))
    recorder = WeightRecorder()
    #: what the recorder reads of a Trainer: each batch is an optimizer step
    steps = [
        SimpleNamespace(global_step=i + 1, optimizers=[optimizer]) for i in range(len(batches))
    ]

    def block(digest: bool) -> float:
        start = SimpleNamespace(num_training_batches=args.block, global_step=0)
        recorder.on_train_epoch_start(start, module)  # type: ignore[arg-type]
        watch = Stopwatch(dev)
        watch.start()
        for i, (x, y) in enumerate(batches):
            loss = torch.nn.functional.nll_loss(module(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if digest:
                recorder.on_train_batch_end(steps[i], module, loss, None, i)  # type: ignore[arg-type]
        return watch.stop() / len(batches)

    inside: list[float] = []  # seconds spent in on_train_batch_end, per step (workload fits)

    class TimedRecorder(WeightRecorder):
        """The recorder, its per-step call timed from the outside (a CPU op has finished when
        it returns), so its cost is measured apart from the step's own noise."""

        def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
            start = time.perf_counter()
            super().on_train_batch_end(*args, **kwargs)
            inside.append(time.perf_counter() - start)

    def fit(digest: bool) -> float:
        """A real workload epoch of ``block`` steps (Lightning's loop, the workload's callbacks);
        its train seconds per step, measured as the workload does (EpochRecorder)."""
        fit_spec = RunSpec.from_dict(spec.to_dict() | {"max_steps_per_epoch": args.block})
        losses = LossRecorder()
        seed_all(spec.seed)
        lit = LitMNIST(mnist, hidden_size=spec.hidden_size)
        callbacks: list[Any] = [TimedRecorder()] if digest else []
        callbacks += [EpochRecorder(losses, None, 1), LossCapture(losses)]
        _build_trainer(fit_spec, callbacks).fit(lit)
        return (losses.summaries[0].train_seconds or 0.0) / losses.steps

    found: dict[str, Any] = {
        "device": args.device,
        "threads": args.threads,
        "hash": HASH_KIND,
        "parameters": recorder.names,
        "rounds": args.rounds,
        "block": args.block,
        "torch": torch.__version__,
    }
    for name, measure in (("bare", block), ("workload", fit)):
        measure(False)  # warm up both paths
        measure(True)
        times: dict[str, list[float]] = {"plain": [], "digest": []}
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            for digest in order:
                times["digest" if digest else "plain"].append(measure(digest))
        plain, with_digest = statistics.median(times["plain"]), statistics.median(times["digest"])
        found[name] = {
            "plain_us_per_step": plain * 1e6,
            "digest_us_per_step": with_digest * 1e6,
            "cost_us_per_step": (with_digest - plain) * 1e6,
            "ratio": with_digest / plain,
        }
    if args.against is not None:
        found["against"] = against(args.against, module, optimizer, batches, args.rounds, dev)
    if args.device == "cpu":
        inside_median = statistics.median(inside)
        found["workload"]["inside_us_per_step"] = inside_median * 1e6
        plain_step = found["workload"]["plain_us_per_step"] / 1e6
        found["workload"]["inside_ratio"] = 1 + inside_median / plain_step
    return found


def against(
    path: Path, module: Any, optimizer: Any, batches: list[Any], rounds: int, dev: Any
) -> dict[str, Any]:
    """``Hasher.into`` of this checkout and of another version's weights.py (``path``, e.g. one
    taken with ``git show REV:harness/workload/weights.py``), each timed after the same bare
    steps, the order swapped every round: the median time of each per call, and their ratio."""
    import importlib.util

    import torch

    from harness.workload.recorder import Stopwatch
    from harness.workload.weights import Hasher

    spec = importlib.util.spec_from_file_location("weights_against", path)
    assert spec is not None and spec.loader is not None
    other = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = other
    spec.loader.exec_module(other)
    params = list(module.parameters())
    hashers = {"this": Hasher(params), "against": other.Hasher(params)}
    cells = {
        name: torch.zeros(len(params), dtype=h.dtype, device=dev).unbind(0)
        for name, h in hashers.items()
    }
    times: dict[str, list[float]] = {name: [] for name in hashers}
    for r in range(rounds + 1):
        for name in ("this", "against") if r % 2 == 0 else ("against", "this"):
            for x, y in batches:
                loss = torch.nn.functional.nll_loss(module(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                watch = Stopwatch(dev)
                watch.start()
                hashers[name].into(cells[name])
                if r:  # the first round warms up
                    times[name].append(watch.stop())
    this, then = (statistics.median(times[n]) * 1e6 for n in ("this", "against"))
    return {"path": str(path), "this_us": this, "against_us": then, "ratio": this / then}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30, help="blocks of each kind")
    parser.add_argument("--block", type=int, default=100, help="steps per block")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--against", type=Path, help="also time another version's weights.py's Hasher beside this"
    )
    parser.add_argument("--smoke", action="store_true", help="2 rounds of 5 steps: seconds")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.block = 2, 5
    found = bench(args)
    print(
        f"MLP step on {found['device']}, {found['threads']} thread(s), torch {found['torch']}, "
        f"hash {found['hash']}, {found['rounds']} x {found['block']} steps each, medians:"
    )
    for name in ("bare", "workload"):
        r = found[name]
        print(
            f"  {name:8s} step: without digest {r['plain_us_per_step']:.1f} us, with "
            f"{r['digest_us_per_step']:.1f} us: digest {r['cost_us_per_step']:.1f} us/step, "
            f"ratio {r['ratio']:.4f} (bound: 1.05)"
        )
    loop = found["workload"]["plain_us_per_step"] - found["bare"]["plain_us_per_step"]
    print(
        f"  Lightning's loop and the loss capture, without the digest: {loop:.1f} us/step over "
        f"the bare step ({100 * loop / found['bare']['plain_us_per_step']:.0f}%)"
    )
    if "inside_us_per_step" in found["workload"]:
        r = found["workload"]
        print(
            f"  the callback itself (median time in on_train_batch_end): "
            f"{r['inside_us_per_step']:.1f} us/step, {100 * (r['inside_ratio'] - 1):.2f}% of the "
            "workload step without it"
        )
    if "against" in found:
        a = found["against"]
        print(
            f"  Hasher.into after a bare step: this {a['this_us']:.1f} us, {a['path']} "
            f"{a['against_us']:.1f} us: ratio {a['ratio']:.2f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(found, indent=2))
    if args.smoke:
        print(f"smoke: weight_digest ok: digest {found['bare']['cost_us_per_step']:.0f} us/step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
