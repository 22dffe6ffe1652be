"""Four small answers that were wrong (issue 28, item 6), each on its pure logic: the diagnosis of
two cells of other model sizes names the size, not the seed; a loss that alone differs is not a
"training state after step None"; a param named like a setting is told apart from it in the
grid and the sentences; include and exclude keep ``1``, ``true`` and ``1.0`` apart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_diagnose_findings import replay
from test_report_summaries import cell

from harness.diagnose.findings import compare
from harness.diagnose.words import sentences, setting_differences
from harness.matrix import parse_matrix
from harness.report.grid import make_grid
from harness.report.markdown_blocks import escape
from harness.report.summaries import describe_image, label

SMALL = {"model": "mlp", "hidden_size": 32, "seed": 0, "params": {}}


def _initial_weights_words(differ, placements=frozenset({"before_model"})) -> str:
    found = compare(replay(), replay(init=["z", "z", "z", "z"]))
    assert found.kind == "initial_weights"
    return " ".join(sentences(found, None, set(placements), None, differ))


def test_two_cells_of_other_model_sizes_are_not_blamed_on_the_seed():
    differ = setting_differences(SMALL, {**SMALL, "hidden_size": 64})
    assert differ == [("hidden_size", 32, 64)]
    words = _initial_weights_words(differ)
    assert "build different models (`hidden_size` (`32` and `64`))" in words
    assert "seed" not in words


def test_another_model_wins_over_where_the_seed_was_set():
    differ = setting_differences(SMALL, {**SMALL, "model": "cnn", "seed": 1})
    words = _initial_weights_words(differ, {"none"})
    assert 'build different models (`model` (`"mlp"` and `"cnn"`))' in words
    assert "never set" not in words


def test_two_seeds_are_named_as_the_cause_only_where_the_seed_counts():
    differ = setting_differences(SMALL, {**SMALL, "seed": 1})
    assert "the two runs use different seeds (`seed` (`0` and `1`))" in _initial_weights_words(
        differ
    )
    # placement none: the seed is never set, so the seeds cannot be the cause
    words = _initial_weights_words(differ, {"none"})
    assert "never set (placement `none`)" in words and "different seeds" not in words
    words = _initial_weights_words(differ, {"before_trainer"})
    assert "only after the model is created" in words and "different seeds" not in words


def test_other_differences_are_named_beside_the_seed():
    differ = setting_differences(
        {**SMALL, "threads": 1, "params": {"a": 1}},
        {**SMALL, "threads": 2, "params": {"a": True}, "devices": 2},
    )
    assert differ == [("threads", 1, 2), ("params.a", 1, True), ("devices", None, 2)]
    words = _initial_weights_words(differ)
    assert "differ in `threads` (`1` and `2`), `params.a` (`1` and `true`), `devices`" in words
    assert "the seed was not set before the model was created" in words
    many = [(f"k{i}", i, i + 1) for i in range(5)]
    assert "and 2 more;" in _initial_weights_words(many)
    # two repeats of one cell: nothing differs, the old words
    assert setting_differences(SMALL, dict(SMALL)) == []
    assert "the seed was not set before" in _initial_weights_words([])


def test_a_loss_that_alone_differs_says_the_state_never_did():
    """Every op output and every state hash equal, the loss at step 1 not: no "step None"."""
    losses = np.ones((3, 1), dtype="<f4")
    other = losses.copy()
    other[1, 0] = np.nextafter(np.float32(1), np.float32(2))
    found = compare(replay(log_step=1, ops=[]), replay(log_step=1, ops=[], losses=other))
    assert (found.kind, found.state_step, found.loss_step) == ("state", None, 1)
    words = " ".join(sentences(found, 1, {"before_model"}))
    assert "None" not in words and "()" not in words
    assert "The losses first differ at step 1, while the training state" in words
    assert "never differed in the 3 replayed steps" in words
    # the state did differ: its step and names, as before
    states = [[f"s{k}" for k in range(5)], ["d"] * 5, ["d"] * 5]
    found = compare(replay(log_step=1, ops=[]), replay(log_step=1, ops=[], states=states))
    assert (found.kind, found.state_step) == ("state", 1)
    words = " ".join(sentences(found, None, {"before_model"}))
    assert "The training state first differs after step 1 (`model.1.weight`" in words


def test_a_param_named_like_a_setting_keeps_its_prefix_in_the_grid_and_the_sentences():
    cells = [
        cell("a", placement="none", **{"params.placement": "x"}),
        cell("b", "diverges", placement="none", **{"params.placement": "y"}),
        cell("c", placement="before_model", **{"params.placement": "x"}),
        cell("d", "diverges", placement="before_model", **{"params.placement": "y"}),
    ]
    assert label("params.placement") == "params.placement"
    assert label("params.lr") == "params.lr"  # learning_rate's short label
    assert label("params.name") == "params.name"  # the grid's name axis
    assert label("params.channels") == "channels" and label("placement") == "placement"
    grid = make_grid("repo/a:1", cells)
    heads = [grid.row_header(), *(grid.column_label(c) for c in range(len(grid.columns)))]
    assert "placement · placement" not in heads
    assert {"placement", "params.placement"} <= {
        part.split("=")[0] for h in heads for part in h.split(" · ")
    }
    words = describe_image("repo/a:1", cells)
    assert "params.placement breaks it: params.placement=y never reproduces" in words
    assert escape(label("params.placement")) == "params.placement"


EXCLUDE = """name: types
run: {{repeats: 1}}
workload: {{entry: "m:build"}}
axes:
  params: [{{x: 1}}, {{x: true}}, {{x: 1.0}}]
{rule}
"""


def _xs(rule: str) -> list:
    loaded = parse_matrix(EXCLUDE.format(rule=rule), Path("m.yaml"), check_code_dir=False)
    return [(c.settings["params"]["x"], c.settings.get("threads")) for c in loaded.cells]


def test_include_and_exclude_keep_1_true_and_1_0_apart():
    assert [type(x) for x, _ in _xs("")] == [int, bool, float]
    for value, kind in (("1", int), ("true", bool), ("1.0", float)):
        left = _xs(f"exclude: [{{params: {{x: {value}}}}}]")
        assert len(left) == 2 and kind not in [type(x) for x, _ in left], value
        extended = _xs(f"include: [{{params: {{x: {value}}}, threads: 3}}]")
        assert [type(x) for x, t in extended if t == 3] == [kind], value


SIZES = """\
name: sizes
run: {repeats: 1, epochs: 1, max_steps_per_epoch: 2, threads: 1, timeout_s: 300}
axes:
  hidden_size: [32, 64]
