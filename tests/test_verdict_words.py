"""A cell's verdict in words and numbers (harness/report/verdicts.py), from hand-made runs: the
detail sentence, why a cell has no verdict, the first divergence over all repeats, the weights
and accuracy columns, and that losses are reread only where digests differ."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from harness.report.report_data import CheckError, Divergence, RunResult
from harness.report.verdicts import analyze_cell
from harness.results.manifest import ManifestCell

EPOCHS = [(0, 0), (1, 60)]
CELL = ManifestCell("abc123", "cell", "cells/cell--abc123", {"image": "local"})


def run(
    root: Path,
    repeat: int,
    losses: np.ndarray | None = None,
    *,
    status: str = "ok",
    trajectory: str | None = None,
    **fields,
) -> RunResult:
    """A run; with ``losses``, its losses.npy is written and its digest is the bytes' own."""
    run_dir = root / f"{fields.get('copy') or 'cells'}-{repeat}"
    if losses is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        np.save(run_dir / "losses.npy", losses)
        trajectory = trajectory or hashlib.sha256(losses.tobytes()).hexdigest()
    defaults = {"recorded": status if status in ("ok", "failed") else "ok"}
    defaults |= {"init_weights": "i", "final_weights": "w", "epoch_starts": EPOCHS}
    return RunResult(
        repeat=repeat, status=status, run_dir=run_dir, trajectory=trajectory, **(defaults | fields)
    )


def base() -> np.ndarray:
    return np.linspace(1, 2, 120, dtype="<f4")[:, None]


def bumped(step: int, by: float, losses: np.ndarray | None = None) -> np.ndarray:
    out = (base() if losses is None else losses).copy()
    out[step, 0] += np.float32(by)
    return out


def distance(other: np.ndarray) -> tuple[float, int]:
    """(largest |Δloss|, largest ULPs) of ``other`` from ``base()``, both positive here."""
    delta = np.abs(other.astype(np.float64) - base().astype(np.float64)).max()
    return float(delta), int(np.abs(other.view("<i4") - base().view("<i4")).max())


def summary(cell) -> tuple:
    return (
        cell.verdict,
        cell.reproducible,
        cell.distinct_trajectories,
        cell.repeats,
        cell.ok_runs,
        cell.init_equal,
        cell.final_equal,
        cell.detail,
    )


def test_a_reproducing_cell_counts_its_merge_conflict_copies(tmp_path: Path):
    runs = [run(tmp_path, k, trajectory="t") for k in range(2)]
    copies = [run(tmp_path, k, trajectory="t", copy=f"{k + 2}-shard-b") for k in range(2)]
    cell = analyze_cell(CELL, runs, copies)
    assert summary(cell) == (
        "reproduces",
        True,
        1,
        2,
        2,
        True,
        True,
        "reproduces bit for bit (with 2 merge conflict copies)",
    )
    assert (cell.unknown_because, cell.first_divergence, cell.divergences) == (None, None, [])
    assert (cell.id, cell.name, cell.settings) == ("abc123", "cell", {"image": "local"})
    assert (cell.runs, cell.conflict_copies) == (runs, copies)
    assert analyze_cell(CELL, runs).detail == "reproduces bit for bit"


def test_identical_losses_with_other_final_weights_diverge(tmp_path: Path):
    runs = [run(tmp_path, 0, trajectory="t"), run(tmp_path, 1, trajectory="t", final_weights="v")]
    assert summary(analyze_cell(CELL, runs)) == (
        "diverges",
        False,
        1,
        2,
        2,
        True,
        False,
        "identical losses, but the final weights differ",
    )
    # a run that recorded no weights digest is no proof of equal weights either
    runs[1].final_weights, runs[1].init_weights = "w", None
    cell = analyze_cell(CELL, runs)
    assert (cell.init_equal, cell.final_equal) == (False, True)
    assert cell.verdict == "reproduces"
    runs[1].final_weights = None
    assert analyze_cell(CELL, runs).detail == "identical losses, but the final weights differ"


