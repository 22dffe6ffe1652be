"""What a run records while it trains: losses on the device, digests, per-epoch numbers.

Losses stay on the device during an epoch (one preallocated tensor, one device-side copy per
step, no ``.item()``), so recording adds no host synchronisation per step; they are copied to
the host once per epoch. ``LossCapture`` (harness/workload/loss_capture.py) takes each step's
loss from what ``training_step`` returned, for the built-in model and a user's own alike: one
capture path.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import numpy as np
import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from harness.contract.record import EpochSummary, epoch_line

#: The host reads this logger's lines (stdout) for its progress display.
progress = logging.getLogger("harness.workload.progress")


def weights_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of each tensor, in the state_dict's key order."""
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class Stopwatch:
    """Wall time between two marks; synchronises the GPU only at the marks."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.started = 0.0

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self) -> None:
        self.started = self._now()

    def stop(self) -> float:
        return self._now() - self.started


#: The first size of an epoch's buffer when the epoch's length is not known (the training data
#: is an iterable without ``len``, so ``trainer.num_training_batches`` is infinite): the buffer
#: doubles on the device when a step goes past it.
UNKNOWN_EPOCH_STEPS = 1024


def epoch_capacity(steps: float) -> int:
    """Rows to preallocate for an epoch of ``steps`` (``trainer.num_training_batches``)."""
    return max(int(steps), 1) if math.isfinite(steps) else UNKNOWN_EPOCH_STEPS


def grown(buffer: torch.Tensor, needed: int, fill: float) -> torch.Tensor:
    """``buffer`` doubled along its first dimension until ``needed`` rows fit, its rows copied
    on its device (no host sync); the new rows hold ``fill``."""
    size = max(buffer.shape[0], 1)
    while size < needed:
        size *= 2
    bigger = torch.full((size, *buffer.shape[1:]), fill, dtype=buffer.dtype, device=buffer.device)
    bigger[: buffer.shape[0]].copy_(buffer)
    return bigger


class LossRecorder:
    """Collects every step's loss of every rank, one epoch at a time."""

    def __init__(self) -> None:
        self.epochs: list[np.ndarray] = []  # each [steps_in_epoch, ranks], float32
        self.summaries: list[EpochSummary] = []
        self._buffer: torch.Tensor | None = None
        self._written = 0
        #: losses added to the open row (the next one) since the last row closed
        self._open = 0
        #: global indexes (0-based, counted over epochs) of the batches that gave no loss
        self.skipped: list[int] = []

    def start_epoch(self, steps: float, device: torch.device) -> None:
        """A buffer for an epoch of ``steps`` (infinite: not known, grown as needed)."""
        size = epoch_capacity(steps)
        self._buffer = torch.full((size,), float("nan"), dtype=torch.float32, device=device)
        self._written = 0
        self._open = 0

    def record(self, step: int, loss: torch.Tensor) -> None:
        """Copy the loss into the epoch's buffer on its device (no host sync)."""
        assert self._buffer is not None
        if step >= self._buffer.shape[0]:
            self._buffer = grown(self._buffer, step + 1, float("nan"))
        self._buffer[step].copy_(loss.detach())
        self._written = max(self._written, step + 1)

    def add(self, loss: torch.Tensor) -> None:
        """Add a batch's loss to the open row, on the device (no host sync): the first loss
        is copied (so one loss is its own bits), the next ones of a step are summed."""
        assert self._buffer is not None
        row = self._written
        if row >= self._buffer.shape[0]:
            self._buffer = grown(self._buffer, row + 1, float("nan"))
        if self._open:
            self._buffer[row].add_(loss.detach())
        else:
            self._buffer[row].copy_(loss.detach())
        self._open += 1

    def close(self) -> bool:
        """Close the open row (an optimizer step ended it); False when it holds no loss."""
        if not self._open:
            return False
        self._written += 1
        self._open = 0
        return True

    @property
    def buffer(self) -> torch.Tensor:
        assert self._buffer is not None
        return self._buffer[: self._written]

    def end_epoch(self, gathered: torch.Tensor) -> np.ndarray:
        """Store an epoch's losses: ``gathered`` is [steps] (one rank) or [ranks, steps]."""
        host = gathered.detach().to("cpu", torch.float32)
        if host.ndim == 1:
            host = host.unsqueeze(0)
        rows = np.ascontiguousarray(host.numpy().T, dtype="<f4")
        self.epochs.append(rows)
        self._buffer = None
        return rows

    def partial(self) -> np.ndarray | None:
        """Losses of an epoch cut short by a failure (this rank only), for the failed record."""
        if self._buffer is None or self._written == 0:
            return None
        return np.ascontiguousarray(self.buffer.detach().cpu().numpy()[:, None], dtype="<f4")

    def losses(self, ranks: int) -> np.ndarray:
        """All recorded rows, [steps, ranks]; includes a partial epoch after a failure."""
        parts = list(self.epochs)
        tail = self.partial()
        if tail is not None and tail.shape[1] == ranks:
            parts.append(tail)
        if not parts:
            return np.zeros((0, ranks), dtype="<f4")
        return np.concatenate(parts, axis=0)

    @property
    def steps(self) -> int:
        return sum(len(rows) for rows in self.epochs)


