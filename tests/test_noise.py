"""Does the noise matter (harness/report/noise.py): a diverging cell's repeats' spread against
the seeds', on hand-made run records. The F statistic and its p-value are checked against an
independent computation here (statistics.variance; the F distribution's CDF from the
incomplete beta function's power series in numpy), never against scipy."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_report import base_losses, make_cell, make_results, write_run

from harness.report import analyze
from harness.report.answer_data import ALPHA, MIN_RUNS
from harness.report.noise import MAX_RUNS, needed_runs, noise


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta I_x(a, b) from its power series: B(x; a, b) is the sum
    over n of (1 - b)_n / n! * x^(a + n) / (a + n); x above 1/2 by I_x(a, b) = 1 - I_1-x(b, a).
    Exact enough for the small degrees of freedom these tests use (b up to ~50)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > 0.5:
        return 1.0 - _betainc(b, a, 1.0 - x)
    n = np.arange(600, dtype=float)
    coef = np.concatenate([[1.0], np.cumprod((n[:-1] + 1 - b) / (n[:-1] + 1))])
    series = float(np.sum(coef * x**n / (a + n)))
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return math.exp(a * math.log(x) - log_beta) * series


def f_cdf(x: float, d1: int, d2: int) -> float:
    """The F distribution's CDF: I_{d1 x / (d1 x + d2)}(d1 / 2, d2 / 2)."""
    return _betainc(d1 / 2, d2 / 2, d1 * x / (d1 * x + d2))


def f_sf(x: float, d1: int, d2: int) -> float:
    return _betainc(d2 / 2, d1 / 2, d2 / (d1 * x + d2))


def two_sided(ratio: float, d1: int, d2: int) -> float:
    return min(1.0, 2 * min(f_cdf(ratio, d1, d2), f_sf(ratio, d1, d2)))


def independent_f(noise_values: list[float], seed_values: list[float]) -> tuple[float, float]:
    ratio = statistics.variance(noise_values) / statistics.variance(seed_values)
    return ratio, two_sided(ratio, len(noise_values) - 1, len(seed_values) - 1)


def independent_needed(ratio: float, limit: int = 200) -> int | None:
    return next((n for n in range(2, limit) if two_sided(ratio, n - 1, n - 1) < ALPHA), None)


@pytest.mark.parametrize("x", [0.01, 0.3, 1.0, 2.5, 40.0])
@pytest.mark.parametrize("d2", [1, 2, 5, 12])
def test_the_independent_f_cdf_matches_its_closed_forms(x: float, d2: int):
    """The reference itself: with d1 = 2 the CDF is 1 - (1 + 2x / d2)^(-d2 / 2)."""
    assert f_cdf(x, 2, d2) == pytest.approx(1 - (1 + 2 * x / d2) ** (-d2 / 2), rel=1e-12)
    assert f_sf(x, 2, d2) == pytest.approx((1 + 2 * x / d2) ** (-d2 / 2), rel=1e-10)
    # d1 = d2 = 1: the CDF is (2 / pi) atan(sqrt(x))
    assert f_cdf(x, 1, 1) == pytest.approx(2 / math.pi * math.atan(math.sqrt(x)), rel=1e-12)


def build(root: Path, cells: list[tuple[dict, list[float], list[float] | None]]):
    """One cell per entry: (cell, val_acc per repeat, val_loss per repeat or None). A cell
    with distinct values gets distinct trajectories (it diverges); equal ones reproduce."""
    repeats = max(len(accs) for _, accs, _ in cells)
    make_results(root, [c for c, _, _ in cells], repeats=repeats)
    for cell, accs, losses in cells:
        diverges = len(set(accs)) > 1 or len(set(losses or [])) > 1
        for k, acc in enumerate(accs):
            traj = base_losses()
            if diverges:
                traj[10 + k, 0] += np.float32(0.01 * k)
            val_loss = losses[k] if losses is not None else None
            write_run(root, cell, k, traj, acc=acc, val_loss=val_loss)
    return analyze(root).cells


def seed_cells(values: dict[int, list[float]], **settings) -> list[tuple[dict, list, None]]:
    return [(make_cell(f"s{s}", seed=s, **settings), accs, None) for s, accs in values.items()]


def by_cell(result) -> dict:
    return {c.cell: c for c in result}


