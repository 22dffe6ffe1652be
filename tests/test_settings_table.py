"""The one table of settings: everything derived from it gains a new setting, and ids survive it."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from harness.contract.settings import SETTINGS, Setting, identity, report_settings, twin_of
from harness.contract.spec import RunSpec, SpecError, make_spec_class
from harness.contract.spec_source import spec_source
from harness.matrix import load_matrix, make_models
from harness.matrix.cells import canonical_json, id_of_identity
from harness.matrix.docs import SPEC_FIELDS, render, settings_table
from harness.matrix.models import json_schema

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "placement-quick.yaml"

#: The ids of examples/placement-quick.yaml, pinned: a change to the id scheme must be seen.
QUICK_IDS = {
    "local-cpu1-none-det1-bench0-algoff": "080dc54840ee",
    "local-cpu1-before_trainer-det1-bench0-algoff": "57df9517ef4f",
    "local-cpu1-before_model-det1-bench0-algoff": "fa36631cf393",
}

NEW = Setting(
    "matmul_precision",
    "str",
    "highest",
    "torch.set_float32_matmul_precision",
    choices=("highest", "high", "medium"),
    label="mm",
    in_report=True,
    twin="medium",
)
EXTENDED = (*SETTINGS, NEW)


def test_placement_quick_ids_are_pinned():
    cells = load_matrix(QUICK).cells
    assert {c.name: c.id for c in cells} == QUICK_IDS


def test_an_id_is_the_sha256_of_the_image_and_the_non_default_settings():
    first = load_matrix(QUICK).cells[0]
    text = '{"image":"local","max_steps_per_epoch":200,"placement":"none"}'
    assert identity(first.settings) == json.loads(text)
    assert canonical_json(identity(first.settings)) == text
    assert first.id == hashlib.sha256(text.encode()).hexdigest()[:12]


@pytest.mark.parametrize("matrix", ["examples/placement-quick.yaml", "matrix.yaml"])
def test_a_new_setting_with_a_default_keeps_every_cell_id(matrix: str):
    for cell in load_matrix(ROOT / matrix).cells:
        extended = {**cell.settings, NEW.name: NEW.default}
        assert id_of_identity(identity(extended, EXTENDED)) == cell.id, cell.name
        # and a cell that sets it away from the default is a new cell
        moved = {**cell.settings, NEW.name: "high"}
        assert id_of_identity(identity(moved, EXTENDED)) != cell.id


def test_a_new_setting_reaches_spec_models_schema_report_and_docs():
    spec_class = make_spec_class(EXTENDED)
    spec = spec_class()
    assert spec.matmul_precision == "highest"
    assert spec.to_dict()["matmul_precision"] == "highest"
    with pytest.raises(SpecError, match="matmul_precision must be one of"):
        spec_class(matmul_precision="low")

    models = make_models(EXTENDED)
    assert models["CellSettings"]().matmul_precision == "highest"
    assert models["Axes"](matmul_precision=["high", "medium"]).matmul_precision == [
        "high",
        "medium",
    ]
    assert models["Patch"](matmul_precision="high").matmul_precision == "high"
    with pytest.raises(ValueError):
        models["Axes"](matmul_precision=["low"])

    schema = json_schema(models["Matrix"])
    axes = schema["$defs"]["Axes"]["properties"]
    assert "matmul_precision" in axes
    assert "high" in json.dumps(axes["matmul_precision"])

    assert "matmul_precision" in report_settings(EXTENDED)
    assert twin_of(EXTENDED)["matmul_precision"] == "medium"
    assert "| `matmul_precision` |" in settings_table(EXTENDED)


def test_the_typed_spec_is_up_to_date_with_the_table():
    """spec_fields.py is generated: `python -m harness.matrix.docs` rewrites it."""
    committed = (ROOT / SPEC_FIELDS).read_text(encoding="utf-8")
    assert committed == spec_source(), "run: python -m harness.matrix.docs"
    built = make_spec_class()
    assert [(f.name, f.default) for f in dataclasses.fields(built)] == [
        (f.name, f.default) for f in dataclasses.fields(RunSpec)
    ]
    assert RunSpec().to_dict() == built().to_dict()


def test_a_stale_typed_spec_is_seen():
    assert NEW.name in spec_source(EXTENDED)
    assert spec_source(EXTENDED) != spec_source()


def test_the_spec_has_the_settings_and_the_run_fields_only():
    fields = [f.name for f in dataclasses.fields(RunSpec)]
    assert fields == [s.name for s in SETTINGS] + [
        "repeat",
        "cell_id",
        "cell_name",
        "format_version",
        "ddp_timeout_s",  # optional: left out of to_dict() while unset
        "test_fault",
        "count_host_syncs",
        "diagnose",  # only in the replays of `harness diagnose`
    ]
    for gone in ("data_dir", "image_digest", "image_id", "extra_env"):
        assert gone not in fields


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"devices": 0}, "devices must be a positive integer"),
        ({"devices": True}, "devices must be a positive integer"),
        ({"learning_rate": -1.0}, "learning_rate must be a positive number"),
        ({"cudnn_benchmark": 1}, "cudnn_benchmark must be `true`, `false`"),
        ({"max_steps_per_epoch": 0}, "max_steps_per_epoch must be a positive integer or"),
        ({"image": "Bad Image"}, "image must be local or a Docker image reference"),
        ({"placement": "later"}, "placement must be one of none, before_trainer"),
        ({"repeat": -1}, "repeat must be a non-negative integer"),
    ],
)
def test_the_spec_checks_come_from_the_table(change: dict, message: str):
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        RunSpec(**change)


def test_the_committed_docs_match_the_table():
    doc = (ROOT / "docs" / "matrix.md").read_text(encoding="utf-8")
    assert render(doc) == doc, "run: python -m harness.matrix.docs ."
    for setting in SETTINGS:
        assert f"| `{setting.name}` |" in doc


def test_allow_tf32_is_a_report_column():
    assert "allow_tf32" in report_settings(SETTINGS)


def _defined_classes(name: str) -> list[Path]:
    found = []
    for path in (ROOT / "harness").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.ClassDef) and n.name == name for n in ast.walk(tree)):
            found.append(path.relative_to(ROOT))
    return found


@pytest.mark.parametrize(
    "name", ["EpochSummary", "RunRecord", "RunError", "Digests", "Provenance", "Setting"]
)
def test_the_record_and_the_settings_are_defined_once(name: str):
    expected = {"Setting": "settings.py", "RunError": "run_errors.py"}.get(name, "record.py")
    assert _defined_classes(name) == [Path("harness/contract") / expected]


def test_no_module_lists_the_settings_by_hand():
    """A tuple or list of five or more setting names outside the table is a second declaration."""
    names = {s.name for s in SETTINGS}
    offenders = []
    for path in (ROOT / "harness").rglob("*.py"):
        if path.name == "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Tuple | ast.List | ast.Set | ast.Dict):
                items = node.keys if isinstance(node, ast.Dict) else node.elts
                strings = {i.value for i in items if isinstance(i, ast.Constant)}
                if len(strings & names) >= 5:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders
