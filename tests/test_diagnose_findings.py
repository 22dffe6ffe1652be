"""Where two replays part ways, on hand-made replays: the order of causes (initial weights,
data, the first operation), the relog when the replays part ways before the logged step, and
the words that say it."""

from __future__ import annotations

import dataclasses

import numpy as np

from harness.diagnose.findings import (
    Replay,
    compare,
    delta,
    divergent_step,
    first_difference,
    loss_step,
    state_rows,
    ulps,
)
from harness.diagnose.words import markdown, sentences

NAMES = ["model.1.weight", "model.1.bias", "model.3.weight", "model.3.bias"]
STATE = [*NAMES, "model.3.weight:exp_avg"]


def _out(shape: list[int], h: str) -> dict:
    return {"shape": shape, "dtype": "float32", "hash": h}


def ops(differ_at: int | None = None, inputs_differ: bool = False, other: str | None = None):
    """Three operations; ``differ_at``: the one whose output hash differs in the second run."""
    base = [
        ("aten.addmm.default", "forward", "model.1"),
        ("aten.mm.default", "backward", "model.3"),
        ("aten.lerp_.Scalar", "optimizer", None),
    ]
    first, second = [], []
    for i, (op, phase, module) in enumerate(base):
        entry = {
            "index": i,
            "op": op,
            "phase": phase,
            "module": module,
            "tensors": ["model.3.weight (gradient)"] if i == 1 else [],
            "inputs": [_out([10, 32], "aa"), _out([32, 64], "bb")],
            "outputs": [_out([10, 64], f"o{i}")],
        }
        first.append(entry)
        changed = dict(entry)
        if i == differ_at:
            changed["outputs"] = [_out([10, 64], f"x{i}")]
            if inputs_differ:
                changed["inputs"] = [_out([10, 32], "zz"), _out([32, 64], "bb")]
            if other:
                changed["op"] = other
        second.append(changed)
    return first, second


def replay(label: str = "a", **changes) -> Replay:
    steps = changes.pop("steps", 3)
    log_step = changes.pop("log_step", None)
    data = {
        "level": "ops",
        "debug_mode": True,
        "steps": steps,
        "log_step": log_step,
        "logged_steps": [] if log_step is None else [log_step],
        "parameters": NAMES,
        "module_types": {"model.1": "Linear", "model.3": "Linear", "": "LitMNIST"},
        "init": ["i0", "i1", "i2", "i3"],
        "batches": [["x", "y"]] * steps,
        "state_names": STATE,
        "states": [[f"s{k}" for k in range(len(STATE))] for _ in range(steps)],
        "ops": {},
    }
    ops = changes.pop("ops", None)
    if ops is not None:
        data["ops"] = {str(log_step): ops}
    losses = changes.pop("losses", np.ones((steps, 1), dtype="<f4"))
    outputs = changes.pop("outputs", None)
    split = changes.pop("split", "split")
    data.update(changes)
    return Replay(label, data, losses, split, outputs)


def test_first_difference_and_loss_step():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 6]) == 1
    assert first_difference([1, 2], [1, 2, 3]) is None  # over the common length
    a = np.array([[1.0], [2.0], [3.0]], dtype="<f4")
    b = a.copy()
    assert loss_step(a, b) is None
    b[2, 0] = np.nextafter(np.float32(3.0), np.float32(4.0))
    assert loss_step(a, b) == 2


def test_ulps_and_delta_count_units_in_the_last_place():
    one = np.array([1.0, 2.0], dtype=np.float32)
    up = one.copy()
    up[1] = np.nextafter(np.float32(2.0), np.float32(3.0), dtype=np.float32)
    assert ulps(one, one) == 0
    assert ulps(one, up) == 1
    three = np.array([1.0, -1.0], dtype=np.float32)
    across = np.array([1.0, 1.0], dtype=np.float32)
    assert ulps(three, across) == 2 * 0x3F800000  # from -1 through zero to 1
    biggest, most = delta(one, up)
    assert biggest == float(up[1]) - 2.0
    assert most == 1
    assert delta(one, np.zeros(3, dtype=np.float32)) == (None, None)


def test_initial_weights_first_even_when_the_data_differs_too():
    a = replay()
    b = replay(init=["i0", "other", "other", "i3"], batches=[["q", "y"]] * 3, split="other")
    found = compare(a, b)
    assert found.kind == "initial_weights"
    assert found.parameters_differ == ["model.1.bias", "model.3.weight"]
    assert found.split_same is False
    assert found.batch == {"step": 0, "inputs": True, "labels": False}
    words = " ".join(sentences(found, None, {"none"}))
    assert "`model.1.bias` is the first parameter" in words
    assert "2 of 4 parameters" in words
    assert "never set" in words
    assert "split differs" in words