def test_too_few_runs_are_not_judged_but_say_what_the_ratio_would_need(tmp_path: Path):
    noise_acc, noise_loss = [0.90, 0.91], [0.30, 0.33]
    cells = [
        (make_cell("a", seed=1), noise_acc, noise_loss),
        (make_cell("b", seed=2), [0.80, 0.85], [0.50, 0.52]),
    ]
    found = by_cell(noise(build(tmp_path, cells)))
    a = found["a"]
    assert (a.seed_cells, a.image) == (["a", "b"], "local")
    assert a.cell_id == make_cell("a")["id"]
    assert [t.metric for t in a.tests] == ["val_loss", "val_acc"]
    acc = a.tests[1]
    assert acc.verdict == "not_enough_runs"
    assert (acc.noise.n, acc.seeds.n) == (2, 2)
    assert (acc.noise.min, acc.noise.max) == (0.90, 0.91)
    assert acc.noise.std == pytest.approx(statistics.stdev(noise_acc), rel=1e-12)
    ratio, p = independent_f(noise_acc, [0.90, 0.80])
    assert acc.statistic == pytest.approx(ratio, rel=1e-9)
    assert acc.p_value == pytest.approx(p, rel=1e-6)
    assert acc.needed_runs == independent_needed(ratio)
    assert f"not enough runs: 2 repeats and 2 seeds; the test needs {MIN_RUNS} of each" in (
        acc.sentence
    )
    assert f"(this ratio would need {acc.needed_runs} a side)" in acc.sentence
    loss = a.tests[0]
    ratio, p = independent_f(noise_loss, [0.30, 0.50])
    assert (loss.statistic, loss.p_value) == (
        pytest.approx(ratio, rel=1e-9),
        pytest.approx(p, rel=1e-6),
    )


SEEDS = {2: [0.85, 0.86, 0.84, 0.85], 3: [0.93, 0.92, 0.93, 0.94], 4: [0.80, 0.81, 0.80, 0.79]}
SEEDS |= {5: [0.95, 0.96, 0.95, 0.94]}


@pytest.mark.parametrize(
    ("mine", "verdict", "shown"),
    [
        ([0.9000, 0.9010, 0.9005, 0.9012], "noise_smaller", "0.9000 to 0.9012"),
        ([0.9, 0.9000000001, 0.9, 0.9000000003], "noise_smaller", "0.9000000000 to 0.9000000003"),
        ([0.90, 0.93, 0.86, 0.91], "same_spread", "0.8600 to 0.9300"),
        ([0.90, 0.40, 0.99, 0.30], "noise_larger", "0.3000 to 0.9900"),
    ],
)
def test_enough_runs_are_judged_by_the_f_test(
    tmp_path: Path, mine: list[float], verdict: str, shown: str
):
    cells = [(make_cell("s1", seed=1), mine, None), *seed_cells(SEEDS)]
    found = by_cell(noise(build(tmp_path, cells)))
    test = found["s1"].tests[0]
    assert [t.metric for t in found["s1"].tests] == ["val_acc"]  # no run has a val_loss
    firsts = [mine[0]] + [v[0] for v in SEEDS.values()]
    ratio, p = independent_f(mine, firsts)
    assert test.verdict == verdict
    assert test.statistic == pytest.approx(ratio, rel=1e-9)
    assert test.p_value == pytest.approx(p, rel=1e-6)
    assert (p < ALPHA) == (verdict != "same_spread")
    assert (test.noise.n, test.seeds.n) == (4, 5)
    assert test.seeds.std == pytest.approx(statistics.stdev(firsts), rel=1e-12)
    if verdict == "same_spread":
        assert test.needed_runs == independent_needed(ratio)
        assert test.needed_runs is not None and test.needed_runs > 5
        assert "cannot tell them apart at 0.05" in test.sentence
        assert f"about {test.needed_runs} runs a side would tell this ratio apart" in test.sentence
    else:
        side = "smaller" if verdict == "noise_smaller" else "larger"
        assert f"the noise is {side} than a change of seed (F test, p = " in test.sentence
    assert test.sentence.startswith("val_acc: the repeats spread ")
    assert f"(std; {shown} over 4 runs)" in test.sentence
    assert "over 4 runs), the seeds " in test.sentence and "(5 seeds)" in test.sentence


