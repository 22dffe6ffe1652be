"""Trajectories compared bit for bit: where two runs' losses first differ, and by how much.

A trajectory is ``losses.npy``: float32 [steps, ranks]. Two steps are equal when their bits are,
so NaN equals NaN of the same bits and -0.0 differs from 0.0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.contract import LOSSES_FILE
from harness.report.model import Divergence


def load_losses(run_dir: Path) -> np.ndarray:
    losses = np.load(run_dir / LOSSES_FILE, allow_pickle=False)
    return np.ascontiguousarray(losses.reshape(losses.shape[0], -1), dtype="<f4")


def ulp_order(bits: np.ndarray) -> np.ndarray:
    """Map float32 bit patterns (as int32) to integers that count ULPs monotonically."""
    wide = bits.astype(np.int64)
    return np.where(wide < 0, np.int64(-(2**31)) - wide, wide)


def divergence(
    ref: np.ndarray, other: np.ndarray, repeat: int, epoch_starts: list[tuple[int, int]]
) -> Divergence | None:
    """First differing step (by bits) of two [steps, ranks] trajectories, or None if equal."""
    if ref.shape[1] != other.shape[1]:
        return Divergence(repeat, 0, None, None, None, None, shape_differs=True)
    n = min(len(ref), len(other))
    a, b = ref[:n], other[:n]
    differs = (a.view("<i4") != b.view("<i4")).any(axis=1)
    if not differs.any():
        if len(ref) == len(other):
            return None
        return Divergence(repeat, n, *epoch_batch(n, epoch_starts), None, None, True)
    step = int(np.argmax(differs))
    with np.errstate(invalid="ignore"):
        delta = np.abs(a.astype(np.float64) - b.astype(np.float64))
        max_abs = float(np.nanmax(delta)) if np.isfinite(delta).any() else float("nan")
    ulps = int(np.abs(ulp_order(a.view("<i4")) - ulp_order(b.view("<i4"))).max())
    epoch, batch = epoch_batch(step, epoch_starts)
    return Divergence(repeat, step, epoch, batch, max_abs, ulps, len(ref) != len(other))


def epoch_batch(step: int, epoch_starts: list[tuple[int, int]]) -> tuple[int | None, int | None]:
    """(epoch, batch within it) of a global step, from (epoch, first step) pairs."""
    found = None
    for epoch, first in epoch_starts:
        if first <= step:
            found = (epoch, step - first)
    return found if found else (None, None)


def divergences_from(
    ref_dir: Path, ref_starts: list[tuple[int, int]], others: list[tuple[int, Path]]
) -> list[Divergence]:
    """Where each of ``others`` ((repeat, run folder)) first differs from the reference run
    (``ref_starts``: its (epoch, first step) pairs); runs that do not differ are left out."""
    ref = load_losses(ref_dir)
    found = (divergence(ref, load_losses(d), k, ref_starts) for k, d in others)
    return [d for d in found if d is not None]
