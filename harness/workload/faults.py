"""TEST ONLY: ``test_fault`` in the spec makes one rank fail on purpose, so that the tests can
show what a failing rank does to a run (docs/workload.md, "Test-only fault switch").

``{kind, rank, step}``: as optimizer step ``step`` (0-based, counted over epochs) starts on
global rank ``rank``, ``raise`` raises InjectedFault; ``cuda_error`` indexes a tensor out of
bounds on the rank's device, which on a GPU is a device-side assert (sticky: every later CUDA
call fails too, the record-writing included) and on the CPU an IndexError; ``hang`` prints a
line and sleeps until a signal ends it.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from harness.workload.recorder import LossRecorder

#: printed (and flushed) when a ``hang`` fault starts to hang: the tests wait for it.
HANG_LINE = "test fault: hanging"


class InjectedFault(RuntimeError):
    """The exception of a ``raise`` fault."""


def fire(kind: str, rank: int, step: int, device: torch.device) -> None:
    where = f"on rank {rank} at step {step}"
    if kind == "raise":
        raise InjectedFault(f"test fault: raised {where}")
    if kind == "cuda_error":
        index = torch.tensor([7], device=device)
        torch.zeros(1, device=device)[index]  # out of bounds: a device-side assert on a GPU
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        raise InjectedFault(f"test fault: the out-of-bounds index did not fail {where}")
    if kind == "hang":
        print(f"{HANG_LINE} {where}", flush=True)
        sys.stdout.flush()
        while True:
            time.sleep(0.1)


class FaultSwitch(Callback):
    """Fires the spec's ``test_fault`` as its step starts, on its rank only."""

    def __init__(self, fault: dict[str, Any], recorder: LossRecorder) -> None:
        self.kind = str(fault["kind"])
        self.rank = int(fault.get("rank", 0))
        self.step = int(fault.get("step", 0))
        self.recorder = recorder

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_rank == self.rank and self.recorder.steps + batch_idx == self.step:
            fire(self.kind, self.rank, self.step, pl_module.device)