def test_before_trainer_words_say_the_split_is_the_same():
    found = compare(replay(), replay(init=["z", "i1", "i2", "i3"]))
    words = " ".join(sentences(found, None, {"before_trainer"}))
    assert found.kind == "initial_weights" and found.split_same is True
    assert "only after the model is created" in words
    assert "The data split is the same" in words
    assert "every replayed batch is the same" in words


def test_data_before_state():
    states = [[f"s{k}" for k in range(5)], [f"s{k}" for k in range(5)], ["d"] * 5]
    batches = [["x", "y"], ["x", "other"], ["x", "y"]]
    found = compare(replay(), replay(batches=batches, states=states))
    assert found.kind == "data"
    assert found.batch == {"step": 1, "inputs": False, "labels": True}
    assert "batch 1 is the first whose labels differ" in " ".join(sentences(found, None, set()))


def test_state_after_the_batch_is_not_blamed_on_the_data():
    """A batch that differs after the state already did is not the first cause."""
    states = [["d"] * 5] * 3
    batches = [["x", "y"], ["x", "other"], ["x", "y"]]
    found = compare(replay(log_step=0), replay(log_step=0, batches=batches, states=states))
    assert found.kind == "state"


def test_the_first_differing_operation_with_equal_inputs():
    first, second = ops(differ_at=1)
    x = np.array([[1.0, 2.0]], dtype=np.float32)
    y = x.copy()
    y[0, 1] = np.nextafter(np.float32(2.0), np.float32(3.0), dtype=np.float32)
    states = [["d"] * 5] * 3
    a = replay(log_step=0, ops=first, outputs={"s0_op1_0": x})
    b = replay(log_step=0, ops=second, outputs={"s0_op1_0": y}, states=states)
    found = compare(a, b)
    assert found.kind == "operation"
    op = found.op
    assert (op.index, op.op, op.phase, op.module, op.module_type) == (
        1,
        "aten.mm.default",
        "backward",
        "model.3",
        "Linear",
    )
    assert op.inputs_equal and op.differing_inputs == [] and op.differing_outputs == [0]
    assert op.max_ulps == 1 and op.max_abs_delta == float(y[0, 1]) - 2.0
    assert found.state_step == 0 and found.state_differs == STATE
    words = sentences(found, 74, {"before_model"}, 1)
    text = " ".join(words)
    assert "The recorded weights (hashed after every step) first differ after step 1." in text
    assert "recorded weights" not in " ".join(sentences(found, 74, set(), 0))
    assert "`aten.mm.default` at step 0, in the backward pass, in module `model.3` (Linear)" in text
    assert "producing `model.3.weight (gradient)`" in text
    assert "Its inputs were equal in both runs" in text
    assert "1 ULP)" in text
    assert "first differ only at step 74" in text and "for 74 steps" in text
    assert "hid this divergence for 1 step." in " ".join(sentences(found, 1, set()))
    section = markdown("T", words, dataclasses.asdict(op), "diagnosis-x")
    assert '<a id="diagnosis-x"></a>' in section
    assert "| 0 | backward | `aten.mm.default` | `model.3` |" in section


def test_an_operation_whose_input_already_differed():
    first, second = ops(differ_at=2, inputs_differ=True)
    states = [["d"] * 5] * 3
    found = compare(replay(log_step=0, ops=first), replay(log_step=0, ops=second, states=states))
    assert found.kind == "operation"
    assert found.op.index == 2 and found.op.module is None
    assert not found.op.inputs_equal and found.op.differing_inputs == [0]
    text = " ".join(sentences(found, None, set()))
    assert "first input already differed" in text and "outside every module" in text


def test_different_operations_are_named():
    first, second = ops(differ_at=1, other="aten.bmm.default")
    found = compare(
        replay(log_step=0, ops=first), replay(log_step=0, ops=second, states=[["d"] * 5] * 3)
    )
    assert found.kind == "different_operations"
    assert found.op.other_op == "aten.bmm.default"
    assert "`aten.bmm.default` in the second" in " ".join(sentences(found, None, set()))


def test_replays_that_part_before_the_logged_step_are_relogged():
    states = [[f"s{k}" for k in range(5)], ["d"] * 5, ["d"] * 5]
    found = compare(replay(log_step=2), replay(log_step=2, states=states))
    assert found.kind == "relog" and found.state_step == 1


def test_a_loss_that_differs_before_the_state_moves_the_step():
    losses = np.ones((3, 1), dtype="<f4")
    other = losses.copy()
    other[1, 0] = 2.0
    found = compare(replay(log_step=2), replay(log_step=2, losses=other))
    assert found.kind == "relog" and found.loss_step == 1 and found.state_step is None


