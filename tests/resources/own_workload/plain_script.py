"""A plain Lightning script, no harness run: the user's own Trainer with ReproRecorder.

    python plain_script.py OUT [--seed N] [--fail-at STEP] [--lightning]

``--seed`` seeds everything before the model is made (and is recorded); without it nothing
is seeded. ``--fail-at`` makes the training step raise at that step (a failed record).
``--lightning``: the same script with ``lightning.pytorch`` (module, Trainer, seeding).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

if "--lightning" in sys.argv:  # the same script written with lightning.pytorch
    import lightning.pytorch as pl
    from tinyconv_lightning import TinyConv, TinyData
else:
    import pytorch_lightning as pl
    from tinyconv import TinyConv, TinyData

from harness.lightning import ReproRecorder


class MaybeFails(TinyConv):
    def __init__(self, fail_at: int | None) -> None:
        super().__init__()
        self.fail_at = fail_at

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if batch_idx == self.fail_at:
            raise RuntimeError(f"planned failure at step {batch_idx}")
        return super().training_step(batch, batch_idx)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--fail-at", type=int, default=None)
    parser.add_argument("--lightning", action="store_true", help="lightning.pytorch's Trainer")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.seed is not None:
        pl.seed_everything(args.seed)
    model = MaybeFails(args.fail_at)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=8,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ReproRecorder(args.out, name="plain", seed=args.seed)],
    )
    trainer.fit(model, TinyData())


if __name__ == "__main__":
    main()