"""


@pytest.mark.slow
def test_diagnose_of_two_model_sizes_names_the_size_for_real(tmp_path: Path):
    """Real runs and replays: ``--cells`` on the two sizes of one matrix."""
    (tmp_path / "m.yaml").write_text(SIZES)
    out = tmp_path / "results"

    def harness(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "harness.cli", *args],
            capture_output=True, text=True, timeout=900, cwd=tmp_path,
        )  # fmt: skip

    ran = harness("run", "m.yaml", "--out", str(out), "--progress", "quiet", "--no-report")
    assert ran.returncode == 0, ran.stderr[-3000:]
    cells = json.loads((out / "manifest.json").read_text())["cells"]
    ids = {c["settings"]["hidden_size"]: c["id"] for c in cells}
    said = harness("diagnose", str(out), "--cells", ids[32], "--cells", ids[64], "--no-report")
    assert said.returncode == 0, said.stderr[-3000:]
    assert "The initial weights already differ" in said.stdout
    assert "the two runs build different models (`hidden_size` (`32` and `64`))" in said.stdout
    assert "seed" not in said.stdout


def test_the_words_of_differences_in_detail():
    """What mutation testing asks of words.py: the bounds, the JSON of values, the placements."""
    three = [(f"k{i}", i, i + 1) for i in range(3)]
    assert "more" not in _initial_weights_words(three)
    assert "`k2` (`2` and `3`) and 1 more;" in _initial_weights_words([*three, ("k3", 3, 4)])
    # another setting under placement none: the placement is the cause, not the setting
    words = _initial_weights_words([("threads", 1, 2)], {"none"})
    assert "never set (placement `none`)" in words and "`threads`" not in words
    assert '`name` (`"é"` and `"e"`)' in _initial_weights_words([("name", "é", "e")])
    # mappings equal but for their order, and 1 against 1.0: one the same, the other not
    assert setting_differences({"m": {"a": 1, "b": 2}}, {"m": {"b": 2, "a": 1}}) == []
    assert setting_differences({"lr": 1}, {"lr": 1.0}) == [("lr", 1, 1.0)]
    assert setting_differences({"params": "odd"}, {"params": "odd"}) == []


def test_a_replayed_loss_earlier_than_the_recorded_one_is_said_hidden():
    """Only the replays' loss differs, at step 1; the records' losses from step 3."""
    other = np.ones((3, 1), dtype="<f4")
    other[1, 0] = 2.0
    found = compare(replay(log_step=1, ops=[]), replay(log_step=1, ops=[], losses=other))
    words = " ".join(sentences(found, 3, {"before_model"}))
    assert "The losses first differ only at step 3: the loss trajectory hid this divergence " in (
        words
    )
    assert "for 2 steps." in words
    one = np.ones((1, 1), dtype="<f4")
    found = compare(
        replay(steps=1, log_step=0, ops=[]), replay(steps=1, log_step=0, ops=[], losses=one * 2)
    )
    assert "never differed in the 1 replayed step," in " ".join(sentences(found, None, set()))


def test_each_cause_of_the_initial_weights_word_for_word():
    size = [("hidden_size", 32, 64)]
    seed = [("seed", 0, 1)]
    threads = [("threads", 1, 2)]
    head = (
        "The initial weights already differ: `model.1.weight` is the first parameter whose "
        "bits differ (4 of 4 parameters differ): "
    )
    expected = {
        "size": "the two runs build different models (`hidden_size` (`32` and `64`)), so their "
        "initial weights cannot be the same.",
        "seed": "the two runs use different seeds (`seed` (`0` and `1`)).",
        "threads": "the two runs differ in `threads` (`1` and `2`); where that does not change "
        "the model as created, the seed was not set before the model was created, or the "
        "random number generator was consumed differently before it.",
    }
    for what, differ in (("size", size), ("seed", seed), ("threads", threads)):
        found = compare(replay(), replay(init=["z", "z", "z", "z"]))
        first = sentences(found, None, {"before_model"}, None, differ)[0]
        assert first == head + expected[what], what
    found = compare(replay(log_step=1, ops=[]), replay(log_step=1, ops=[], losses=_other()))
    assert sentences(found, None, {"before_model"})[0] == (
        "The losses first differ at step 1, while the training state (parameters and optimizer "
        "state) never differed in the 3 replayed steps, and no logged operation's output "
        "differed at that step: the difference came from outside what was logged (a collective "
        "the dispatcher does not see, or inside a module when only module outputs were logged)."
    )


def _other() -> np.ndarray:
    other = np.ones((3, 1), dtype="<f4")
    other[1, 0] = 2.0
    return other
