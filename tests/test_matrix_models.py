"""``make_models`` builds the matrix models from the settings table: rebuilt at any time, they
give the committed JSON Schema, and a matrix read with them gives the same cells and the same
messages (types strict, floats finite, bounds from the table)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

import harness.matrix.cells as cells_module
import harness.matrix.load as load_module
import harness.matrix.validation_messages as messages_module
from harness.contract.settings import FLOAT_MAX, SETTINGS, Setting
from harness.errors import MatrixError
from harness.matrix import make_models, parse_matrix
from harness.matrix.models import json_schema, schema_text
from tests.test_matrix_cells import NAMES
from tests.test_matrix_messages import CASES

ROOT = Path(__file__).resolve().parents[1]
PATH = Path("m.yaml")

#: Files the models accept: nulls where nullable, bounds themselves, floats written as ints.
GOOD = [
    NAMES,
    "name: a.b_c-1\nrun: {timeout_s: 1, max_runs: 4, repeats: 1, memory_limit: 512m}\n"
    "axes:\n  max_steps_per_epoch: [null, 1]\n  seed: [0, 4294967295]\n",
    "name: t\nrun: {repeats: 1, max_steps_per_epoch: null, threads: 2}\n"
    "axes:\n  learning_rate: [1, 1e-4, 1.7976931348623157e+308]\n",
    "name: t\nrun: {repeats: 1}\naxes:\n  pythonhashseed: [4294967295]\n"
    "  cudnn_benchmark: [true, false]\n",
]

#: Files they refuse, besides tests/test_matrix_messages.py's.
BAD = [
    "name: t\naxes:\n  learning_rate: [-1.0]\n",
    "name: t\naxes:\n  learning_rate: [-1.8e+308]\n",
    "name: t\naxes:\n  learning_rate: [1.8e+308]\n",
    "name: t\naxes:\n  learning_rate: [.nan]\n",
    "name: t\nrun: {timeout_s: .inf}\naxes: {seed: [1]}\n",
    "name: t\nrun: {timeout_s: true}\naxes: {seed: [1]}\n",
    "name: t\nrun: {timeout_s: 0}\naxes: {seed: [1]}\n",
    "name: t\naxes:\n  seed: [4294967296]\n",
    "name: t\naxes:\n  seed: [-1]\n",
    "name: t\naxes:\n  pythonhashseed: [4294967296]\n",
    "name: t\naxes:\n  epochs: [0]\n",
    "name: t\naxes:\n  max_steps_per_epoch: [0]\n",
    "name: t\naxes:\n  devices: [null]\n",
    "name: t\naxes:\n  devices: [1.0]\n",
    "name: t\naxes:\n  devices: [true]\n",
    "name: t\naxes:\n  image: [null]\n",
    "name: t\naxes:\n  image: ['" + "a" * 256 + "']\n",
    "name: t\naxes:\n  placement: [null]\n",
    "name: t\naxes:\n  placement: [1]\n",
    "name: t\naxes:\n  cudnn_deterministic: [null]\n",
    "name: t\naxes:\n  accelerator: [true]\n",
    "name: t\ninclude: [{devices: 0}]\n",
    "name: t\ninclude: [{learning_rate: .inf}]\n",
    "name: t\ninclude: [{threads: '1'}]\n",
    "name: t\nrun: {threads: 0}\naxes: {seed: [1]}\n",
    "name: t\nrun: {epochs: 1.5}\naxes: {seed: [1]}\n",
    "name: t\nrun: {seed: -1}\naxes: {seed: [1]}\n",
    "name: t\nrun: {repeats: '2'}\naxes: {seed: [1]}\n",
    "name: t\nrun: {memory_limit: 0g}\naxes: {seed: [1]}\n",
    "name: " + "a" * 81 + "\naxes: {seed: [1]}\n",
    "name: t\nexclude: [{seed: 1, nope: 2}]\naxes: {seed: [1]}\n",
]


def outcome(text: str) -> object:
    try:
        loaded = parse_matrix(text, PATH)
    except MatrixError as exc:
        return (exc.message, exc.hint)
    return [(c.name, c.id, c.settings) for c in loaded.cells], loaded.digest


def test_rebuilt_models_give_the_committed_schema():
    committed = json.loads((ROOT / "docs" / "matrix.schema.json").read_text(encoding="utf-8"))
    assert json.loads(json.dumps(json_schema(make_models()["Matrix"]))) == committed
    assert schema_text() == (ROOT / "docs" / "matrix.schema.json").read_text(encoding="utf-8")


def test_rebuilt_models_read_matrices_the_same(monkeypatch: pytest.MonkeyPatch):
    texts = GOOD + BAD + [case[1] for case in CASES]
    expected = [outcome(t) for t in texts]
    assert all(isinstance(o[0], list) for o in expected[: len(GOOD)])
    assert all(isinstance(o[0], str) for o in expected[len(GOOD) :])
    models = make_models()  # built now, not at import
    for name in ("Matrix", "Axes", "Patch", "RunBlock"):
        if hasattr(load_module, name):
            monkeypatch.setattr(load_module, name, models[name])
        monkeypatch.setattr(messages_module, name, models[name])
    monkeypatch.setattr(cells_module, "CellSettings", models["CellSettings"])
    assert [outcome(t) for t in texts] == expected


def test_rebuilt_cell_settings_refuse_an_unknown_setting(monkeypatch: pytest.MonkeyPatch):
    """A misspelt setting never silently gets the id of the default cell."""
    monkeypatch.setattr(cells_module, "CellSettings", make_models()["CellSettings"])
    with pytest.raises(ValidationError, match="placment"):
        cells_module.cell_id({"placment": "none"})


#: Settings of kinds the table does not have yet: an unbounded int, an unbounded float, a float
#: with a maximum, a free string. A setting added to the table gets the same rules.
EXTRA = (
    Setting("offset", "int", 0, "an int without bounds"),
    Setting("momentum", "float", 0.0, "a float without bounds"),
    Setting("ratio", "float", 0.5, "a float up to 1", maximum=1.0),
    Setting("tag", "str", "", "a free string"),
)


def test_new_kinds_of_settings_get_their_bounds_and_finiteness():
    models = make_models((*SETTINGS, *EXTRA))
    axes = models["Axes"]
    ok = axes(offset=[-5, 0, 7], momentum=[-1.5, 0.0], ratio=[1.0, -3.0], tag=["abc"])
    assert (ok.offset, ok.momentum, ok.ratio, ok.tag) == (
        [-5, 0, 7],
        [-1.5, 0.0],
        [1.0, -3.0],
        ["abc"],
    )
    for bad in (
        {"momentum": [math.inf]},
        {"momentum": [-math.inf]},
        {"ratio": [1.5]},
        {"offset": [1.0]},
        {"tag": [None]},
    ):
        with pytest.raises(ValidationError):
            axes(**bad)
    props = json_schema(models["Matrix"])["$defs"]["Axes"]["properties"]
    momentum = props["momentum"]["anyOf"][0]["items"]
    assert (momentum["minimum"], momentum["maximum"]) == (-FLOAT_MAX, FLOAT_MAX)
    ratio = props["ratio"]["anyOf"][0]["items"]
    assert (ratio["minimum"], ratio["maximum"]) == (-FLOAT_MAX, 1.0)
    assert props["offset"]["anyOf"][0]["items"] == {"type": "integer"}
    assert props["tag"]["anyOf"][0]["items"] == {"type": "string"}
