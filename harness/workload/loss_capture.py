"""Each optimizer step's loss, taken from what ``training_step`` returned (``batch_loss``),
one row per optimizer step (``StepRows``), into the ``LossRecorder`` on the device
(``LossCapture``): one capture path for the built-in model and a user's own, strict in a
harness run and never raising around a user's own training (``ReproRecorder``)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from harness.workload.entry import WorkloadError
from harness.workload.recorder import LossRecorder

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
