"""Counting the host syncs of the training steps (``run.count_host_syncs``).

torch's ``set_sync_debug_mode("warn")`` makes every CUDA operation that blocks the host on the
device (``.item()``, a device-to-host copy, ``nonzero``, a stream synchronize) emit a
``UserWarning`` "called a synchronizing CUDA operation"; explicit ``torch.cuda.synchronize()``
calls do not warn. The run's warnings are already captured (``runner.run``); this module adds
an ``always`` filter for that one message, since the ``default`` action reports a warning only
once per code location and a per-step sync would then count once, and counts the captured
warnings between the first training epoch's start and the end of training.

The scope includes the per-epoch work inside training (the loss buffer's gather and copy to
the host, validation's two ``.item()``, the Stopwatch's explicit synchronize, which does not
warn): a constant per epoch, so on one GPU the count should not grow with the steps of an
epoch. Under DDP, Lightning syncs the host every step (docs/workload.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from harness.contract.record import HostSyncs

#: torch's message (c10/cuda/CUDAFunctions.cpp, ``warn_or_error_on_sync``)
SYNC_MESSAGE = "called a synchronizing CUDA operation"

SCOPE = (
    "training: from the first training epoch's start to the end of training, the once-per-epoch "
    "loss gather and copy to the host and the per-epoch validation included"
)


def count_every_sync_warning() -> None:
    """Inside a ``catch_warnings``: report every sync warning, not once per code location."""
    warnings.filterwarnings("always", message=f".*{SYNC_MESSAGE}")


def count_sync_warnings(caught: Sequence[warnings.WarningMessage]) -> int:
    """How many of the captured warnings are torch's sync-debug warning."""
    return sum(1 for w in caught if SYNC_MESSAGE in str(w.message))


class HostSyncCounter(Callback):
    """Turns sync-debug mode on at the first training epoch's start and off when training ends
    (or fails), counting the sync warnings captured in between into ``result``."""

    def __init__(self, caught: list[Any], steps: Any) -> None:
        #: the run's captured warnings (``warnings.catch_warnings(record=True)``'s list)
        self.caught = caught
        #: a callable giving the optimizer steps recorded so far (per rank)
        self.steps = steps
        self.start: int | None = None
        self.cuda = False
        self.result: HostSyncs | None = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.start is not None:
            return
        self.start = len(self.caught)
        self.cuda = pl_module.device.type == "cuda"
        if self.cuda:
            count_every_sync_warning()
            torch.cuda.set_sync_debug_mode("warn")

    def _stop(self) -> None:
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")
        if self.start is None or self.result is not None:
            return
        steps = int(self.steps())
        if self.cuda:
            count = count_sync_warnings(self.caught[self.start :])
            self.result = HostSyncs(count=count, steps=steps, scope=SCOPE)
        else:
            reason = "no CUDA: the run trained on the CPU, where no operation syncs with a device"
            self.result = HostSyncs(count=None, steps=steps, scope=SCOPE, reason=reason)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")
