"""A malformed ``diagnosis.json`` or ``replay.json`` (issue 28, item 12): checked like a run
record before it is used. A bad diagnosis is named on stderr and left out of the report, and
``harness report`` and ``harness run`` into the folder exit 0 without a traceback; a bad replay
is a clear error of ``harness diagnose``, never ``KeyError: 'op'``. On a real results folder
(real MNIST, real Lightning, one short run)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.contract.files import REPLAY_FILE
from harness.diagnose.file_checks import replay_data
from harness.diagnose.run_pair import read_replay
from harness.errors import HarnessError
from harness.results import layout

pytestmark = pytest.mark.slow

MATRIX = """\
name: bad-diagnoses
run: {repeats: 1, epochs: 1, max_steps_per_epoch: 2, threads: 1, timeout_s: 300}
axes:
  placement: [before_model]
"""

GOOD_OP = {
    "step": 0,
    "phase": "backward",
    "op": "aten.mm.default",
    "module": "model.3",
    "inputs": [{"shape": [10, 32], "dtype": "float32"}],
    "outputs": [{"shape": [10, 64], "dtype": "float32"}],
    "inputs_equal": True,
    "max_abs_delta": 1.5e-9,
    "max_ulps": 3,
}
#: what the review planted, one per diagnosis: each crashed the report's Markdown
BAD_OPS = {
    "inputs": {"inputs": [1]},
    "delta": {"max_abs_delta": "big"},
    "shape": {"outputs": [{"shape": 5, "dtype": "float32"}]},
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bad-diagnoses")
    matrix = root / "m.yaml"
    matrix.write_text(MATRIX)
    out = root / "results"
    assert main(["run", str(matrix), "--out", str(out), "--progress", "quiet"]) == 0
    return matrix, out


def _cell_id(out: Path) -> str:
    return json.loads((out / layout.MANIFEST_FILE).read_text())["cells"][0]["id"]


def harness(*args: str) -> subprocess.CompletedProcess:
    """The real command line, in its own process: its stderr as a user sees it."""
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=300
    )


def _diagnosis(out: Path, repeat: int, op: dict) -> Path:
    cell = _cell_id(out)
    folder = out / "diagnoses" / f"{cell}-0--{cell}-{repeat}"
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "title": f"Diagnosis {repeat}",
        "runs": [{"cell_id": cell}, {"cell_id": cell}],
        "sentences": [f"sentence of diagnosis {repeat}"],
        "finding": {"kind": "operation", "op": op},
    }
    (folder / "diagnosis.json").write_text(json.dumps(data))
    return folder / "diagnosis.json"


def test_bad_diagnoses_are_named_and_left_out_by_report_and_run(results):
    matrix, out = results
    _diagnosis(out, 1, GOOD_OP)
    bad = {
        what: _diagnosis(out, k, {**GOOD_OP, **change})
        for k, (what, change) in enumerate(BAD_OPS.items(), start=2)
    }
    report = harness("report", str(out))
    assert report.returncode == 0, report.stderr
    assert "Traceback" not in report.stderr
    for path in bad.values():
        assert f"left out of the report: {path}: not a diagnosis (finding.op." in report.stderr
    md = (out / "report.md").read_text()
    assert "Diagnosis 1" in md and "sentence of diagnosis 1" in md
    assert not any(f"Diagnosis {k}" in md for k in (2, 3, 4))
    # harness run into the folder: nothing to rerun, the report written again, exit 0
    again = harness("run", str(matrix), "--out", str(out), "--progress", "plain")
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr and "] start " not in again.stdout + again.stderr
    assert f"left out of the report: {bad['delta']}: not a diagnosis" in again.stderr


@pytest.mark.parametrize(
    "change, says",
    [
        ({"ops": {"0": [{"index": 0, "phase": "forward", "outputs": []}]}}, "ops.0.0.op"),
        ({"states": [[1, None]]}, "states.0.0"),
        ({"steps": "3"}, "steps"),
        ({"parameters": None}, "parameters"),
        ({"init": ["00", "01"]}, "the file"),
        ({"states": [["01"], ["02", "03"]]}, "the file"),
    ],
    ids=["no-op", "state-not-hex", "steps-string", "no-parameters", "init-length", "state-row"],
)
def test_a_bad_replay_file_is_a_clear_error_not_a_key_error(results, tmp_path, change, says):
    """A finished run's folder stands in for a replay's: its record and losses are real."""
    _, out = results
    dest = tmp_path / "a"
    shutil.copytree(layout.run_dir(out, Path(next((out / "cells").iterdir()).name), 0), dest)
    data = {
        "steps": 2,
        "level": "ops",
        "parameters": ["w"],
        "init": ["00"],
        "state_names": ["w", "w:exp_avg"],
        "states": [["01", None], ["02", "03"]],  # a state that appears at step 1 (format 2)
        "batches": [["a", "b"], ["a", "b"]],
        "ops": {"0": [{"index": 0, "op": "aten.mm.default", "phase": "forward", "outputs": []}]},
    }
    (dest / REPLAY_FILE).write_text(json.dumps(data))
    assert read_replay("x repeat 0", dest).data["ops"]["0"][0]["op"] == "aten.mm.default"
    (dest / REPLAY_FILE).write_text(json.dumps({**data, **change}))
    with pytest.raises(HarnessError) as caught:
        read_replay("x repeat 0", dest)
    assert f"{dest / REPLAY_FILE} that is not a replay's record ({says}:" in caught.value.message
    assert "run the diagnosis again" in caught.value.hint


@pytest.mark.parametrize(
    "change, says",
    [
        ({"init": ["00", "01"]}, "2 initial hashes for 1 parameters"),
        ({"init": []}, "0 initial hashes for 1 parameters"),
        ({"states": [["01", None], ["02"]]}, "states row 1 has 1 hashes for 2 state names"),
    ],
)
def test_a_replay_whose_rows_do_not_fit_their_names_is_refused(change, says):
    """findings.py pairs hashes with names by position: a row of another length never reaches
    it (it would stop on zip's strict check, a traceback)."""
    data = {
        "steps": 2,
        "level": "ops",
        "parameters": ["w"],
        "init": ["00"],
        "state_names": ["w", "w:exp_avg"],
        "states": [["01", None], ["02", "03"]],
    }
    assert replay_data("x", data, "replay.json")["init"] == ["00"]
    with pytest.raises(HarnessError) as caught:
        replay_data("x", {**data, **change}, "replay.json")
    assert f"(the file: Value error, {says})" in caught.value.message
