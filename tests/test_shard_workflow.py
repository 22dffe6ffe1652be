"""The GPU workflow's logic, end to end on this machine with real training on real MNIST:
plan --shards -> each shard in its own results folder -> merge -> report, against one unsharded
run of the same matrix; then the baseline gate on no change and on planted regressions.

The matrix holds only cells that reproduce (seeded before the model, or at process start), so
every number in the report is fixed by the settings and the two reports must be equal apart
from their timing columns.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fault_tools import nudge_losses

from harness.exit_codes import EXIT_CONFLICT
from harness.gates.compare import EXIT_REGRESSION

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MATRIX = """\
name: shard-workflow
run: {repeats: 2, epochs: 1, max_steps_per_epoch: 60, seed: 201014, threads: 1, timeout_s: 600}
axes:
  placement: [before_model, process_start]
  seed: [201014, 7]
exclude:
  - {placement: process_start, seed: 7}
"""
TIMING_KEYS = {"seconds_per_epoch", "twin_seconds_per_epoch", "ratio"}
#: The recipe is the fastest reproducing cell: which one, and all that follows from it (its
#: settings, code, cost, sentence), is timing too.
RECIPE_KEYS = {"recipes"}


def harness(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if check:
        assert proc.returncode == 0, f"harness {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_dir) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("workflow")
    matrix = root / "matrix.yaml"
    matrix.write_text(MATRIX)
    data = ["--data-dir", str(mnist_dir)]
    whole = root / "whole"
    harness("run", str(matrix), "--out", str(whole), "--progress", "plain", *data)
    plan = harness("plan", str(matrix), "--shards", "2", "--format", "github")
    include = json.loads(plan.stdout)["include"]
    shards = []
    for entry in include:
        out = root / f"results-shard-{entry['index']}"
        harness("run", str(matrix), "--shard", entry["shard"], "--out", str(out), *data)
        shards.append(out)
    merged = root / "merged"
    merge = harness("merge", *map(str, shards), "-o", str(merged))
    return {
        "root": root,
        "whole": whole,
        "merged": merged,
        "shards": shards,
        "include": include,
        "merge_out": merge.stdout,
    }


def without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: without_timing(v)
            for k, v in value.items()
            if k not in TIMING_KEYS and k not in RECIPE_KEYS
        }
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def strip_timing_columns(markdown: str) -> str:
    """Drop the s/epoch (and other seconds) columns from every table, and the recipe (the
    fastest reproducing cell: timing too) from the answer's paragraph and its section."""
    markdown = re.sub(r" Recipe: On .*", "", markdown)  # the first screen's paragraph
    markdown = re.sub(r"### The recipe per image\n.*?(?=### )", "", markdown, flags=re.S)
    out, drop = [], None
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if drop is None:
                drop = {i for i, c in enumerate(cells) if "s/epoch" in c or c == "ratio"}
            cells = [c for i, c in enumerate(cells) if i not in drop]
            line = "| " + " | ".join(cells) + " |"
        else:
            drop = None
        out.append(line)
    return "\n".join(out)


def test_plan_splits_whole_cells_and_each_shard_ran_only_its_own(runs):
    include = runs["include"]
    assert [e["shard"] for e in include] == ["1/2", "2/2"]
    assert [e["cells"] for e in include] == [2, 1]  # three equal cells: as even as can be
    seen: list[str] = []
    for shard, entry in zip(runs["shards"], include, strict=True):
        manifest = json.loads((shard / "manifest.json").read_text())
        assert manifest["shard"] == {"index": entry["index"], "total": 2}
        ids = [c["id"] for c in manifest["cells"]]
        assert len(ids) == entry["cells"]
        dirs = {p.parent.name.rpartition("--")[2] for p in shard.glob("cells/*/repeat-*")}
        assert dirs == set(ids)  # every repeat of its cells, nothing else
        assert len(list(shard.glob("cells/*/repeat-*/run.json"))) == 2 * len(ids)
        seen += ids
    whole = json.loads((runs["whole"] / "manifest.json").read_text())
    assert sorted(seen) == sorted(c["id"] for c in whole["cells"])


