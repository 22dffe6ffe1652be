"""Does the noise matter? For each diverging cell, its repeats' spread in a final metric beside
the spread a change of seed makes, with the two-sided F-test of equal variances.

A cell whose repeats differ in the bits is not reproducible, but a user mostly cares whether
that difference matters: if the repeats spread far less than the seeds do, the noise is lost in
what any change of seed does anyway. scipy is imported only where a cell has something to
test, so the report of a folder without diverging cells does not pay for it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from harness.report.answer_data import ALPHA, MIN_RUNS, CellNoise, NoiseTest, Spread
from harness.report.report_data import DIVERGES, OK, CellReport, RunResult

#: The final metrics compared (``RunResult`` attributes), in the report's order.
METRICS = ("val_loss", "val_acc")
#: The most runs per side ``needed_runs`` looks at.
MAX_RUNS = 1000
_NO_SEED = object()  # a cell without a ``seed`` setting


def noise(cells: list[CellReport], alpha: float = ALPHA) -> list[CellNoise]:
    """The noise tests of each diverging cell (control cells left out) with at least 2 ok runs,
    in cell order; a cell none of whose runs has a metric gets no entry."""
    out: list[CellNoise] = []
    for cell in cells:
        ok = _ok_runs(cell)
        if cell.control or cell.verdict != DIVERGES or len(ok) < 2:
            continue
        seed_cells = _seed_cells(cell, cells)
        tests = [_test(m, ok, seed_cells, alpha) for m in METRICS if _values(ok, m)]
        if tests:
            out.append(
                CellNoise(
                    cell=cell.name,
                    cell_id=cell.id,
                    image=str(cell.settings.get("image")),
                    seed_cells=[c.name for c in seed_cells],
                    tests=tests,
                )
            )
    return out


def _ok_runs(cell: CellReport) -> list[RunResult]:
    """The cell's ok runs in ``cells/`` (conflict copies are not repeats of their own)."""
    return [r for r in cell.runs if r.status == OK]


def _values(runs: Sequence[RunResult], metric: str) -> list[float]:
    return [float(v) for r in runs if (v := getattr(r, metric)) is not None]


def _seed_cells(cell: CellReport, cells: list[CellReport]) -> list[CellReport]:
    """The cells (controls left out) whose settings equal ``cell``'s but for ``seed``, itself
    included, in cell order: what a change of seed alone does."""

    def rest(c: CellReport) -> dict[str, Any]:
        return {k: v for k, v in c.settings.items() if k != "seed"}

    mine = rest(cell)
    return [c for c in cells if c is cell or (not c.control and rest(c) == mine)]


def _seed_values(metric: str, seed_cells: list[CellReport]) -> list[float]:
    """One value per distinct seed: the metric of the first ok run of its first cell that has
    it."""
    seen: dict[Any, float] = {}
    for c in seed_cells:
        seed = c.settings.get("seed", _NO_SEED)
        values = _values(_ok_runs(c), metric)
        if values and seed not in seen:
            seen[seed] = values[0]
    return list(seen.values())


def _spread(values: list[float]) -> Spread:
    std = statistics.stdev(values) if len(values) > 1 else None
    return Spread(n=len(values), min=min(values), max=max(values), std=std)


def _test(
    metric: str, runs: list[RunResult], seed_cells: list[CellReport], alpha: float
) -> NoiseTest:
    """One metric's test (the verdicts: ``answer_data.NoiseTest``)."""
    values = _values(runs, metric)
    seed_values = _seed_values(metric, seed_cells)
    spread = _spread(values)
    test = NoiseTest(
        metric=metric,
        noise=spread,
        seeds=None,
        statistic=None,
        p_value=None,
        alpha=alpha,
        needed_runs=None,
        verdict="no_seed_axis",
    )
    if len(seed_values) < 2:
        test.sentence = f"{_head(metric, spread)}; {_NO_AXIS}"
        return test
    test.seeds = _spread(seed_values)
    var_noise = statistics.variance(values) if len(values) > 1 else None
    var_seeds = statistics.variance(seed_values)
    if var_noise == 0 and var_seeds == 0:
        test.verdict = "no_spread"
        test.sentence = (
            f"{metric}: {_num(values[0])} over all {len(values)} repeats and "
            f"{len(seed_values)} seeds: no spread to compare"
        )
        return test
    if var_noise is not None:
        test.statistic, test.p_value = _f_test(var_noise, var_seeds, len(values), len(seed_values))
        test.needed_runs = needed_runs(test.statistic, alpha)
    test.verdict = _verdict(test, len(values), len(seed_values))
    test.sentence = _sentence(test)
    return test


