"""Bitwise hashes of tensors on their device, in which every word's position counts.

A tensor is hashed as its bytes, read as 64-bit words where its size allows (else as words of
its element size, widened to 64 bits). Word ``w`` at index ``i`` is mixed with its position
(``w ^ (i + 1) * GOLDEN``) through a 64-bit finalizer (splitmix64's multipliers, with
xor-shifts by 32 bits: ``z ^= z >> 32; z *= C1; z ^= z >> 32; z *= C2; z ^= z >> 32``, a
bijection) and the mixed words are summed, wrapping modulo 2**64. So one changed word always
changes the hash, and a swap of two words, or changes in several words, cancel only by chance
(about 2**-64): unlike ``torch.hash_tensor``'s XOR of the words (the older records' kind),
which is blind to order and cancels equal changes. An integer sum is exact in any order, so the
hash is the same on every device and thread count.

The hash is a 0-d int64 tensor on the tensor's device, so hashing adds no host sync; the host
reads the bits as unsigned 64-bit integers. The words are a view of the tensor, not a copy;
the mixing runs in a scratch buffer made once per ``Hasher`` (the logical shift right by 32 is
one in-place XOR of a 32-bit view, low half ^= high half), so the per-step digest of
``WeightRecorder`` stays small (docs/workload.md, "Parameter hashes per step").
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from harness.workload.loss_capture import StepRows, batch_loss
from harness.workload.recorder import epoch_capacity, grown

#: Which hash a run used: recorded in run.json (``weights.hash``) and replay.json (``hash``).
#: Records of another kind (``hash_tensor``, ``weighted_sum``: older harnesses) are never
#: compared with these.
HASH_KIND = "mix64_sum"


def _signed(value: int) -> int:
    """A 64-bit constant as the signed integer an int64 tensor holds."""
    return value - (1 << 64) if value >> 63 else value


GOLDEN = 0x9E3779B97F4A7C15  # the position key's step (odd)
C1 = 0xBF58476D1CE4E5B9  # splitmix64's multipliers (odd)
C2 = 0x94D049BB133111EB
_WORDS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
#: which int32 of an int64 word holds its low half
_LOW = 0 if sys.byteorder == "little" else 1
#: at most this many words are mixed in one pass (more only for a bigger tensor)
PASS_WORDS = 1 << 22


def _words_of(tensor: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The tensor's bytes as a 1-d integer tensor, and whether that is a copy: 64-bit words
    when its size is a multiple of 8 bytes, else words of its element size. A view of a
    contiguous tensor (so it follows the tensor's in-place updates); a copy of a non-contiguous
    one, or of one that starts mid-word (a slice of a flat buffer)."""
    flat = tensor.detach()
    if flat.is_complex():
        flat = torch.view_as_real(flat)
    flat = flat.reshape(-1)
    size = flat.element_size()
    words = torch.int64 if size < 8 and flat.numel() * size % 8 == 0 else _WORDS[size]
    try:
        viewed = flat.view(words)
    except RuntimeError:  # a view that starts mid-word: hashed from a copy
        return flat.clone().view(words), True
    return viewed, not _shares(viewed, tensor)


def _words(tensor: torch.Tensor) -> torch.Tensor:
    return _words_of(tensor)[0]


def _shares(words: torch.Tensor, tensor: torch.Tensor) -> bool:
    """Whether ``words`` is a view of ``tensor``'s memory (reshape may have copied)."""
    try:
        return words.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return False


def _keys(count: int, device: torch.device) -> torch.Tensor:
    """Position keys ``(i + 1) * GOLDEN`` for i < count (wrapping int64)."""
    return torch.arange(1, count + 1, dtype=torch.int64, device=device) * _signed(GOLDEN)


@dataclass
class _Pass:
    """Tensors mixed together in one scratch buffer: (index, its words' slot, its keys)."""

    items: list[tuple[int, torch.Tensor, torch.Tensor]]
    mixed: torch.Tensor  # the scratch's used part, int64
    low: torch.Tensor  # its words' low 32-bit halves (a strided view)
    high: torch.Tensor


def _mix(p: _Pass) -> None:
    """The finalizer, in place, over every word of a pass: 5 kernels whatever its tensors."""
    p.low.bitwise_xor_(p.high)
    p.mixed.mul_(_signed(C1))
    p.low.bitwise_xor_(p.high)
    p.mixed.mul_(_signed(C2))
    p.low.bitwise_xor_(p.high)


