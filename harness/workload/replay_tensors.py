"""The tensors a replay looks at, hashed: the training state (parameters, then each optimizer's
state tensors), hashes as 16 hex digits, tensors' shapes and dtypes, and host copies of
operations' outputs for the host's |Δ| and ULPs (harness/workload/replay.py uses them)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from pytorch_lightning import LightningModule
from torch.utils._pytree import tree_leaves

from harness.workload.weights import tensor_hash, tensor_hashes


def hex64(value: int) -> str:
    return f"{value & 0xFFFFFFFFFFFFFFFF:016x}"


def hash_text(tensor: torch.Tensor) -> str | None:
    try:
        return hex64(int(tensor_hash(tensor).item()))
    except (RuntimeError, TypeError):  # a dtype the hash does not take
        return None


def tensors_of(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]


def describe(tensors: Iterable[torch.Tensor], hashes: list[str | None]) -> list[dict[str, Any]]:
    return [
        {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "hash": h}
        for t, h in zip(tensors, hashes, strict=True)
    ]


def training_state(pl_module: LightningModule, optimizers: Iterable[Any]) -> list[tuple[str, Any]]:
    """The parameters, then each optimizer's state tensors (``model.1.weight:exp_avg``): what
    the next step starts from, so a difference that the weights do not show yet (Adam's first
    update is about ``lr * sign(grad)``) shows in the state."""
    names = {id(p): n for n, p in pl_module.named_parameters()}
    state: list[tuple[str, Any]] = list(pl_module.named_parameters())
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for param in group["params"]:
                entries = optimizer.state.get(param, {})
                for key in sorted(entries):
                    if isinstance(entries[key], torch.Tensor):
                        state.append((f"{names.get(id(param), '?')}:{key}", entries[key]))
    return state


def state_hashes(state: list[tuple[str, Any]]) -> torch.Tensor:
    """The state's tensors' hashes, on the device (empty: an int64 tensor of none)."""
    if not state:
        return torch.zeros(0, dtype=torch.int64)
    return tensor_hashes([t for _, t in state])


def state_rows(
    names: list[str], steps: list[tuple[list[int], torch.Tensor]]
) -> list[list[str | None]]:
    """One row per step over every name: the tensor's hash, or None where it did not exist."""
    rows: list[list[str | None]] = []
    for columns, hashes in steps:
        row: list[str | None] = [None] * len(names)
        for column, value in zip(columns, hashes.cpu().tolist(), strict=True):
            row[column] = hex64(int(value))
        rows.append(row)
    return rows


def pointers_of(tensors: list[torch.Tensor]) -> list[int]:
    pointers = []
    for tensor in tensors:
        try:
            pointers.append(tensor.data_ptr())
        except RuntimeError:  # a tensor without storage
            pointers.append(-1)
    return pointers


def host_copy(tensor: torch.Tensor) -> np.ndarray | None:
    """The output as numpy, for the host's |Δ| and ULPs (bfloat16 and half widened to float32)."""
    try:
        value = tensor.detach()
        if value.dtype in (torch.bfloat16, torch.float16):
            value = value.float()
        return value.cpu().numpy().copy()
    except (RuntimeError, TypeError):
        return None