def test_without_a_seed_axis_there_is_nothing_to_compare(tmp_path: Path):
    cells = [
        (make_cell("a", seed=1), [0.90, 0.91, 0.92], None),
        # another seed, but another placement too: not a change of seed alone
        (make_cell("b", seed=2, placement="none"), [0.80, 0.85, 0.7], None),
    ]
    found = by_cell(noise(build(tmp_path, cells)))
    test = found["a"].tests[0]
    assert found["a"].seed_cells == ["a"]
    assert (test.verdict, test.seeds, test.statistic, test.p_value) == (
        "no_seed_axis",
        None,
        None,
        None,
    )
    assert test.noise.n == 3
    assert "`seed: [1, 2, 3]`" in test.sentence


def test_equal_metrics_everywhere_have_no_spread(tmp_path: Path):
    cells = [
        (make_cell("a", seed=1), [0.9, 0.9, 0.9], [0.3, 0.31, 0.3]),
        *seed_cells({2: [0.9, 0.9, 0.9], 3: [0.9, 0.9, 0.9]}),
    ]
    cell = noise(build(tmp_path, cells))[0]
    loss, acc = cell.tests
    assert (cell.cell, acc.verdict, acc.statistic, acc.p_value) == ("a", "no_spread", None, None)
    assert "no spread to compare" in acc.sentence
    assert loss.verdict == "no_seed_axis"  # the seed cells recorded no val_loss


def test_control_cells_are_left_out_on_both_sides(tmp_path: Path):
    cells = [
        (make_cell("a", seed=1), [0.90, 0.91, 0.92], None),
        *seed_cells({2: [0.80, 0.81, 0.8], 3: [0.7, 0.72, 0.71]}),
    ]
    reports = build(tmp_path, cells)
    control = next(c for c in reports if c.name == "s3")
    control.control = True
    found = by_cell(noise(reports))
    assert set(found) == {"a", "s2"}
    assert found["a"].seed_cells == ["a", "s2"]
    assert found["a"].tests[0].seeds.n == 2


def test_only_diverging_cells_get_an_entry_and_reproducing_ones_still_count_as_seeds(
    tmp_path: Path,
):
    cells = [
        (make_cell("a", seed=1), [0.90, 0.91, 0.92], None),
        *seed_cells({2: [0.8, 0.8, 0.8], 3: [0.7, 0.7, 0.7], 4: [0.85, 0.85, 0.85]}),
    ]
    reports = build(tmp_path, cells)
    assert [c.verdict for c in reports] == ["diverges", "reproduces", "reproduces", "reproduces"]
    result = noise(reports)
    assert [c.cell for c in result] == ["a"]
    assert result[0].seed_cells == ["a", "s2", "s3", "s4"]
    test = result[0].tests[0]
    ratio, p = independent_f([0.90, 0.91, 0.92], [0.90, 0.8, 0.7, 0.85])
    assert (test.statistic, test.p_value) == (
        pytest.approx(ratio, rel=1e-9),
        pytest.approx(p, rel=1e-6),
    )
    assert noise([c for c in reports if c.name != "a"]) == []


def test_only_ok_runs_count(tmp_path: Path):
    """A run that is not ok (here: one a diverging cell's verdict came to hold beside its ok
    runs) is no repeat, whatever val_acc its record says."""
    mine = [0.90, 0.91, 0.92]
    reports = build(tmp_path, [(make_cell("a", seed=1), mine, None)])
    cell = reports[0]
    cell.runs.append(replace(cell.runs[0], repeat=3, status="failed", val_acc=0.1))
    test = noise(reports)[0].tests[0]
    assert (test.noise.n, test.noise.min) == (3, 0.90)
    cell.runs = [cell.runs[0], *(replace(r, status="failed") for r in cell.runs[1:])]
    assert noise(reports) == []  # fewer than 2 ok runs: nothing to spread


