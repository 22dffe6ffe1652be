"""Trajectories compared bit for bit: where two runs' losses first differ, and by how much.

A trajectory is ``losses.npy``: float32 [steps, ranks]. Two steps are equal when their bits are,
so NaN equals NaN of the same bits and -0.0 differs from 0.0. Only runs whose losses were
verified (harness/report/folder_runs.py) are compared, with the array read then
(``RunResult.losses``, ``losses_of``): a report reads each ``losses.npy`` once.
"""

from __future__ import annotations

import numpy as np

from harness.report.report_data import Divergence, RunResult, WeightsDivergence
from harness.results.run_reader import load_losses, read_weight_hashes


def ulp_order(bits: np.ndarray) -> np.ndarray:
    """Map float32 bit patterns (as int32) to integers that count ULPs monotonically."""
    wide = bits.astype(np.int64)
    return np.where(wide < 0, np.int64(-(2**31)) - wide, wide)


def divergence(
    ref: np.ndarray, other: np.ndarray, repeat: int, epoch_starts: list[tuple[int, int]]
) -> Divergence | None:
    """First differing step (by bits) of two [steps, ranks] trajectories, or None if equal."""
    if ref.shape[1] != other.shape[1]:
        return Divergence(
            repeat=repeat,
            step=0,
            epoch=None,
            batch=None,
            max_abs_delta=None,
            max_ulps=None,
            shape_differs=True,
        )
    n = min(len(ref), len(other))
    a, b = ref[:n], other[:n]
    differs = (a.view("<i4") != b.view("<i4")).any(axis=1)
    if not differs.any():
        if len(ref) == len(other):
            return None
        epoch, batch = epoch_batch(n, epoch_starts)
        return Divergence(
            repeat=repeat,
            step=n,
            epoch=epoch,
            batch=batch,
            max_abs_delta=None,
            max_ulps=None,
            shape_differs=True,
        )
    step = int(np.argmax(differs))
    with np.errstate(invalid="ignore"):
        delta = np.abs(a.astype(np.float64) - b.astype(np.float64))
        max_abs = float(np.nanmax(delta)) if np.isfinite(delta).any() else float("nan")
    ulps = int(np.abs(ulp_order(a.view("<i4")) - ulp_order(b.view("<i4"))).max())
    epoch, batch = epoch_batch(step, epoch_starts)
    return Divergence(
        repeat=repeat,
        step=step,
        epoch=epoch,
        batch=batch,
        max_abs_delta=max_abs,
        max_ulps=ulps,
        shape_differs=len(ref) != len(other),
    )


def first_weight_divergence(a: np.ndarray, b: np.ndarray) -> int | None:
    """The first step (row) at which two [steps, n_params] parameter-hash arrays differ, over
    their common length; None when those rows are equal."""
    n = min(len(a), len(b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"hash arrays of different widths: {a.shape} and {b.shape}")
    differs = (a[:n] != b[:n]).any(axis=1)
    return int(np.argmax(differs)) if differs.any() else None


def differing_parameters(a_row: np.ndarray, b_row: np.ndarray, names: list[str]) -> list[str]:
    """The names of the parameters whose hashes differ between two rows, in their order."""
    pairs = zip(names, a_row.tolist(), b_row.tolist(), strict=True)
    return [name for name, x, y in pairs if x != y]


def epoch_batch(step: int, epoch_starts: list[tuple[int, int]]) -> tuple[int | None, int | None]:
    """(epoch, batch within it) of a global step, from (epoch, first step) pairs."""
    found = None
    for epoch, first in epoch_starts:
        if first <= step:
            found = (epoch, step - first)
    return found if found else (None, None)


def losses_of(run: RunResult) -> np.ndarray:
    """A run's losses: those the report verified when it read the run (``RunResult.losses``);
    a RunResult made without them (by hand) has them read from its folder, CorruptRun when
    they cannot be."""
    return run.losses if run.losses is not None else load_losses(run.run_dir)


def divergences_from(ref: RunResult, others: list[RunResult]) -> list[Divergence]:
    """Where each of ``others`` first differs from the reference run (at its epochs), named by
    its repeat and, for a merge conflict copy, the copy's folder; runs that do not differ are
    left out. CorruptRun when a losses.npy cannot be read (``losses_of``)."""
    ref_losses = losses_of(ref)
    found = []
    for other in others:
        d = divergence(ref_losses, losses_of(other), other.repeat, ref.epoch_starts)
        if d is not None:
            d.copy = other.copy
            found.append(d)
    return found


def comparable_weights(runs: list[RunResult]) -> bool:
    """True when at least two runs all recorded parameter hashes of the same parameters with
    the same hash kind (so their ``weights.npy`` files can be compared row by row)."""
    if len(runs) < 2 or runs[0].weights_parameters is None:
        return False
    kind = (runs[0].weights_parameters, runs[0].weights_hash)
    return all((r.weights_parameters, r.weights_hash) == kind for r in runs[1:])


def weights_divergence_from(runs: list[RunResult]) -> WeightsDivergence | None:
    """The earliest step at which any of ``runs[1:]`` has other parameter hashes than
    ``runs[0]`` (which must be ``comparable_weights``), with the first parameter that differs
    there; None when all are equal over their common steps. RecordError when a weights.npy
    cannot be read as its record says."""
    ref = runs[0]
    names = ref.weights_parameters or []
    ref_rows = read_weight_hashes(ref.run_dir, ref.steps, names)
    found: WeightsDivergence | None = None
    for run in runs[1:]:
        rows = read_weight_hashes(run.run_dir, run.steps, names)
        step = first_weight_divergence(ref_rows, rows)
        if step is None or (found is not None and found.step <= step):
            continue
        differ = differing_parameters(ref_rows[step], rows[step], names)
        epoch, batch = epoch_batch(step, ref.epoch_starts)
        found = WeightsDivergence(
            repeat=run.repeat,
            step=step,
            epoch=epoch,
            batch=batch,
            parameter=differ[0] if differ else None,
            copy=run.copy,
        )
    return found
