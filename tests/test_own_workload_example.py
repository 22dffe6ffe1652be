"""examples/own-workload, as a user follows README "Test your own training": real training.

The example's own matrix runs locally (its build function, not the post's MLP): ``before_model``
reproduces bit for bit, ``none`` diverges at step 0, and the report has the user's params as
columns. The same project in containers on the CPU stand-in image, with the folder mounted
read-only and ``einops`` (which the base image lacks) installed when the image is built, gives
the same verdicts and the local trajectory. A plain Lightning script with ``ReproRecorder``
writes records that ``harness report`` compares.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_IMAGE
from fault_tools import Harness

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own-workload"


def report_cells(out: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """report.json's cells by (placement, threads)."""
    cells = json.loads((out / "report.json").read_text())["cells"]
    return {(c["settings"]["placement"], c["settings"]["threads"]): c for c in cells}


def trajectory(cell: dict[str, Any]) -> set[str]:
    return {r["trajectory"] for r in cell["runs"]}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's matrix, exactly as committed, with the local executor."""
    out = tmp_path_factory.mktemp("own-local") / "results"
    run = Harness(EXAMPLE / "matrix.yaml", out, "--executor", "local", report=True)
    assert run.finish(timeout=900) == 0, run.text[-3000:]
    return out


def test_the_example_reproduces_only_where_the_seed_comes_before_the_model(local: Path):
    cells = report_cells(local)
    assert len(cells) == 6
    for threads in (1, 2):
        assert cells[("before_model", threads)]["reproducible"] is True
        assert cells[("before_model", threads)]["distinct_trajectories"] == 1
        for placement in ("none", "before_trainer"):
            cell = cells[(placement, threads)]
            assert cell["reproducible"] is False
            assert cell["first_divergence"]["step"] == 0
            assert cell["init_equal"] is False  # the build function drew its own weights
    for cell in cells.values():
        assert cell["settings"]["entry"] == "seqnet:build"
        assert [r["steps"] for r in cell["runs"]] == [40, 40]


def test_the_report_shows_the_user_s_params_as_columns(local: Path):
    table = json.loads((local / "report.json").read_text())["table"]
    assert {(r["params.hidden"], r["params.lr"]) for r in table} == {(16, 0.003)}
    with (local / "report.csv").open(newline="") as handle:
        header = next(csv.reader(handle))
    assert {"entry", "params.hidden", "params.lr"} <= set(header)
    md = (local / "report.md").read_text()
    assert "hidden=16" in md and "lr=0.003" in md and "entry=seqnet:build" in md


def test_each_run_records_the_user_s_code(local: Path):
    digests = set()
    for record in local.glob("cells/*/repeat-*/run.json"):
        data = json.loads(record.read_text())
        assert data["spec"]["params"] == {"hidden": 16, "lr": 0.003}
        digests.add(data["provenance"]["user_code_digest"])
    assert len(digests) == 1 and None not in digests


def readme_part(start: str, end: str) -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index(start) : text.index(end, text.index(start))]


def test_the_readme_says_what_the_example_s_report_and_folders_hold(local: Path):
    """README "Test your own training", step 3, and "What you get", checked on the real run:
    the shared params in report.md's first paragraph and as report.csv columns (not as columns
    of report.md's tables), and every file it lists in a run folder."""
    step = " ".join(readme_part("3. **Run it**", "The harness keeps the rest").split())
    assert "as columns." not in step  # it said: "with `hidden` and `lr` as columns"
    quoted = step.split('("')[1].split('…")')[0].rstrip(", ")
    first = (local / "report.md").read_text().split("\n\n")[1]
    assert "Every cell has" in first and quoted.split("… ")[1] in first
    with (local / "report.csv").open(newline="") as handle:
        header = next(csv.reader(handle))
    columns = [c for c in ("params.hidden", "params.lr") if f"`{c}`" in step]
    assert columns == ["params.hidden", "params.lr"] and set(columns) <= set(header)
    tables = [line for line in (local / "report.md").read_text().splitlines() if "| cell |" in line]
    assert tables and not any("hidden" in line for line in tables)
    listing = readme_part("## What you get", "```\n\n")
    files = listing.split("one folder per run:")[1].split("\n")[1].split()
    assert "weights.npy" in files and "diagnoses/<name>/" in listing
    for run_dir in local.glob("cells/*/repeat-*"):
        assert sorted(files) == sorted(
            p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir()
        )