def test_no_divergence_says_how_many_steps_were_replayed():
    found = compare(replay(steps=7), replay(steps=7))
    assert found.kind == "no_divergence" and found.steps_replayed == 7
    text = " ".join(sentences(found, None, {"before_model"}))
    assert "did not diverge in 7 replayed steps" in text
    assert "Their records agree as well." in text
    recorded = " ".join(sentences(found, 12, {"before_model"}))
    assert "The recorded runs' losses differ from step 12" in recorded
    both = " ".join(sentences(found, 12, set(), 3))
    assert "weights differ from step 3 and losses differ from step 12" in both


def test_module_level_is_said():
    first, second = ops(differ_at=1)
    a = replay(log_step=0, ops=first, level="modules", debug_mode=False)
    b = replay(log_step=0, ops=second, level="modules", debug_mode=False, states=[["d"] * 5] * 3)
    found = compare(a, b)
    assert found.level == "modules" and not found.debug_mode
    text = " ".join(sentences(found, None, set()))
    assert "as this torch has no DebugMode" in text
    assert "The first logged value whose bits differ is the aten.mm.default at step 0" in text


def test_a_batch_that_differs_at_the_state_step_is_the_data():
    """The batch of step s feeds the state after step s: a tie is the data's."""
    states = [[f"s{k}" for k in range(5)], ["d"] * 5, ["d"] * 5]
    batches = [["x", "y"], ["q", "y"], ["x", "y"]]
    found = compare(replay(log_step=1), replay(log_step=1, states=states, batches=batches))
    assert found.kind == "data" and found.batch["step"] == 1 and found.state_step == 1


def test_only_a_step_both_replays_logged_counts_as_logged():
    states = [["d"] * 5] * 3
    a = replay(log_step=0)
    b = replay(log_step=0, states=states)
    b.data["logged_steps"] = []
    assert compare(a, b).kind == "relog"


def test_models_with_other_parameters_differ_in_their_initial_weights():
    other = [*NAMES[:3], "model.5.bias"]
    found = compare(replay(), replay(parameters=other))
    assert found.kind == "initial_weights"
    assert found.parameters_differ == ["model.3.bias", "model.5.bias"]


def test_replays_at_two_levels_are_compared_at_module_level():
    assert compare(replay(level="ops"), replay(level="modules")).level == "modules"
    assert compare(replay(level="ops"), replay(level="ops")).level == "ops"


def test_a_replay_that_ran_more_operations_with_equal_outputs():
    first, second = ops()
    states = [["d"] * 5] * 3
    found = compare(
        replay(log_step=0, ops=first), replay(log_step=0, ops=second[:2], states=states)
    )
    assert found.kind == "different_operations" and found.op is None
    assert "different numbers of operations at step 0" in " ".join(sentences(found, None, set()))


def test_ulps_and_delta_refuse_what_they_cannot_compare():
    x = np.array([1.0, 2.0], dtype=np.float32)
    assert ulps(x, x.astype(np.float64)) is None
    assert ulps(x, x[:1]) is None
    assert ulps(np.array([], dtype=np.float32), np.array([], dtype=np.float32)) is None
    assert ulps(np.array([1, 2]), np.array([1, 3])) is None
    wide = np.array([1.0], dtype=np.float64)
    assert ulps(wide, np.nextafter(wide, 2.0)) == 1
    half = np.array([1.0], dtype=np.float16)
    assert ulps(half, np.nextafter(half, np.float16(2.0))) == 1
    assert delta(np.array([1, 2]), np.array([1, 5])) == (3.0, None)
    nan = np.array([np.nan, 1.0], dtype=np.float32)
    biggest, _ = delta(nan, np.array([np.nan, 1.5], dtype=np.float32))
    assert biggest == 0.5  # NaN positions are left out of |Δ|


def test_loss_step_compares_the_ranks_both_runs_have():
    one = np.zeros((3, 1), dtype="<f4")
    two = np.zeros((3, 2), dtype="<f4")
    two[1, 1] = 1.0  # rank 1, which the other run does not have
    assert loss_step(one, two) is None
    two[2, 0] = 1.0
    assert loss_step(one, two) == 2
    assert loss_step(np.zeros((0, 1), dtype="<f4"), one) is None


def test_an_output_without_a_hash_is_not_compared():
    first, second = ops()
    second[1] = {**second[1], "outputs": [_out([10, 64], None)]}
    second[2] = {**second[2], "outputs": [_out([10, 64], "x2")]}
    states = [["d"] * 5] * 3
    found = compare(replay(log_step=0, ops=first), replay(log_step=0, ops=second, states=states))
    assert found.op.index == 2


