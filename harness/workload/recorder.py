"""What a run records while it trains: losses on the device, digests, per-epoch numbers.

Losses stay on the device during an epoch (one preallocated tensor, one device-side copy per
step, no ``.item()``), so recording adds no host synchronisation per step; they are copied to
the host once per epoch. ``LossCapture`` takes each step's loss from what ``training_step``
returned, for the built-in model and a user's own alike: one capture path.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from harness.contract.record import EpochSummary, epoch_line
from harness.workload.entry import WorkloadError

#: The host reads this logger's lines (stdout) for its progress display.
progress = logging.getLogger("harness.workload.progress")


def trajectory_digest(losses: np.ndarray) -> str:
    """sha256 of the float32 little-endian bytes of a [steps, ranks] loss array."""
    return hashlib.sha256(np.ascontiguousarray(losses, dtype="<f4").tobytes()).hexdigest()


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
        rows = self.recorder.end_epoch(pl_module.all_gather(self.recorder.buffer))
        if not np.isfinite(rows).all():
            # every rank holds the same gathered rows, so every rank stops after this epoch;
            # the run is recorded as failed (runner.nonfinite_error)
            trainer.should_stop = True
        first_step = self.recorder.steps - len(rows)
        val = pl_module.validation_result() if hasattr(pl_module, "validation_result") else None
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


#: What a training step must return to be recorded (every refusal names it).
RETURN_THE_LOSS = "return the loss tensor, or a dict with a 'loss' key, from training_step"


class RecordWarning(UserWarning):
    """Something of a run ``ReproRecorder`` could not record (training goes on)."""


def batch_loss(outputs: Any) -> tuple[torch.Tensor | None, str | None]:
    """The loss a training step returned, as a 0-d tensor, else None and what came back
    (``"no loss"`` for ``None`` or ``{}``: Lightning's way to skip a batch, or a manual step
    that returned nothing).

    Lightning 2.x hands ``on_train_batch_end`` the step's output as a dict in both modes:
    automatic optimization gives ``{"loss": <the detached loss / accumulate_grad_batches>,
    ...}`` (``ClosureResult``), or ``{}`` when the step returned None; manual optimization the
    step's dict, or ``{"loss": <detached>}`` for a returned tensor. A bare tensor is taken too.
    """
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            return None, f"a loss of shape {tuple(loss.shape)}, not one number"
        return (loss.reshape(()) if loss.ndim else loss), None
    if isinstance(outputs, Mapping) and outputs:
        return None, f"a dict without a 'loss' key (keys: {', '.join(map(str, outputs))})"
    if outputs is None or isinstance(outputs, Mapping):
        return None, "no loss"
    return None, f"a {type(outputs).__qualname__}"


class StepRows:
    """Which batch ends a row of the record: one row per optimizer step.

    A batch ends a row when the optimizer stepped during it (``trainer.global_step`` moved:
    Lightning counts every optimizer step, with gradient accumulation only the real ones, with
    several optimizers each) and a batch since the last row gave a loss; a module without an
    optimizer makes a row of every batch with a loss. A step whose batches all gave no loss
    makes no row (its update shows in the next row's weights); losses no step followed end a
    row at the epoch's end. ``LossCapture`` and ``WeightRecorder`` each keep one, fed the same
    batches, so their rows stay one for one whatever order Lightning calls them in.
    """

    def __init__(self) -> None:
        self.last_step = 0
        self.pending = False

    def start(self, trainer: Trainer) -> None:
        self.last_step = int(getattr(trainer, "global_step", 0))
        self.pending = False

    def end_batch(self, trainer: Trainer, has_loss: bool) -> bool:
        """Whether this batch ends a row (``has_loss``: it gave a loss)."""
        step = int(getattr(trainer, "global_step", 0))
        stepped = step != self.last_step or not getattr(trainer, "optimizers", None)
        self.last_step = step
        self.pending = self.pending or has_loss
        if stepped and self.pending:
            self.pending = False
            return True
        return False

    def end_epoch(self) -> bool:
        """Whether losses are left that no optimizer step followed (they end a row)."""
        ended, self.pending = self.pending, False
        return ended


class LossCapture(Callback):
    """Records the loss of each optimizer step, on the device (``LossRecorder``).

    A row of ``losses.npy`` is an optimizer step (``StepRows``): the loss its batch returned
    (``batch_loss``), or with gradient accumulation the sum of the losses its batches returned
    as Lightning hands them over (each divided by ``accumulate_grad_batches``, so the sum is
    their mean: the loss whose gradient the optimizer stepped on). With several optimizers
    stepping in one batch, the batch is one row. A batch that gave no loss has no row; its
    global index goes to ``LossRecorder.skipped`` (the record's ``skipped``).

    ``strict`` (a harness run): a loss that cannot be recorded (not one number, a dict without
    'loss') and an epoch in which no batch gave a loss are ``WorkloadError``s that name the
    module and the fix. Not strict (``ReproRecorder``, around the user's own training): such a
    batch is skipped with a ``RecordWarning``, never an exception.
    """

    def __init__(self, recorder: LossRecorder, strict: bool = True) -> None:
        self.recorder = recorder
        self.strict = strict
        self.rows = StepRows()
        self.batches = 0  # batches seen, over epochs: the next one's global index
        self.epoch_losses = 0
        self.epoch_batches = 0
        self.warned: set[str] = set()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.rows.start(trainer)
        self.epoch_losses = self.epoch_batches = 0

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        index = self.batches
        self.batches += 1
        self.epoch_batches += 1
        loss, got = batch_loss(outputs)
        if loss is None:
            self._no_loss(pl_module, got or "no loss", trainer.current_epoch, batch_idx, index)
        else:
            self.recorder.add(loss)
            self.epoch_losses += 1
        if self.rows.end_batch(trainer, loss is not None):
            self.recorder.close()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.rows.end_epoch()  # the recorder's open row is closed by EpochRecorder
        if self.strict and self.epoch_batches and not self.epoch_losses:
            raise WorkloadError(
                f"{type(pl_module).__qualname__}.training_step returned no loss in any of the "
                f"{self.epoch_batches} batches of epoch {trainer.current_epoch}; the harness "
                f"records the loss each training step returns: {RETURN_THE_LOSS}"
            )

    def _no_loss(
        self, pl_module: LightningModule, got: str, epoch: int, batch_idx: int, index: int
    ) -> None:
        where = f"epoch {epoch}, batch {batch_idx}"
        if self.strict and got != "no loss":
            raise WorkloadError(
                f"{type(pl_module).__qualname__}.training_step returned {got} ({where}); the "
                f"harness records the loss each training step returns: {RETURN_THE_LOSS}"
            )
        self.recorder.skipped.append(index)
        kind = got.split(" (")[0]
        if self.strict or kind in self.warned:
            return
        self.warned.add(kind)
        warnings.warn(
            f"{type(pl_module).__qualname__}.training_step returned {got} ({where}, global "
            f"batch {index}): the batch has no row in losses.npy and is listed in run.json's "
            "'skipped' (this warning is not repeated for the run's other such batches)",
            RecordWarning,
            stacklevel=2,
        )
