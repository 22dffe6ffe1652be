"""Trainings that are not one optimizer step per batch: each records itself too.

    python variants.py OUT --variant skip|accumulate|two [--seed N]

trains with ``ReproRecorder`` (no harness run), 2 epochs of 9 batches:

- ``skip``: ``training_step`` returns None on every 3rd batch (Lightning skips the step);
- ``accumulate``: ``accumulate_grad_batches=2`` (the epoch's 9th batch steps alone);
- ``two``: two optimizers, manual optimization, both stepping every batch.

Each module keeps its parameters' hashes after each optimizer step that has a row in the
record, and that row's loss (``own_hashes.npy``, ``own_losses.npy`` in the run folder, written
by this script), so a test can check ``weights.npy`` and ``losses.npy`` row by row.
``skips``, ``accumulates`` and ``two_optimizers`` are the same modules as a harness run's entry
(``accumulates`` sets its accumulation with a callback, as a module must where the harness
builds the Trainer).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import GradientAccumulationScheduler
from tinyconv import TinyConv, TinyData

from harness.workload.weights import tensor_hashes

EPOCHS, BATCHES = 2, 9


class Hashes(TinyConv):
    """Keeps the parameters' hashes after each optimizer step that makes a record row."""

    #: what Lightning divides each batch's loss by before it hands it on (accumulation)
    divide = 1

    def __init__(self) -> None:
        super().__init__()
        self.own: list[np.ndarray] = []
        self.own_losses: list[float] = []
        self.pending: torch.Tensor | None = None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        part = loss.detach() / self.divide
        self.pending = part if self.pending is None else self.pending + part
        return loss

    def keep(self) -> None:
        """After an optimizer step: the row the record should hold (hashes and loss)."""
        hashes = tensor_hashes([p for _, p in self.named_parameters()]).cpu().numpy()
        self.own.append(hashes.view("<u8").copy())
        assert self.pending is not None
        self.own_losses.append(float(self.pending))
        self.pending = None


class Skips(Hashes):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        self.skipping = batch_idx % 3 == 2
        return None if self.skipping else super().training_step(batch, batch_idx)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)  # Lightning steps on a skipped batch too
        if not self.skipping:
            self.keep()


class Accumulates(Hashes):
    divide = 2

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)  # called at the real steps only
        self.keep()

    def configure_callbacks(self) -> list[Any]:
        if getattr(self, "scheduler", False):
            return [GradientAccumulationScheduler({0: 2})]
        return []


class TwoOptimizers(Hashes):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        first, second = self.optimizers()  # type: ignore[misc]
        loss = super().training_step(batch, batch_idx)
        first.zero_grad()
        second.zero_grad()
        self.manual_backward(loss)
        first.step()
        second.step()
        self.keep()
        return loss

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.SGD(self.features.parameters(), lr=0.05),
            torch.optim.Adam(self.head.parameters(), lr=0.01),
        ]


class Unfreezes(TinyConv):
    """The head is frozen until optimizer step ``unfreeze_at``: Adam's state of the head's
    parameters appears only then (harness diagnose must replay it)."""

    def __init__(self, unfreeze_at: int) -> None:
        super().__init__()
        self.unfreeze_at = unfreeze_at
        self.head.requires_grad_(False)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.trainer.global_step == self.unfreeze_at:
            self.head.requires_grad_(True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01)


def unfreezes(settings: Any) -> tuple[Unfreezes, TinyData]:
    return Unfreezes(int(settings.params.get("unfreeze_at", 1))), TinyData()


def skips(settings: Any) -> tuple[Skips, TinyData]:
    return Skips(), TinyData()


def accumulates(settings: Any) -> tuple[Accumulates, TinyData]:
    module = Accumulates()
    module.scheduler = True
    return module, TinyData()


def two_optimizers(settings: Any) -> tuple[TwoOptimizers, TinyData]:
    return TwoOptimizers(), TinyData()


VARIANTS = {"skip": Skips, "accumulate": Accumulates, "two": TwoOptimizers}


def main() -> None:
    from harness.lightning import ReproRecorder

    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.seed is not None:
        pl.seed_everything(args.seed)
    model = VARIANTS[args.variant]()
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        limit_train_batches=BATCHES,
        accumulate_grad_batches=2 if args.variant == "accumulate" else 1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ReproRecorder(args.out, name=args.variant, seed=args.seed)],
    )
    trainer.fit(model, TinyData())
    np.save(args.out / "own_hashes.npy", np.stack(model.own))
    np.save(args.out / "own_losses.npy", np.array(model.own_losses, dtype="<f4"))
    print(f"global_step {trainer.global_step}", file=sys.stderr)


if __name__ == "__main__":
    main()
