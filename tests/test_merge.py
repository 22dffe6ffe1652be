"""Merging shards' results folders: nothing lost, duplicates and conflicts named, matrices
never mixed. The shards here come from the fake executor (fast, deterministic records); the
real-training merge is in tests/test_shard_workflow.py."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fault_tools import nudge_losses

from harness.cli import main
from harness.errors import StoreError
from harness.executors.fake import FakeExecutor
from harness.exit_codes import EXIT_BAD_INPUT, EXIT_CONFLICT
from harness.matrix import load_matrix
from harness.merge import CONFLICTS_DIR, merge
from harness.runner import RunConfig, run_matrix
from harness.shard import ShardSpec
from harness.store import ResultsDir

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "placement-quick.yaml"


def run_fake(out: Path, shard: ShardSpec | None, matrix: Path = QUICK) -> Path:
    config = RunConfig(matrix=load_matrix(matrix), out=out, progress="quiet", shard=shard)
    run_matrix(config, FakeExecutor(seconds=0.01, diverge_placement="none"))
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(shard 1/2, shard 2/2, the unsharded run) of the quick example."""
    root = tmp_path_factory.mktemp("shards")
    return (
        run_fake(root / "s1", ShardSpec(1, 2)),
        run_fake(root / "s2", ShardSpec(2, 2)),
        run_fake(root / "all", None),
    )


def repeats(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.glob("cells/*/repeat-*")}


def test_merged_shards_equal_the_unsharded_run(shards, tmp_path: Path):
    s1, s2, whole = shards
    result = merge([s1, s2], tmp_path / "m")
    assert result.runs == 6 and result.cells == 3
    assert result.duplicates == [] and result.missing_cells == []
    merged = tmp_path / "m"
    assert repeats(merged) == repeats(whole) == repeats(s1) | repeats(s2)
    a = json.loads((merged / "report.json").read_text())
    b = json.loads((whole / "report.json").read_text())
    assert a == b
    manifest = json.loads((merged / "manifest.json").read_text())
    assert manifest["shard"] is None
    assert [m["shard"] for m in manifest["merged_from"]] == [
        {"index": 1, "total": 2},
        {"index": 2, "total": 2},
    ]
    assert [c["id"] for c in manifest["cells"]] == [
        c["id"] for c in json.loads((whole / "manifest.json").read_text())["cells"]
    ]


def test_the_same_run_twice_with_identical_records_is_kept_once(shards, tmp_path: Path):
    s1, s2, _ = shards
    copy = tmp_path / "s1-again"
    shutil.copytree(s1, copy)
    result = merge([s1, copy, s2], tmp_path / "m")
    assert result.runs == 6
    assert len(result.duplicates) == len(repeats(s1))
    assert all(
        d.identical and d.kept == str(s1) and d.other == str(copy) for d in result.duplicates
    )
    assert not (tmp_path / "m" / CONFLICTS_DIR).exists()
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert len(manifest["merge"]["duplicates"]) == len(repeats(s1))
    assert manifest["merge"]["conflicts"] == []


def _edit_record(run_dir: Path, **changes) -> None:
    path = run_dir / "run.json"
    record = json.loads(path.read_text())
    record.update(changes)
    path.write_text(json.dumps(record))


def test_different_records_of_one_run_keep_both_and_are_reported(shards, tmp_path: Path, capsys):
    s1, s2, _ = shards
    other = tmp_path / "rerun"
    shutil.copytree(s1, other)
    run = sorted(other.glob("cells/*/repeat-0"))[0]
    rel = run.relative_to(other)
    _edit_record(run, timing={"wall_seconds": 99.0})
    rc = main(["merge", str(s1), str(other), str(s2), "-o", str(tmp_path / "m")])
    captured = capsys.readouterr()
    assert rc == 0
    assert "CONFLICT" in captured.err and str(rel) in captured.err
    merged = tmp_path / "m"
    # the first one (argument order) stays in cells/, the other is kept under conflicts/
    kept = json.loads((merged / rel / "run.json").read_text())
    assert kept["timing"]["wall_seconds"] != 99.0
    aside = merged / CONFLICTS_DIR / f"2-{other.name}" / rel / "run.json"
    assert json.loads(aside.read_text())["timing"]["wall_seconds"] == 99.0
    assert (aside.parent / "losses.npy").exists()
    conflicts = json.loads((merged / "manifest.json").read_text())["merge"]["conflicts"]
    assert [c["run"] for c in conflicts] == [str(rel).removeprefix("cells/")]