def _f_test(var_noise: float, var_seeds: float, n_noise: int, n_seeds: int) -> tuple[float, float]:
    """F = var(noise) / var(seeds) and its two-sided p (0 where either variance is 0)."""
    if var_seeds == 0:
        return math.inf, 0.0
    if var_noise == 0:
        return 0.0, 0.0
    ratio = var_noise / var_seeds
    return ratio, two_sided_p(ratio, n_noise - 1, n_seeds - 1)


def two_sided_p(ratio: float, dfn: int, dfd: int) -> float:
    """The two-sided p of an F statistic: twice its smaller tail, at most 1."""
    from scipy.stats import f as f_dist  # type: ignore[import-untyped]

    tail = min(float(f_dist.cdf(ratio, dfn, dfd)), float(f_dist.sf(ratio, dfn, dfd)))
    return min(1.0, 2.0 * tail)


def needed_runs(ratio: float | None, alpha: float = ALPHA) -> int | None:
    """The fewest runs per side (2 to ``MAX_RUNS``; df n - 1 each) at which ``ratio`` would be
    significant at ``alpha``. None where none would, where the ratio is 1, or where it is 0 or
    infinite (a side without spread: any number of runs tells it apart)."""
    if ratio is None or ratio == 1 or ratio == 0 or not math.isfinite(ratio):
        return None
    import numpy as np
    from scipy.stats import f as f_dist

    n = np.arange(2, MAX_RUNS + 1)
    df = n - 1
    p = 2.0 * np.minimum(f_dist.cdf(ratio, df, df), f_dist.sf(ratio, df, df))
    hits = np.flatnonzero(p < alpha)
    return int(n[hits[0]]) if hits.size else None


def _verdict(test: NoiseTest, n_noise: int, n_seeds: int) -> str:
    if min(n_noise, n_seeds) < MIN_RUNS or test.statistic is None or test.p_value is None:
        return "not_enough_runs"
    if test.p_value < test.alpha:
        return "noise_smaller" if test.statistic < 1 else "noise_larger"
    return "same_spread"


_NO_AXIS = (
    "no seed axis to compare against: give the matrix one, e.g. `seed: [1, 2, 3]`, "
    "to tell whether this noise matters"
)


def _sentence(test: NoiseTest) -> str:
    """What the test found, in one line (its head: the two spreads)."""
    assert test.noise is not None and test.seeds is not None
    head = f"{_head(test.metric, test.noise)}, the seeds {_std(test.seeds)} ({test.seeds.n} seeds)"
    alpha, p = f"{test.alpha:g}", _p(test.p_value)
    if test.verdict == "not_enough_runs":
        ratio = f" (this ratio would need {test.needed_runs} a side)" if test.needed_runs else ""
        return (
            f"{head}: not enough runs: {test.noise.n} repeats and {test.seeds.n} seeds; "
            f"the test needs {MIN_RUNS} of each{ratio}"
        )
    if test.verdict in ("noise_smaller", "noise_larger"):
        side = "smaller" if test.verdict == "noise_smaller" else "larger"
        return f"{head}: the noise is {side} than a change of seed (F test, p = {p} < {alpha})"
    if test.needed_runs:
        more = f"about {test.needed_runs} runs a side would tell this ratio apart"
    else:
        more = f"no number of runs up to {MAX_RUNS} a side would tell this ratio apart"
    return f"{head}: the F test cannot tell them apart at {alpha} (p = {p}); {more}"


def _head(metric: str, spread: Spread) -> str:
    if spread.std is None:
        return f"{metric}: the repeats {_num(spread.min)} (1 run)"
    low, high = _pair(spread.min, spread.max)
    return (
        f"{metric}: the repeats spread {_std(spread)} (std; {low} to {high} over {spread.n} runs)"
    )


def _std(spread: Spread) -> str:
    return "-" if spread.std is None else _num(spread.std)


def _num(x: float) -> str:
    """4 decimals where that reads well, 3 significant digits for the very small or large."""
    if x == 0:
        return "0"
    return f"{x:.4f}" if 1e-3 <= abs(x) < 1e4 else f"{x:.3g}"


def _pair(low: float, high: float) -> tuple[str, str]:
    """Two values with enough decimals to tell them apart (a few ULPs of noise included)."""
    for digits in range(4, 18):
        a, b = f"{low:.{digits}f}", f"{high:.{digits}f}"
        if a != b or low == high:
            return a, b
    return repr(low), repr(high)


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"
