"""A cell's verdict from its runs: it *reproduces*, *diverges*, or is *unknown*.

The report says no more than the runs showed:

- **unknown** when any repeat failed or is missing, when fewer than two repeats are ok, when a
  run has zero steps, when a run's losses are not finite, or when a run is corrupt (its
  ``losses.npy`` does not load, has another shape than recorded, or does not hash to the
  recorded digest; or its ``run.json`` is unreadable). ``unknown_because`` says which.
  A copy that ``harness merge`` kept under ``conflicts/`` and whose record says ok is held to
  the same checks; a copy whose record says failed is an attempt that was redone (as
  ``harness run`` redoes failed runs on resume) and is listed, not judged;
- otherwise every run is ok, verified and finite, at least two of them: the cell
  **reproduces** when all of them (conflict copies included) have one trajectory digest and one
  final-weights digest, and **diverges** when they do not. Digests are compared first (each
  run's ``losses.npy`` was verified against its digest when it was read, once); the losses
  are compared only where digests differ, to locate the first divergence (the first step
  whose float32 bits differ in any rank). Runs that ran on different machines
  (``provenance.machine``) are still compared, and the verdict's words say so: the machines,
  not the settings, may have made the difference.
"""

from __future__ import annotations

import logging
import statistics

from harness.contract.machine import machines_differ
from harness.report.report_data import (
    DIVERGES,
    FAILED,
    MISSING,
    OK,
    REPRODUCES,
    UNKNOWN,
    CellReport,
    Divergence,
    RunResult,
    WeightsDivergence,
)
from harness.report.summaries import report_settings
from harness.report.trajectories import (
    comparable_weights,
    divergences_from,
    weights_divergence_from,
)
from harness.results.manifest import ManifestCell
from harness.results.run_reader import RecordError

log = logging.getLogger(__name__)


def analyze_cell(
    cell: ManifestCell, runs: list[RunResult], copies: list[RunResult] | None = None
) -> CellReport:
    """The verdict of one cell from its repeats (``runs``, one per repeat) and the conflict
    copies ``harness merge`` kept of them (``copies``)."""
    copies = copies or []
    ok = [r for r in runs if r.status == OK]
    ok_copies = [c for c in copies if c.status == OK]
    trusted = ok + ok_copies
    because = unknown_because(runs, copies)
    distinct = len({r.trajectory for r in trusted})
    divergences, because = _loss_divergences(trusted, distinct, because)
    first = _first(divergences)
    init_equal = _all_equal([r.init_weights for r in trusted]) if len(trusted) > 1 else None
    final_equal = _all_equal([r.final_weights for r in trusted]) if len(trusted) > 1 else None
    weights, compared = _weights_divergence(trusted, agree=distinct == 1 and bool(final_equal))
    if because is not None:
        verdict, reproducible = UNKNOWN, None
    elif distinct == 1 and final_equal:
        verdict, reproducible = REPRODUCES, True
    else:
        verdict, reproducible = DIVERGES, False
    machines = machines_differ((r.machine for r in trusted), with_gpus=True)
    detail = describe(verdict, because, distinct, final_equal, first, ok_copies)
    if machines is not None and verdict == DIVERGES:
        detail += f"; its repeats {machines}, which may be the cause"
    detail += user_seeds_note(trusted)
    accs = [r.val_acc for r in ok if r.val_acc is not None]
    secs = [r.seconds_per_epoch for r in ok if r.seconds_per_epoch is not None]
    return CellReport(
        id=cell.id,
        name=cell.name,
        settings=report_settings(cell.settings),
        repeats=len(runs),
        ok_runs=len(ok),
        distinct_trajectories=distinct,
        verdict=verdict,
        reproducible=reproducible,
        unknown_because=because,
        first_divergence=first,
        divergences=divergences,
        init_equal=init_equal,
        final_equal=final_equal,
        val_acc_mean=statistics.fmean(accs) if accs else None,
        val_acc_sd=statistics.stdev(accs) if len(accs) > 1 else None,
        seconds_per_epoch=statistics.fmean(secs) if secs else None,
        detail=detail,
        runs=runs,
        conflict_copies=copies,
        weights_divergence=weights,
        weights_compared=compared,
        machines_differ=machines,
        control=cell.control,
    )