CONTAINER_MATRIX = """\
name: own-workload-docker
workload:
  entry: seqnet:build
  path: {path}
  requirements: [einops==0.8.1]
  params: {{hidden: 16, lr: 0.003}}
run: {{repeats: 2, epochs: 1, max_steps_per_epoch: 40, threads: 1, timeout_s: 600}}
axes:
  image: [{image}]
  placement: [none, before_model]
"""


@pytest.mark.docker
def test_in_containers_the_verdicts_and_the_trajectory_are_the_local_ones(
    local: Path, tmp_path: Path, client
):
    # the base image has no einops: only the workload image's build can have installed it
    probe = client.containers.run(
        BASE_IMAGE, ["python", "-c", "import einops"], network_mode="none", remove=False,
        detach=True, entrypoint=[],
    )  # fmt: skip
    try:
        assert probe.wait(timeout=120)["StatusCode"] != 0
    finally:
        probe.remove(force=True)
    user = tmp_path / "project"
    shutil.copytree(EXAMPLE, user, ignore=shutil.ignore_patterns("__pycache__"))
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(CONTAINER_MATRIX.format(path=user, image=BASE_IMAGE))
    out = tmp_path / "results"
    run = Harness(matrix, out, "--executor", "docker", report=True)
    assert run.finish(timeout=900) == 0, run.text[-3000:]
    cells = {k[0]: c for k, c in report_cells(out).items()}
    assert cells["before_model"]["reproducible"] is True
    assert cells["none"]["reproducible"] is False
    assert cells["none"]["first_divergence"]["step"] == 0
    here = report_cells(local)[("before_model", 1)]
    assert trajectory(cells["before_model"]) == trajectory(here)
    for record in out.glob("cells/*/repeat-*/run.json"):
        provenance = json.loads(record.read_text())["provenance"]
        assert provenance["image_id"] and provenance["user_code_digest"]
    # the folder was mounted read-only: nothing was written into it
    assert sorted(p.name for p in user.iterdir()) == sorted(
        p.name for p in EXAMPLE.iterdir() if p.name != "__pycache__"
    )


def plain_run(out: Path, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / "train_plain.py"), str(out), "--steps", "20", *args],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


def harness_report(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(folder)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_a_plain_lightning_script_s_records_are_compared_by_harness_report(tmp_path: Path):
    seeded, unseeded = tmp_path / "seeded", tmp_path / "unseeded"
    # three one-thread scripts, two side by side (each is mostly its seconds of importing torch)
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = [
            pool.submit(plain_run, seeded / "a", "--seed", "7"),
            pool.submit(plain_run, seeded / "b", "--seed", "7"),
            pool.submit(plain_run, unseeded / "b"),
        ]
        for future in done:
            future.result()
    shutil.copytree(seeded / "a", unseeded / "a")

    same = harness_report(seeded)
    assert same.returncode == 0, same.stderr
    cell = json.loads((seeded / "report.json").read_text())["cells"][0]
    assert (cell["name"], cell["reproducible"], cell["repeats"]) == ("seqnet", True, 2)
    assert "reproduce" in same.stdout

    apart = harness_report(unseeded)
    assert apart.returncode == 0, apart.stderr
    cell = json.loads((unseeded / "report.json").read_text())["cells"][0]
    assert cell["reproducible"] is False
    assert cell["first_divergence"]["step"] == 0
    assert "seed" in json.dumps(cell["differences"])  # what the two runs differ in
