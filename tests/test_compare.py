"""The baseline gate's rules on hand-made result sets, and golden-digests files round-tripping.
(The gate on real training results is in tests/test_shard_workflow.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.baseline import CellDigests, ResultSet, from_file, load_result_set, to_json
from harness.compare import EXIT_REGRESSION, compare, render_markdown
from harness.errors import HarnessError

IMG = "sha256:" + "a" * 64


def cell(
    reproducible=True, trajs=("t1", "t1"), image_digest=IMG, final="w1", name="c"
) -> CellDigests:
    return CellDigests(
        name=name,
        settings={"image": "pytorch/pytorch:2.5.1", "placement": "before_model"},
        reproducible=reproducible,
        trajectories=list(trajs),
        final_weights=final,
        image="pytorch/pytorch:2.5.1",
        image_digest=image_digest,
        torch="2.5.1",
    )


def rs(**cells: CellDigests) -> ResultSet:
    return ResultSet("x", "m", "d", cells)


def whats(base: ResultSet, cur: ResultSet) -> list[tuple[str, bool]]:
    return [(c.what, c.regression) for c in compare(base, cur).changes]


def test_no_change_is_no_regression():
    result = compare(rs(a=cell()), rs(a=cell()))
    assert result.exit_code == 0 and result.changes == []
    assert render_markdown(result).startswith("**No regression.**")


def test_a_cell_that_no_longer_reproduces_is_a_regression():
    cur = rs(a=cell(reproducible=False, trajs=("t1", "t2")))
    result = compare(rs(a=cell()), cur)
    assert result.exit_code == EXIT_REGRESSION != 0
    assert whats(rs(a=cell()), cur) == [("no longer reproduces", True)]
    text = render_markdown(result)
    assert text.startswith("**1 regression**") and "### Regressions" in text


def test_a_changed_trajectory_is_a_regression_only_on_the_same_image():
    cur = rs(a=cell(trajs=("t9", "t9")))
    assert whats(rs(a=cell()), cur) == [("trajectory changed on the same image", True)]
    moved = rs(a=cell(trajs=("t9", "t9"), image_digest="sha256:" + "b" * 64))
    assert whats(rs(a=cell()), moved) == [
        ("trajectory changed with the image", False),
        ("image changed", False),
    ]
    assert compare(rs(a=cell()), moved).exit_code == 0


def test_cells_that_never_reproduced_may_change_and_may_start_to_reproduce():
    never = cell(reproducible=False, trajs=("t1", "t2"))
    assert whats(rs(a=never), rs(a=cell(reproducible=False, trajs=("t3", "t4")))) == []
    assert whats(rs(a=never), rs(a=cell())) == [("now reproduces", False)]


def test_new_and_removed_cells_are_reported_not_regressions():
    result = compare(rs(a=cell(), b=cell(name="gone")), rs(a=cell(), c=cell(name="new")))
    assert result.exit_code == 0
    assert result.new_cells == [("c", "new")] and result.removed_cells == [("b", "gone")]
    text = render_markdown(result)
    assert "### New cells" in text and "new (`c`)" in text
    assert "### Removed cells" in text and "gone (`b`)" in text


def test_local_cells_are_the_same_image_while_torch_is_the_same():
    def local(torch: str, traj: str) -> CellDigests:
        c = cell(trajs=(traj, traj), image_digest=None)
        c.image, c.torch = "local", torch
        return c

    assert whats(rs(a=local("2.14.1", "t1")), rs(a=local("2.14.1", "t2")))[0][1] is True
    assert whats(rs(a=local("2.14.1", "t1")), rs(a=local("2.15.0", "t2")))[0][1] is False


def test_golden_file_round_trip_and_bad_files(tmp_path: Path):
    original = rs(a=cell(), b=cell(reproducible=False, trajs=("t1", None), name="b"))
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(to_json(original)))
    back = load_result_set(path)
    assert back.cells == original.cells
    assert compare(back, original).exit_code == 0
    (tmp_path / "bad.json").write_text('{"cells": {}}')
    with pytest.raises(HarnessError, match="not a golden-digests file"):
        from_file(tmp_path / "bad.json")
    with pytest.raises(HarnessError, match="no such"):
        load_result_set(tmp_path / "nope")