def _loss_divergences(
    trusted: list[RunResult], distinct: int, because: str | None
) -> tuple[list[Divergence], str | None]:
    """Where each trusted run's losses part from the first's, and why the cell has no verdict
    (``because``, or a losses file that changed since it was verified)."""
    if not trusted or distinct <= 1:
        return [], because
    ref = trusted[0]
    others = [r for r in trusted[1:] if r.trajectory != ref.trajectory]
    try:
        return divergences_from(ref, others), because
    except RecordError as exc:  # a file changed since it was verified
        return [], because or f"losses.npy unreadable on a second read ({exc})"


def _weights_divergence(
    trusted: list[RunResult], agree: bool
) -> tuple[WeightsDivergence | None, bool]:
    """Where the trusted runs' parameters first differ, and whether they were compared: only
    where their digests disagree (runs with one trajectory and one final-weights digest are not
    read again) and every run recorded comparable hashes. A weights.npy that does not read as
    its record says leaves them uncompared, and the verdict as the losses make it."""
    if agree or not comparable_weights(trusted):
        return None, False
    try:
        return weights_divergence_from(trusted), True
    except RecordError as exc:
        log.warning("parameter hashes not compared: %s", exc)
        return None, False


def unknown_because(runs: list[RunResult], copies: list[RunResult]) -> str | None:
    """Why the runs give the cell no verdict, in words; None when they give one."""
    n = len(runs)
    failed = missing = 0
    untrusted: list[str] = []  # runs whose record says ok (or is unreadable) but do not hold
    for r in runs:
        if r.status == MISSING:
            missing += 1
        elif r.status == FAILED and r.recorded == "failed":
            failed += 1
        elif r.status != OK:
            untrusted.append(f"repeat {r.repeat}: {r.problem}")
    reasons = [f"{failed} of {n} repeats failed"] if failed else []
    reasons += [f"{missing} of {n} repeats missing"] if missing else []
    reasons += untrusted
    for c in copies:
        if c.recorded == "ok" and c.status != OK:
            reasons.append(f"repeat {c.repeat} (merge conflict copy {c.path}): {c.problem}")
    if n < 2 and not reasons:  # every repeat is ok, but there are not two of them
        reasons.append("one repeat: nothing to compare" if n == 1 else "no runs")
    return "; ".join(reasons) if reasons else None


def _first(divergences: list[Divergence]) -> Divergence | None:
    """The earliest divergence, with the largest |Δloss| and ULPs over all of them."""
    if not divergences:
        return None
    first = min(divergences, key=lambda d: d.step)
    deltas = [d.max_abs_delta for d in divergences if d.max_abs_delta is not None]
    ulps = [d.max_ulps for d in divergences if d.max_ulps is not None]
    return Divergence(
        repeat=first.repeat,
        step=first.step,
        epoch=first.epoch,
        batch=first.batch,
        max_abs_delta=max(deltas) if deltas else None,
        max_ulps=max(ulps) if ulps else None,
        shape_differs=first.shape_differs,
        copy=first.copy,
    )


def _all_equal(values: list[str | None]) -> bool:
    return None not in values and len(set(values)) == 1


def describe(
    verdict: str,
    because: str | None,
    distinct: int,
    final_equal: bool | None,
    first: Divergence | None,
    ok_copies: list[RunResult],
) -> str:
    """The cell's verdict in words."""
    if verdict == UNKNOWN:
        return f"no verdict: {because}"
    if verdict == REPRODUCES:
        extra = f" (with {len(ok_copies)} merge conflict copies)" if ok_copies else ""
        return f"reproduces bit for bit{extra}"
    if distinct == 1 and final_equal is False:
        return "identical losses, but the final weights differ"
    text = f"{distinct} distinct trajectories"
    if first is not None and first.epoch is not None:
        text += (
            f"; first divergence at epoch {first.epoch}, batch {first.batch} (step {first.step})"
        )
    if first is not None and first.copy is not None:
        text += f", in the merge conflict copy of repeat {first.repeat} ({first.copy})"
    return text


def user_seeds_note(runs: list[RunResult]) -> str:
    """``; your build function seeds ...`` where a run's build function seeded torch itself
    (``provenance.user_seed``): the cell's placement then has no effect on it; else ""."""
    seeds = sorted({r.user_seed for r in runs if r.user_seed is not None})
    if not seeds:
        return ""
    shown = ", ".join(str(s) for s in seeds)
    return (
        f"; your build function seeds the generator itself (torch's seed became {shown}), so "
        "placement has no effect there: remove that seeding to test the placement"
    )