def test_the_first_divergence_over_all_repeats_and_copies(tmp_path: Path):
    """Repeat 1 leaves repeat 0 at step 90 by 0.5; the merge conflict copy of repeat 1 leaves it
    at step 42 by 0.25 (and has other final weights): the first divergence is the copy's, with
    the largest |Δloss| (0.5) and ULPs over both, and the sentence names the copy."""
    runs = [run(tmp_path, 0, base()), run(tmp_path, 1, bumped(90, 0.5))]
    copies = [run(tmp_path, 1, bumped(42, 0.25), copy="2-shard-b", final_weights="v")]
    cell = analyze_cell(CELL, runs, copies)
    delta, ulps = distance(bumped(90, 0.5))
    assert delta == pytest.approx(0.5, rel=1e-6) and delta > distance(bumped(42, 0.25))[0]
    assert cell.first_divergence == Divergence(
        repeat=1,
        step=42,
        epoch=0,
        batch=42,
        max_abs_delta=delta,
        max_ulps=ulps,
        shape_differs=False,
        copy="2-shard-b",
    )
    assert [(d.repeat, d.step, d.copy) for d in cell.divergences] == [
        (1, 90, None),
        (1, 42, "2-shard-b"),
    ]
    assert summary(cell) == (
        "diverges",
        False,
        3,
        2,
        2,
        True,
        False,  # the copy's final weights differ too: still a divergence in the losses
        "3 distinct trajectories; first divergence at epoch 0, batch 42 (step 42), "
        "in the merge conflict copy of repeat 1 (2-shard-b)",
    )


def test_another_rank_count_is_the_first_divergence_with_the_others_distances(tmp_path: Path):
    """Repeat 1 ran on two ranks (a divergence at step 0 with no distance of its own); repeat 2
    leaves repeat 0 at step 30: the first divergence is repeat 1's, at no epoch, carrying repeat
    2's |Δloss| and ULPs; the sentence names no epoch."""
    two_ranks = np.repeat(base(), 2, axis=1)
    runs = [run(tmp_path, 0, base()), run(tmp_path, 1, two_ranks), run(tmp_path, 2, bumped(30, 1))]
    cell = analyze_cell(CELL, runs)
    delta, ulps = distance(bumped(30, 1))
    assert cell.first_divergence == Divergence(
        repeat=1,
        step=0,
        epoch=None,
        batch=None,
        max_abs_delta=delta,
        max_ulps=ulps,
        shape_differs=True,
        copy=None,
    )
    assert cell.detail == "3 distinct trajectories"
    # alone, it has no distance at all
    alone = analyze_cell(CELL, runs[:2])
    assert alone.first_divergence == Divergence(
        repeat=1,
        step=0,
        epoch=None,
        batch=None,
        max_abs_delta=None,
        max_ulps=None,
        shape_differs=True,
        copy=None,
    )
    assert alone.detail == "2 distinct trajectories"


def test_losses_are_reread_only_where_digests_differ(tmp_path: Path):
    """Equal digests are a verdict without a second read (these runs have no losses.npy left);
    differing digests whose files are gone on the second read leave the cell without one."""
    same = [run(tmp_path, k, trajectory="t") for k in range(2)]
    assert analyze_cell(CELL, same).verdict == "reproduces"
    differ = [run(tmp_path, 0, trajectory="t"), run(tmp_path, 1, trajectory="u")]
    cell = analyze_cell(CELL, differ)
    assert (cell.verdict, cell.reproducible, cell.distinct_trajectories) == ("unknown", None, 2)
    assert cell.unknown_because.startswith("losses.npy unreadable on a second read (")
    assert cell.detail == f"no verdict: {cell.unknown_because}"
    # a cell already without a verdict keeps its first reason
    failed = run(tmp_path, 2, status="failed", error=CheckError(type="failed", message=""))
    assert analyze_cell(CELL, [*differ, failed]).unknown_because == "1 of 3 repeats failed"


