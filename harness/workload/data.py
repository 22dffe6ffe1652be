"""MNIST from IDX files, checked by MD5, as the exact tensors ``transforms.ToTensor()`` makes.

Converting every sample through PIL and ToTensor costs more than the training itself on a small
CPU, so the whole set is converted once with the same arithmetic (uint8 -> float32, then / 255)
and batches are cut with ``index_select``, which copies the same bytes that ``default_collate``
would stack. A test proves the equality over all 70,000 images.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.mnist import (  # noqa: F401 - re-exported: the workload's view of the data
    MIRRORS,
    MNIST_MD5,
    DataError,
    default_cache_dir,
    download_mnist,
    read_idx_bytes,
    verify_mnist,
)

TRAIN_SIZE = 55_000
VAL_SIZE = 5_000

_IDX_DTYPES = {0x08: np.uint8}


def parse_idx(raw: bytes) -> np.ndarray:
    """Parse an IDX file (big-endian header: 0, 0, dtype code, ndim; then the dims)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError("not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    count = int(np.prod(dims)) if dims else 0
    if len(raw) - offset != count:
        raise DataError(f"IDX body has {len(raw) - offset} bytes, header says {count}")
    return np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=offset).reshape(dims)


def to_tensor_scale(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28] in [0, 1], the arithmetic ToTensor uses.

    The bytes are read in place (``images`` may be a read-only view of the file, which torch
    warns about: it is only read, into a new float tensor) and divided in place: 70 ms less of
    every run's start than a copy and a second 188 MB tensor."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pixels = torch.from_numpy(images)
    return pixels.to(dtype=torch.float32).div_(255).unsqueeze(1)


@dataclass(frozen=True)
class Mnist:
    """One MNIST split as tensors: images float32 [N, 1, 28, 28], labels int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_mnist(data_dir: Path, train: bool = True) -> Mnist:
    """Read, verify and convert one split; fails before any training if a file is bad."""
    prefix = "train" if train else "t10k"
    images = parse_idx(read_idx_bytes(data_dir, f"{prefix}-images-idx3-ubyte"))
    labels = parse_idx(read_idx_bytes(data_dir, f"{prefix}-labels-idx1-ubyte"))
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{data_dir}: {images.shape[0]} images but {labels.shape[0]} labels")
    return Mnist(to_tensor_scale(images), torch.from_numpy(labels.astype(np.int64)))


def resolve_data_dir(cli_dir: str | None) -> Path:
    """Where MNIST is: --data-dir, then HARNESS_MNIST_DIR, else the verified download."""
    for candidate in (cli_dir, os.environ.get("HARNESS_MNIST_DIR")):
        if candidate:
            return Path(candidate)
    return download_mnist(default_cache_dir())


def shard_indices(indices: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """The indices rank ``rank`` sees, as DistributedSampler(shuffle=False, drop_last=False).

    The list is padded by wrapping to a multiple of ``world``; rank r takes ``indices[r::world]``.
    """
    if world == 1:
        return indices
    total = -(-len(indices) // world) * world
    pad = total - len(indices)
    if pad:
        reps = -(-pad // len(indices))
        indices = torch.cat([indices, indices.repeat(reps)[:pad]])
    return indices[rank:total:world]


def split_digest(train_indices: Sequence[int], val_indices: Sequence[int]) -> str:
    """sha256 over the int64 little-endian train indices, then the validation indices."""
    digest = hashlib.sha256()
    digest.update(np.asarray(train_indices, dtype="<i8").tobytes())
    digest.update(np.asarray(val_indices, dtype="<i8").tobytes())
    return digest.hexdigest()


class Batches:
    """Batches of ``batch_size`` over ``indices`` in order, cut from pre-converted tensors.

    A plain iterable with a length: Lightning 2.x takes it as a dataloader when
    ``use_distributed_sampler=False``, and no per-sample Python runs per step.
    """

    def __init__(self, data: Mnist, indices: torch.Tensor, batch_size: int) -> None:
        self.images = data.images
        self.labels = data.labels
        self.indices = indices.to(device=data.images.device, dtype=torch.int64)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in torch.split(self.indices, self.batch_size):
            yield self.images.index_select(0, idx), self.labels.index_select(0, idx)
