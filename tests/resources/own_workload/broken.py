"""Entries that the harness must refuse, each with a message that names the problem."""

from __future__ import annotations

from typing import Any

import torch
from tinyconv import TinyConv, TinyData


def wrong_return(settings: Any) -> dict[str, Any]:
    return {"model": TinyConv(), "data": TinyData()}


class NoLoss(TinyConv):
    def training_step(self, batch: Any, batch_idx: int) -> None:
        super().training_step(batch, batch_idx)  # computes the loss, forgets to return it


def no_loss(settings: Any) -> tuple[NoLoss, TinyData]:
    return NoLoss(), TinyData()


class SetsBenchmark(TinyConv):
    def on_train_start(self) -> None:
        torch.backends.cudnn.benchmark = True  # what the harness must catch


def sets_benchmark(settings: Any) -> tuple[SetsBenchmark, TinyData]:
    return SetsBenchmark(), TinyData()


class TwoOptimizersAutomatic(TinyConv):
    """Automatic optimization with two optimizers: Lightning itself refuses it."""

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.SGD(self.features.parameters(), lr=0.05),
            torch.optim.SGD(self.head.parameters(), lr=0.05),
        ]


def two_optimizers_automatic(settings: Any) -> tuple[TwoOptimizersAutomatic, TinyData]:
    return TwoOptimizersAutomatic(), TinyData()
