"""The baseline gate's rules on hand-made result sets, golden-digests files round-tripping, and
the gate's refusals through the real CLI on results folders of the fake executor.
(The gate on real training results is in tests/test_shard_workflow.py.)"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.executors.fake import FakeExecutor
from harness.exit_codes import EXIT_NOT_COMPARABLE
from harness.gates.baseline import CellDigests, ResultSet, from_file, load_result_set, to_json
from harness.gates.compare import EXIT_REGRESSION, compare, compare_cell
from harness.gates.gate_markdown import render_markdown
from harness.matrix import load_matrix
from harness.run.matrix_runner import RunConfig, run_matrix
from harness.run.shard import ShardSpec

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
    # two sets that both record none cannot show they are the same matrix either
    result = compare(old, old)
    assert [r.what for r in result.refusals] == ["changed_matrix"]
    assert result.exit_code == EXIT_NOT_COMPARABLE


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
    renamed_digest = json.loads((renamed / "manifest.json").read_text())["matrix_digest"]
    assert data["current_matrix_digest"] == renamed_digest


# --- what the gate says, word for word -----------------------------------------------------


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


T1, T2, T3, W1, W2 = sha("t1"), sha("t2"), sha("t3"), sha("w1"), sha("w2")
IMG1, IMG2 = "sha256:" + sha("img1"), "sha256:" + sha("img2")


def full(name, reproducible=True, trajs=(T1, T1), final=W1, image_digest=IMG1) -> CellDigests:
    """A cell with full-length digests, so that what the gate shortens shows."""
    image = "pytorch/pytorch:2.5.1"
    return CellDigests(
        name, {"image": image}, reproducible, list(trajs), final, image, image_digest, "2.5.1"
    )


def local(name: str, torch: str | None) -> CellDigests:
    """A cell of the ``local`` image: no image digest, its torch build tells images apart."""
    return CellDigests(name, {"image": "local"}, True, [T1, T1], W1, "local", None, torch)


def every_kind() -> tuple[ResultSet, ResultSet]:
    """A baseline and a current set with every kind of change, a new and a removed cell, and
    another matrix."""
    base = ResultSet(
        "golden|v1.json",
        "m1",
        "d" * 64,
        {
            "id-a": full("a|regressed"),
            "id-b": full("b-same-image"),
            "id-c": full("c-unknown"),
            "id-d": full("d-new-image"),
            "id-e": full("e-weights"),
            "id-f": full("f-now", reproducible=False, trajs=(T1, T2)),
            "id-g": full("g-one", reproducible=None, trajs=(T1, None)),
            "id-h": full("h-same"),
            "id-i": local("i-local", None),
            "id-r": full("r-gone"),
        },
    )
    cur = ResultSet(
        "results/now",
        "",
        None,
        {
            "id-a": full("a|regressed", reproducible=False, trajs=(T1, None, T2, T2)),
            "id-b": full("b-same-image", trajs=(T3, T3)),
            "id-c": full("c-unknown", reproducible=None, trajs=()),
            "id-d": full("d-new-image", trajs=(T2, T2), image_digest=IMG2),
            "id-e": full("e-weights", final=W2),
            "id-f": full("f-now"),
            "id-g": full("g-one", trajs=(T2, T2)),
            "id-h": full("h-same"),
            "id-i": local("i-local", "2.5.1+cu121"),
            "id-n": full("n-new"),
        },
    )
    return base, cur


def test_the_markdown_of_every_kind_of_change_with_both_flags_given():
    base, cur = every_kind()
    result = compare(base, cur, allow_removed=True, allow_changed_matrix=True)
    assert result.exit_code == EXIT_REGRESSION
    assert result.refusals == [] and [r.accepted for r in result.checks] == [True, True]
    t1, t2, t3 = T1[:12], T2[:12], T3[:12]
    assert render_markdown(result) == "\n".join(
        [
            "**3 regressions** Baseline `golden\\|v1.json`, current `results/now`: 9 cells in "
            "both, 1 new, 1 removed.",
            "",
            "### Accepted by flags (not failures)",
            "",
            "- 1 cell of the baseline is missing from the current results (`--allow-removed`).",
            "- the two sets come from different matrices: matrix digest dddddddddddd \\(m1\\) in "
            "the baseline, not recorded \\(unnamed\\) in the current results "
            "(`--allow-changed-matrix`).",
            "",
            "### Regressions",
            "",
            "| cell | id | what changed | baseline | current |",
            "|---|---|---|---|---|",
            f"| a\\|regressed | id-a | no longer reproduces | reproduces \\({t1}\\) "
            f"| does not reproduce: {t1}, —, {t2} |",
            f"| b-same-image | id-b | trajectory changed on the same image | {t1} | {t3} |",
            f"| c-unknown | id-c | no longer reproduces | reproduces \\({t1}\\) | unknown: — |",
            "",
            "### Other changes (not regressions)",
            "",
            "| cell | id | what changed | baseline | current |",
            "|---|---|---|---|---|",
            f"| d-new-image | id-d | trajectory changed with the image | {t1} | {t2} |",
            f"| d-new-image | id-d | image changed | {IMG1[:19]} | {IMG2[:19]} |",
            f"| e-weights | id-e | final weights changed | {W1[:12]} | {W2[:12]} |",
            f"| f-now | id-f | now reproduces | does not reproduce | reproduces \\({t1}\\) |",
            "| g-one | id-g | trajectory changed \\(the baseline had one repeat: no verdict to "
            f"keep\\) | {t1} | {t2} |",
            "| i-local | id-i | image changed | local \\(torch unknown\\) | local \\(torch "
            "2.5.1\\+cu121\\) |",
            "",
            "### New cells (not in the baseline)",
            "",
            "- n-new (`id-n`)",
            "",
            "### Removed cells (not in the current results)",
            "",
            "- r-gone (`id-r`)",
            "",
        ]
    )


def test_the_markdown_of_a_gate_that_cannot_judge_names_each_reason_and_its_flag():
    base = ResultSet("old", "", None, {"x": full("x"), "y": full("y")})
    cur = ResultSet("new", "m", "e" * 64, {"z": full("z")})
    result = compare(base, cur)
    assert result.exit_code == EXIT_NOT_COMPARABLE
    assert [(r.what, r.accepted_by) for r in result.refusals] == [
        ("no_common_cell", None),
        ("removed_cells", "--allow-removed"),
        ("changed_matrix", "--allow-changed-matrix"),
    ]
    assert render_markdown(result) == "\n".join(
        [
            "**Not comparable: the gate fails.** Baseline `old`, current `new`: 0 cells in both, "
            "1 new, 2 removed.",
            "",
            "### Why the gate fails",
            "",
            "- no cell was compared: the baseline's 2 cells and the current results' 1 cell share "
            "no cell id \\(another seed, another matrix, or a changed default gives other cell "
            "ids\\).",
            "- 2 cells of the baseline are missing from the current results (`--allow-removed` "
            "accepts it).",
            "- the two sets come from different matrices: matrix digest not recorded "
            "\\(unnamed\\) in the baseline, eeeeeeeeeeee \\(m\\) in the current results "
            "(`--allow-changed-matrix` accepts it).",
            "",
            "### New cells (not in the baseline)",
            "",
            "- z (`z`)",
            "",
            "### Removed cells (not in the current results)",
            "",
            "- x (`x`)",
            "- y (`y`)",
            "",
        ]
    )


def test_the_markdown_of_an_unchanged_set_says_every_cell_kept_its_digests():
    result = compare(ResultSet("b", "m", "d", {"a": full("a")}), ResultSet("c", "m", "d", {}))
    assert result.refusals[0].reason == (
        "no cell was compared: the baseline's 1 cell and the current results' 0 cells share no "
        "cell id (another seed, another matrix, or a changed default gives other cell ids)"
    )
    same = compare(
        ResultSet("b", "m", "d", {"a": full("a")}), ResultSet("c", "m", "d", {"a": full("a")})
    )
    assert same.exit_code == 0 and same.checks == []
    assert render_markdown(same) == (
        "**No regression.** Baseline `b`, current `c`: 1 cells in both, 0 new, 0 removed.\n"
        "\n"
        "Every cell in both sets has the verdict and digests of the baseline.\n"
    )


def test_a_regression_and_a_refusal_are_both_told():
    base = ResultSet("b", "m", "d", {"a": full("a"), "gone": full("gone")})
    cur = ResultSet("c", "m", "d", {"a": full("a", trajs=(T2, T2))})
    result = compare(base, cur)
    assert result.exit_code == EXIT_REGRESSION
    text = render_markdown(result)
    assert text.startswith(
        "**1 regression** Baseline `b`, current `c`: 1 cells in both, 0 new, 1 removed.\n\n"
        "### Also not comparable\n\n"
        "- 1 cell of the baseline is missing from the current results (`--allow-removed` "
        "accepts it).\n\n### Regressions\n"
    )
    assert "### Other changes" not in text and "Every cell" not in text


def test_a_verdict_kept_without_a_finished_trajectory_is_no_longer_reproducing():
    """A current set that says "reproduces" but holds no finished trajectory cannot show the
    baseline's bits: a regression."""
    cur = full("a", trajs=(None, None))
    assert [(c.what, c.current, c.regression) for c in compare_cell("a", full("a"), cur)] == [
        ("no longer reproduces", "reproduces: —", True)
    ]


