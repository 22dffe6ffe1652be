"""tinyconv.py written with ``import lightning.pytorch as pl`` (Lightning's own docs' spelling):
the same module, trained by lightning.pytorch's Trainer; its verdicts are tinyconv's.

A tiny user project for the tests: not the MNIST MLP, no MNIST at all.

A small convolutional classifier (with dropout, so the seeded generator matters during training
too) on 8x8 single-channel images made by a fixed generator: the data is the same in every run,
the weights, the dropout masks and the shuffled order come from the global generator, which the
harness seeds at the cell's placement. ``build(settings)`` reads ``settings.params``:
``width`` (channels), ``blocks`` (convolution blocks) and ``lr``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

#: The data's own seed: fixed, so every run sees the same samples (their order is shuffled).
DATA_SEED = 7


def make_data(count: int, generator_seed: int) -> TensorDataset:
    """Images of noise with a brighter left or right half; the label says which."""
    gen = torch.Generator().manual_seed(generator_seed)
    labels = torch.randint(0, 2, (count,), generator=gen)
    images = torch.rand(count, 1, 8, 8, generator=gen)
    images[labels == 1, :, :, :4] += 0.5
    images[labels == 0, :, :, 4:] += 0.5
    return TensorDataset(images, labels)


class TinyData(pl.LightningDataModule):
    def __init__(self, batch_size: int = 16) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str) -> None:
        self.train = make_data(320, DATA_SEED)
        self.val = make_data(64, DATA_SEED + 1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.batch_size)


class TinyConv(pl.LightningModule):
    def __init__(self, width: int = 4, blocks: int = 1, lr: float = 0.05) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for _ in range(blocks):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(width, 2)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _module(params: Any) -> TinyConv:
    return TinyConv(
        width=int(params.get("width", 4)),
        blocks=int(params.get("blocks", 1)),
        lr=float(params.get("lr", 0.05)),
    )


def build(settings: Any) -> tuple[TinyConv, TinyData]:
    """The harness calls this with the run's settings (harness.workload.entry.RunSettings)."""
    return _module(settings.params), TinyData()


def build_loaders(settings: Any) -> tuple[TinyConv, DataLoader, DataLoader]:
    """The same, with the data as (train, val) dataloaders instead of a datamodule."""
    data = TinyData()
    data.setup("fit")
    return _module(settings.params), data.train_dataloader(), data.val_dataloader()