def test_merged_report_equals_the_unsharded_report_apart_from_timing(runs):
    merged, whole = runs["merged"], runs["whole"]
    assert "merged 2 folders" in runs["merge_out"] and "CONFLICT" not in runs["merge_out"]
    a = json.loads((merged / "report.json").read_text())
    b = json.loads((whole / "report.json").read_text())
    assert [c["reproducible"] for c in b["cells"]] == [True] * 3  # the premise of the test
    assert without_timing(a) == without_timing(b)
    # each names a recipe, a reproducing cell of the one image (which one is a matter of time)
    for report in (a, b):
        (recipe,) = report["answer"]["recipes"]
        assert recipe["image"] == "local" and recipe["cell"] in {c["name"] for c in b["cells"]}
    # the timing fields exist, so the comparison above did drop something
    assert a["cells"][0]["seconds_per_epoch"] > 0
    md_a = (merged / "report.md").read_text()
    md_b = (whole / "report.md").read_text()
    assert "s/epoch" in md_a
    assert strip_timing_columns(md_a) == strip_timing_columns(md_b)
    # the report writes to the job summary too
    summary = runs["root"] / "summary.md"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(merged), "--github"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # the same report, less the heatmaps: a job summary cannot show a file of the folder
    heatmaps = re.compile(r"## Heatmaps\n.*?\n(?=## )", flags=re.S)
    assert heatmaps.search(md_b) and "plots/grid-local.png" in md_b
    assert "<img" not in summary.read_text() and "](plots/" not in summary.read_text()
    assert strip_timing_columns(summary.read_text()) == strip_timing_columns(heatmaps.sub("", md_b))


def test_compare_finds_no_change_between_two_real_runs(runs):
    proc = harness("compare", str(runs["whole"]), str(runs["merged"]), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("**No regression.**")
    assert "3 cells in both, 0 new, 0 removed" in proc.stdout
    golden = runs["root"] / "golden.json"
    harness("baseline", str(runs["whole"]), "-o", str(golden))
    data = json.loads(golden.read_text())
    assert data["kind"] == "harness-baseline" and len(data["cells"]) == 3
    assert all(len(c["trajectories"]) == 2 for c in data["cells"].values())
    proc = harness("compare", str(golden), str(runs["merged"]), check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("**No regression.**"), proc.stdout


def test_compare_exits_non_zero_on_planted_regressions(runs, tmp_path: Path):
    planted = tmp_path / "planted"
    shutil.copytree(runs["merged"], planted)
    cells = sorted(planted.glob("cells/*--*"))
    broken, moved = cells[0], cells[1]
    # 1: one repeat of a reproducing cell now has another trajectory -> no longer reproduces
    nudge_losses(broken / "repeat-1")
    # 2: both repeats agree, but on another trajectory than before, on the same image
    moved_to = {nudge_losses(moved / f"repeat-{k}", ulps=2)[1] for k in (0, 1)}
    (new_digest,) = moved_to
    golden = tmp_path / "golden.json"
    harness("baseline", str(runs["whole"]), "-o", str(golden))
    for baseline in (runs["whole"], golden):
        proc = harness("compare", str(baseline), str(planted), check=False)
        assert proc.returncode == EXIT_REGRESSION != 0, proc.stdout + proc.stderr
        text = proc.stdout
        assert text.startswith("**2 regressions**")
        rows = {
            line.split("|")[1].strip().replace("\\", ""): line
            for line in text.splitlines()
            if re.match(r"^\| \S", line) and "what changed" not in line
        }
        broken_name = broken.name.rpartition("--")[0]
        moved_name = moved.name.rpartition("--")[0]
        assert "no longer reproduces" in rows[broken_name]
        assert "trajectory changed on the same image" in rows[moved_name]
        assert new_digest[:12] in rows[moved_name]
        assert len(rows) == 2  # the third cell is not mentioned


def test_a_real_run_copy_one_ulp_apart_fails_the_merge_and_the_cell_diverges(runs, tmp_path):
    """Two shards, and a second copy of shard 1 in which one real run moved by one ULP (its
    record rewritten to match, so it verifies): merge exits non-zero naming the run, keeps both
    copies, and the report counts both trajectories: the cell diverges."""
    first, second = runs["shards"]
    other = tmp_path / "results-shard-1-again"
    shutil.copytree(first, other)
    run = sorted(other.glob("cells/*--*/repeat-0"))[0]
    rel = run.relative_to(other)
    _, new = nudge_losses(run)
    merged = tmp_path / "merged"
    proc = harness("merge", str(first), str(second), str(other), "-o", str(merged), check=False)
    assert proc.returncode == EXIT_CONFLICT != 0, proc.stdout + proc.stderr
    run_name = str(rel).removeprefix("cells/")
    assert f"two successful copies with different results: {run_name}" in proc.stderr
    kept = json.loads((merged / rel / "run.json").read_text())["digests"]["trajectory"]
    assert kept != new
    aside = merged / "conflicts" / f"3-{other.name}" / rel
    assert json.loads((aside / "run.json").read_text())["digests"]["trajectory"] == new
    report = json.loads((merged / "report.json").read_text())
    cell_id = rel.parts[1].rpartition("--")[2]
    (cell,) = [c for c in report["cells"] if c["id"] == cell_id]
    assert cell["verdict"] == "diverges" and cell["reproducible"] is False
