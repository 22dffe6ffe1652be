"""End to end on real MNIST with real training: the report's answer on this CPU
(examples/answer-cpu.yaml: threads [1, 2] x placement [none, before_model] x model [mlp, cnn],
with a control cell).

Nothing here pins what one machine computed: whether 1 and 2 threads give the same bits, and
from which step they part, is read from the runs' own losses.npy, and the answer is held to it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from harness.report.report_schema import report_schema

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def answer(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """examples/answer-cpu.yaml at 40 steps, run as a user runs it."""
    tmp_path = tmp_path_factory.mktemp("answer")
    matrix = tmp_path / "answer.yaml"
    text = (ROOT / "examples" / "answer-cpu.yaml").read_text()
    matrix.write_text(text.replace("max_steps_per_epoch: 100", "max_steps_per_epoch: 40"))
    out = tmp_path / "results"
    command = [sys.executable, "-m", "harness.cli", "run", str(matrix), "--out", str(out)]
    proc = subprocess.run(
        [*command, "--progress", "plain"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {
        "out": out,
        "stdout": proc.stdout,
        "report": json.loads((out / "report.json").read_text()),
        "md": (out / "report.md").read_text(),
    }


def _cell(report: dict, **settings: object) -> dict:
    (found,) = [
        c for c in report["cells"] if all(c["settings"][k] == v for k, v in settings.items())
    ]
    return found


def _losses(out: Path, cell: dict) -> np.ndarray:
    return np.load(out / cell["runs"][0]["path"] / "losses.npy")


def _first_difference(a: np.ndarray, b: np.ndarray) -> int | None:
    """The first step whose loss bits differ, computed here, apart from the harness."""
    steps = min(len(a), len(b))
    bits_a = a[:steps].view(np.uint32)
    bits_b = b[:steps].view(np.uint32)
    differ = np.flatnonzero((bits_a != bits_b).any(axis=1))
    if differ.size:
        return int(differ[0])
    return None if len(a) == len(b) else steps


def test_threads_is_judged_from_the_runs_own_bits(answer: dict):
    report, out = answer["report"], answer["out"]
    effects = {e["setting"]: e for e in report["answer"]["bit_effects"]}
    threads = effects["threads"]
    firsts = []
    for model in ("mlp", "cnn"):
        one = _cell(report, threads=1, placement="before_model", model=model)
        two = _cell(report, threads=2, placement="before_model", model=model)
        assert one["verdict"] == two["verdict"] == "reproduces"
        firsts.append(_first_difference(_losses(out, one), _losses(out, two)))
    changed = [f for f in firsts if f is not None]
    assert (threads["pairs"], threads["changed"]) == (2, len(changed))
    assert threads["first_step"] == (min(changed) if changed else None)
    assert threads["effect"] == (
        "always" if len(changed) == 2 else "never" if not changed else "sometimes"
    )
    # placement none never reproduces: no pair of reproducing cells differs in it alone; what
    # is trained (the model) is no question of bits
    assert effects["placement"]["effect"] == "no_pairs"
    assert "model" not in effects


def _median_time(out: Path, cell: dict) -> float:
    """A cell's median seconds per epoch, read here from its run records."""
    times = []
    for run in cell["runs"]:
        epochs = json.loads((out / run["path"] / "run.json").read_text())["epochs"]
        times.append(
            statistics.fmean(e["train_seconds"] + (e["val_seconds"] or 0.0) for e in epochs)
        )
    return statistics.median(times)


def test_the_recipe_names_before_model_and_its_cost(answer: dict):
    """One recipe per model (the fastest reproducing mlp is no recipe for the cnn)."""
    report, out = answer["report"], answer["out"]
    recipes = {r["workload"]["model"]: r for r in report["answer"]["recipes"]}
    assert sorted(recipes) == ["cnn", "mlp"]
    for model, recipe in recipes.items():
        cells = [c for c in report["cells"] if c["settings"]["model"] == model]
        assert recipe["settings"]["placement"] == "before_model"
        assert [(q["setting"], q["value"]) for q in recipe["required"]] == [
            ("placement", "before_model")
        ]
        reproducing = [c for c in cells if c["verdict"] == "reproduces"]
        chosen = next(c for c in reproducing if c["name"] == recipe["cell"])
        assert recipe["seconds_per_epoch"] == pytest.approx(_median_time(out, chosen))
        assert recipe["seconds_per_epoch"] == pytest.approx(
            min(_median_time(out, c) for c in reproducing)
        )
        fastest = min(_median_time(out, c) for c in cells if not c["control"])
        assert recipe["cost_ratio"] == pytest.approx(recipe["seconds_per_epoch"] / fastest)
        assert f"On local (model={model}), placement=before_model" in recipe["sentence"]
        compile(recipe["code"], "recipe.py", "exec")  # the snippet a user pastes is Python
        assert "torch.manual_seed(201014)" in recipe["code"]
        threads = recipe["settings"]["threads"]
        assert f"torch.set_num_threads({threads})" in recipe["code"]


def test_the_control_diverges_and_the_terminal_prints_the_recipe(answer: dict):
    report = answer["report"]
    (control,) = [c for c in report["cells"] if c["control"]]
    assert control["settings"]["placement"] == "none"
    assert control["verdict"] == "diverges"
    (result,) = report["answer"]["controls"]
    assert result["seen"] is True and result["cell"] == control["name"]
    assert "Recipe: On local" in answer["stdout"]
    first_screen = answer["md"].split("<details", 1)[0]
    assert "**The answer**" in first_screen
    assert "What changes the bits: " in first_screen


def test_report_json_follows_its_schema(answer: dict):
    jsonschema.validate(answer["report"], report_schema())
