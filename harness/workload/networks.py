"""The post's LitMNIST, ported to Lightning 2.x and stripped of per-step overhead.

Same network, loss, optimizer and data order as the post's model.py, so a ``before_model`` run
gives the bits of benchmarks/post_port.py. What differs is only how it gets there: batches are
cut from pre-converted tensors, optimization is manual (one zero_grad, backward, step per batch,
as Lightning's automatic loop does, without its closure and result bookkeeping), and nothing is
logged per step. ``training_step`` returns its loss, which ``LossCapture``
(harness/workload/loss_capture.py) keeps on the device, as it does for a user's own module.

The ``model`` setting swaps only the network: ``cnn`` is the PyTorch MNIST example's, trained
exactly like the post's MLP (same data, split, batches, optimizer, seed placements), so that the
cuDNN axes have convolutions to act on (docs/workload.md, "What each model runs on CUDA").
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from torch import nn
from torch.utils.data import TensorDataset, random_split

from harness.workload.data import TRAIN_SIZE, VAL_SIZE, Batches, Mnist, shard_indices


def mlp(hidden_size: int = 64) -> nn.Sequential:
    """The post's network: Flatten -> Linear(784, hidden) -> ReLU -> Linear(hidden, 10)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(28 * 28, hidden_size),
        nn.ReLU(),
        nn.Linear(hidden_size, 10),
    )


def cnn() -> nn.Sequential:
    """The PyTorch MNIST example's network (examples/mnist/main.py, ``Net``), its layers created
    in the same order, so the same seed gives the same initial weights: Conv(1->32, 3x3) ->
    ReLU -> Conv(32->64, 3x3) -> ReLU -> MaxPool 2x2 -> Dropout 0.25 -> Flatten ->
    Linear(9216, 128) -> ReLU -> Dropout 0.5 -> Linear(128, 10)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, 1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, 1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(9216, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 10),
    )


def network(name: str, hidden_size: int = 64) -> nn.Sequential:
    """The ``model`` setting's network, without the final log_softmax."""
    if name == "mlp":
        return mlp(hidden_size)
    if name == "cnn":
        return cnn()
    raise ValueError(f"model must be mlp or cnn, got {name!r}")


class LitMNIST(LightningModule):
    """The network (``mlp`` or ``cnn``), then log_softmax and nll_loss, trained with Adam."""

    def __init__(
        self,
        mnist: Mnist,
        hidden_size: int = 64,
        learning_rate: float = 1e-4,
        batch_size: int = 32,
        model: str = "mlp",
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.mnist = mnist
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.num_classes = 10
        self.model = network(model, hidden_size)
        self.train_indices: list[int] = []
        self.val_indices: list[int] = []
        self._val_loss_sum: torch.Tensor | None = None
        self._val_correct: torch.Tensor | None = None
        self._device_mnist: Mnist | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        """Lightning sets ``_current_fx_name`` (a hook's name, or None) before and after every
        hook it calls, about 34 times a step; ``nn.Module.__setattr__`` first looks for a
        parameter, buffer or submodule of that name (about 1 µs a time), so that one plain
        attribute is set directly. Every other name goes through ``nn.Module`` as before."""
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.model(x), dim=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        loss = F.nll_loss(self(x), y)
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)  # configure_optimizers gives one
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss  # recorded by LossCapture, the one capture path for every module

    def on_validation_epoch_start(self) -> None:
        self._val_loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._val_correct = torch.zeros((), dtype=torch.int64, device=self.device)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        loss_sum, correct = self._val_loss_sum, self._val_correct
        assert loss_sum is not None and correct is not None  # on_validation_epoch_start's
        loss_sum += F.nll_loss(logits, y, reduction="sum").double()  # in place
        correct += (logits.argmax(dim=1) == y).sum()

    def validation_result(self) -> tuple[float, float] | None:
        """Mean loss and accuracy over all validation samples (one host sync per epoch)."""
        if self._val_loss_sum is None or self._val_correct is None:
            return None
        count = len(self.val_indices)
        return self._val_loss_sum.item() / count, self._val_correct.item() / count

    def setup(self, stage: str) -> None:
        """Split as the post does: random_split with the default generator, in setup()."""
        full_train = TensorDataset(self.mnist.images, self.mnist.labels)
        train, val = random_split(full_train, [TRAIN_SIZE, VAL_SIZE])
        self.train_indices, self.val_indices = list(train.indices), list(val.indices)

    def _on_device(self) -> Mnist:
        if self._device_mnist is None or self._device_mnist.images.device != self.device:
            self._device_mnist = Mnist(
                self.mnist.images.to(self.device), self.mnist.labels.to(self.device)
            )
        return self._device_mnist

    def train_dataloader(self) -> Batches:
        indices = shard_indices(
            torch.tensor(self.train_indices, dtype=torch.int64),
            self.global_rank,
            self.trainer.world_size,
        )
        return Batches(self._on_device(), indices, self.batch_size)

    def val_dataloader(self) -> Batches:
        """Every rank validates on all 5,000 samples, so the numbers are exact sums."""
        indices = torch.tensor(self.val_indices, dtype=torch.int64)
        return Batches(self._on_device(), indices, self.batch_size)


# Lightning reads training_step's signature at every step (does it take a batch_idx?, in
# ``_TrainingEpochLoop._build_kwargs``); ``inspect`` takes a function's ``__signature__`` as
# given instead of building it again from the code (about 6 µs a step here).
setattr(LitMNIST.training_step, "__signature__", inspect.signature(LitMNIST.training_step))  # noqa: B010
