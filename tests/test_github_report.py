"""``harness report --github``: the job summary stays within GitHub's 1 MiB and is cut cleanly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from harness.cli import main
from harness.contract import RECORD_FORMAT_VERSION, RunSpec, write_json_atomic
from harness.report.github import SUMMARY_LIMIT, fit_summary

LOG_LINE = "RuntimeError: CUDA error: an illegal memory access was encountered | <x> `tick`"


def test_a_small_report_is_left_alone():
    text = "# r\n\n| a |\n|---|\n| 1 |\n"
    assert fit_summary(text, 1000) == (text, False, text.count("\n") + 1)


def test_the_cut_falls_between_rows_and_names_the_artifact():
    rows = [f"| cell-{i:04d} | yes |" for i in range(400)]
    text = "\n".join(["# Report", "", "| cell | ok |", "|---|---|", *rows, "", "## Next", ""])
    limit = 4000
    cut, was_cut, kept = fit_summary(text, limit, artifact="my-report", link="https://x/runs/1")
    assert was_cut and len(cut.encode()) <= limit
    body, _, note = cut.partition("\n> [!WARNING]")
    assert "`my-report` artifact" in note and "https://x/runs/1" in note
    assert "1 MiB" in note or "1,024 KiB" in note
    lines = body.rstrip("\n").split("\n")
    assert lines == text.split("\n")[: len(lines)]  # a prefix, line for line
    assert lines[-1].startswith("| cell-") and lines[-1].endswith("|")  # a whole row
    assert kept == len(lines) and len(lines) > 10


def test_the_cut_never_falls_inside_a_code_block_or_details():
    block = ["<details><summary>log tail</summary>", "", "```text"]
    block += [f"line {i}" for i in range(300)] + ["```", "", "</details>", ""]
    text = "\n".join(["# Report", "", "intro", "", *block, "## After", "", "x" * 50])
    cut, was_cut, _ = fit_summary(text, 2000)
    assert was_cut and len(cut.encode()) <= 2000
    body = cut.partition("\n> [!WARNING]")[0]
    assert "```" not in body and "<details>" not in body
    assert body.rstrip().endswith("intro")


def _write_failed_run(root: Path, i: int, tail: str) -> None:
    name = f"local-cpu1-before_model-seed{i}"
    cid = hashlib.sha256(name.encode()).hexdigest()[:12]
    run_dir = root / "cells" / f"{name}--{cid}" / "repeat-0"
    run_dir.mkdir(parents=True)
    spec = RunSpec(seed=i, repeat=0, cell_id=cid, cell_name=name)
    write_json_atomic(
        run_dir / "run.json",
        {
            "format_version": RECORD_FORMAT_VERSION,
            "status": "failed",
            "error": {"type": "failed", "message": f"run {i} died", "log_tail": tail},
            "spec": spec.to_dict(),
            "steps": 0,
            "ranks": 1,
            "digests": {"trajectory": None},
        },
    )


@pytest.fixture(scope="module")
def big_results(tmp_path_factory) -> Path:
    """300 failed runs with 4 KB log tails: a report of about 1.3 MB."""
    root = tmp_path_factory.mktemp("big")
    tail = "\n".join(f"{LOG_LINE} {k}" for k in range(45))
    for i in range(300):
        _write_failed_run(root, i, tail)
    return root


def test_a_report_above_1_mib_is_cut_to_fit_what_the_step_left(big_results, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    earlier = "### written earlier in this step\n\n" + "y" * 10_000 + "\n"
    summary.write_text(earlier)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "team/repo")
    monkeypatch.setenv("GITHUB_RUN_ID", "77")
    assert main(["report", str(big_results), "--github"]) == 0
    data = summary.read_bytes()
    assert len(data) <= SUMMARY_LIMIT
    assert data.startswith(earlier.encode())  # appended, not overwritten
    text = data.decode()
    assert "# Reproducibility report" in text and "## Failed runs" in text
    assert "`report` artifact" in text and "https://github.com/team/repo/actions/runs/77" in text
    # Nothing else was written into the folder: --github only writes the summary.
    assert not (big_results / "report.md").exists()
    # The full report really is above the limit, and the summary holds a prefix of it.
    assert main(["report", str(big_results), "--format", "md", "--no-plots"]) == 0
    full = (big_results / "report.md").read_text()
    assert len(full.encode()) > SUMMARY_LIMIT
    shown = text[len(earlier) :].partition("\n> [!WARNING]")[0]
    assert full.startswith(shown.rstrip("\n"))
    assert shown.count("```") % 2 == 0  # every log block that was started is closed
    assert len(shown) > SUMMARY_LIMIT // 2  # cut near the limit, not at the first heading


def test_a_small_report_goes_whole_into_the_summary(tmp_path, monkeypatch):
    root = tmp_path / "r"
    _write_failed_run(root, 1, "boom")
    summary = tmp_path / "s.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert main(["report", str(root), "--github"]) == 0
    text = summary.read_text()
    assert "run 1 died" in text and "[!WARNING]" not in text


def test_without_github_step_summary_it_says_what_to_do(tmp_path, monkeypatch, capsys):
    root = tmp_path / "r"
    _write_failed_run(root, 1, "boom")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert main(["report", str(root), "--github"]) == 2
    assert "GITHUB_STEP_SUMMARY" in capsys.readouterr().err
