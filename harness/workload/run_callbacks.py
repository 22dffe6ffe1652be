"""The run's own recorders as one Lightning callback, and the Trainer's quiet profiler: what a
harness run adds to each step of Lightning's loop, kept to one dispatch per hook.

Lightning calls every hook of every callback at every step (``on_train_batch_start``,
``on_before_backward``, ``on_after_backward``, ``on_before_optimizer_step``,
``on_train_batch_end``), each call inside a profiler context and with the module's
``_current_fx_name`` set and restored. The weights, epoch, loss and rank-flag recorders as four
callbacks made 20 such dispatches a step, 18 of them to hooks that do nothing; ``Recorders``
makes 5 and calls the recorders in the order the four callbacks ran, so what each records is
unchanged (benchmarks/README.md, "The built-in's step").
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from pathlib import Path
from typing import Any

from pytorch_lightning import Callback, LightningModule, Trainer

from harness.workload.loss_capture import LossCapture
from harness.workload.packages import Package, submodule
from harness.workload.record_builder import RunState
from harness.workload.recorder import EpochRecorder, TensorBoard

log = logging.getLogger(__name__)


class Recorders(Callback):
    """``WeightRecorder``, ``EpochRecorder``, ``LossCapture`` and ``RankFlags`` of one run, in
    that order, behind one callback; also the wall-clock time (``time.time()``) at which the
    run's first batch ended, after its optimizer step (``first_step_at``)."""

    def __init__(self, state: RunState, tensorboard: TensorBoard | None, epochs: int) -> None:
        self.weights = state.weights
        self.epochs = EpochRecorder(state.recorder, tensorboard, epochs)
        self.capture = LossCapture(state.recorder)
        self.rank_flags = state.rank_flags
        self.first_step_at: float | None = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.weights.on_train_epoch_start(trainer, pl_module)
        self.epochs.on_train_epoch_start(trainer, pl_module)
        self.capture.on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.weights.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.capture.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.first_step_at is None:
            self.first_step_at = time.time()

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epochs.on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epochs.on_validation_epoch_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.weights.on_train_epoch_end(trainer, pl_module)
        self.epochs.on_train_epoch_end(trainer, pl_module)
        self.capture.on_train_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.rank_flags.on_train_end(trainer, pl_module)


@functools.cache
def quiet_profiler_class(package: Package) -> type:
    """``package``'s ``PassThroughProfiler`` (the Trainer's default, which records nothing)
    whose ``profile`` returns a ready-made context instead of running a generator: Lightning
    enters it about 35 times a step, and the generator's context costs about 0.7 µs a time."""
    base = submodule(package, "profilers").PassThroughProfiler

    def profile(self: Any, action_name: str) -> contextlib.nullcontext[str]:
        return contextlib.nullcontext(action_name)

    return type("QuietProfiler", (base,), {"profile": profile, "__module__": __name__})


def process_started_at() -> float | None:
    """When this process started, on ``time.time()``'s scale (to a clock tick, 10 ms), read
    from ``/proc``; None where there is none."""
    try:
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(after_name[19])  # field 22, starttime: clock ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.time() - age


#: The line a run logs (stderr) about its first optimizer step; benchmarks/bench_start.py reads it.
FIRST_STEP = "first optimizer step at {at:.3f} (unix time)"


def log_first_step(at: float | None) -> None:
    """Say when the run's first optimizer step ended, and how long after the process began."""
    if at is None:
        return
    started = process_started_at()
    since = f", {at - started:.2f} s after the process started" if started is not None else ""
    log.info(FIRST_STEP.format(at=at) + since)