def test_state_that_appears_after_step_0_is_compared_by_name():
    """A layer unfrozen at step 1: its optimizer state exists from then on (null before, in
    replay format 2). Equal replays agree; a replay whose state appears a step later, or whose
    names come in another order, is compared name by name (issue 28, item 16)."""
    late = STATE + ["model.3.bias:exp_avg"]
    rows = [[*[f"s{k}" for k in range(len(STATE))], h] for h in (None, "e1", "e2")]
    same = compare(replay(state_names=late, states=rows), replay(state_names=late, states=rows))
    assert (same.kind, same.state_step) == ("no_divergence", None)
    later = [rows[0], [*rows[1][:-1], None], rows[2]]
    found = compare(replay(state_names=late, states=rows), replay(state_names=late, states=later))
    assert (found.state_step, found.state_differs) == (1, ["model.3.bias:exp_avg"])
    order = late[::-1]
    swapped = [row[::-1] for row in rows]
    agree = compare(
        replay(state_names=late, states=rows), replay(state_names=order, states=swapped)
    )
    assert agree.state_step is None and agree.kind == "no_divergence"
    names, a, b = state_rows(
        replay(state_names=["p"], states=[["1"]]), replay(state_names=["q"], states=[["2"]])
    )
    assert (names, a, b) == (["p", "q"], [["1", None]], [[None, "2"]])
    assert divergent_step(replay(state_names=["p"], states=[["1"]]),
                          replay(state_names=["q"], states=[["1"]]))[0] == 0  # fmt: skip


# ---------------------------------------------------------------- the words, whole


def _equal_inputs_finding():
    first, second = ops(differ_at=1)
    x = np.array([[1.0, 2.0]], dtype=np.float32)
    y = x.copy()
    y[0, 1] = np.nextafter(np.float32(2.0), np.float32(3.0), dtype=np.float32)
    a = replay(log_step=0, ops=first, outputs={"s0_op1_0": x})
    b = replay(log_step=0, ops=second, outputs={"s0_op1_0": y}, states=[["d"] * 5] * 3)
    return compare(a, b)


def test_an_operation_s_diagnosis_word_for_word():
    """What the terminal and diagnosis.md say of the first differing operation: where, what it
    read and wrote, by how much, the state after it, then the recorded weights and losses."""
    found = _equal_inputs_finding()
    delta = f"{found.op.max_abs_delta:.3g}"
    assert sentences(found, 74, {"before_model"}, 1) == [
        "The first operation whose output bits differ is `aten.mm.default` at step 0, in the "
        "backward pass, in module `model.3` (Linear), producing `model.3.weight (gradient)`: "
        "inputs [10, 32] float32 and [32, 64] float32, output [10, 64] float32 (operation 2 of "
        "3 at that step; every aten operation logged with DebugMode).",
        "Its inputs were equal in both runs, so this operation itself produced the difference "
        f"(max |Δ| {delta}, 1 ULP).",
        "After step 0 the training state differs in `model.1.weight`, `model.1.bias`, "
        "`model.3.weight` and 2 more.",
        "The recorded weights (hashed after every step) first differ after step 1.",
        "The losses first differ only at step 74: the loss trajectory hid this divergence for "
        "74 steps.",
    ]
    section = markdown("T", [], dataclasses.asdict(found.op), "diagnosis-x")
    assert section.endswith(
        "| step | phase | operation | module | inputs | output | inputs equal | max abs Δ | "
        "ULPs |\n"
        "|---:|---|---|---|---|---|---|---:|---:|\n"
        "| 0 | backward | `aten.mm.default` | `model.3` | \\[10, 32\\] float32 and \\[32, 64\\] "
        f"float32 | \\[10, 64\\] float32 | yes | {delta} | 1 |\n"
    )


def test_inputs_that_already_differed_are_counted_in_words():
    first, second = ops(differ_at=2, inputs_differ=True)
    found = compare(
        replay(log_step=0, ops=first), replay(log_step=0, ops=second, states=[["d"] * 5] * 3)
    )
    found.op.differing_inputs = [0, 1, 5]
    found.op.max_ulps = 3
    found.state_differs = STATE[:3]
    assert sentences(found, 0, set()) == [
        "The first operation whose output bits differ is `aten.lerp_.Scalar` at step 0, in the "
        "optimizer step, outside every module: inputs [10, 32] float32 and [32, 64] float32, "
        "output [10, 64] float32 (operation 3 of 3 at that step; every aten operation logged "
        "with DebugMode).",
        "Its first, second, #6 input already differed, so the difference came in earlier, "
        "outside the logged operations (3 ULPs).",
        "After step 0 the training state differs in `model.1.weight`, `model.1.bias`, "
        "`model.3.weight`.",
        "The losses first differ at step 0.",
    ]
    section = markdown("T", [], dataclasses.asdict(found.op), "a")
    assert section.splitlines()[-1] == (
        "| 0 | optimizer | `aten.lerp_.Scalar` | `-` | \\[10, 32\\] float32 and \\[32, 64\\] "
        "float32 | \\[10, 64\\] float32 | no |  | 3 |"
    )


