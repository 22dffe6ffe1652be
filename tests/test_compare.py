"""The baseline gate's rules on hand-made result sets, golden-digests files round-tripping, and
the gate's refusals through the real CLI on results folders of the fake executor.
(The gate on real training results is in tests/test_shard_workflow.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.baseline import CellDigests, ResultSet, from_file, load_result_set, to_json
from harness.cli import main
from harness.compare import EXIT_REGRESSION, compare, render_markdown
from harness.errors import HarnessError
from harness.executors.fake import FakeExecutor
from harness.exit_codes import EXIT_NOT_COMPARABLE
from harness.matrix import load_matrix
from harness.runner import RunConfig, run_matrix
from harness.shard import ShardSpec

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "placement-quick.yaml"

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
    result = compare(
        rs(a=cell(), b=cell(name="gone")), rs(a=cell(), c=cell(name="new")), allow_removed=True
    )
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


# --- a gate that cannot pass by accident: the refusals -------------------------------------


def test_a_cell_that_reproduced_and_is_now_unknown_is_a_regression():
    unknown = cell(reproducible=None, trajs=("t1", None))
    result = compare(rs(a=cell()), rs(a=unknown))
    assert [(c.what, c.regression) for c in result.changes] == [("no longer reproduces", True)]
    assert "unknown" in result.changes[0].current and result.exit_code == EXIT_REGRESSION


def test_no_common_cell_is_refused_whatever_the_flags():
    result = compare(rs(a=cell()), rs(b=cell()), allow_removed=True, allow_changed_matrix=True)
    assert result.compared == 0 and result.regressions == []
    assert [r.what for r in result.refusals] == ["no_common_cell"]
    assert result.exit_code == EXIT_NOT_COMPARABLE != 0
    text = render_markdown(result)
    assert text.startswith("**Not comparable: the gate fails.**")
    assert "### Why the gate fails" in text and "no cell was compared" in text
    assert "Every cell in both sets" not in text
    # empty sets on both sides compare nothing either
    assert compare(rs(), rs()).exit_code == EXIT_NOT_COMPARABLE


def test_removed_cells_and_another_matrix_fail_unless_accepted():
    base, cur = rs(a=cell(), b=cell(name="gone")), rs(a=cell())
    result = compare(base, cur)
    assert [r.what for r in result.refusals] == ["removed_cells"]
    assert result.exit_code == EXIT_NOT_COMPARABLE
    assert "`--allow-removed` accepts it" in render_markdown(result)
    accepted = compare(base, cur, allow_removed=True)
    assert accepted.exit_code == 0 and accepted.removed_cells == [("b", "gone")]
    assert "### Accepted by flags" in render_markdown(accepted)

    other = ResultSet("y", "m2", "e", {"a": cell()})
    result = compare(rs(a=cell()), other)
    assert [r.what for r in result.refusals] == ["changed_matrix"]
    assert "different matrices" in result.refusals[0].reason
    assert compare(rs(a=cell()), other, allow_changed_matrix=True).exit_code == 0
    # a set that records no matrix digest cannot show it is the same matrix
    unknown = ResultSet("y", "m", None, {"a": cell()})
    assert compare(rs(a=cell()), unknown).exit_code == EXIT_NOT_COMPARABLE
    # a regression wins: the gate fails with EXIT_REGRESSION and names the refusal too
    broken = ResultSet("y", "m2", "e", {"a": cell(reproducible=False, trajs=("t1", "t2"))})
    result = compare(rs(a=cell()), broken)
    assert result.exit_code == EXIT_REGRESSION
    assert "### Also not comparable" in render_markdown(result)


def test_an_old_golden_file_without_a_matrix_digest_is_still_readable(tmp_path: Path):
    data = to_json(rs(a=cell()))
    del data["matrix_digest"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    old = load_result_set(path)
    assert old.matrix_digest is None and old.cells == rs(a=cell()).cells
    assert compare(old, rs(a=cell())).exit_code == EXIT_NOT_COMPARABLE
    assert compare(old, rs(a=cell()), allow_changed_matrix=True).exit_code == 0


def run_fake(out: Path, matrix: Path = QUICK, shard: ShardSpec | None = None) -> Path:
    config = RunConfig(matrix=load_matrix(matrix), out=out, progress="quiet", shard=shard)
    run_matrix(config, FakeExecutor(seconds=0.01))
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Results folders of the fake executor: the quick example, one shard of it, the same
    matrix under another name (same cells, another matrix digest) and another seed (no cell
    in common)."""
    root = tmp_path_factory.mktemp("compare")
    text = QUICK.read_text()
    renamed, reseeded = root / "renamed.yaml", root / "reseeded.yaml"
    renamed.write_text(text.replace("name: placement-quick", "name: placement-renamed"))
    reseeded.write_text(text.replace("seed: 201014", "seed: 7"))
    assert renamed.read_text() != text and reseeded.read_text() != text
    return {
        "whole": run_fake(root / "whole"),
        "shard": run_fake(root / "shard", shard=ShardSpec(1, 2)),
        "renamed": run_fake(root / "renamed", renamed),
        "reseeded": run_fake(root / "reseeded", reseeded),
    }


