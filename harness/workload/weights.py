"""Bitwise hashes of tensors on their device: one flipped bit changes the hash.

A tensor is hashed as its bytes, read as 64-bit words where its size allows (else as words of
its element size): ``torch.hash_tensor`` (an XOR reduction of the words upcast to 64 bits)
where the image's torch has it; older torch gets a position-weighted sum of the same words,
wrapping modulo 2**64, which also changes with any single flipped bit (the weights are odd).
Either way the hash is a 0-d int64 tensor on the tensor's device, so hashing adds no host
sync; the host reads the bits as unsigned 64-bit integers. The words are a view of the tensor,
not a copy (no float64 widening): the per-step digest of ``WeightRecorder`` stays within a few
percent of a CPU training step (docs/workload.md, "Parameter hashes per step").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from harness.workload.recorder import epoch_capacity, grown

#: Which hash a run used: recorded, since the two kinds are not comparable with each other.
HASH_KIND = "hash_tensor" if hasattr(torch, "hash_tensor") else "weighted_sum"

_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # odd, as a signed 64-bit integer
_WORDS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _words(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as a 1-d integer tensor: 64-bit words when its size is a multiple of
    8 bytes, else words of its element size. A view of a contiguous tensor (so it follows the
    tensor's in-place updates); a copy of a non-contiguous one."""
    flat = tensor.detach()
    if flat.is_complex():
        flat = torch.view_as_real(flat)
    flat = flat.reshape(-1)
    size = flat.element_size()
    words = torch.int64 if size < 8 and flat.numel() * size % 8 == 0 else _WORDS[size]
    try:
        return flat.view(words)
    except RuntimeError:  # a view that starts mid-word (a slice): hashed from a copy
        return flat.clone().view(words)


def _odd(words: torch.Tensor) -> torch.Tensor:
    """The weighted sum's odd weights, times the golden ratio constant, one per word."""
    odd = torch.arange(words.numel(), device=words.device, dtype=torch.int64) * 2 + 1
    return odd * _GOLDEN


def _weighted_sum(words: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    weights = _odd(words) if weights is None else weights
    return (words.to(torch.int64) * weights).sum()


def tensor_hash(tensor: torch.Tensor) -> torch.Tensor:
    """A 0-d int64 tensor, on ``tensor``'s device, that changes when any bit of it does."""
    words = _words(tensor)
    if HASH_KIND == "hash_tensor" and words.numel():
        return torch.hash_tensor(words).view(torch.int64)
    return _weighted_sum(words)  # 0 for an empty tensor, as the XOR of nothing


def tensor_hashes(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """One hash per tensor, as a 1-d int64 tensor on the first tensor's device."""
    return torch.stack([tensor_hash(t) for t in tensors])


class Hasher:
    """``tensor_hashes`` of a fixed list of tensors, written into rows of a buffer, at the least
    cost per call: the word views (and the weighted sum's weights) are made once, so a call is
    one hashing kernel per tensor and nothing else. The tensors must be updated in place (as an
    optimizer updates parameters); a non-contiguous one is viewed afresh at every call."""

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        self.tensors = list(tensors)
        self.fixed = [t.is_contiguous() for t in self.tensors]
        self.words = [_words(t) for t in self.tensors]
        self.weights = (
            [_odd(w) for w in self.words]
            if HASH_KIND == "weighted_sum"
            else [None] * len(self.words)
        )

    #: the dtype ``into`` writes: ``torch.hash_tensor`` writes only into uint64
    dtype = torch.uint64 if HASH_KIND == "hash_tensor" else torch.int64

    def into(self, out: Sequence[torch.Tensor]) -> None:
        """Hash tensor j into ``out[j]``: 0-d tensors of ``dtype`` (a buffer row's items)."""
        for j, words in enumerate(self.words):
            if not self.fixed[j]:
                words = _words(self.tensors[j])
            if HASH_KIND == "hash_tensor" and words.numel():
                torch.hash_tensor(words, out=out[j])
            else:
                out[j].copy_(_weighted_sum(words, self.weights[j]))


def hash_into(tensors: Sequence[torch.Tensor], out: torch.Tensor) -> None:
    """``tensor_hashes(tensors)`` written into ``out`` (a 1-d int64 tensor on their device)."""
    Hasher(tensors).into(out.view(Hasher.dtype).unbind(0))


class WeightRecorder(Callback):
    """The hashes of every parameter after every optimizer step (``weights.npy``).

    One row per step: ``pl_module.parameters()`` in ``named_parameters()`` order, hashed into a
    preallocated [steps_in_epoch, n_params] int64 buffer on the device right after the step
    (``on_train_batch_end``: the workload makes one optimizer step per batch), so no step waits
    for the host; the buffer is copied to the host once per epoch, as the losses are. A run
    that fails mid-epoch keeps the rows written so far (``rows()``). Each rank hashes its own
    parameters; rank 0's are written.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.epochs: list[np.ndarray] = []  # each [steps_in_epoch, n_params], '<u8'
        self._hasher: Hasher | None = None
        self._buffer: torch.Tensor | None = None
        #: the buffer's items, made before the epoch (so a step makes no view of its own)
        self._cells: list[tuple[torch.Tensor, ...]] = []
        self._written = 0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        named = list(pl_module.named_parameters())
        self.names = [name for name, _ in named]
        self._hasher = Hasher([param for _, param in named])
        steps = epoch_capacity(trainer.num_training_batches)
        self._buffer = torch.zeros((steps, len(named)), dtype=Hasher.dtype, device=pl_module.device)
        self._cells = [row.unbind(0) for row in self._buffer.unbind(0)]
        self._written = 0

    def _grow(self, needed: int) -> None:
        """An epoch of unknown length (the data has no ``len``): a bigger buffer, and its items."""
        assert self._buffer is not None
        self._buffer = grown(self._buffer, needed, 0)
        self._cells = [row.unbind(0) for row in self._buffer.unbind(0)]

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._hasher is None:
            return
        if batch_idx >= len(self._cells):
            self._grow(batch_idx + 1)
        self._hasher.into(self._cells[batch_idx])
        self._written = max(self._written, batch_idx + 1)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        tail = self._host()
        if tail is not None:
            self.epochs.append(tail)
        self._buffer = None
        self._cells = []

    def _host(self) -> np.ndarray | None:
        if self._buffer is None:
            return None
        rows = self._buffer[: self._written].to("cpu").numpy()
        return np.ascontiguousarray(rows.view("<u8"))

    def rows(self) -> np.ndarray:
        """Every recorded row, [steps, n_params] uint64, a partial epoch's included."""
        parts = list(self.epochs)
        tail = self._host()
        if tail is not None:
            parts.append(tail)
        if not parts:
            return np.zeros((0, len(self.names)), dtype="<u8")
        return np.concatenate(parts, axis=0)