def test_every_reason_for_no_verdict_is_said_in_order(tmp_path: Path):
    runs = [
        run(tmp_path, 0, trajectory="t"),
        run(tmp_path, 1, status="failed"),
        run(tmp_path, 2, status="missing", recorded=None, problem="no run record"),
        run(tmp_path, 3, status="corrupt", problem="corrupt losses.npy: unreadable"),
        run(tmp_path, 4, status="failed", recorded="ok", problem="zero steps"),
        run(tmp_path, 5, status="corrupt", recorded=None, problem="corrupt run.json: bad"),
        run(tmp_path, 6, status="failed"),
        run(tmp_path, 7, status="missing", recorded=None, problem="no run record"),
    ]
    copies = [
        run(tmp_path, 0, status="corrupt", problem="corrupt losses.npy: missing", copy="2-b"),
        run(tmp_path, 1, status="failed", copy="3-c"),  # a redone attempt: listed, not judged
        run(tmp_path, 3, trajectory="t", copy="4-d", path="conflicts/4-d/x/repeat-3"),
    ]
    copies[0].path = "conflicts/2-b/x/repeat-0"
    cell = analyze_cell(CELL, runs, copies)
    assert cell.unknown_because == (
        "2 of 8 repeats failed; 2 of 8 repeats missing; "
        "repeat 3: corrupt losses.npy: unreadable; repeat 4: zero steps; "
        "repeat 5: corrupt run.json: bad; "
        "repeat 0 (merge conflict copy conflicts/2-b/x/repeat-0): corrupt losses.npy: missing"
    )
    assert summary(cell)[:5] == ("unknown", None, 1, 8, 1)
    # the ok copy is trusted beside the one ok run: both are compared
    assert (cell.init_equal, cell.final_equal) == (True, True)


@pytest.mark.parametrize(
    ("statuses", "because"),
    [
        ([], "no runs"),
        (["ok"], "one repeat: nothing to compare"),
        (["failed"], "1 of 1 repeats failed"),
        (["missing"], "1 of 1 repeats missing"),
        (["ok", "ok"], None),
    ],
)
def test_too_few_repeats_have_no_verdict(tmp_path: Path, statuses: list[str], because):
    runs = [run(tmp_path, k, status=s, trajectory="t") for k, s in enumerate(statuses)]
    cell = analyze_cell(CELL, runs)
    assert cell.unknown_because == because
    assert cell.verdict == ("reproduces" if because is None else "unknown")
    if len(statuses) < 2:  # nothing to compare the weights with
        assert (cell.init_equal, cell.final_equal) == (None, None)


def test_accuracy_and_time_are_of_the_ok_runs(tmp_path: Path):
    runs = [
        run(tmp_path, 0, trajectory="t", val_acc=0.9, seconds_per_epoch=2.0),
        run(tmp_path, 1, trajectory="t", val_acc=0.94, seconds_per_epoch=4.0),
        run(tmp_path, 2, trajectory="t", val_acc=None, seconds_per_epoch=None),
        run(tmp_path, 3, status="failed", val_acc=0.1, seconds_per_epoch=100.0),
    ]
    copies = [run(tmp_path, 0, trajectory="t", copy="2-b", val_acc=0.5, seconds_per_epoch=50.0)]
    cell = analyze_cell(CELL, runs, copies)
    assert cell.val_acc_mean == pytest.approx(0.92)
    assert cell.val_acc_sd == pytest.approx(np.std([0.9, 0.94], ddof=1))
    assert cell.seconds_per_epoch == pytest.approx(3.0)
    one = analyze_cell(CELL, runs[:1] + runs[2:3])
    assert (one.val_acc_mean, one.val_acc_sd, one.seconds_per_epoch) == (0.9, None, 2.0)
    none = analyze_cell(CELL, runs[2:3])
    assert (none.val_acc_mean, none.val_acc_sd, none.seconds_per_epoch) == (None, None, None)
