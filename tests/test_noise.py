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
from harness.report.noise import noise


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
