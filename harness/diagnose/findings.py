"""Where two replays part ways: pure logic over what each replay wrote (no torch).

A replay (harness/workload/replay.py) holds the hashes of the parameters as created, of every
batch, of the training state (parameters and optimizer state) after every step, and for one
logged step every operation with its inputs' and outputs' hashes. Two replays are compared in
the order a difference propagates: the initial weights, then the data, then the first step
whose training state or loss differs, and within that step the first operation whose output
bits differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.contract.machine import Machine

#: What a diagnosis found, from the earliest cause to none.
KINDS = (
    "initial_weights",  # the parameters differ as created
    "data",  # the same weights see different batches
    "operation",  # an operation of the logged step produced different bits
    "different_operations",  # the two runs ran different operations
    "state",  # the state differs after the step, but no logged output did
    "relog",  # the replays diverge before the logged step: log that one instead
    "no_divergence",  # the replays agree on every step they ran
)


@dataclass
class Replay:
    """One replay: ``data`` is replay.json (``ops``: logged step -> its operations); ``outputs``
    maps ``s<step>_op<i>_<k>`` to the logged operations' outputs; ``losses`` [steps, ranks]
    float32; ``split`` the split digest."""

    label: str
    data: dict[str, Any]
    losses: np.ndarray
    split: str | None
    outputs: Any = None
    #: the machine the replay ran on (its record's ``provenance.machine``)
    machine: Machine | None = None

    @property
    def steps(self) -> int:
        return int(self.data.get("steps", 0))


@dataclass
class OpFinding:
    """The first operation whose output bits differ, at the logged step."""

    step: int
    index: int
    of: int
    op: str
    phase: str
    module: str | None
    module_type: str | None
    tensors: list[str]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    #: None: no hashed input differs, but one could not be hashed (sparse, quantized)
    inputs_equal: bool | None
    differing_inputs: list[int]
    differing_outputs: list[int]
    max_abs_delta: float | None = None
    max_ulps: int | None = None
    other_op: str | None = None


@dataclass
class Finding:
    kind: str
    steps_replayed: int
    level: str
    parameters_differ: list[str] = field(default_factory=list)
    parameters: int = 0
    split_same: bool | None = None
    batch: dict[str, Any] | None = None
    state_step: int | None = None
    state_differs: list[str] = field(default_factory=list)
    loss_step: int | None = None
    logged_steps: list[int] = field(default_factory=list)
    op: OpFinding | None = None
    #: whether the replays' torch has DebugMode (module level can also be asked for)
    debug_mode: bool = True


def first_difference(a: list[Any], b: list[Any]) -> int | None:
    """The first index where two sequences differ over their common length, else None."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None


def loss_step(a: np.ndarray, b: np.ndarray) -> int | None:
    """The first step whose losses differ by bits (rank columns compared where both have them)."""
    n, r = min(len(a), len(b)), min(a.shape[1], b.shape[1]) if a.ndim == b.ndim == 2 else 0
    if not n or not r:
        return None
    x = np.ascontiguousarray(a[:n, :r], dtype="<f4").view("<i4")
    y = np.ascontiguousarray(b[:n, :r], dtype="<f4").view("<i4")
    differs = (x != y).any(axis=1)
    return int(np.argmax(differs)) if differs.any() else None


def ulps(a: np.ndarray, b: np.ndarray) -> int | None:
    """The largest distance in units in the last place between two float arrays of one dtype."""
    if a.dtype != b.dtype or a.dtype.kind != "f" or a.shape != b.shape or a.size == 0:
        return None
    ints = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]
    bits = a.dtype.itemsize * 8

    def order(x: np.ndarray) -> list[int]:
        raw = x.reshape(-1).view(ints).tolist()
        return [v if v >= 0 else -(1 << (bits - 1)) - v for v in raw]

    return max(abs(p - q) for p, q in zip(order(a), order(b), strict=True))


def delta(a: np.ndarray, b: np.ndarray) -> tuple[float | None, int | None]:
    """(max |a - b|, max ULPs) of two outputs; None where they cannot be compared."""
    if a.shape != b.shape or a.size == 0:
        return None, None
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    finite = diff[np.isfinite(diff)]
    biggest = float(finite.max()) if finite.size else math.nan
    return biggest, ulps(a, b) if a.dtype.kind == "f" else None


def _hashes(described: list[dict[str, Any]]) -> list[str | None]:
    return [d.get("hash") for d in described]


def _differing(a: list[str | None], b: list[str | None]) -> list[int]:
    if len(a) != len(b):
        return list(range(max(len(a), len(b))))
    return [
        i
        for i, (x, y) in enumerate(zip(a, b, strict=True))
        if x is not None and y is not None and x != y
    ]


