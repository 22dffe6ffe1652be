"""The CLI in-process: exit codes, plan/schema output, user errors without tracebacks, and
the runner with the fake executor (failures recorded, the matrix goes on)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.cli import main
from harness.executors.fake import FakeExecutor
from harness.matrix import load_matrix, schema_text
from harness.results.run_reader import load_record
from harness.run.matrix_runner import RunConfig, run_matrix

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "placement-quick.yaml"


def test_plan_lists_cells_and_runs(capsys):
    assert main(["plan", str(QUICK)]) == 0
    out = capsys.readouterr().out
    assert "3 cells, 6 runs" in out and "local-cpu1-before_model-det1-bench0-algoff" in out
    assert main(["plan", str(QUICK), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["cells"]) == 3 and data["runs"] == 6


def test_schema_prints_the_committed_schema(capsys):
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == schema_text()


def test_bad_matrix_exits_2_with_message_and_hint(capsys):
    assert main(["plan", str(ROOT / "tests" / "resources" / "matrix_bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert "error: invalid matrix" in err and "hint:" in err and "Traceback" not in err


def test_missing_results_folder_is_a_user_error(capsys, tmp_path: Path):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such results folder" in capsys.readouterr().err


def test_runner_records_failures_and_goes_on(tmp_path: Path):
    config = RunConfig(matrix=load_matrix(QUICK), out=tmp_path / "r", progress="quiet")
    fake = FakeExecutor(seconds=0.05, fail_placement="none", diverge_placement="before_trainer")
    summary = run_matrix(config, fake)
    assert summary.exit_code == 1
    assert summary.statuses["ok"] == 4 and summary.statuses["failed"] == 2
    failed = next((tmp_path / "r" / "cells").glob("local-cpu1-none-*/repeat-0"))
    record = load_record(failed)
    assert record.status == "failed" and "fake failure" in record.error.log_tail
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    verdicts = {c["settings"]["placement"]: c["reproducible"] for c in report["cells"]}
    # every repeat of "none" failed: unknown (null), never "does not reproduce"
    assert verdicts == {"none": None, "before_trainer": False, "before_model": True}
    # a second run redoes the failed runs only
    again = run_matrix(
        RunConfig(matrix=load_matrix(QUICK), out=tmp_path / "r", progress="quiet"),
        FakeExecutor(seconds=0.05),
    )
    assert again.skipped == 4 and again.statuses["ok"] == 2 and again.exit_code == 0


def test_run_cli_with_fake_executor_and_plain_progress(tmp_path: Path, capsys):
    rc = main(
        [
            "run",
            str(QUICK),
            "--out",
            str(tmp_path / "r"),
            "--executor",
            "fake",
            "--progress",
            "plain",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "cells 3/3, runs 6/6" in captured.err
    assert (tmp_path / "r" / "report.md").exists()
