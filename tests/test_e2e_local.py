"""End to end on real MNIST with real training: the post's finding on this CPU, and the report
a person reads.

``before_model`` reproduces bit for bit, ``none`` and ``before_trainer`` do not, and the report
says so in words: in report.md, which is read here as GitHub renders it (cmark-gfm), verdict
first and without the settings every cell shares as columns.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gfm import render, tables

from harness.run.progress import last_epoch

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """examples/placement-quick.yaml at 60 steps (the placements part ways at step 0)."""
    tmp_path = tmp_path_factory.mktemp("quick")
    matrix = tmp_path / "quick.yaml"
    text = (ROOT / "examples" / "placement-quick.yaml").read_text()
    matrix.write_text(text.replace("max_steps_per_epoch: 200", "max_steps_per_epoch: 60"))
    # A relative --out, as a user types it: runs start in their own folders, so every path the
    # harness hands them must already be absolute.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(matrix),
            "--out",
            "results",
            "--progress",
            "plain",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "results"
    return {
        "out": out,
        "stdout": proc.stdout,
        "report": json.loads((out / "report.json").read_text()),
        "md": (out / "report.md").read_text(),
    }


def test_quick_example_reproduces_the_post(quick: dict):
    out, report, md = quick["out"], quick["report"], quick["md"]
    cells = {c["settings"]["placement"]: c for c in report["cells"]}
    assert cells["before_model"]["reproducible"] is True
    assert cells["before_model"]["distinct_trajectories"] == 1
    assert cells["before_model"]["first_divergence"] is None
    for late in ("none", "before_trainer"):
        assert cells[late]["reproducible"] is False
        assert cells[late]["distinct_trajectories"] == 2
        assert cells[late]["first_divergence"]["step"] == 0
        # the weights part at step 0 too (their init differs): first parameter, no extra text
        assert cells[late]["weights_compared"] is True
        weights = cells[late]["weights_divergence"]
        assert (weights["step"], weights["parameter"]) == (0, "model.1.weight")
    assert cells["before_model"]["weights_divergence"] is None
    assert "(weights:" not in md
    summary = report["summaries"]["local"]
    assert "placement=none and placement=before_trainer never reproduce" in summary
    assert "placement=before_model always does" in summary
    assert "placement breaks it" in md
    runs = list(out.glob("cells/*/repeat-*"))
    assert len(runs) == 6
    for run in runs:
        assert last_epoch(run) == (1, 1)  # what the progress display reads from the log
        assert any((run / "tensorboard").rglob("*tfevents*"))


def test_the_rendered_report_puts_the_verdict_first_and_shared_settings_above(quick: dict):
    html = render(quick["md"])
    first_screen = render(quick["md"].split("<details", 1)[0])
    # the first screen: the counts, the legend, the settings every cell shares, the grid
    assert "1 of 3 cells reproduce bit for bit" in first_screen
    assert "Every cell has accelerator=cpu, devices=1, model=mlp" in first_screen
    ((header, *grid),) = tables(first_screen)
    assert header == ["placement", "verdict"]
    assert grid == [["none", "❌"], ["before_trainer", "❌"], ["before_model", "✅"]]
    # the cells table: the verdict is the first column, then where it diverges, then the one
    # setting that varies; no constant setting is a column; the cell's name comes last
    (cells_table,) = [t for t in tables(html) if t[0][0] == "verdict"]
    header, *rows = cells_table
    assert header[:3] == ["verdict", "divergence (epoch / batch / step)", "placement"]
    assert header[-1] == "cell"
    shared = ("image", "accelerator", "devices", "model", "cudnn_deterministic", "threads")
    assert not set(shared) & set(header)
    verdicts = {row[2]: row[0] for row in rows}
    assert verdicts == {
        "none": "❌ diverges",
        "before_trainer": "❌ diverges",
        "before_model": "✅ reproduces",
    }
    assert {row[2]: row[1] for row in rows}["none"] == "0 / 0 / 0"


#: What `harness run` and `harness report --progress plain` print of the quick matrix's grid.
QUICK_GRID = [
    "placement       verdict",
    "none               ✗",
    "before_trainer     ✗",
    "before_model       ✓",
]


def _grid_of(lines: list[str]) -> list[str]:
    start = lines.index(QUICK_GRID[0])
    return lines[start : lines.index("", start)]


def test_run_prints_the_answer_in_the_terminal(quick: dict):
    """The sentence, the grid, the legend and the answer, then the lines scripts read (plain:
    not a TTY)."""
    out = quick["out"].resolve()
    lines = quick["stdout"].splitlines()
    sentence = quick["report"]["summaries"]["local"]
    assert " ".join(lines[: lines.index("")]) == sentence
    assert _grid_of(lines) == QUICK_GRID
    assert lines[-2:] == [f"report: {out / 'report.md'}", f"results: {out}"]
    # the legend, then the answer: no pair of reproducing cells differs in placement alone,
    # and the recipe names before_model (wrapped lines go on indented)
    answer = lines[lines.index("✓ reproduces  ✗ diverges") + 1 : -2]
    assert answer[0] == "What changes the bits: no two reproducing cells to judge placement by."
    recipe = " ".join(line.strip() for line in answer[1:])
    assert recipe.startswith("Recipe: On local, placement=before_model reproduces at ")
    assert recipe.endswith("it needs placement=before_model.")


def test_report_on_the_same_folder_prints_the_same_answer(quick: dict):
    out = quick["out"]
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(out), "--progress", "plain"],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert _grid_of(lines) == QUICK_GRID
    # the same summary as the run printed, then the paths as before
    assert proc.stdout.split("\n✓ reproduces")[0] == quick["stdout"].split("\n✓ reproduces")[0]
    assert lines[-3:] == [str(out / f"report.{fmt}") for fmt in ("md", "json", "csv")]