def test_a_state_that_differs_with_no_logged_output_word_for_word():
    found = compare(replay(log_step=0), replay(log_step=0, states=[["d"] * 5] * 3))
    assert found.kind == "state"
    assert sentences(found, 2, set(), 0) == [
        "The training state first differs after step 0 (`model.1.weight`, `model.1.bias`, "
        "`model.3.weight`), but no logged operation's output differed at that step: the "
        "difference came from outside what was logged (a collective the dispatcher does not "
        "see, or inside a module when only module outputs were logged).",
        "The losses first differ only at step 2: the loss trajectory hid this divergence for 2 "
        "steps.",
    ]


def test_initial_weights_whose_cause_is_not_the_placement_word_for_word():
    found = compare(replay(split=None), replay(init=["z", "i1", "i2", "i3"], split=None))
    assert sentences(found, None, {"before_model"}) == [
        "The initial weights already differ: `model.1.weight` is the first parameter whose "
        "bits differ (1 of 4 parameters differ): the seed was not set before the model was "
        "created, or the random number generator was consumed differently before it.",
        "The data split was not recorded; every replayed batch is the same.",
    ]
    assert sentences(found, None, {"none"})[0].endswith(
        "(1 of 4 parameters differ): the seed is never set (placement `none`), so each run "
        "draws its own initial weights."
    )


def test_module_level_words_name_the_lightning_module_and_a_value_s_place():
    first, second = ops(differ_at=0)
    a = replay(log_step=0, ops=first, level="modules")
    found = compare(a, replay(log_step=0, ops=second, level="modules", states=[["d"] * 5] * 3))
    op = found.op
    op.module, op.module_type, op.inputs, op.tensors = "", "LitMNIST", [], []
    found.state_differs = []
    level = "module level: module outputs, gradients and parameter updates, from hooks"
    assert sentences(found, None, set()) == [
        "The first logged value whose bits differ is the aten.addmm.default at step 0, in the "
        "forward pass, in the LightningModule itself (LitMNIST): output [10, 64] float32 (value "
        f"1 of 3 at that step; {level}).",
        "Everything logged before it was equal in both runs, so the difference arose here.",
    ]
    op.module_type = None
    assert "in the LightningModule itself (its forward): output" in sentences(found, None, set())[0]
    op.module = "net.`x`"  # a backtick cannot end the code span early
    assert ", in module `net.'x'`: output" in sentences(found, None, set())[0]


def test_different_operations_word_for_word():
    first, second = ops(differ_at=1, other="aten.bmm.default")
    found = compare(
        replay(log_step=0, ops=first), replay(log_step=0, ops=second, states=[["d"] * 5] * 3)
    )
    assert sentences(found, 5, set()) == [
        "The two runs ran different operations at step 0: operation 1 is `aten.mm.default` in "
        "the first and `aten.bmm.default` in the second (in the backward pass, in module "
        "`model.3` (Linear)).",
        "The losses first differ only at step 5: the loss trajectory hid this divergence for 5 "
        "steps.",
    ]
    first, second = ops()
    found = compare(
        replay(log_step=0, ops=first), replay(log_step=0, ops=second[:2], states=[["d"] * 5] * 3)
    )
    assert sentences(found, None, set()) == [
        "The two runs ran different numbers of operations at step 0, with equal outputs as far "
        "as both went."
    ]


def test_data_and_no_divergence_word_for_word():
    assert sentences(compare(replay(steps=1), replay(steps=1)), None, set()) == [
        "The two runs did not diverge in 1 replayed step: no nondeterminism showed up in this "
        "replay.",
        "Their records agree as well.",
    ]
    batches = [["x", "y"], ["q", "r"], ["x", "y"]]
    found = compare(replay(), replay(batches=batches, split="other"))
    assert sentences(found, 3, set()) == [
        "The initial weights are equal, but the two runs see different data.",
        "The data split differs too; batch 1 is the first whose inputs and labels differ.",
        "The losses first differ at step 3.",
    ]
    found.batch = {"step": 1, "inputs": False, "labels": False}
    assert sentences(found, 1, set())[1] == (
        "The data split differs too; batch 1 is the first whose contents differ."
    )


def test_a_loss_that_alone_differs_word_for_word():
    losses = np.ones((3, 1), dtype="<f4")
    other = losses.copy()
    other[1, 0] = np.nextafter(np.float32(1), np.float32(2))
    found = compare(replay(log_step=1, ops=[]), replay(log_step=1, ops=[], losses=other))
    assert sentences(found, 4, set(), 1) == [
        "The losses first differ at step 1, while the training state (parameters and optimizer "
        "state) never differed in the 3 replayed steps, and no logged operation's output "
        "differed at that step: the difference came from outside what was logged (a collective "
        "the dispatcher does not see, or inside a module when only module outputs were logged).",
        "The losses first differ only at step 4: the loss trajectory hid this divergence for 3 "
        "steps.",
    ]
    found.steps_replayed = 1
    assert "never differed in the 1 replayed step, and" in sentences(found, None, set())[0]


def test_the_rest_of_an_operation_s_words():
    """Inputs the hash could not read, the third to fifth input, four state tensors, an
    unknown phase, a module-level replay without DebugMode, and several tensors produced."""
    first, second = ops(differ_at=2, inputs_differ=True)
    found = compare(
        replay(log_step=0, ops=first), replay(log_step=0, ops=second, states=[["d"] * 5] * 3)
    )
    op = found.op
    op.inputs_equal, op.differing_inputs = False, []  # differing, but no hash tells which
    op.phase, op.tensors = "elsewhere", ["w", "b"]
    found.state_differs = STATE[:4]
    words = sentences(found, None, set())
    assert words[0].startswith(
        "The first operation whose output bits differ is `aten.lerp_.Scalar` at step 0, "
        "elsewhere, outside every module, producing `w`, `b`: inputs"
    )
    assert words[1:] == [
        "Its inputs that were hashed were equal in both runs, but some could not be hashed (a "
        "sparse or quantized tensor): the difference arose here or came in with those.",
        "After step 0 the training state differs in `model.1.weight`, `model.1.bias`, "
        "`model.3.weight` and 1 more.",
    ]
    op.differing_inputs = [2, 3, 4]
    assert sentences(found, None, set())[1].startswith("Its third, fourth, fifth input already")
    found.level, found.debug_mode = "modules", False
    assert sentences(found, None, set())[0].endswith(
        "(value 3 of 3 at that step; module level: module outputs, gradients and parameter "
        "updates, from hooks, as this torch has no DebugMode)."
    )
    other = dataclasses.replace(op, other_op="aten.add.Tensor")
    found.op = other
    assert sentences(found, None, set())[0].endswith(
        "`aten.add.Tensor` in the second (elsewhere, outside every module)."
    )


def test_what_a_diagnosis_table_shows_of_an_operation_without_inputs():
    op = {"step": 3, "phase": "forward", "op": "aten.relu.default", "module": None}
    row = markdown("T", [], op, "a").splitlines()[-1]
    assert row == "| 3 | forward | `aten.relu.default` | `-` | none | none | not logged |  |  |"


def test_the_recorded_runs_words_when_the_replays_agree():
    found = compare(replay(steps=2), replay(steps=2))
    assert sentences(found, 9, set(), 4)[1] == (
        "The recorded runs' weights differ from step 4 and losses differ from step 9: what made "
        "them differ (timing, scheduling, another machine) did not happen again; replaying "
        "again may show it."
    )


def test_initial_weights_without_a_named_parameter_and_with_another_model():
    from harness.diagnose.words import setting_differences

    found = compare(replay(), replay(init=["z", "i1", "i2", "i3"]))
    found.parameters_differ = []
    assert sentences(found, None, set())[0].startswith(
        "The initial weights already differ: `?` is the first parameter whose bits differ (0 of "
        "4 parameters differ)"
    )
    found = compare(replay(), replay(init=["z", "i1", "i2", "i3"]))
    differ = setting_differences(
        {"model": "mlp", "hidden_size": 32, "seed": 0, "params": {"lr": 0.1}},
        {"model": "mlp", "hidden_size": 64, "seed": 0, "params": {"lr": 1}, "threads": 2},
    )
    assert differ == [("hidden_size", 32, 64), ("params.lr", 0.1, 1), ("threads", None, 2)]
    assert sentences(found, 3, {"before_model"}, None, differ) == [
        "The initial weights already differ: `model.1.weight` is the first parameter whose bits "
        "differ (1 of 4 parameters differ): the two runs build different models (`hidden_size` "
        "(`32` and `64`)), so their initial weights cannot be the same.",
        "The data split is the same in both runs; every replayed batch is the same.",
    ]
    seeds = setting_differences({"seed": 0, "a": "é"}, {"seed": 1, "a": "é"})
    assert sentences(found, None, {"before_model"}, None, seeds)[0].endswith(
        ": the two runs use different seeds (`seed` (`0` and `1`))."
    )
    many = [(f"k{i}", i, [i]) for i in range(5)]
    assert sentences(found, None, {"before_model"}, None, many)[0].endswith(
        ": the two runs differ in `k0` (`0` and `[0]`), `k1` (`1` and `[1]`), `k2` (`2` and "
        "`[2]`) and 2 more; where that does not change the model as created, the seed was not "
        "set before the model was created, or the random number generator was consumed "
        "differently before it."
    )


