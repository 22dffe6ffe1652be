"""The post's model.py and main.py, ported faithfully to Lightning 2.x: the baseline.

Kept as close to the original as Lightning 2.x allows (``pytorch_lightning.metrics`` became
torchmetrics, ``training_epoch_end`` became ``on_train_epoch_end``, ``gpus=`` became
``accelerator``/``devices``): torchvision's MNIST with a per-sample ``transforms.ToTensor()``,
DataLoader with batch size 32 and no shuffling, ``random_split`` in ``setup()``, ``self.log``
every step, the default TensorBoard logger, epoch-end averages, a progress bar refreshing every
20 steps.

Added for the comparison only: each step's loss is kept (``loss.detach()`` in a list) and saved
as losses.npy [steps, 1], and the training part of each epoch is timed the way the workload
times it (epoch start to the first validation hook), written to timing.json.

    python benchmarks/post_port.py --data-dir ../shared/data/mnist --out /tmp/port \
        --placement before_model --epochs 1 --threads 1
    python benchmarks/post_port.py --smoke   # 5 steps: seconds
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import TQDMProgressBar
from torch import nn
from torch.utils.data import DataLoader, random_split
from torchmetrics.functional import accuracy
from torchvision import transforms
from torchvision.datasets import MNIST


def seed_everything(random_seed):
    torch.manual_seed(random_seed)
    torch.cuda.manual_seed(random_seed)
    torch.cuda.manual_seed_all(random_seed)  # if use multi-GPU
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    np.random.seed(random_seed)
    random.seed(random_seed)


class LitMNIST(pl.LightningModule):
    def __init__(self, data_dir="./", hidden_size=64, learning_rate=2e-4):
        super().__init__()

        # Set our init args as class attributes
        self.data_dir = data_dir
        self.hidden_size = hidden_size
        self.learning_rate = learning_rate

        # Hardcode some dataset specific attributes
        self.num_classes = 10
        self.dims = (1, 28, 28)
        channels, width, height = self.dims
        self.transform = transforms.Compose([transforms.ToTensor()])

        # Define PyTorch model
        self.model = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * width * height, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, self.num_classes),
        )
        self.train_outputs = []
        self.val_outputs = []
        self.step_losses = []  # added: the trajectory, for the bit comparison

    def forward(self, x):
        x = self.model(x)
        return F.log_softmax(x, dim=1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.nll_loss(logits, y)
        preds = torch.argmax(logits, dim=1)
        acc = accuracy(preds, y, task="multiclass", num_classes=self.num_classes)
        self.log("train_loss", loss)
        self.log("train_acc", acc)
        self.train_outputs.append({"loss": loss.detach(), "acc": acc})
        self.step_losses.append(loss.detach())
        return loss

    def on_train_epoch_end(self):
        avg_loss = torch.stack([x["loss"] for x in self.train_outputs]).mean()
        avg_acc = torch.stack([x["acc"] for x in self.train_outputs]).mean()
        self.logger.experiment.add_scalar("Loss/Train", avg_loss, self.current_epoch)
        self.logger.experiment.add_scalar("Accuracy/Train", avg_acc, self.current_epoch)
        self.train_outputs.clear()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.nll_loss(logits, y)
        preds = torch.argmax(logits, dim=1)
        acc = accuracy(preds, y, task="multiclass", num_classes=self.num_classes)
        self.val_outputs.append({"val_loss": loss, "val_acc": acc})
        return {"val_loss": loss, "val_acc": acc}

    def on_validation_epoch_end(self):
        avg_loss = torch.stack([x["val_loss"] for x in self.val_outputs]).mean()
        avg_acc = torch.stack([x["val_acc"] for x in self.val_outputs]).mean()
        self.logger.experiment.add_scalar("Loss/Val", avg_loss, self.current_epoch)
        self.logger.experiment.add_scalar("Accuracy/Val", avg_acc, self.current_epoch)
        self.val_outputs.clear()

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.learning_rate)
        return optimizer

    def prepare_data(self):
        # The post downloads here; this port reads the files prepared by gunzip_mnist().
        MNIST(self.data_dir, train=True, download=False)

    def setup(self, stage=None):
        if stage == "fit" or stage is None:
            mnist_full = MNIST(self.data_dir, train=True, transform=self.transform)
            self.mnist_train, self.mnist_val = random_split(mnist_full, [55000, 5000])

    def train_dataloader(self):
        return DataLoader(self.mnist_train, batch_size=32)

    def val_dataloader(self):
        return DataLoader(self.mnist_val, batch_size=32)


class TrainTimer(pl.Callback):
    """Added: seconds from each epoch's start to its validation (the training part)."""

    def __init__(self):
        self.train_seconds = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_validation_epoch_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.train_seconds.append(time.perf_counter() - self._start)


def gunzip_mnist(src: Path, root: Path) -> None:
    """Lay out MNIST as torchvision expects (root/MNIST/raw/<uncompressed IDX>)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in sorted(src.glob("*-ubyte.gz")):
        target = raw / gz.name[: -len(".gz")]
        if not target.exists():
            with gzip.open(gz, "rb") as fin, open(target, "wb") as fout:
                shutil.copyfileobj(fin, fout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("HARNESS_MNIST_DIR"))
    parser.add_argument("--out", help="where losses.npy and timing.json go (required)")
    parser.add_argument(
        "--placement", default="before_model", choices=["none", "before_trainer", "before_model"]
    )
    parser.add_argument("--seed", type=int, default=201014)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="5 steps into a temporary folder")
    args = parser.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="post-port-smoke-") as tmp:
            args.out, args.max_steps = tmp, 5
            steps = train(args)
        print(f"smoke: post_port ok: {steps} steps")
        return
    if args.out is None:
        parser.error("--out is required")
    train(args)


def train(args: argparse.Namespace) -> int:
    """The post's training; returns how many steps it recorded."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="post-port-mnist-"))
    gunzip_mnist(Path(args.data_dir), root)

    if args.placement == "before_model":
        seed_everything(args.seed)
    model = LitMNIST(data_dir=str(root), hidden_size=64, learning_rate=0.0001)
    if args.placement == "before_trainer":
        seed_everything(args.seed)
    timer = TrainTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        limit_train_batches=args.max_steps or 1.0,
        default_root_dir=str(out),
        enable_checkpointing=False,
        callbacks=[TQDMProgressBar(refresh_rate=20), timer],
    )
    trainer.fit(model)
    losses = torch.stack(model.step_losses).numpy().astype("<f4")[:, None]
    np.save(out / "losses.npy", losses)
    (out / "timing.json").write_text(json.dumps({"train_seconds": timer.train_seconds}))
    shutil.rmtree(root)
    return len(losses)


if __name__ == "__main__":
    main()
