"""The first divergence as the report states it: its step, epoch and batch, the largest |Δloss|
and ULP distance, and whether the shapes differ (harness/report/trajectories.py), on hand-made
float32 trajectories."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from harness.report.report_data import Divergence, RunResult
from harness.report.trajectories import divergence, divergences_from

EPOCHS = [(0, 0), (1, 60)]  # two epochs of 60 steps


def _f32(bits: int) -> np.float32:
    return np.array([bits], dtype="<u4").view("<f4")[0]


def test_another_rank_count_diverges_at_step_0_with_no_distance():
    d = divergence(np.ones((5, 1), "<f4"), np.ones((5, 2), "<f4"), 3, EPOCHS)
    assert d == Divergence(
        repeat=3,
        step=0,
        epoch=None,
        batch=None,
        max_abs_delta=None,
        max_ulps=None,
        shape_differs=True,
        copy=None,
    )


def test_an_equal_prefix_of_another_length_diverges_where_the_shorter_run_ends():
    """Either run may be the shorter one: the divergence is at its length (step 70: epoch 1,
    batch 10), with no |Δloss| or ULPs, and the shapes differ."""
    long = np.linspace(1, 2, 100, dtype="<f4")[:, None]
    expected = Divergence(
        repeat=4,
        step=70,
        epoch=1,
        batch=10,
        max_abs_delta=None,
        max_ulps=None,
        shape_differs=True,
        copy=None,
    )
    assert divergence(long, long[:70].copy(), 4, EPOCHS) == expected
    assert divergence(long[:70].copy(), long, 4, EPOCHS) == expected


def test_the_largest_distance_over_every_step_and_rank_is_reported():
    """Two ranks; the runs differ first at step 65 in rank 1 (1.0 -> 1.5: 0.5, 2**22 ULPs) and
    later at step 80 in rank 0 by one ULP: the divergence is at step 65 (epoch 1, batch 5) with
    the largest |Δloss| and ULPs over all steps and ranks."""
    ref = np.ones((120, 2), "<f4")
    other = ref.copy()
    other[65, 1] = np.float32(1.5)
    other[80, 0] = np.nextafter(np.float32(1), np.float32(2))
    d = divergence(ref, other, 2, EPOCHS)
    assert d == Divergence(
        repeat=2,
        step=65,
        epoch=1,
        batch=5,
        max_abs_delta=0.5,
        max_ulps=2**22,
        shape_differs=False,
        copy=None,
    )
    # and where the later, smaller difference is the first one, the maximum still comes later
    other[65, 1] = np.float32(1)
    other[70, 0] = np.float32(-1.0)  # 1.0 -> -1.0: 2.0 and the ULPs across zero
    d = divergence(ref, other, 2, EPOCHS)
    assert d == Divergence(
        repeat=2,
        step=70,
        epoch=1,
        batch=10,
        max_abs_delta=2.0,
        max_ulps=2 * 0x3F800000,
        shape_differs=False,
        copy=None,
    )


def test_a_difference_in_a_run_of_another_length_says_both():
    ref = np.ones((100, 1), "<f4")
    other = np.ones((90, 1), "<f4")
    other[12, 0] = np.float32(0.75)
    assert divergence(ref, other, 1, EPOCHS) == Divergence(
        repeat=1,
        step=12,
        epoch=0,
        batch=12,
        max_abs_delta=0.25,
        max_ulps=2**22,
        shape_differs=True,
        copy=None,
    )


def test_the_distance_skips_steps_whose_difference_is_not_a_number():
    """A NaN (the same bits in both runs) leaves |Δloss| to the finite steps; two NaN payloads
    differ by their ULPs but add no |Δloss|, and where no step has a finite |Δloss| it is NaN.
    None of it prints a numpy RuntimeWarning into `harness report`'s output."""
    warnings.simplefilter("error")  # pytest restores the filters after the test
    ref = np.ones((10, 1), "<f4")
    ref[2, 0] = _f32(0x7FC00001)
    other = ref.copy()
    other[6, 0] = np.float32(1.25)
    d = divergence(ref, other, 1, [(0, 0)])
    assert (d.step, d.max_abs_delta) == (6, 0.25)
    # infinities: inf - inf is not a number either, and is skipped the same way
    ref[3, 0] = other[3, 0] = np.float32("inf")
    assert divergence(ref, other, 1, [(0, 0)]).max_abs_delta == 0.25

    payload = ref.copy()
    payload[2, 0] = _f32(0x7FC00004)
    d = divergence(ref, payload, 5, [(0, 0)])
    assert (d.repeat, d.step, d.epoch, d.batch, d.max_abs_delta, d.max_ulps) == (5, 2, 0, 2, 0.0, 3)
    only_nan = divergence(ref[2:3].copy(), payload[2:3].copy(), 5, [(0, 0)])
    assert (only_nan.step, only_nan.max_ulps) == (0, 3) and math.isnan(only_nan.max_abs_delta)


def test_divergences_from_names_each_differing_run_and_its_copy(tmp_path: Path):
    """Against the reference run: equal runs are left out; each other run is named by its repeat
    and, for a merge conflict copy, by the copy's folder. The losses the report read are used
    (``RunResult.losses``); a run made without them has its losses.npy read."""
    base = np.linspace(1, 2, 120, dtype="<f4")[:, None]
    runs = {}
    for k, (name, step, copy) in enumerate(
        [("ref", None, None), ("same", None, None), ("r2", 61, None), ("copy", 7, "2-shard-b")]
    ):
        losses = base.copy()
        if step is not None:
            losses[step, 0] = np.float32(3)
        folder = tmp_path / name
        folder.mkdir()
        np.save(folder / "losses.npy", losses)
        kept = losses if name != "r2" else None  # r2: read from its folder
        runs[name] = RunResult(
            repeat=k, status="ok", run_dir=folder, copy=copy, epoch_starts=EPOCHS, losses=kept
        )
    (tmp_path / "copy" / "losses.npy").unlink()  # read once already: never again
    found = divergences_from(runs["ref"], [runs["same"], runs["r2"], runs["copy"]])
    assert [(d.repeat, d.step, d.epoch, d.batch, d.copy) for d in found] == [
        (2, 61, 1, 1, None),
        (3, 7, 0, 7, "2-shard-b"),
    ]