@pytest.mark.parametrize(
    ("base", "cur", "told"),
    [
        # a baseline without a verdict whose first repeat failed: its second one counts
        ((None, (None, T1)), (True, (T2, T2)), [("trajectory changed", T1[:12], T2[:12])]),
        ((None, (None, T1)), (True, (T1, T1)), []),
        ((None, (None, None)), (True, (T2, T2)), []),
        ((None, ()), (True, (T2, T2)), []),
        ((None, (T1,)), (None, ()), []),
        ((False, (T1, T2)), (False, (T1, T3)), []),
        ((False, (T1, T2)), (None, (T1, None)), []),
    ],
)
def test_cells_without_a_kept_verdict_are_told_only_when_their_bits_changed(base, cur, told):
    changes = compare_cell("a", full("a", base[0], base[1]), full("a", cur[0], cur[1]))
    assert [(c.what.split(" (")[0], c.baseline, c.current) for c in changes] == told
    assert not any(c.regression for c in changes)


def test_cli_json_tells_each_change_and_whether_it_is_a_regression(tmp_path, capsys):
    base, cur = every_kind()
    paths = []
    for name, result_set in (("base.json", base), ("cur.json", cur)):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(to_json(result_set)))
    rc, out, err = harness_compare(
        capsys, *paths, "--format", "json", "--allow-removed", "--allow-changed-matrix"
    )
    data = json.loads(out)
    assert rc == data["exit_code"] == EXIT_REGRESSION and err == ""
    t1, t2, t3 = T1[:12], T2[:12], T3[:12]
    one_repeat = "trajectory changed (the baseline had one repeat: no verdict to keep)"
    # no set recorded a machine here: nothing is blamed on one
    assert not any(c.pop("machine_changed") for c in data["changes"])
    assert [tuple(c.values()) for c in data["changes"]] == [
        ("id-a", "a|regressed", "no longer reproduces", f"reproduces ({t1})",
         f"does not reproduce: {t1}, —, {t2}", True),
        ("id-b", "b-same-image", "trajectory changed on the same image", t1, t3, True),
        ("id-c", "c-unknown", "no longer reproduces", f"reproduces ({t1})", "unknown: —", True),
        ("id-d", "d-new-image", "trajectory changed with the image", t1, t2, False),
        ("id-d", "d-new-image", "image changed", IMG1[:19], IMG2[:19], False),
        ("id-e", "e-weights", "final weights changed", W1[:12], W2[:12], False),
        ("id-f", "f-now", "now reproduces", "does not reproduce", f"reproduces ({t1})", False),
        ("id-g", "g-one", one_repeat, t1, t2, False),
        ("id-i", "i-local", "image changed", "local (torch unknown)",
         "local (torch 2.5.1+cu121)", False),
    ]  # fmt: skip
    assert list(data["changes"][0]) == [
        "cell_id", "name", "what", "baseline", "current", "regression"
    ]  # fmt: skip
    assert (data["compared"], data["regressions"], data["refusals"]) == (9, 3, [])
    assert (data["new_cells"], data["removed_cells"]) == ([["id-n", "n-new"]], [["id-r", "r-gone"]])
    assert (data["baseline_matrix_digest"], data["current_matrix_digest"]) == ("d" * 64, None)
    assert [(c["what"], c["accepted"]) for c in data["checks"]] == [
        ("removed_cells", True),
        ("changed_matrix", True),
    ]
