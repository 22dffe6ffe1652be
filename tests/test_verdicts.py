"""Three verdicts (issue 10): a cell reproduces, diverges, or is unknown; the report says no more
than its runs showed. Hand-made run records (tests/test_report.py's helpers), checked through
``analyze``, the JSON and CSV exporters, the Markdown, and the real ``harness report`` CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_report import base_losses, by_name, digest, make_cell, make_results, write_run

from harness.report import analyze, write_reports
from harness.report.exporters import render_csv, render_json
from harness.report.markdown import render_markdown
from harness.report.plots import plot_name, write_plots
from harness.results import layout

ROOT = Path(__file__).resolve().parents[1]


def _fail(root: Path, cell: dict, repeat: int) -> None:
    write_run(
        root,
        cell,
        repeat,
        None,
        status="failed",
        error={"type": "failed", "message": "boom", "log_tail": "Traceback: boom"},
    )


def _placements(root: Path, repeats: int = 3) -> dict[str, dict]:
    """Three placements on one image: before_model reproduces, none diverges; the third,
    process_start, is left for each test to fill."""
    cells = {
        "good": make_cell("good", placement="before_model"),
        "bad": make_cell("bad", placement="none"),
        "odd": make_cell("odd", placement="process_start"),
    }
    make_results(root, list(cells.values()), repeats=repeats)
    base = base_losses()
    for k in range(repeats):
        write_run(root, cells["good"], k, base)
        write_run(root, cells["bad"], k, base + np.float32(0.01 * k))
    return cells


def _csv_rows(report) -> dict[str, dict[str, str]]:
    return {r["name"]: r for r in csv.DictReader(io.StringIO(render_csv(report).decode()))}


def _json_cells(report) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(render_json(report))["cells"]}


def test_a_cell_whose_repeats_all_failed_is_unknown_and_blames_no_axis(tmp_path: Path):
    cells = _placements(tmp_path)
    for k in range(3):
        _fail(tmp_path, cells["odd"], k)
    report = analyze(tmp_path)
    cell = by_name(report)["odd"]
    assert (cell.verdict, cell.reproducible) == ("unknown", None)
    assert cell.unknown_because == "3 of 3 repeats failed"
    # The axis sentence: process_start is neither "never" nor "always"; it is not named at all.
    summary = report.summaries["local"]
    assert "placement breaks it: placement=none never reproduces" in summary
    assert "process_start" not in summary
    assert "1 of 2 cells reproduce bit for bit" in summary
    assert "1 cell(s) have no verdict" in summary
    # JSON: reproducible null; verdict and why; CSV: verdict unknown, reproducible empty.
    entry = _json_cells(report)["odd"]
    assert entry["reproducible"] is None and entry["verdict"] == "unknown"
    assert entry["unknown_because"] == "3 of 3 repeats failed"
    assert _json_cells(report)["good"]["verdict"] == "reproduces"
    assert _json_cells(report)["bad"]["reproducible"] is False
    row = _csv_rows(report)["odd"]
    assert (row["verdict"], row["reproducible"]) == ("unknown", "")
    assert (_csv_rows(report)["bad"]["verdict"], _csv_rows(report)["bad"]["reproducible"]) == (
        "diverges",
        "False",
    )
    # Markdown: listed apart, with why; the table says unknown, not "no".
    md = render_markdown(report).decode()
    apart = md.split("## Cells without a verdict", 1)[1].split("\n## ", 1)[0]
    assert "- **odd**: 3 of 3 repeats failed" in apart
    assert "**good**" not in apart and "**bad**" not in apart
    row_md = next(line for line in md.splitlines() if line.endswith("| odd |"))
    assert row_md.startswith("| ❔&nbsp;unknown |") and "**no**" not in row_md


@pytest.mark.parametrize("failed", [0, 2])
def test_two_ok_repeats_and_one_failed_is_unknown_not_reproduces(tmp_path: Path, failed: int):
    """Every repeat must succeed for a verdict: two bit-identical ok repeats (same trajectory,
    same final weights) and a failed one (the first or the last) are no proof."""
    cells = _placements(tmp_path)
    base = base_losses()
    for k in range(3):
        if k == failed:
            _fail(tmp_path, cells["odd"], k)
        else:
            write_run(tmp_path, cells["odd"], k, base)
    report = analyze(tmp_path)
    cell = by_name(report)["odd"]
    assert cell.ok_runs == 2 and cell.distinct_trajectories == 1  # the two ok runs agree ...
    assert cell.init_equal is True and cell.final_equal is True
    assert (cell.verdict, cell.reproducible) == ("unknown", None)  # ... but one failed
    assert cell.unknown_because == "1 of 3 repeats failed"
    assert cell.detail == "no verdict: 1 of 3 repeats failed"
    assert "process_start" not in report.summaries["local"]
    assert "1 of 2 cells reproduce bit for bit" in report.summaries["local"]
    assert (_json_cells(report)["odd"]["verdict"], _csv_rows(report)["odd"]["verdict"]) == (
        "unknown",
        "unknown",
    )
    row_md = next(
        line for line in render_markdown(report).decode().splitlines() if line.endswith("| odd |")
    )
    assert row_md.startswith("| ❔&nbsp;unknown |") and "| 2/3 | 1 |" in row_md


def test_two_ok_repeats_and_one_missing_is_unknown(tmp_path: Path):
    cells = _placements(tmp_path)
    write_run(tmp_path, cells["odd"], 0, base_losses())
    write_run(tmp_path, cells["odd"], 1, base_losses())
    cell = by_name(analyze(tmp_path))["odd"]
    assert (cell.verdict, cell.unknown_because) == ("unknown", "1 of 3 repeats missing")


def test_one_repeat_is_unknown(tmp_path: Path):
    cell = make_cell("single")
    make_results(tmp_path, [cell], repeats=1)
    write_run(tmp_path, cell, 0, base_losses())
    (judged,) = analyze(tmp_path).cells
    assert (judged.verdict, judged.reproducible) == ("unknown", None)
    assert judged.unknown_because == "one repeat: nothing to compare"


def test_a_run_with_zero_steps_makes_the_cell_unknown(tmp_path: Path):
    cells = _placements(tmp_path, repeats=2)
    empty = np.zeros((0, 1), dtype="<f4")
    write_run(tmp_path, cells["odd"], 0, empty)
    write_run(tmp_path, cells["odd"], 1, empty)
    report = analyze(tmp_path)
    cell = by_name(report)["odd"]
    assert all(r.recorded == "ok" and r.status == "failed" for r in cell.runs)
    assert (cell.verdict, cell.reproducible) == ("unknown", None)
    assert cell.unknown_because == "repeat 0: zero steps; repeat 1: zero steps"
    assert {(f.cell, f.type) for f in report.failures} == {("odd", "no_steps")}
    assert "process_start" not in report.summaries["local"]


def test_nan_losses_make_the_cell_unknown_naming_the_step(tmp_path: Path):
    """An ok record whose losses.npy holds NaN from step 61 (epoch 1, batch 1) on, with a
    digest that matches it: bit-identical NaN repeats do not "reproduce"."""
    cells = _placements(tmp_path, repeats=2)
    losses = base_losses()
    losses[61:, 0] = np.float32("nan")
    for k in range(2):
        write_run(tmp_path, cells["odd"], k, losses)  # the digest is of these very bits
    report = analyze(tmp_path)
    cell = by_name(report)["odd"]
    assert cell.ok_runs == 0 and [r.recorded for r in cell.runs] == ["ok", "ok"]
    assert (cell.verdict, cell.reproducible) == ("unknown", None)
    assert cell.unknown_because == (
        "repeat 0: losses not finite from step 61; repeat 1: losses not finite from step 61"
    )
    failure = next(f for f in report.failures if f.cell == "odd")
    assert failure.type == "nonfinite"
    assert "step 61 (epoch 1, batch 1)" in failure.message
    assert "process_start" not in report.summaries["local"]


def test_an_infinite_loss_on_one_repeat_is_named_too(tmp_path: Path):
    cells = _placements(tmp_path, repeats=2)
    losses = base_losses()
    write_run(tmp_path, cells["odd"], 0, losses)
    inf = losses.copy()
    inf[3, 0] = np.float32("inf")
    write_run(tmp_path, cells["odd"], 1, inf)
    cell = by_name(analyze(tmp_path))["odd"]
    assert cell.verdict == "unknown"  # not "diverges": the second run is not a finite run
    assert cell.unknown_because == "repeat 1: losses not finite from step 3"


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("truncate", "unreadable"),
        ("reshape", "shape (60, 2), but run.json records 120 steps x 1 ranks"),
        ("flip", "does not hash to digests.trajectory"),
        ("delete", "missing"),
    ],
)
def test_a_corrupt_losses_file_makes_the_cell_unknown(tmp_path: Path, damage: str, why: str):
    cells = _placements(tmp_path, repeats=2)
    for k in range(2):
        write_run(tmp_path, cells["odd"], k, base_losses())
    path = tmp_path / cells["odd"]["dir"] / "repeat-1" / "losses.npy"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "reshape":
        np.save(path, base_losses().reshape(60, 2))
    elif damage == "flip":
        flipped = base_losses()
        flipped[5, 0] = np.nextafter(flipped[5, 0], np.float32(0))
        np.save(path, flipped)
    else:
        path.unlink()
    report = analyze(tmp_path)
    cell = by_name(report)["odd"]
    assert cell.runs[1].status == "corrupt"
    assert (cell.verdict, cell.reproducible) == ("unknown", None)
    assert cell.unknown_because.startswith("repeat 1: corrupt losses.npy: ")
    assert why in cell.unknown_because
    (failure,) = report.failures
    assert failure.type == "corrupt" and failure.path == f"{cells['odd']['dir']}/repeat-1"


def test_harness_report_names_a_truncated_losses_file_and_exits_0(tmp_path: Path):
    """The real CLI: a truncated losses.npy gives no traceback; the report is written (exit 0:
    `harness report` reports; the corrupt run is in it), names the run with its path and why,
    and the same warning goes to stderr."""
    cells = _placements(tmp_path, repeats=2)
    for k in range(2):
        write_run(tmp_path, cells["odd"], k, base_losses())
    path = tmp_path / cells["odd"]["dir"] / "repeat-0" / "losses.npy"
    path.write_bytes(path.read_bytes()[:-7])
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    run = f"{cells['odd']['dir']}/repeat-0"
    assert f"{run}: corrupt run: losses.npy: unreadable" in proc.stderr
    md = (tmp_path / "report.md").read_text()
    failed = md.split("## Failed runs", 1)[1]
    assert "### odd repeat 0: corrupt" in failed
    assert run.replace("_", "\\_") in failed and "losses.npy: unreadable" in failed
    assert "- **odd**: repeat 0: corrupt losses.npy: unreadable" in md
    data = json.loads((tmp_path / "report.json").read_text())
    odd = next(c for c in data["cells"] if c["name"] == "odd")
    assert odd["reproducible"] is None and odd["runs"][0]["status"] == "corrupt"
    assert list((tmp_path / "plots").glob("bad--*.png"))  # the rest of the report is whole


def test_plots_draw_the_losses_the_report_checked_and_survive_a_file_that_breaks(
    tmp_path: Path, caplog
):
    """A report reads each losses.npy once: a file that breaks after it was checked changes no
    plot. A run without those losses (made by hand) whose file breaks leaves its cell without
    a plot and a warning, never a traceback."""
    cells = _placements(tmp_path, repeats=2)
    for k in range(2):
        write_run(tmp_path, cells["odd"], k, base_losses())
    report = analyze(tmp_path)
    path = tmp_path / cells["bad"]["dir"] / "repeat-1" / "losses.npy"
    path.write_bytes(path.read_bytes()[:90])
    assert [p.name for p in write_plots(report)] == [plot_name(by_name(report)["bad"])]
    for run in by_name(report)["bad"].runs:
        run.losses = None
    assert write_plots(report) == []
    assert by_name(report)["bad"].plot is None
    assert "no plot for bad" in caplog.text


# --------------------------------------------------------------- merge conflict copies


def _conflict_copy(root: Path, cell: dict, repeat: int, losses: np.ndarray, **kw) -> Path:
    """A copy of a run as `harness merge` keeps it: conflicts/2-shard-b/cells/<dir>/repeat-k."""
    dirname = Path(cell["dir"]).name
    aside = layout.conflict_run_dir(root, 2, "shard-b", dirname, repeat)
    staging = root / "staging"
    write_run(staging, cell, repeat, losses, **kw)
    aside.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging / cell["dir"] / f"repeat-{repeat}"), str(aside))
    shutil.rmtree(staging)
    return aside


def test_a_conflict_copy_one_ulp_apart_makes_the_cell_diverge(tmp_path: Path):
    cells = _placements(tmp_path, repeats=2)
    base = base_losses()
    for k in range(2):
        write_run(tmp_path, cells["odd"], k, base)
    assert by_name(analyze(tmp_path))["odd"].verdict == "reproduces"  # the premise
    other = base.copy()
    other[42, 0] = np.nextafter(other[42, 0], np.float32(10))  # one ULP
    assert digest(other) != digest(base)
    aside = _conflict_copy(tmp_path, cells["odd"], 1, other)
    report = analyze(tmp_path)
    cell = by_name(report)["odd"]
    assert (cell.verdict, cell.reproducible) == ("diverges", False)
    assert cell.distinct_trajectories == 2
    d = cell.first_divergence
    assert (d.step, d.repeat, d.max_ulps) == (42, 1, 1)
    assert d.copy == "2-shard-b"
    # the report says which runs conflicted
    rel = aside.relative_to(tmp_path).as_posix()
    (conflict,) = report.conflicts
    assert (conflict.cell, conflict.repeat, conflict.path) == ("odd", 1, rel)
    assert conflict.same_result is False
    md = render_markdown(report).decode()
    section = md.split("## Merge conflicts", 1)[1].split("\n## ", 1)[0]
    assert rel.replace("_", "\\_") in section and "**different**" in section
    data = json.loads(render_json(report))
    assert data["conflicts"][0]["path"] == rel
    odd = next(c for c in data["cells"] if c["name"] == "odd")
    assert odd["verdict"] == "diverges" and odd["conflict_copies"][0]["copy"] == "2-shard-b"
    # and it is plotted like any divergence
    write_reports(tmp_path, ["md"])
    assert list((tmp_path / "plots").glob("odd--*.png"))


def test_a_conflict_copy_with_the_same_result_keeps_the_verdict(tmp_path: Path):
    cells = _placements(tmp_path, repeats=2)
    for k in range(2):
        write_run(tmp_path, cells["odd"], k, base_losses())
    _conflict_copy(tmp_path, cells["odd"], 0, base_losses(), acc=0.5)  # differs, not in bits
    report = analyze(tmp_path)
    assert by_name(report)["odd"].verdict == "reproduces"
    assert [c.same_result for c in report.conflicts] == [True]


ERROR = {"type": "timeout", "message": "timed out", "log_tail": ""}


def test_a_failed_conflict_copy_is_listed_not_judged(tmp_path: Path):
    cells = _placements(tmp_path, repeats=2)
    for k in range(2):
        write_run(tmp_path, cells["odd"], k, base_losses())
    _conflict_copy(tmp_path, cells["odd"], 0, None, status="failed", error=ERROR)
    report = analyze(tmp_path)
    assert by_name(report)["odd"].verdict == "reproduces"
    assert [(c.status, c.same_result) for c in report.conflicts] == [("failed", None)]
    assert report.failures == []


def test_a_corrupt_conflict_copy_makes_the_cell_unknown(tmp_path: Path):
    cells = _placements(tmp_path, repeats=2)
    for k in range(2):
        write_run(tmp_path, cells["odd"], k, base_losses())
    aside = _conflict_copy(tmp_path, cells["odd"], 1, base_losses())
    (aside / "losses.npy").write_bytes(b"\x93NUMPY")
    report = analyze(tmp_path)
    cell = by_name(report)["odd"]
    assert cell.verdict == "unknown"
    rel = aside.relative_to(tmp_path).as_posix()
    assert cell.unknown_because.startswith(f"repeat 1 (merge conflict copy {rel}): corrupt")
    assert [f.path for f in report.failures] == [rel]


def test_every_json_field_is_documented(tmp_path: Path):
    """docs/results.md names every key of report.json's top level, cells, runs, failures and
    conflicts (the verdict fields above all)."""
    cells = _placements(tmp_path, repeats=2)
    for k in range(2):
        write_run(tmp_path, cells["odd"], k, base_losses())
    _conflict_copy(tmp_path, cells["odd"], 1, base_losses())
    _fail(tmp_path, cells["bad"], 1)
    data = json.loads(render_json(analyze(tmp_path)))
    keys = set(data)
    keys |= set(data["cells"][0]) | set(data["cells"][0]["runs"][0])
    keys |= set(data["failures"][0]) | set(data["conflicts"][0])
    docs = (ROOT / "docs" / "results.md").read_text()
    section = docs.split("### JSON and CSV", 1)[1]
    generic = {"repeat", "trajectory", "init_weights", "final_weights", "ranks", "epoch_starts"}
    generic |= {"val_acc", "image_digest", "image_id", "torch", "format_version", "name"}
    missing = sorted(
        k for k in keys - generic if f"`{k}`" not in section and f"`{k}[]`" not in section
    )
    assert missing == []
    assert "`verdict`" in section and "`reproducible`" in section