class Hasher:
    """``tensor_hashes`` of a fixed list of tensors, written into given 0-d int64 tensors (a
    buffer row's items), at the least cost per call: the word views, position keys and a
    scratch buffer are made once, and the tensors are mixed together in passes of up to
    ``PASS_WORDS`` words (one per tensor that is bigger), so a call is per pass one XOR per
    tensor, five mixing kernels and one sum per tensor. The tensors must be updated in place
    (as an optimizer updates parameters); one whose words are a copy (not contiguous, or not
    8-byte aligned) is read afresh at every call. Extra memory: the scratch (the biggest pass)
    and the keys (the biggest tensor), 8 bytes a word each."""

    #: the dtype ``into`` writes
    dtype = torch.int64

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        self.tensors = list(tensors)
        found = [_words_of(t) for t in self.tensors]
        self.words = [w for w, _ in found]
        self.copied = [c for _, c in found]
        self.passes: list[_Pass] = []
        by_device: dict[torch.device, list[int]] = {}
        for j, w in enumerate(self.words):
            by_device.setdefault(w.device, []).append(j)
        for device, indices in by_device.items():
            self._plan(device, indices)

    def _plan(self, device: torch.device, indices: list[int]) -> None:
        sizes = {j: self.words[j].numel() for j in indices}
        limit = max(PASS_WORDS, *sizes.values())
        groups: list[list[int]] = [[]]
        total = 0
        for j in indices:
            if groups[-1] and total + sizes[j] > limit:
                groups.append([])
                total = 0
            groups[-1].append(j)
            total += sizes[j]
        keys = _keys(max(sizes.values()), device)
        width = max(sum(sizes[j] for j in group) for group in groups)
        scratch = torch.empty(width, dtype=torch.int64, device=device)
        for group in groups:
            items, at = [], 0
            for j in group:
                items.append((j, scratch[at : at + sizes[j]], keys[: sizes[j]]))
                at += sizes[j]
            halves = scratch[:at].view(torch.int32).view(-1, 2)
            self.passes.append(_Pass(items, scratch[:at], halves[:, _LOW], halves[:, 1 - _LOW]))

    def into(self, out: Sequence[torch.Tensor]) -> None:
        """Hash tensor j into ``out[j]``: 0-d int64 tensors on its device."""
        for p in self.passes:
            for j, slot, keys in p.items:
                words = _words(self.tensors[j]) if self.copied[j] else self.words[j]
                torch.bitwise_xor(words, keys, out=slot)
            _mix(p)
            for j, slot, _ in p.items:
                torch.sum(slot, 0, out=out[j])


def tensor_hashes(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """One hash per tensor, as a 1-d int64 tensor on the first tensor's device."""
    if not tensors:
        return torch.zeros(0, dtype=torch.int64)
    cells = [torch.empty((), dtype=torch.int64, device=t.device) for t in tensors]
    Hasher(tensors).into(cells)
    device = cells[0].device
    return torch.stack([c.to(device) for c in cells])


def tensor_hash(tensor: torch.Tensor) -> torch.Tensor:
    """A 0-d int64 tensor, on ``tensor``'s device, that changes when any bit of it does."""
    return tensor_hashes([tensor])[0]


def hash_into(tensors: Sequence[torch.Tensor], out: torch.Tensor) -> None:
    """``tensor_hashes(tensors)`` written into ``out`` (a 1-d int64 tensor on their device)."""
    Hasher(tensors).into(out.unbind(0))


class WeightRecorder(Callback):
    """The hashes of every parameter after every optimizer step (``weights.npy``).

    One row per optimizer step (``StepRows``, the rows of ``losses.npy``: with gradient
    accumulation only the batches that step, with several optimizers one row after the batch's
    steps): ``pl_module.parameters()`` in ``named_parameters()`` order, hashed into a
    preallocated [steps_in_epoch, n_params] int64 buffer on the device at the end of the batch
    that stepped (``on_train_batch_end``, after its optimizer steps), so no step waits for the
    host; the buffer is copied to the host once per epoch, as the losses are. A run
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
        self.clock = StepRows()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.clock.start(trainer)
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
        if self.clock.end_batch(trainer, batch_loss(outputs)[0] is not None):
            self.hash_row()

    def hash_row(self) -> None:
        """Hash the parameters into the next row (no host sync)."""
        if self._hasher is None:
            return
        if self._written >= len(self._cells):
            self._grow(self._written + 1)
        self._hasher.into(self._cells[self._written])
        self._written += 1

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.clock.end_epoch():  # losses no optimizer step followed: a row of their own
            self.hash_row()
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