def test_an_ok_record_wins_over_a_failed_one(shards, tmp_path: Path):
    s1, s2, _ = shards
    failed = tmp_path / "failed-first"
    shutil.copytree(s1, failed)
    run = sorted(failed.glob("cells/*/repeat-1"))[0]
    rel = run.relative_to(failed)
    _edit_record(run, status="failed", error={"type": "timeout", "message": "too slow"})
    result = merge([failed, s1, s2], tmp_path / "m")
    (conflict,) = result.conflicts
    assert conflict.kept == str(s1) and conflict.other == str(failed)
    assert json.loads((tmp_path / "m" / rel / "run.json").read_text())["status"] == "ok"
    aside = tmp_path / "m" / conflict.conflict_path / "run.json"
    assert json.loads(aside.read_text())["status"] == "failed"
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert report["failures"] == []


def test_different_matrices_are_refused(shards, tmp_path: Path, capsys):
    s1, _, _ = shards
    other_matrix = tmp_path / "other.yaml"
    other_matrix.write_text(QUICK.read_text().replace("seed: 201014", "seed: 7"))
    other = run_fake(tmp_path / "other", ShardSpec(2, 2), other_matrix)
    assert main(["merge", str(s1), str(other), "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "different matrices" in err and str(other) in err
    assert not (tmp_path / "m").exists()


def test_refuses_a_non_empty_output_and_folders_without_manifest(shards, tmp_path: Path):
    s1, s2, _ = shards
    with pytest.raises(StoreError, match="not empty"):
        merge([s1, s2], s2.parent)
    with pytest.raises(StoreError, match="manifest"):
        merge([s1, tmp_path], tmp_path / "m")


def test_a_missing_shard_shows_as_missing_runs(shards, tmp_path: Path):
    s1, s2, _ = shards
    result = merge([s1], tmp_path / "m")
    missing = {p.name for p in s2.glob("cells/*")}
    assert set(result.missing_cells) == missing
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert len(report["cells"]) == 3
    missing_runs = [f for f in report["failures"] if f["type"] == "missing"]
    assert len(missing_runs) == 2 * len(missing)


# --- the evidence is kept: conflicts, running shards, mixed code -----------------------------


def _shard_with(shards, placement: str) -> Path:
    """The shard folder that holds the cell of ``placement``."""
    s1, s2, _ = shards
    for shard in (s1, s2):
        if any(
            p.name.split("--")[0].endswith(f"-{placement}-det1-bench0-algoff")
            for p in shard.glob("cells/*")
        ):
            return shard
    raise AssertionError(f"no shard holds placement {placement}")


def test_two_copies_one_ulp_apart_fail_the_merge_and_both_are_kept(shards, tmp_path, capsys):
    s1, s2, _ = shards
    home = _shard_with(shards, "before_model")  # a cell that reproduces: its repeats agree
    other = tmp_path / "rerun"
    shutil.copytree(home, other)
    run = sorted(other.glob("cells/*-before_model-*/repeat-1"))[0]
    rel = run.relative_to(other)
    old, new = nudge_losses(run, step=7)
    assert old != new
    merged = tmp_path / "m"
    rc = main(["merge", str(s1), str(s2), str(other), "-o", str(merged)])
    err = capsys.readouterr().err
    assert rc == EXIT_CONFLICT != 0
    run_name = str(rel).removeprefix("cells/")
    assert "two successful copies with different results" in err
    assert f"error: 1 run has two successful copies with different results: {run_name}" in err
    assert old[:12] in err and new[:12] in err
    # both copies kept: the first (argument order) in cells/, the nudged one under conflicts/
    assert json.loads((merged / rel / "run.json").read_text())["digests"]["trajectory"] == old
    aside = merged / CONFLICTS_DIR / f"3-{other.name}" / rel
    assert json.loads((aside / "run.json").read_text())["digests"]["trajectory"] == new
    assert np.load(aside / "losses.npy").tobytes() == np.load(run / "losses.npy").tobytes()
    merge_info = json.loads((merged / "manifest.json").read_text())["merge"]
    (conflict,) = merge_info["conflicts"]
    assert conflict["run"] == run_name and conflict["kind"] == "result_conflict"
    assert conflict["trajectories"] == [old, new]
    assert merge_info["result_conflicts"] == [run_name]
    assert (merged / "report.md").exists()  # the merged folder and its report are written


def test_identical_copies_and_copies_with_the_same_result_merge_with_exit_0(
    shards, tmp_path, capsys
):
    s1, s2, _ = shards
    same = tmp_path / "same"
    shutil.copytree(s1, same)
    assert main(["merge", str(s1), str(same), str(s2), "-o", str(tmp_path / "m1")]) == 0
    # another record of the same result (another host, another wall time) is no conflict
    run = sorted(same.glob("cells/*/repeat-0"))[0]
    _edit_record(run, timing={"wall_seconds": 99.0})
    assert main(["merge", str(s1), str(same), str(s2), "-o", str(tmp_path / "m2")]) == 0
    (conflict,) = json.loads((tmp_path / "m2" / "manifest.json").read_text())["merge"]["conflicts"]
    assert conflict["kind"] == "same_result"
    assert "different records" in capsys.readouterr().err


def test_a_folder_whose_lock_is_held_is_refused(shards, tmp_path, capsys):
    s1, s2, _ = shards
    running = tmp_path / "running"
    shutil.copytree(s2, running)
    store = ResultsDir(running)
    store.lock()  # a shard still running
    try:
        rc = main(["merge", str(s1), str(running), "-o", str(tmp_path / "m")])
        err = capsys.readouterr().err
        assert rc == EXIT_BAD_INPUT
        assert f"{running} is in use by harness pid {os.getpid()}" in err
        assert not (tmp_path / "m").exists()
    finally:
        store.unlock()
    # once it is released the same merge goes through; an input without a lock file (never
    # locked) is read as it is, and gets none
    plain = tmp_path / "plain"
    shutil.copytree(s1, plain)
    (plain / ".lock").unlink()
    assert main(["merge", str(plain), str(running), "-o", str(tmp_path / "m")]) == 0
    assert not (plain / ".lock").exists()


def _set_provenance(folder: Path, **fields) -> None:
    for path in folder.glob("cells/*/repeat-*/run.json"):
        record = json.loads(path.read_text())
        record["provenance"].update(fields)
        path.write_text(json.dumps(record))


@pytest.mark.parametrize("what", ["workload_digest", "harness_version", "image_digest"])
def test_inputs_made_by_different_code_are_refused_unless_allowed(shards, tmp_path, capsys, what):
    s1, s2, _ = shards
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(s1, a)
    shutil.copytree(s2, b)
    if what == "workload_digest":
        _set_provenance(a, workload_digest="a" * 64)
        _set_provenance(b, workload_digest="b" * 64)
        label, shown = "workload code", ("a" * 12, "b" * 12)
    elif what == "harness_version":
        manifest = json.loads((b / "manifest.json").read_text())
        manifest["harness_version"] = "0.0.1"
        (b / "manifest.json").write_text(json.dumps(manifest))
        label, shown = "harness version", ("0.0.1",)
    else:  # the same image name, another image
        _set_provenance(a, image="local", image_digest="sha256:" + "c" * 64)
        _set_provenance(b, image="local", image_digest="sha256:" + "d" * 64)
        label, shown = "image local", ("sha256:" + "c" * 12, "sha256:" + "d" * 12)
    refused = tmp_path / "refused"
    assert main(["merge", str(a), str(b), "-o", str(refused)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "made by different code" in err and label in err and "--allow-mixed" in err
    assert all(s in err for s in shown) and str(a) in err and str(b) in err
    assert not refused.exists()

    merged = tmp_path / "m"
    assert main(["merge", str(a), str(b), "-o", str(merged), "--allow-mixed"]) == 0
    err = capsys.readouterr().err
    assert "MIXED (--allow-mixed)" in err and label in err
    (mixed,) = json.loads((merged / "manifest.json").read_text())["merge"]["mixed"]
    assert mixed["what"] == what and set(mixed["values"]) == {str(a), str(b)}
    assert (merged / "report.json").exists()


def test_a_merge_of_one_code_states_no_mixing(shards, tmp_path):
    s1, s2, _ = shards
    merge([s1, s2], tmp_path / "m")
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["merge"]["mixed"] == []
