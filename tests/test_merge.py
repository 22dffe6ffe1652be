"""Merging shards' results folders: nothing lost, duplicates and conflicts named, matrices
never mixed. The shards here come from the fake executor (fast, deterministic records); the
real-training merge is in tests/test_shard_workflow.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import StoreError
from harness.executors.fake import FakeExecutor
from harness.matrix import load_matrix
from harness.merge import CONFLICTS_DIR, merge
from harness.runner import RunConfig, run_matrix
from harness.shard import ShardSpec

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
