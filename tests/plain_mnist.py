"""The built-in workload's default cell as a plain PyTorch loop: the reference the harness's
bits are checked against on the machine under test (docs/testing.md, "Facts of one machine").

It imports nothing of the harness. It does what ``harness.workload`` does at placement
``before_model``, 1 thread, on the CPU, written out from the post's code: pin 1 intra-op and
1 inter-op thread; read MNIST's training IDX files (gzip and numpy) into float32 images
``uint8 / 255`` of shape [N, 1, 28, 28] (``transforms.ToTensor``'s arithmetic) and int64
labels; seed torch, CUDA, numpy and ``random``; create Flatten -> Linear(784, 64) -> ReLU ->
Linear(64, 10); draw ``random_split`` [55,000, 5,000] with the default generator (after the
model, as Lightning's ``setup`` does); then batches of 32 over the train indices in order
(the last one short), cut with ``index_select``; loss ``nll_loss(log_softmax(net(x)))``; Adam
(lr 1e-4): zero_grad, backward, step. Each step's loss is kept as float32.

    python tests/plain_mnist.py --data-dir DIR --out FOLDER [--steps N] [--seed S]

writes ``FOLDER/losses.npy`` (float32 [steps, 1], as the workload's losses.npy) and
``FOLDER/digests.json`` (the initial and final weights and the split, digested as
docs/run-record.md defines them). Run it in a fresh process with ``OMP_NUM_THREADS=1`` and
``MKL_NUM_THREADS=1``, as the workload's own processes start.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
from pathlib import Path

import numpy as np

SEED = 201014
TRAIN, VAL = 55_000, 5_000
BATCH = 32
LEARNING_RATE = 1e-4
HIDDEN = 64


def read_idx(data_dir: Path, name: str) -> np.ndarray:
    """One IDX file of unsigned bytes (``name`` or ``name.gz``): big-endian header 0, 0, 0x08,
    ndim, then ndim 4-byte dimensions, then the data."""
    plain, packed = data_dir / name, data_dir / f"{name}.gz"
    raw = plain.read_bytes() if plain.is_file() else gzip.decompress(packed.read_bytes())
    assert raw[:3] == b"\x00\x00\x08", f"{name}: not an IDX file of unsigned bytes"
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def state_digest(named: list[tuple[str, object]]) -> str:
    """docs/run-record.md's weight digest: per (name, tensor) the UTF-8 name, NUL,
    ``str(dtype)``, ``str(tuple(shape))``, the contiguous bytes."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in named:
        assert isinstance(tensor, torch.Tensor)
        tensor = tensor.detach().contiguous()
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def train(data_dir: Path, steps: int | None = None, seed: int = SEED) -> dict[str, object]:
    """The loop; returns the losses (float32 [steps, 1]) and the three digests."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import TensorDataset, random_split

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    pixels = read_idx(data_dir, "train-images-idx3-ubyte")
    images = torch.from_numpy(pixels.copy()).to(torch.float32).div(255).unsqueeze(1)
    labels = torch.from_numpy(read_idx(data_dir, "train-labels-idx1-ubyte").astype(np.int64))

    torch.manual_seed(seed)
    torch.cuda.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    np.random.seed(seed)
    random.seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))

    def named() -> list[tuple[str, object]]:
        """The state_dict's names as the LightningModule has them (it holds ``self.model``)."""
        return [(f"model.{k}", v) for k, v in net.state_dict().items()]

    init = state_digest(named())
    train_set, val_set = random_split(TensorDataset(images, labels), [TRAIN, VAL])
    indices = torch.tensor(list(train_set.indices), dtype=torch.int64)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)

    batches = torch.split(indices, BATCH)[:steps]
    losses = torch.empty(len(batches), dtype=torch.float32)
    for step, idx in enumerate(batches):
        x, y = images.index_select(0, idx), labels.index_select(0, idx)
        loss = F.nll_loss(F.log_softmax(net(x), dim=1), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses[step] = loss.detach()
    split = hashlib.sha256()
    split.update(np.asarray(train_set.indices, dtype="<i8").tobytes())
    split.update(np.asarray(val_set.indices, dtype="<i8").tobytes())
    return {
        "losses": np.ascontiguousarray(losses.numpy()[:, None], dtype="<f4"),
        "init_weights": init,
        "final_weights": state_digest(named()),
        "split": split.hexdigest(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=None, help="default: the whole epoch")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    result = train(args.data_dir, args.steps, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "losses.npy", result.pop("losses"))
    (args.out / "digests.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