class TensorBoard:
    """The run's event files: per-step ``train/loss`` and per-epoch ``val/loss``, ``val/acc``.

    Rank 0's loss is ``train/loss`` (the post's comparison); other ranks get
    ``train/loss_rank{r}``. Validation uses the 0-based epoch index as its step, as the post
    logged ``current_epoch``. Written from the recorded losses once per epoch, off the clock.
    """

    def __init__(self, logdir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(logdir))

    def write_epoch(self, rows: np.ndarray, first_step: int, summary: EpochSummary) -> None:
        for i, row in enumerate(rows.tolist()):
            step = first_step + i
            self.writer.add_scalar("train/loss", row[0], step)
            for rank in range(1, len(row)):
                self.writer.add_scalar(f"train/loss_rank{rank}", row[rank], step)
        if summary.val_loss is not None:
            self.writer.add_scalar("val/loss", summary.val_loss, summary.epoch)
        if summary.val_acc is not None:
            self.writer.add_scalar("val/acc", summary.val_acc, summary.epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class EpochRecorder(Callback):
    """Per-epoch bookkeeping around the training steps: buffers, timings, gather, output.

    Train time runs from the epoch's start to the first validation hook; validation time from
    there to the end of validation. At the epoch's end every rank's losses are gathered to rank
    0, which writes the TensorBoard events and prints one progress line for the host.
    """

    def __init__(self, recorder: LossRecorder, tensorboard: TensorBoard | None, epochs: int):
        self.recorder = recorder
        self.tensorboard = tensorboard
        self.epochs = epochs
        self.watch: Stopwatch | None = None
        self.train_seconds: float | None = None
        self.val_seconds: float | None = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.recorder.start_epoch(trainer.num_training_batches, pl_module.device)
        self.train_seconds = self.val_seconds = None
        self.watch = Stopwatch(pl_module.device)
        self.watch.start()

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.watch is not None and self.train_seconds is None:
            self.train_seconds = self.watch.stop()
            self.watch.start()

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.watch is not None and self.val_seconds is None:
            self.val_seconds = self.watch.stop()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.train_seconds is None and self.watch is not None:
            self.train_seconds = self.watch.stop()
        self.recorder.close()  # the epoch's last losses, when no optimizer step followed them
        # a tensor in, a tensor out (the gather of a collection is a collection)
        gathered = cast(torch.Tensor, pl_module.all_gather(self.recorder.buffer))
        rows = self.recorder.end_epoch(gathered)
        if not np.isfinite(rows).all():
            # every rank holds the same gathered rows, so every rank stops after this epoch;
            # the run is recorded as failed (runner.nonfinite_error)
            trainer.should_stop = True
        first_step = self.recorder.steps - len(rows)
        validation_result = getattr(pl_module, "validation_result", None)
        val = validation_result() if validation_result is not None else None
        summary = EpochSummary(
            epoch=trainer.current_epoch,
            steps=len(rows),
            first_step=first_step,
            val_loss=val[0] if val else None,
            val_acc=val[1] if val else None,
            train_seconds=self.train_seconds,
            val_seconds=self.val_seconds,
            steps_per_second=len(rows) / self.train_seconds if self.train_seconds else None,
        )
        self.recorder.summaries.append(summary)
        if not trainer.is_global_zero:
            return
        if self.tensorboard is not None:
            self.tensorboard.write_epoch(rows, first_step, summary)
        progress.info(epoch_line(summary, self.epochs))