def test_the_machines_sentences_word_for_word():
    from test_machine_units import A, B

    from harness.contract.machine import differences
    from harness.diagnose.words import machine_sentences

    fa, fb = A.fingerprint, B.fingerprint
    words = "; ".join(differences(A, B))
    recorded, replayed = machine_sentences((A, B), (A, A))
    assert recorded == (
        f"The two runs ran on different machines, `{fa}` and `{fb}` ({words}): the machines "
        "alone can make their bits differ, and the replays, which both ran on one machine, "
        "cannot show that part."
    )
    assert replayed == (
        f"The replays ran on machine `{fa}`, not on `{fb}` where the recorded run ran "
        f"({'; '.join(differences(B, A))}): what follows is where they part ways on this "
        "machine, which need not be where the recorded runs did."
    )
    # the same facts under another fingerprint: only the fingerprints tell
    twin = dataclasses.replace(A, fingerprint="0" * len(fa))
    (only,) = machine_sentences((A, twin), (A, twin))
    assert only.startswith(f"The two runs ran on different machines, `{fa}` and `{'0' * len(fa)}`:")
    # a fingerprint that is not one counts as no machine recorded, on either side
    bogus = dataclasses.replace(B, fingerprint="bogus")
    assert machine_sentences((A, bogus), (A, bogus)) == []
    assert machine_sentences((bogus, A), (bogus, A)) == []


def test_a_diagnosis_section_from_tampered_strings_word_for_word():
    """Every string of diagnosis.json is made inert: HTML and emphasis escaped, one line, code
    spans kept as code (whitespace folded, a backtick made a quote, an empty one `-`), a pipe
    escaped only inside the table."""
    op = {"step": 1, "phase": "forward", "op": "aten.x|y", "module": "m `q`|r"}
    op |= {"max_abs_delta": 0.5, "max_ulps": None}
    lines = ["x < y & `a|b  c` then `` and *z*", "plain  \t text"]
    assert markdown("a <b> & c\n`d`", lines, op, "id-1") == (
        '<a id="id-1"></a>\n'
        "### a &lt;b&gt; &amp; c \\`d\\`\n"
        "\n"
        "- x &lt; y &amp; `a|b c` then `-` and \\*z\\*\n"
        "- plain text\n"
        "\n"
        "| step | phase | operation | module | inputs | output | inputs equal | max abs Δ | "
        "ULPs |\n"
        "|---:|---|---|---|---|---|---|---:|---:|\n"
        "| 1 | forward | `aten.x\\|y` | `m 'q'\\|r` | none | none | not logged | 0.5 |  |\n"
    )


def test_the_recorded_weights_are_said_from_the_operation_s_step():
    """The step the recorded weights are compared with is the logged operation's, not the
    state's: a weights step equal to it is not said again."""
    found = _equal_inputs_finding()
    found.state_step = 2  # the state differs later than the operation's step (0)
    assert not any("recorded weights" in s for s in sentences(found, None, set(), 0))
    assert "The recorded weights (hashed after every step) first differ after step 2." in (
        sentences(found, None, set(), 2)
    )


def test_the_settings_two_runs_differ_in_and_where_the_seed_counts():
    from harness.diagnose.words import setting_differences

    found = compare(replay(), replay(init=["z", "i1", "i2", "i3"]))

    def cause(placements: set[str], differ) -> str:
        return sentences(found, None, placements, None, differ)[0].split("differ): ", 1)[1]

    one, other = {"x": {"b": 1, "a": 2}}, {"x": {"a": 2, "b": 1}}
    assert setting_differences({"params": one}, {"params": other}) == []  # keys in another order
    three = [("a", "é", "è"), ("b", 1, 2), ("c", None, True)]
    assert cause({"before_model"}, three) == (
        'the two runs differ in `a` (`"é"` and `"è"`), `b` (`1` and `2`), `c` (`null` and '
        "`true`); where that does not change the model as created, the seed was not set before "
        "the model was created, or the random number generator was consumed differently before "
        "it."
    )
    assert "`c` (`null` and `true`) and 1 more;" in cause({"before_model"}, [*three, ("d", 1, 2)])
    late = (
        "the seed is set only after the model is created (placement `before_trainer`), so the "
        "initial weights come from an unseeded generator."
    )
    never = "the seed is never set (placement `none`), so each run draws its own initial weights."
    for differ in ([("seed", 0, 1)], three):
        assert cause({"before_trainer"}, differ) == late
        assert cause({"none"}, differ) == never


# ---------------------------------------------------------------- the numbers, at their edges