def test_a_folder_without_diverging_cells_does_not_import_scipy(tmp_path: Path):
    build(tmp_path, seed_cells({2: [0.8, 0.8, 0.8], 3: [0.7, 0.7, 0.7]}))
    code = (
        "import sys; from pathlib import Path; from harness.report import analyze; "
        "from harness.report.noise import noise; "
        "assert noise(analyze(Path(sys.argv[1])).cells) == []; "
        "assert 'scipy' not in sys.modules, 'scipy was imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_the_sentence_says_the_spreads_the_p_value_and_the_level(tmp_path: Path):
    """A std under 0.001 in 3 significant digits, one above it in 4 decimals."""
    mine = [0.9000, 0.9010, 0.9005, 0.9012]
    cells = [(make_cell("s1", seed=1), mine, None), *seed_cells(SEEDS)]
    test = noise(build(tmp_path, cells))[0].tests[0]
    firsts = [mine[0]] + [v[0] for v in SEEDS.values()]
    _, p = independent_f(mine, firsts)
    assert statistics.stdev(mine) == pytest.approx(0.000538, abs=5e-7)
    assert statistics.stdev(firsts) == pytest.approx(0.0611, abs=5e-5)
    assert test.sentence == (
        "val_acc: the repeats spread 0.000538 (std; 0.9000 to 0.9012 over 4 runs), the seeds "
        "0.0611 (5 seeds): the noise is smaller "
        f"than a change of seed (F test, p = {p:.2g} < 0.05)"
    )


def test_exactly_min_runs_on_each_side_are_judged(tmp_path: Path):
    mine = [0.90, 0.91, 0.92]
    assert len(mine) == MIN_RUNS
    cells = [(make_cell("a", seed=1), mine, None), *seed_cells({2: [0.5] * 3, 3: [0.7] * 3})]
    test = noise(build(tmp_path, cells))[0].tests[0]
    assert (test.noise.n, test.seeds.n) == (MIN_RUNS, MIN_RUNS)
    ratio, p = independent_f(mine, [0.90, 0.5, 0.7])
    assert p < ALPHA and ratio < 1
    assert test.verdict == "noise_smaller"


def test_repeats_equal_in_the_metric_beside_seeds_that_spread(tmp_path: Path):
    """The trajectories differ, the metric does not: the noise is smaller than any change of
    seed (F = 0, p = 0), and no number of runs is needed to tell it."""
    cells = [
        (make_cell("a", seed=1), [0.9, 0.9, 0.9], [0.30, 0.31, 0.32]),
        *seed_cells({2: [0.8, 0.8, 0.8], 3: [0.7, 0.7, 0.7]}),
    ]
    acc = noise(build(tmp_path, cells))[0].tests[1]
    assert (acc.metric, acc.verdict) == ("val_acc", "noise_smaller")
    assert (acc.statistic, acc.p_value, acc.needed_runs) == (0.0, 0.0, None)
    assert acc.sentence == (
        "val_acc: the repeats spread 0 (std; 0.9000 to 0.9000 over 3 runs), the seeds 0.1000 "
        "(3 seeds): the noise is smaller than a change of seed (F test, p = 0 < 0.05)"
    )


def test_repeats_that_spread_beside_seeds_that_do_not(tmp_path: Path):
    """Every seed gives one value and the repeats differ: the noise is larger (F infinite,
    p = 0), which no report.json number can hold: it is written as null."""
    cells = [
        (make_cell("a", seed=1), [0.9, 0.8, 0.7], None),
        *seed_cells({2: [0.9, 0.9, 0.9], 3: [0.9, 0.9, 0.9]}),
    ]
    test = noise(build(tmp_path, cells))[0].tests[0]
    assert (test.verdict, test.statistic, test.p_value) == ("noise_larger", math.inf, 0.0)
    assert test.needed_runs is None
    assert test.sentence.endswith(
        "the noise is larger than a change of seed (F test, p = 0 < 0.05)"
    )


def test_a_zero_ratio_with_too_few_seeds_says_no_number_of_runs(tmp_path: Path):
    cells = [
        (make_cell("a", seed=1), [0.9, 0.9, 0.9], [0.30, 0.31, 0.32]),
        *seed_cells({2: [0.8, 0.8, 0.8]}),
    ]
    acc = noise(build(tmp_path, cells))[0].tests[1]
    assert (acc.verdict, acc.statistic, acc.needed_runs) == ("not_enough_runs", 0.0, None)
    assert acc.sentence == (
        "val_acc: the repeats spread 0 (std; 0.9000 to 0.9000 over 3 runs), the seeds 0.0707 "
        f"(2 seeds): not enough runs: 3 repeats and 2 seeds; the test needs {MIN_RUNS} of each"
    )


def test_a_metric_one_repeat_recorded_is_a_spread_of_one_run(tmp_path: Path):
    """Two ok repeats, only one with a val_loss: one value, no variance, no test."""
    cells = [
        (make_cell("a", seed=1), [0.90, 0.91], [0.001, 0.31]),
        (make_cell("b", seed=2), [0.80, 0.82], [0.50, 0.52]),
        (make_cell("c", seed=3), [0.70, 0.72], [0.40, 0.42]),
    ]
    reports = build(tmp_path, cells)
    a = reports[0]
    a.runs[1] = replace(a.runs[1], val_loss=None)
    loss = noise(reports)[0].tests[0]
    assert (loss.metric, loss.noise.n, loss.noise.std, loss.noise.min) == (
        "val_loss",
        1,
        None,
        1e-3,
    )
    assert (loss.statistic, loss.p_value, loss.needed_runs) == (None, None, None)
    assert loss.verdict == "not_enough_runs"
    assert statistics.stdev([0.001, 0.5, 0.4]) == pytest.approx(0.2640, abs=5e-5)
    assert loss.sentence == (  # 0.001 itself in four decimals
        "val_loss: the repeats 0.0010 (1 run), the seeds 0.2640 (3 seeds): not enough runs: "
        f"1 repeats and 3 seeds; the test needs {MIN_RUNS} of each"
    )


def test_equal_spreads_give_a_p_value_of_exactly_one(tmp_path: Path):
    """F = 1 exactly: the p-value is 1, never above (twice a tail of one half may round up)."""
    cells = [
        (make_cell("a", seed=1), [0.90, 0.92], None),
        (make_cell("b", seed=2), [0.92, 0.93], None),
    ]
    test = noise(build(tmp_path, cells))[0].tests[0]
    assert (test.statistic, test.p_value, test.needed_runs) == (1.0, 1.0, None)
    assert "would need" not in test.sentence


@pytest.mark.parametrize(
    ("losses", "seeds"),
    [([1.0, 3.0, 5.0], [1.0, 3.0]), ([1.0, 2.0, 3.0], [1.0, 3.0]), ([2.0, 2.5, 3.0], [2.0, 4.0])],
    ids=["ratio-2", "variance-1", "ratio-1/8"],
)
def test_whole_number_spreads_are_tested_like_any_other(
    tmp_path: Path, losses: list[float], seeds: list[float]
):
    """Losses whose variances are small whole numbers (1, 2, 4): the same F, p and runs a
    side as the independent computation."""
    cells = [
        (make_cell("a", seed=1), [0.90, 0.91, 0.92], losses),
        (make_cell("b", seed=2), [0.80, 0.80, 0.80], [seeds[1]] * 3),
    ]
    loss = by_cell(noise(build(tmp_path, cells)))["a"].tests[0]
    ratio, p = independent_f(losses, seeds)
    assert loss.sentence.startswith(f"val_loss: the repeats spread {statistics.stdev(losses):.4f} ")
    assert loss.statistic == pytest.approx(ratio, rel=1e-12)
    assert loss.p_value == pytest.approx(p, rel=1e-6)
    assert loss.needed_runs == independent_needed(ratio) is not None
    assert f"(this ratio would need {loss.needed_runs} a side)" in loss.sentence


def test_a_ratio_far_from_one_needs_two_runs_a_side(tmp_path: Path):
    cells = [
        (make_cell("a", seed=1), [0.9, 0.9000001], None),
        (make_cell("b", seed=2), [0.5, 0.5], None),
    ]
    test = noise(build(tmp_path, cells))[0].tests[0]
    assert test.needed_runs == independent_needed(test.statistic) == 2
    assert test.sentence.endswith("(this ratio would need 2 a side)")


def test_a_ratio_near_one_no_number_of_runs_tells_apart(tmp_path: Path):
    mine = [0.90, 0.91, 0.92]
    cells = [
        (make_cell("a", seed=1), mine, None),
        *seed_cells({2: [0.91] * 3, 3: [0.9201] * 3}),
    ]
    test = noise(build(tmp_path, cells))[0].tests[0]
    assert test.verdict == "same_spread" and test.statistic != 1
    assert test.statistic == pytest.approx(1, abs=0.02)
    assert test.needed_runs is None
    assert test.sentence.endswith(
        f"the F test cannot tell them apart at 0.05 (p = {test.p_value:.2g}); no number of runs "
        "up to 1000 a side would tell this ratio apart"
    )


def test_the_runs_a_side_are_searched_up_to_the_bound_the_sentence_names():
    """Between a ratio no count up to 1,000 tells apart and one that some count does, the
    count at the edge is 1,000 itself: the bound the sentence names is the one searched."""
    assert needed_runs(None) is None
    low, high = 1.0, 2.0
    assert needed_runs(low) is None and needed_runs(high) is not None
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (low, mid) if needed_runs(mid) is not None else (mid, high)
    assert needed_runs(high) == MAX_RUNS == 1000


def test_a_larger_noise_under_twice_the_seeds_spread_is_larger(tmp_path: Path):
    """F between 1 and 2, significant with 80 runs a side: the noise is larger, not smaller."""
    cells = [
        (make_cell("a", seed=1), [0.90, 0.91], None),
        (make_cell("b", seed=2), [0.8] * 2, None),
    ]
    a, b = build(tmp_path, cells)
    z = np.random.default_rng(3).standard_normal(80)
    z = (z - z.mean()) / z.std()
    mine, seeds = list(0.9 + 0.013 * z), list(0.9 + 0.010 * z[::-1])  # F near 1.3 ** 2
    a.runs = [replace(a.runs[0], repeat=k, val_acc=v) for k, v in enumerate(mine)]
    others = [
        replace(
            b,
            name=f"s{k}",
            settings={**b.settings, "seed": 10 + k},
            runs=[replace(b.runs[0], val_acc=v)],
        )  # fmt: skip
        for k, v in enumerate(seeds[1:])
    ]
    test = noise([a, *others])[0].tests[0]
    ratio, _ = independent_f(mine, [mine[0], *seeds[1:]])
    assert 1 < ratio < 2 and test.statistic == pytest.approx(ratio, rel=1e-9)
    assert test.p_value < ALPHA
    assert test.verdict == "noise_larger"


def test_repeats_a_few_ulps_apart_are_shown_apart(tmp_path: Path):
    """Where 17 decimals cannot tell the values apart, each is shown as Python reads it back."""
    low = 0.01
    high = float(np.nextafter(low, 1.0))
    assert f"{low:.17f}" == f"{high:.17f}"
    test = noise(build(tmp_path, [(make_cell("a", seed=1), [low, high, low], None)]))[0].tests[0]
    assert test.verdict == "no_seed_axis"
    assert test.sentence.startswith(
        f"val_acc: the repeats spread {test.noise.std:.3g} (std; 0.01 to 0.010000000000000002 "
        "over 3 runs); no seed axis"
    )


def test_a_loss_of_ten_thousand_everywhere_is_no_spread_in_three_digits(tmp_path: Path):
    """From 10,000 up a number is shown in 3 significant digits."""
    cells = [
        (make_cell("a", seed=1), [0.90, 0.91, 0.92], [1e4] * 3),
        *((make_cell(f"s{s}", seed=s), [0.8] * 3, [1e4] * 3) for s in (2, 3)),
    ]
    loss = noise(build(tmp_path, cells))[0].tests[0]
    assert (loss.metric, loss.verdict) == ("val_loss", "no_spread")
    assert loss.sentence == "val_loss: 1e+04 over all 3 repeats and 3 seeds: no spread to compare"


@pytest.mark.parametrize("alpha", [0.01, 0.3])
def test_the_level_given_is_the_one_judged_and_searched(tmp_path: Path, alpha: float):
    mine = [0.90, 0.93, 0.86, 0.91]
    cells = [(make_cell("s1", seed=1), mine, None), *seed_cells(SEEDS)]
    test = noise(build(tmp_path, cells), alpha=alpha)[0].tests[0]
    ratio, p = independent_f(mine, [mine[0]] + [v[0] for v in SEEDS.values()])
    expected = next(n for n in range(2, 500) if two_sided(ratio, n - 1, n - 1) < alpha)
    assert (test.alpha, test.needed_runs) == (alpha, expected)
    assert ratio < 1 and 0.01 < p < 0.3  # p = 0.26: judged apart at 0.3 only
    assert test.verdict == ("same_spread" if alpha == 0.01 else "noise_smaller")
    assert f" {alpha:g}" in test.sentence


def test_a_diverging_cell_after_cells_without_an_entry_still_gets_one(tmp_path: Path):
    """Reproducing cells first in the matrix: the diverging one after them is still tested."""
    cells = [
        *seed_cells({2: [0.8, 0.8, 0.8], 3: [0.7, 0.7, 0.7]}),
        (make_cell("a", seed=1), [0.90, 0.91, 0.92], None),
    ]
    result = noise(build(tmp_path, cells))
    assert [(c.cell, c.seed_cells) for c in result] == [("a", ["s2", "s3", "a"])]