def harness_compare(capsys, *args: Path | str) -> tuple[int, str, str]:
    rc = main(["compare", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_cli_same_folder_passes(folders, capsys):
    rc, out, _ = harness_compare(capsys, folders["whole"], folders["whole"])
    assert rc == 0 and out.startswith("**No regression.**")


def test_cli_two_folders_with_no_common_cell_fail(folders, capsys):
    for flags in ([], ["--allow-changed-matrix", "--allow-removed"]):
        rc, out, err = harness_compare(capsys, folders["whole"], folders["reseeded"], *flags)
        assert rc == EXIT_NOT_COMPARABLE != 0, out + err
        assert out.startswith("**Not comparable: the gate fails.**")
        assert "0 cells in both" in out and "no cell was compared" in out
        assert "error: not comparable: no cell was compared" in err


def test_cli_a_removed_cell_fails_unless_allow_removed(folders, capsys):
    whole, shard = folders["whole"], folders["shard"]
    rc, out, err = harness_compare(capsys, whole, shard)
    assert rc == EXIT_NOT_COMPARABLE != 0, out + err
    assert "missing from the current results" in out and "--allow-removed" in out
    assert "### Removed cells" in out
    rc, out, err = harness_compare(capsys, whole, shard, "--allow-removed")
    assert rc == 0, out + err
    assert "### Accepted by flags" in out and "### Removed cells" in out
    # the other way round the shard's cells are all in the whole run: new cells are fine
    rc, out, _ = harness_compare(capsys, shard, whole)
    assert rc == 0 and "new" in out


def test_cli_another_matrix_fails_unless_allow_changed_matrix(folders, capsys, tmp_path):
    whole, renamed = folders["whole"], folders["renamed"]
    golden = tmp_path / "golden.json"
    assert main(["baseline", str(whole), "-o", str(golden)]) == 0
    capsys.readouterr()
    digest = json.loads((whole / "manifest.json").read_text())["matrix_digest"]
    assert json.loads(golden.read_text())["matrix_digest"] == digest
    for baseline in (whole, golden):
        rc, out, err = harness_compare(capsys, baseline, renamed)
        assert rc == EXIT_NOT_COMPARABLE != 0, out + err
        assert "different matrices" in out and "placement-renamed" in out
        assert "3 cells in both, 0 new, 0 removed" in out  # same cells, another matrix
        rc, out, err = harness_compare(capsys, baseline, renamed, "--allow-changed-matrix")
        assert rc == 0, out + err
    rc, out, _ = harness_compare(capsys, golden, renamed, "--format", "json")
    data = json.loads(out)
    assert data["exit_code"] == EXIT_NOT_COMPARABLE == rc
    assert [r["what"] for r in data["refusals"]] == ["changed_matrix"]
    assert data["baseline_matrix_digest"] == digest != data["current_matrix_digest"]
