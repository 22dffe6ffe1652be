"""Bitwise hashes of tensors on their device: one flipped bit changes the hash.

``torch.hash_tensor`` (an XOR reduction of every element upcast to 64 bits) where the image's
torch has it; older torch gets a position-weighted sum of the same 64-bit patterns, wrapping
modulo 2**64, which also changes with any single flipped bit (the weights are odd). Either way
the hash is a 0-d int64 tensor on the tensor's device, so hashing adds no host sync; the host
reads the bits as unsigned 64-bit integers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: Which hash a run used: recorded, since the two kinds are not comparable with each other.
HASH_KIND = "hash_tensor" if hasattr(torch, "hash_tensor") else "weighted_sum"

_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # odd, as a signed 64-bit integer


def _bits64(tensor: torch.Tensor) -> torch.Tensor:
    """Every element as a 64-bit pattern (floats widened exactly to float64)."""
    flat = tensor.detach().reshape(-1)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    if flat.is_floating_point():
        return flat.to(torch.float64).view(torch.int64)
    return flat.to(torch.int64)


def _weighted_sum(tensor: torch.Tensor) -> torch.Tensor:
    bits = _bits64(tensor)
    odd = torch.arange(bits.numel(), device=bits.device, dtype=torch.int64) * 2 + 1
    return (bits * odd * _GOLDEN).sum()


def tensor_hash(tensor: torch.Tensor) -> torch.Tensor:
    """A 0-d int64 tensor, on ``tensor``'s device, that changes when any bit of it does."""
    if HASH_KIND == "hash_tensor":
        flat = tensor.detach()
        if flat.is_complex():
            flat = torch.view_as_real(flat)
        return torch.hash_tensor(flat).view(torch.int64)
    return _weighted_sum(tensor)


def tensor_hashes(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """One hash per tensor, as a 1-d int64 tensor on the first tensor's device."""
    return torch.stack([tensor_hash(t) for t in tensors])