def test_ulps_and_delta_at_zero_one_element_and_non_finite_values():
    import warnings

    from harness.diagnose.findings import _differing

    zero = np.array([0.0], dtype=np.float32)
    assert ulps(zero, np.nextafter(zero, np.float32(1))) == 1  # +0 to the first subnormal
    assert delta(np.array([1.0]), np.array([3.0])) == (2.0, ulps(np.array([1.0]), np.array([3.0])))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inf - inf and an overflow are no warning to the user
        inf = np.array([np.inf, 1.0])
        biggest, _ = delta(inf, np.array([np.inf, 1.5]))
        assert biggest == 0.5
        big = np.array([1e308])
        assert delta(big, -big)[0] is not None
        nan = np.array([np.nan], dtype=np.float32)
        biggest, _ = delta(nan, nan)
    assert np.isnan(biggest)  # nothing finite to compare: NaN, not an error
    assert _differing(["a"], ["a", "b"]) == [0, 1]  # other counts: every position differs


def _two_outputs(first: tuple, second: tuple):
    """An operation with two differing outputs, each (a's value, b's value) or None (not
    saved)."""
    one, two = ops(differ_at=1)
    two[1] = {**two[1], "outputs": [_out([1], "x0"), _out([1], "x1")]}
    one[1] = {**one[1], "outputs": [_out([1], "o0"), _out([1], "o1")]}
    out_a, out_b = {}, {}
    for k, pair in enumerate((first, second)):
        if pair is not None:
            out_a[f"s0_op1_{k}"], out_b[f"s0_op1_{k}"] = (np.array(v) for v in pair)
    a = replay(log_step=0, ops=one, outputs=out_a)
    b = replay(log_step=0, ops=two, outputs=out_b, states=[["d"] * 5] * 3)
    return compare(a, b).op


def test_the_largest_difference_over_an_operation_s_outputs():
    f32 = np.float32
    op = _two_outputs(([f32(1)], [f32(1.5)]), ([f32(1)], [f32(2)]))
    assert op.max_abs_delta == 1.0 and op.max_ulps == 1 << 23
    op = _two_outputs(([f32(1)], [f32(2)]), ([f32(1)], [f32(1.5)]))
    assert op.max_abs_delta == 1.0 and op.max_ulps == 1 << 23
    op = _two_outputs(([f32(1)], [f32(1.5)]), ([f32(1), f32(2)], [f32(1)]))  # shapes differ
    assert op.max_abs_delta == 0.5 and op.max_ulps == 1 << 22
    op = _two_outputs(None, ([f32(1)], [f32(1.5)]))  # the first was not saved: the second
    assert op.max_abs_delta == 0.5


def test_outputs_saved_by_one_replay_only_give_no_numbers():
    one, two = ops(differ_at=1)
    x = {"s0_op1_0": np.array([1.0], dtype=np.float32)}
    states = [["d"] * 5] * 3
    for out_a, out_b in ((x, {}), (x, None), (None, x), ({}, x)):
        a = replay(log_step=0, ops=one, outputs=out_a)
        op = compare(a, replay(log_step=0, ops=two, outputs=out_b, states=states)).op
        assert (op.max_abs_delta, op.max_ulps) == (None, None)


def test_an_operation_s_module_type_is_its_module_s():
    one, two = ops(differ_at=2)  # outside every module
    states = [["d"] * 5] * 3
    op = compare(replay(log_step=0, ops=one), replay(log_step=0, ops=two, states=states)).op
    assert (op.module, op.module_type) == (None, None)
    for entries in (one, two):
        entries[2] = {**entries[2], "module": ""}  # the LightningModule itself
    op = compare(replay(log_step=0, ops=one), replay(log_step=0, ops=two, states=states)).op
    assert (op.module, op.module_type) == ("", "LitMNIST")


def test_an_input_one_replay_could_not_hash_leaves_equality_open():
    """An input without a hash (a sparse or quantized tensor) in either replay: whether the
    inputs were equal is not known (None), never "equal"."""
    unhashed = {"shape": [1], "dtype": "float32", "hash": None}
    states = [["d"] * 5] * 3
    for in_a, in_b in ((False, True), (True, False)):
        one, two = ops(differ_at=1)
        if in_a:
            one[1] = {**one[1], "inputs": [unhashed, one[1]["inputs"][1]]}
        if in_b:
            two[1] = {**two[1], "inputs": [unhashed, two[1]["inputs"][1]]}
        op = compare(replay(log_step=0, ops=one), replay(log_step=0, ops=two, states=states)).op
        assert op.inputs_equal is None and op.differing_inputs == []


def test_a_split_or_debug_mode_only_one_replay_has_is_not_claimed_for_both():
    assert compare(replay(split=None), replay()).split_same is None
    assert compare(replay(), replay(split=None)).split_same is None
    assert compare(replay(debug_mode=False), replay()).debug_mode is False
    assert compare(replay(), replay(debug_mode=False)).debug_mode is False
    assert compare(replay(), replay()).debug_mode is True
