"""A cell's verdict from its repeats: does it reproduce, and where do its repeats diverge.

A cell is reproducible when every repeat finished ok with the same trajectory digest and the
same final-weights digest. losses.npy is read only where digests differ, to locate the first
divergence: the first step whose float32 bits differ in any rank.
"""

from __future__ import annotations

import statistics

from harness.layout import ManifestCell
from harness.report.model import CellReport, Divergence, RunResult
from harness.report.trajectories import divergences_from


def analyze_cell(cell: ManifestCell, runs: list[RunResult]) -> CellReport:
    ok = [r for r in runs if r.status == "ok"]
    distinct = len({r.trajectory for r in ok})
    divergences: list[Divergence] = []
    if ok and distinct > 1:
        ref = ok[0]
        others = [(r.repeat, r.run_dir) for r in ok[1:] if r.trajectory != ref.trajectory]
        divergences = divergences_from(ref.run_dir, ref.epoch_starts, others)
    first = _first(divergences)
    init_equal = _all_equal([r.init_weights for r in ok]) if len(ok) > 1 else None
    final_equal = _all_equal([r.final_weights for r in ok]) if len(ok) > 1 else None
    if len(runs) < 2:
        reproducible = None
    else:
        reproducible = len(ok) == len(runs) and distinct == 1 and bool(final_equal)
    accs = [r.val_acc for r in ok if r.val_acc is not None]
    secs = [r.seconds_per_epoch for r in ok if r.seconds_per_epoch is not None]
    return CellReport(
        id=cell.id,
        name=cell.name,
        settings=cell.settings,
        repeats=len(runs),
        ok_runs=len(ok),
        distinct_trajectories=distinct,
        reproducible=reproducible,
        first_divergence=first,
        divergences=divergences,
        init_equal=init_equal,
        final_equal=final_equal,
        val_acc_mean=statistics.fmean(accs) if accs else None,
        val_acc_sd=statistics.stdev(accs) if len(accs) > 1 else None,
        seconds_per_epoch=statistics.fmean(secs) if secs else None,
        verdict=verdict(len(runs), len(ok), distinct, reproducible, final_equal, first),
        runs=runs,
    )


def _first(divergences: list[Divergence]) -> Divergence | None:
    """The earliest divergence, with the largest |Δloss| and ULPs over all of them."""
    if not divergences:
        return None
    first = min(divergences, key=lambda d: d.step)
    deltas = [d.max_abs_delta for d in divergences if d.max_abs_delta is not None]
    ulps = [d.max_ulps for d in divergences if d.max_ulps is not None]
    return Divergence(
        first.repeat,
        first.step,
        first.epoch,
        first.batch,
        max(deltas) if deltas else None,
        max(ulps) if ulps else None,
        first.shape_differs,
    )


def _all_equal(values: list[str | None]) -> bool:
    return None not in values and len(set(values)) == 1


def verdict(
    repeats: int,
    ok: int,
    distinct: int,
    reproducible: bool | None,
    final_equal: bool | None,
    first: Divergence | None,
) -> str:
    """The cell's verdict in words."""
    if ok < repeats:
        return f"{repeats - ok} of {repeats} runs did not finish"
    if reproducible is None:
        return "one repeat: nothing to compare"
    if reproducible:
        return "reproduces bit for bit"
    if distinct == 1 and final_equal is False:
        return "identical losses, but the final weights differ"
    if first is not None and first.epoch is not None:
        return (
            f"{distinct} distinct trajectories; first divergence at epoch {first.epoch}, "
            f"batch {first.batch} (step {first.step})"
        )
    return f"{distinct} distinct trajectories"
