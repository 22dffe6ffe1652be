"""Merging shards' results folders: nothing lost, duplicates and conflicts named, matrices
never mixed. The shards here come from the fake executor (fast, deterministic records); the
real-training merge is in tests/test_shard_workflow.py."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fault_tools import nudge_losses

from harness.cli import main
from harness.contract import RECORD_FILE
from harness.errors import StoreError
from harness.executors.fake import FakeExecutor
from harness.exit_codes import EXIT_BAD_INPUT, EXIT_CONFLICT
from harness.matrix import load_matrix
from harness.report import write_reports
from harness.results.merge import CONFLICTS_DIR, merge
from harness.results.merge_inputs import shared_lock
from harness.results.store import ResultsDir
from harness.run.matrix_runner import RunConfig, run_matrix
from harness.run.shard import ShardSpec

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "placement-quick.yaml"


def run_fake(out: Path, shard: ShardSpec | None, matrix: Path = QUICK) -> Path:
    # report.json only (no plots): the tests compare it, and this runs once per mutant
    config = RunConfig(
        matrix=load_matrix(matrix),
        out=out,
        progress="quiet",
        shard=shard,
        formats=("json",),
        plots=False,
    )
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
    result = merge([s1, s2], tmp_path / "m", formats=("json",), plots=False)
    assert result.runs == 6 and result.cells == 3
    assert result.duplicates == [] and result.missing_cells == []
    merged = tmp_path / "m"
    assert repeats(merged) == repeats(whole) == repeats(s1) | repeats(s2)
    assert not (merged / "plots").exists() and not (merged / "report.md").exists()
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
    digests = [json.loads((p / "manifest.json").read_text())["matrix_digest"] for p in (s1, other)]
    assert err.splitlines() == [
        f"error: these folders hold results of different matrices: {s1} ('placement-quick', "
        f"digest {digests[0][:12]}); {other} ('placement-quick', digest {digests[1][:12]})",
        "  hint: merge only the shards of one matrix run",
    ]
    assert not (tmp_path / "m").exists()


def test_refuses_a_non_empty_output_and_folders_without_manifest(shards, tmp_path: Path):
    s1, s2, _ = shards
    with pytest.raises(StoreError, match="not empty"):
        merge([s1, s2], s2.parent)
    with pytest.raises(StoreError, match="manifest"):
        merge([s1, tmp_path], tmp_path / "m")


def test_a_missing_shard_shows_as_missing_runs(shards, tmp_path: Path, caplog):
    s1, s2, _ = shards
    caplog.set_level(logging.WARNING, logger="harness")
    result = merge([s1], tmp_path / "m", formats=("json",), plots=False)
    missing = {p.name for p in s2.glob("cells/*")}
    assert set(result.missing_cells) == missing
    assert [r.getMessage() for r in caplog.records if r.name == "harness.results.merge"] == [
        f"no input holds cell {name}: the report lists its runs as missing"
        for name in result.missing_cells
    ]
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
    (none_cell,) = (merged / "cells").glob("*-none-*")
    assert (merged / "plots" / f"{none_cell.name}.png").exists()  # plots, by default


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


# --- every kind of conflict, as the user is told it -------------------------------------------


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_each_kind_of_conflict_is_kept_named_and_worded(shards, tmp_path, capsys, caplog):
    """Four inputs, one merge: a failed and an unreadable copy lose to the ok one of a later
    input (moved under conflicts/ of their input, 1-x), two ok copies with other digests are
    result conflicts (the first kept, the other under 2-s1), a copy that differs only in timing
    is a same-result conflict, an identical copy is kept once. The exact lines, the manifest's
    merge section and the conflicts/ tree are pinned."""
    s1, s2, whole = shards
    x, y = tmp_path / "x", tmp_path / "y"
    shutil.copytree(s1, x)
    shutil.copytree(s2, y)
    bm0, bm1, none0, none1 = (str(p.relative_to(x)) for p in sorted(x.glob("cells/*/repeat-*")))
    y0, y1 = (str(p.relative_to(y)) for p in sorted(y.glob("cells/*/repeat-*")))
    _edit_record(x / bm0, status="failed", error={"type": "timeout", "message": "too slow"})
    (x / bm1 / "run.json").write_text("not a record")
    record = json.loads((x / none0 / "run.json").read_text())
    trajectory = record["digests"]["trajectory"]
    _edit_record(x / none0, digests={**record["digests"], "trajectory": None})
    digests1 = json.loads((x / none1 / "run.json").read_text())["digests"]
    _edit_record(x / none1, digests={**digests1, "final_weights": "f" * 64})
    _edit_record(y / y0, timing={"wall_seconds": 99.0})
    merged = tmp_path / "m"

    argv = ["-v", "merge", str(x), str(s1), str(s2), str(y), "-o", str(merged), "--no-report"]
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == EXIT_CONFLICT

    def run(rel: str) -> str:
        return rel.removeprefix("cells/")

    trajectory1 = digests1["trajectory"]
    short, short1 = trajectory[:12], trajectory1[:12]
    assert out.splitlines() == [
        f"merged 4 folders into {merged}: 6 runs, 3 cells",
        f"  same run in {s2} and {y}, identical: kept one ({run(y1)})",
    ]
    assert [line for line in err.splitlines() if line.startswith(("  CONFLICT", "error"))] == [
        f"  CONFLICT {run(bm0)}: different records in {s1} and {x} (not both ok); kept {s1}, "
        f"the other is in {merged}/conflicts/1-x/{bm0}",
        f"  CONFLICT {run(bm1)}: different records in {s1} and {x} (not both ok); kept {s1}, "
        f"the other is in {merged}/conflicts/1-x/{bm1}",
        f"  CONFLICT {run(none0)}: two successful copies with different results (trajectory "
        f"none in {x}, {short} in {s1}); kept {x}, the other is in {merged}/conflicts/2-s1/{none0}",
        f"  CONFLICT {run(none1)}: two successful copies with different results (trajectory "
        f"{short1} in {x}, {short1} in {s1}); kept {x}, the other is in "
        f"{merged}/conflicts/2-s1/{none1}",
        f"  CONFLICT {run(y0)}: different records in {s2} and {y} (same losses and digests); "
        f"kept {s2}, the other is in {merged}/conflicts/4-y/{y0}",
        f"error: 2 runs have two successful copies with different results: {run(none0)}, "
        f"{run(none1)}. Both copies are kept (cells/ and {merged}/conflicts); the merged "
        "manifest lists them (merge.conflicts)",
    ]

    # what --verbose logs (the warnings are logged without it too)
    both_ok = " (two successful copies with different results)"
    assert [r.getMessage() for r in caplog.records if r.name == "harness.results.merge"] == [
        f"{run(bm0)} differs between {x} and {s1}: kept {s1}, the other is in "
        f"{merged}/conflicts/1-x/{bm0}",
        f"{run(bm1)} differs between {x} and {s1}: kept {s1}, the other is in "
        f"{merged}/conflicts/1-x/{bm1}",
        f"{run(none0)} differs between {x} and {s1}{both_ok}: kept {x}, the other is in "
        f"{merged}/conflicts/2-s1/{none0}",
        f"{run(none1)} differs between {x} and {s1}{both_ok}: kept {x}, the other is in "
        f"{merged}/conflicts/2-s1/{none1}",
        f"{run(y0)} differs between {s2} and {y}: kept {s2}, the other is in "
        f"{merged}/conflicts/4-y/{y0}",
        f"{run(y1)}: identical in {s2} and {y}; kept one",
    ]

    def conflict(rel, kept, other, path, kind, trajectories=None):
        return {
            "run": run(rel),
            "kept": str(kept),
            "other": str(other),
            "identical": False,
            "conflict_path": path,
            "kind": kind,
            "trajectories": trajectories,
            "machines_differ": None,  # the fake executor records no machine
        }

    manifest = json.loads((merged / "manifest.json").read_text())
    assert manifest["merge"] == {
        "duplicates": [
            {
                "run": run(y1),
                "kept": str(s2),
                "other": str(y),
                "identical": True,
                "conflict_path": None,
                "kind": "identical",
                "trajectories": None,
                "machines_differ": None,
            }
        ],
        "conflicts": [
            conflict(bm0, s1, x, f"conflicts/1-x/{bm0}", "not_both_ok"),
            conflict(bm1, s1, x, f"conflicts/1-x/{bm1}", "not_both_ok"),
            conflict(
                none0, x, s1, f"conflicts/2-s1/{none0}", "result_conflict", [None, trajectory]
            ),
            conflict(
                none1,
                x,
                s1,
                f"conflicts/2-s1/{none1}",
                "result_conflict",
                [trajectory1] * 2,
            ),
            conflict(y0, s2, y, f"conflicts/4-y/{y0}", "same_result"),
        ],
        "result_conflicts": [run(none0), run(none1)],
        "missing_cells": [],
        "mixed": [],
        # the fake executor records no machine: no input names one
        "machines": {str(p): [] for p in (x, s1, s2, y)},
    }
    inputs = [x, s1, s2, y]
    made = [json.loads((p / "manifest.json").read_text()) for p in inputs]
    assert manifest["merged_from"] == [
        {
            "path": str(p),
            "shard": m["shard"],
            "created_at": m["created_at"],
            "harness_version": m["harness_version"],
        }
        for p, m in zip(inputs, made, strict=True)
    ]
    assert manifest["shard"] is None and manifest["matrix_text"] == made[0]["matrix_text"]
    assert (merged / "matrix.yaml").read_text() == (s1 / "matrix.yaml").read_text()
    # every run once in cells/, the losing copy of each conflict under conflicts/<k>-<input>/
    assert repeats(merged) == repeats(whole)
    run_files = ["losses.npy", "run.json", "run.log", "spec.json"]
    assert _files(merged / CONFLICTS_DIR) == sorted(
        f"{k}/{rel}/{name}"
        for k, rel in (("1-x", bm0), ("1-x", bm1), ("2-s1", none0), ("2-s1", none1), ("4-y", y0))
        for name in run_files
    )
    for kept, rel in ((s1, bm0), (s1, bm1), (x, none0), (x, none1), (s2, y0), (s2, y1)):
        assert (merged / rel / "run.json").read_bytes() == (kept / rel / "run.json").read_bytes()
    for source, k, rel in ((x, "1-x", bm0), (x, "1-x", bm1), (s1, "2-s1", none0), (y, "4-y", y0)):
        aside = merged / CONFLICTS_DIR / k / rel / "run.json"
        assert aside.read_bytes() == (source / rel / "run.json").read_bytes()
    assert not (merged / "report.json").exists()  # --no-report


# --- mixed code, as the user is told it -------------------------------------------------------


def _set_run_provenance(run_dir: Path, **fields) -> None:
    path = run_dir / "run.json"
    record = json.loads(path.read_text())
    record["provenance"].update(fields)
    path.write_text(json.dumps(record))


def _report_json(folder: Path) -> dict:
    write_reports(folder, ("json",), plots=False)
    return json.loads((folder / "report.json").read_text())


def test_mixed_code_is_worded_the_same_in_the_refusal_the_merge_and_the_report(
    shards, tmp_path, capsys
):
    """What differs, per input, digests shortened (a sha256 hex digest to 12 digits, its prefix
    kept, whatever it is; any other value whole), an input that records none says so; the same
    lines in the refusal, in merge's MIXED lines and in the merged report (manifest merge.mixed
    read back)."""
    s1, s2, _ = shards
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(s1, a)
    shutil.copytree(s2, b)
    a0, a1, a2, a3 = sorted(a.glob("cells/*/repeat-*"))
    b0, b1 = sorted(b.glob("cells/*/repeat-*"))
    digest = "sha256:" + "1" * 64
    # image: None -> the spec's image name ("local")
    _set_run_provenance(a0, workload_digest=digest, image_digest="sha256:" + "c" * 64)
    _set_run_provenance(a1, workload_digest=digest, image_digest="sha256:" + "c" * 64)
    _set_run_provenance(a2, workload_digest="2" * 64, image="other", image_digest="E" * 64)
    _set_run_provenance(a3, image="other", image_digest="X" * 64)
    _set_run_provenance(b0, image="local", image_digest="reg.io:5000/x@sha256:" + "d" * 64)
    _set_run_provenance(b1, image="other", image_digest="e" * 40)
    manifest = json.loads((b / "manifest.json").read_text())
    version = manifest["harness_version"]
    manifest["harness_version"] = "0.0.1"
    (b / "manifest.json").write_text(json.dumps(manifest))
    lines = [
        f"harness version (manifest.json harness_version) differs: {a}: {version}; {b}: 0.0.1",
        f"workload code (run.json provenance.workload_digest) differs: {a}: 222222222222, "
        f"sha256:111111111111; {b}: none recorded",
        f"image local (run.json provenance.image_digest) differs: {a}: sha256:cccccccccccc; "
        f"{b}: reg.io:5000/x@sha256:dddddddddddd",
        f"image other (run.json provenance.image_digest) differs: {a}: {'E' * 64}, {'X' * 64}; "
        f"{b}: {'e' * 40}",
    ]
    merged = tmp_path / "m"
    assert main(["merge", str(a), str(b), "-o", str(merged), "--no-report"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: these folders were made by different code: " + " | ".join(lines),
        "  hint: merge results of one harness and workload version (rerun the odd shard with "
        "the others' code), or pass --allow-mixed to merge them anyway; the merged manifest "
        "then lists what differs (merge.mixed)",
    ]
    assert not merged.exists()
    with pytest.raises(StoreError, match="made by different code"):
        merge([a, b], merged, formats=())  # refused by default through the API too

    assert main(["merge", str(a), str(b), "-o", str(merged), "--no-report", "--allow-mixed"]) == 0
    err = capsys.readouterr().err
    assert [x for x in err.splitlines() if "MIXED" in x] == [
        f"  MIXED (--allow-mixed): {line}" for line in lines
    ]
    assert json.loads((merged / "manifest.json").read_text())["merge"]["mixed"] == [
        {
            "what": "harness_version",
            "values": {str(a): [version], str(b): ["0.0.1"]},
            "image": None,
        },
        {
            "what": "workload_digest",
            "values": {str(a): ["2" * 64, digest], str(b): []},
            "image": None,
        },
        {
            "what": "image_digest",
            "values": {
                str(a): ["sha256:" + "c" * 64],
                str(b): ["reg.io:5000/x@sha256:" + "d" * 64],
            },
            "image": "local",
        },
        {
            "what": "image_digest",
            "values": {str(a): ["E" * 64, "X" * 64], str(b): ["e" * 40]},
            "image": "other",
        },
    ]
    assert _report_json(merged)["mixed_code"] == lines


def test_the_report_reads_a_hand_edited_merge_mixed_leniently(shards, tmp_path):
    """A manifest's merge.mixed is not trusted to hold what merge wrote: each entry is shown as
    well as it can be (a missing kind reads 'code', a lone value as a list, an unknown kind by
    its name), and one that is no entry at all as it is."""
    s1, s2, _ = shards
    merged = tmp_path / "m"
    merge([s1, s2], merged, formats=())
    path = merged / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["merge"]["mixed"] = [
        "junk",
        {"what": "workload_digest", "values": {"/p": "sha256:" + "a" * 64, "/q": ["x", 3]}},
        {"values": {"/p": ["1.0"]}},
        {"what": "harness_version", "values": ["not", "a", "dict"]},
        {"what": "image_digest", "image": 7, "values": {"/p": []}},
        {"what": "new_kind", "values": {"/p": ["v"]}},
    ]
    path.write_text(json.dumps(manifest))
    assert _report_json(merged)["mixed_code"] == [
        "junk",
        "workload code (run.json provenance.workload_digest) differs: /p: sha256:aaaaaaaaaaaa; "
        "/q: x, 3",
        "code differs: /p: 1.0",
        "harness version (manifest.json harness_version) differs: ",
        "image 7 (run.json provenance.image_digest) differs: /p: none recorded",
        "new_kind differs: /p: v",
    ]


def test_links_in_a_run_folder_are_left_behind_never_followed(shards, tmp_path):
    """A results folder cannot pull files from elsewhere into the merged folder: a link in a run
    folder is left behind (neither followed nor copied: the merged folder holds no links for
    upload-artifact to follow), whether the run is copied first, wins a conflict or is kept
    aside under conflicts/."""
    s1, s2, _ = shards
    secret = tmp_path / "secret.txt"
    secret.write_text("not part of any run")
    f, g = tmp_path / "f", tmp_path / "g"
    shutil.copytree(s1, f)
    shutil.copytree(s1, g)
    bm0, bm1 = (str(p.relative_to(f)) for p in sorted(f.glob("cells/*/repeat-*"))[:2])
    _edit_record(f / bm0, status="failed", error={"type": "timeout", "message": "too slow"})
    (f / bm1 / "extra").symlink_to(secret)  # f's copy is the first one of bm1
    (g / bm0 / "extra").symlink_to(secret)  # g's ok copy wins over f's failed one
    _edit_record(g / bm1, timing={"wall_seconds": 99.0})
    (g / bm1 / "extra").symlink_to(secret)  # g's copy of bm1 is kept aside
    merged = tmp_path / "m"
    merge([f, g, s2], merged, formats=())
    for copy in (merged / bm0, merged / bm1, merged / CONFLICTS_DIR / "2-g" / bm1):
        assert (copy / RECORD_FILE).is_file()
        assert not (copy / "extra").is_symlink() and not (copy / "extra").exists()


# --- what merge refuses, in the words the user reads -----------------------------------------


def _refusal(argv: list[str], capsys) -> tuple[int, list[str]]:
    rc = main(argv)
    return rc, capsys.readouterr().err.splitlines()


def test_each_refusal_names_the_folder_and_what_to_do(shards, tmp_path, capsys):
    s1, s2, _ = shards
    out = str(tmp_path / "m")
    with pytest.raises(StoreError) as refused:
        merge([], tmp_path / "m")
    assert (refused.value.message, refused.value.hint) == (
        "nothing to merge",
        "give one or more results folders",
    )
    nope = tmp_path / "nope"
    assert _refusal(["merge", str(s1), str(nope), "-o", out], capsys) == (
        EXIT_BAD_INPUT,
        [f"error: {nope}: no such results folder", "  hint: give folders `harness run` wrote"],
    )
    # a folder whose manifest lacks the matrix (digest or text) is no results folder of a run
    for field_name in ("matrix_digest", "matrix_text"):
        bare = tmp_path / f"no-{field_name}"
        shutil.copytree(s2, bare)
        manifest = json.loads((bare / "manifest.json").read_text())
        manifest[field_name] = None
        (bare / "manifest.json").write_text(json.dumps(manifest))
        assert _refusal(["merge", str(s1), str(bare), "-o", out], capsys) == (
            EXIT_BAD_INPUT,
            [
                f"error: {bare} has no manifest.json: it is not a results folder of `harness run`",
                "  hint: give the folders that `harness run --shard I/N --out DIR` wrote",
            ],
        )
    # the output is an input, named another way
    assert _refusal(["merge", str(s1), str(s2), "-o", f"{s2}/../{s2.name}"], capsys) == (
        EXIT_BAD_INPUT,
        [
            f"error: {s2}/../{s2.name} is one of the inputs",
            "  hint: merge into a new folder (-o DIR)",
        ],
    )
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    assert _refusal(["merge", str(s1), str(s2), "-o", str(full)], capsys) == (
        EXIT_BAD_INPUT,
        [
            f"error: {full} is not empty (it holds notes.txt); nothing was written to it",
            "  hint: merge into a new or empty folder (-o DIR)",
        ],
    )
    assert not (tmp_path / "m").exists()
    # an empty folder is a new one
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["merge", str(s1), str(s2), "-o", str(empty), "--no-report"]) == 0
    assert repeats(empty) == repeats(s1) | repeats(s2)


def test_a_merge_of_a_held_input_names_no_pid_it_cannot_read(shards, tmp_path, capsys):
    """A lock file without a pid in it (another tool, a damaged file): the holder is unknown."""
    s1, s2, _ = shards
    held = tmp_path / "held"
    shutil.copytree(s2, held)
    (held / ".lock").write_text("pid?")
    fd = os.open(held / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        rc, err = _refusal(["merge", str(s1), str(held), "-o", str(tmp_path / "m")], capsys)
    finally:
        os.close(fd)
    assert rc == EXIT_BAD_INPUT
    assert err == [
        f"error: {held} is in use by harness pid (unknown) (its .lock is locked): a shard still "
        "running, or a harness still writing there",
        "  hint: wait for that harness to finish, then merge again",
    ]


def test_inputs_another_merge_is_reading_can_be_merged_and_every_lock_is_released(shards, tmp_path):
    """A merge only reads its inputs: two merges may read one shard at once. Once it returns,
    no lock is left held, on the inputs or on the merged folder."""
    s1, s2, _ = shards
    with shared_lock(s1):  # another merge reading s1 right now
        merge([s1, s2], tmp_path / "m", formats=())
    for folder in (s1, s2, tmp_path / "m"):
        store = ResultsDir(folder)
        store.lock()  # a harness may write there again
        store.unlock()


def test_a_copy_that_lacks_the_losses_file_is_not_identical(shards, tmp_path: Path):
    """Two copies of an ok run with the same run.json, one without its losses.npy: not the
    same run. The merge keeps the first copy and sets the other aside under conflicts/, as a
    result conflict; it never calls them identical."""
    s1, _, _ = shards
    other = tmp_path / "other"
    shutil.copytree(s1, other)
    run = sorted(other.glob("cells/*/repeat-0"))[0]
    (run / "losses.npy").unlink()
    result = merge([s1, other], tmp_path / "m", formats=("json",), plots=False)
    different = [d for d in result.duplicates if not d.identical]
    assert len(different) == 1, result.duplicates
    assert result.result_conflicts == different
    aside = tmp_path / "m" / different[0].conflict_path
    assert aside.is_dir() and not (aside / "losses.npy").exists()
    kept = tmp_path / "m" / run.relative_to(other)
    assert (kept / "losses.npy").read_bytes() == (
        s1 / run.relative_to(other) / "losses.npy"
    ).read_bytes()


def test_links_and_fifos_in_a_merge_input_are_neither_followed_nor_copied(
    shards, tmp_path: Path, caplog
):
    """A hand-made merge input with a planted link and a FIFO: merge copies neither, and no
    outside file's bytes reach the merged folder."""
    s1, s2, _ = shards
    planted = tmp_path / "s1-planted"
    shutil.copytree(s1, planted)
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-OUTSIDE-THE-INPUT\n")
    run_dir = sorted(planted.glob("cells/*/repeat-*"))[0]
    (run_dir / "run.log").unlink(missing_ok=True)
    (run_dir / "run.log").symlink_to(secret)
    os.mkfifo(run_dir / "pipe")
    (run_dir / "tensorboard-link").symlink_to(tmp_path, target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="harness.results.merge"):
        merge([planted, s2], tmp_path / "m", formats=("json",), plots=False)
    merged_run = tmp_path / "m" / run_dir.relative_to(planted)
    assert merged_run.is_dir()
    assert not any(
        (merged_run / name).exists() or (merged_run / name).is_symlink()
        for name in ("run.log", "pipe", "tensorboard-link")
    )
    texts = [p.read_bytes() for p in (tmp_path / "m").rglob("*") if p.is_file()]
    assert not any(b"SECRET-OUTSIDE" in t for t in texts)
    assert sum("not copied" in r.getMessage() for r in caplog.records) == 3
