"""Where two replays part ways, on hand-made replays: the order of causes (initial weights,
data, the first operation), the relog when the replays part ways before the logged step, and
the words that say it."""

from __future__ import annotations

import dataclasses

import numpy as np

from harness.diagnose.findings import Replay, compare, delta, first_difference, loss_step, ulps
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
