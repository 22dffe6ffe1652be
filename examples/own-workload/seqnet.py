"""A user's own training, to show how ``harness run`` tests it: not the post's MNIST MLP.

A small recurrent classifier (a 1-D convolution, then a GRU) on sequences drawn from a
generator with its own seed, so the data is the same in every run whatever the seed placement;
what the placement decides is the initial weights and the shuffling. ``build`` is the function
the matrix names (``workload.entry: seqnet:build``); it reads its knobs from ``settings.params``.
``einops`` is here only as an extra requirement (``workload.requirements``) that the workload
image installs when it is built.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

CLASSES = 4


def make_data(samples: int, length: int, seed: int) -> TensorDataset:
    """Sequences of ``CLASSES`` features; the label is the feature with the largest sum over
    time, so there is something to learn. Drawn from a generator of their own."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, length, CLASSES, generator=generator)
    return TensorDataset(x, x.sum(dim=1).argmax(dim=1))


class SeqData(pl.LightningDataModule):
    def __init__(self, samples: int, length: int, batch_size: int, seed: int) -> None:
        super().__init__()
        self.samples, self.length, self.batch_size, self.seed = samples, length, batch_size, seed

    def setup(self, stage: str) -> None:
        data = make_data(self.samples, self.length, self.seed)
        self.train, self.val = torch.utils.data.random_split(
            data, [0.9, 0.1], generator=torch.Generator().manual_seed(self.seed)
        )

    def train_dataloader(self) -> DataLoader:
        # shuffle draws from torch's default generator: the seed placement decides it
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=256)


class SeqNet(pl.LightningModule):
    def __init__(self, hidden: int, learning_rate: float) -> None:
        super().__init__()
        self.learning_rate = learning_rate
        self.conv = nn.Conv1d(CLASSES, hidden, kernel_size=3, padding=1)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(rearrange(x, "b t f -> b f t")))
        out, _ = self.gru(rearrange(h, "b f t -> b t f"))
        return self.head(out[:, -1])

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        return F.cross_entropy(self(x), y)  # the harness records this loss, every step

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_acc", (self(x).argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)


def build(settings) -> tuple[SeqNet, SeqData]:
    """What the harness calls: the model and its data, from the cell's params."""
    params = settings.params
    model = SeqNet(hidden=params.get("hidden", 16), learning_rate=params.get("lr", 0.003))
    data = SeqData(
        samples=params.get("samples", 4096),
        length=params.get("length", 12),
        batch_size=params.get("batch_size", 32),
        seed=params.get("data_seed", 1234),
    )
    return model, data
