"""``harness diagnose`` on real runs (real MNIST, real Lightning, replays through the executor):
the initial weights for ``none`` and ``before_trainer``, the first operation for 1 against 2
threads, no divergence for two repeats of ``before_model``; the same answer at module level and
inside a container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BASE_IMAGE

pytestmark = pytest.mark.slow

#: 1 and 2 threads part ways in the backward pass of step 0; their losses only at step 74.
STEPS = 80
MATRIX = f"""\
name: diagnose
run: {{repeats: 2, epochs: 1, max_steps_per_epoch: {STEPS}}}
axes:
  placement: [none, before_trainer, before_model]
  threads: [1, 2]
exclude:
  - {{placement: none, threads: 2}}
  - {{placement: before_trainer, threads: 2}}
"""


def harness(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def cell_ids(out: Path) -> dict[tuple[str, int], str]:
    """(placement, threads) -> cell id, from the manifest."""
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        (c["settings"]["placement"], c["settings"]["threads"]): c["id"] for c in manifest["cells"]
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("diagnose")
    matrix = tmp / "matrix.yaml"
    matrix.write_text(MATRIX)
    out = tmp / "results"
    proc = harness("run", str(matrix), "--out", str(out), "--progress", "quiet", "--no-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def diagnosis(out: Path, proc: subprocess.CompletedProcess, cwd: Path | None = None) -> dict:
    """diagnosis.json of the `diagnosis:` line (a path as the user gave the folder)."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("diagnosis: "))
    path = (cwd or Path.cwd()) / line.removeprefix("diagnosis: ")
    assert path.parent.parent.resolve() == (out / "diagnoses").resolve()
    return json.loads(path.read_text())


def test_none_names_the_initial_weights(results: Path):
    cell = cell_ids(results)[("none", 1)]
    # a relative folder, as a user types it: the replays start in their own folders
    proc = harness("diagnose", "results", "--cell", cell, "--no-report", cwd=results.parent)
    found = diagnosis(results, proc, cwd=results.parent)
    assert found["finding"]["kind"] == "initial_weights"
    assert found["finding"]["parameters_differ"][0] == "model.1.weight"
    assert found["steps_replayed"] == [1]  # the records showed it: one step replayed
    assert "The initial weights already differ: `model.1.weight`" in proc.stdout
    assert "the seed is never set (placement `none`)" in proc.stdout
    assert "The data split differs too" in proc.stdout


def test_before_trainer_names_the_initial_weights_and_the_same_split(results: Path):
    cell = cell_ids(results)[("before_trainer", 1)]
    proc = harness("diagnose", str(results), "--cell", cell, "--no-report")
    found = diagnosis(results, proc)
    assert found["finding"]["kind"] == "initial_weights"
    assert found["finding"]["split_same"] is True
    assert "`model.1.weight` is the first parameter" in proc.stdout
    assert "The data split is the same in both runs" in proc.stdout


def _threads_op(found: dict) -> dict:
    assert found["finding"]["kind"] == "operation", found["sentences"]
    op = found["finding"]["op"]
    assert op["step"] == 0
    assert op["phase"] == "backward"
    assert op["module"] == "model.3"
    assert "model.3.weight (gradient)" in op["tensors"]
    assert op["inputs_equal"] is True
    return op


def test_threads_name_the_first_operation_and_the_report_shows_it(results: Path):
    ids = cell_ids(results)
    one, two = ids[("before_model", 1)], ids[("before_model", 2)]
    proc = harness("diagnose", str(results), "--cells", one, "--cells", two)
    found = diagnosis(results, proc)
    op = _threads_op(found)
    assert op["op"] == "aten.mm.default"
    assert [i["shape"] for i in op["inputs"]] == [[10, 32], [32, 64]]
    assert op["max_ulps"] > 0 and op["max_abs_delta"] > 0
    loss_step = found["recorded_loss_step"]
    assert loss_step is not None and loss_step > 0  # the losses part ways later
    assert "The first operation whose output bits differ is `aten.mm.default` at step 0" in (
        proc.stdout
    )
    assert "Its inputs were equal in both runs" in proc.stdout
    # the report: the section, linked from both cells' rows, weights before losses
    md = (results / "report.md").read_text()
    anchor = f"diagnosis-{found['name']}"
    assert md.count(f"(#{anchor})") == 2
    section = md[md.index("## Diagnoses") :]
    assert f'<a id="{anchor}"></a>' in section
    assert "After step 0 the training state differs" in section
    assert f"The losses first differ only at step {loss_step}" in section
    entries = json.loads((results / "report.json").read_text())["diagnoses"]
    entry = next(e for e in entries if e["name"] == found["name"])
    assert entry["kind"] == "operation" and set(entry["cells"]) == {one, two}


def test_the_module_level_fallback_names_the_module(results: Path):
    ids = cell_ids(results)
    one, two = ids[("before_model", 1)], ids[("before_model", 2)]
    proc = harness(
        "diagnose",
        str(results),
        "--cells",
        one,
        "--cells",
        two,
        "--no-report",
        env={"HARNESS_DIAGNOSE_LEVEL": "modules"},
    )
    found = diagnosis(results, proc)
    assert found["finding"]["level"] == "modules"
    _threads_op(found)
    assert "in module `model.3` (Linear)" in proc.stdout
    assert "module level" in proc.stdout


def test_before_model_repeats_do_not_diverge(results: Path):
    cell = cell_ids(results)[("before_model", 1)]
    proc = harness("diagnose", str(results), "--cell", cell, "--max-steps", "6", "--no-report")
    found = diagnosis(results, proc)
    assert found["finding"]["kind"] == "no_divergence"
    assert "did not diverge in 6 replayed steps" in proc.stdout


def test_a_cell_that_is_not_there_is_a_clear_error(results: Path):
    proc = harness("diagnose", str(results), "--cell", "nosuchcell", "--no-report")
    assert proc.returncode == 2
    assert "has no cell 'nosuchcell'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.docker
def test_in_a_container_the_answer_is_the_local_one(workload_image, tmp_path: Path):
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        "name: diagnose-container\n"
        f"run: {{repeats: 1, epochs: 1, max_steps_per_epoch: {STEPS}}}\n"
        "axes:\n"
        f"  image: ['{BASE_IMAGE}']\n"
        "  placement: [before_model]\n"
        "  threads: [1, 2]\n"
    )
    out = tmp_path / "results"
    proc = harness("run", str(matrix), "--out", str(out), "--progress", "quiet", "--no-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = cell_ids(out)
    proc = harness(
        "diagnose", str(out), "--cells", ids[("before_model", 1)], "--cells",
        ids[("before_model", 2)], "--no-report",
    )  # fmt: skip
    found = diagnosis(out, proc)
    op = _threads_op(found)
    assert op["op"] == "aten.mm.default"
    replay = json.loads((out / "diagnoses" / found["name"] / "a" / "run.json").read_text())
    assert replay["provenance"]["image_id"]  # it ran in the workload image