def first_operation(a: Replay, b: Replay, step: int) -> OpFinding | None | str:
    """The first logged operation whose outputs differ; ``"different"`` when the two runs ran
    different operations before any output differed; None when every output agrees."""
    ops_a = a.data.get("ops", {}).get(str(step), [])
    ops_b = b.data.get("ops", {}).get(str(step), [])
    types = a.data.get("module_types", {})
    for x, y in zip(ops_a, ops_b, strict=False):
        same_op = x["op"] == y["op"] and x.get("module") == y.get("module")
        outs = _differing(_hashes(x["outputs"]), _hashes(y["outputs"]))
        if not same_op or outs:
            hashed = _hashes(x.get("inputs", [])), _hashes(y.get("inputs", []))
            ins = _differing(*hashed)
            unhashed = None in hashed[0] or None in hashed[1]
            found = OpFinding(
                step=step,
                index=int(x["index"]),
                of=len(ops_a),
                op=x["op"],
                phase=x["phase"],
                module=x.get("module"),
                module_type=types.get(x.get("module") or "")
                if x.get("module") is not None
                else None,
                tensors=list(x.get("tensors", [])),
                inputs=x.get("inputs", []),
                outputs=x["outputs"],
                inputs_equal=None if unhashed and not ins else not ins,
                differing_inputs=ins,
                differing_outputs=outs,
                other_op=None if same_op else y["op"],
            )
            if same_op:
                found.max_abs_delta, found.max_ulps = _output_delta(a, b, found)
            return found
    if len(ops_a) != len(ops_b):
        return "different"
    return None


def _output_delta(a: Replay, b: Replay, op: OpFinding) -> tuple[float | None, int | None]:
    biggest: float | None = None
    most: int | None = None
    for k in op.differing_outputs:
        key = f"s{op.step}_op{op.index}_{k}"
        if a.outputs is None or b.outputs is None or key not in a.outputs or key not in b.outputs:
            continue
        d, u = delta(np.asarray(a.outputs[key]), np.asarray(b.outputs[key]))
        if d is not None and (biggest is None or d > biggest or math.isnan(d)):
            biggest = d
        if u is not None and (most is None or u > most):
            most = u
    return biggest, most


def state_rows(a: Replay, b: Replay) -> tuple[list[str], list[list[Any]], list[list[Any]]]:
    """Both replays' training-state hashes per step over the names either has, in one order:
    None where a tensor did not exist after that step (an optimizer's state appears at the
    first update of its parameter, so a layer unfrozen later adds names)."""
    names_a, names_b = a.data.get("state_names", []), b.data.get("state_names", [])
    names = list(names_a) + [n for n in names_b if n not in names_a]

    def aligned(own: list[str], rows: list[list[Any]]) -> list[list[Any]]:
        return [[dict(zip(own, row, strict=False)).get(n) for n in names] for row in rows]

    return (
        names,
        aligned(names_a, a.data.get("states", [])),
        aligned(names_b, b.data.get("states", [])),
    )


def divergent_step(a: Replay, b: Replay) -> tuple[int | None, int | None, int | None]:
    """(state step, loss step, the earlier of the two) of two replays: the first step after
    which the training state differs (a tensor that exists in one replay only differs), the
    first whose loss differs."""
    _, states_a, states_b = state_rows(a, b)
    state = first_difference(states_a, states_b)
    loss = loss_step(a.losses, b.losses)
    steps = [s for s in (state, loss) if s is not None]
    return state, loss, min(steps) if steps else None


def compare(a: Replay, b: Replay) -> Finding:
    """What two replays of the same step count show, earliest cause first."""
    names = a.data.get("parameters", [])
    finding = Finding(
        kind="no_divergence",
        steps_replayed=min(a.steps, b.steps),
        level=a.data.get("level", "ops")
        if a.data.get("level") == b.data.get("level")
        else "modules",
        parameters=len(names),
        split_same=None if a.split is None or b.split is None else a.split == b.split,
        logged_steps=sorted(
            set(a.data.get("logged_steps", [])) & set(b.data.get("logged_steps", []))
        ),
        debug_mode=bool(a.data.get("debug_mode", True) and b.data.get("debug_mode", True)),
    )
    init_a, init_b = a.data.get("init", []), b.data.get("init", [])
    if names != b.data.get("parameters", []) or len(init_a) != len(init_b):
        finding.kind = "initial_weights"
        finding.parameters_differ = sorted(set(names) ^ set(b.data.get("parameters", [])))
        return finding
    finding.parameters_differ = [n for n, x, y in zip(names, init_a, init_b, strict=True) if x != y]
    batch = first_difference(a.data.get("batches", []), b.data.get("batches", []))
    if batch is not None:
        xa, xb = a.data["batches"][batch], b.data["batches"][batch]
        finding.batch = {
            "step": batch,
            "inputs": bool(xa[:1] != xb[:1]),
            "labels": bool(xa[1:] != xb[1:]),
        }
    state, loss, step = divergent_step(a, b)
    finding.state_step, finding.loss_step = state, loss
    if state is not None:
        state_names, states_a, states_b = state_rows(a, b)
        rows = states_a[state], states_b[state]
        finding.state_differs = [n for n, x, y in zip(state_names, *rows, strict=True) if x != y]
    if finding.parameters_differ:
        finding.kind = "initial_weights"
    elif batch is not None and (step is None or batch <= step):
        finding.kind = "data"
    elif step is None:
        finding.kind = "no_divergence"
    elif step not in finding.logged_steps:
        finding.kind = "relog"
    else:
        op = first_operation(a, b, step)
        if op == "different":
            finding.kind = "different_operations"
        elif op is None:
            finding.kind = "state"
        else:
            assert isinstance(op, OpFinding)
            finding.op = op
            finding.kind = "different_operations" if op.other_op else "operation"
    return finding
