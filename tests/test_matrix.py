"""Matrix parsing: include/exclude semantics, cell ids and names, validation messages."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from harness.contract import RunSpec
from harness.contract.settings import NAMES
from harness.errors import MatrixError
from harness.matrix import CellSettings, cell_id, load_matrix, parse_matrix, schema_text

ROOT = Path(__file__).resolve().parents[1]
RES = Path(__file__).parent / "resources"


def parse(text: str):
    return parse_matrix(text, Path("m.yaml"))


def error_of(text: str) -> MatrixError:
    with pytest.raises(MatrixError) as info:
        parse(text)
    return info.value


def test_include_exclude_follow_github_actions():
    m = load_matrix(RES / "matrix_include_exclude.yaml")
    got = [
        (
            c.settings["placement"],
            c.settings["devices"],
            c.settings["threads"],
            c.settings["deterministic_algorithms"],
        )
        for c in m.cells
    ]
    assert got == [
        ("none", 1, 2, "off"),  # include extends the matching original combination
        ("before_model", 1, 1, "on"),  # extends only the combination it matches
        ("before_model", 2, 1, "off"),
        ("before_trainer", 1, 1, "off"),  # matches nothing: added as a new combination
    ]


def test_include_never_overwrites_an_axis_value():
    m = parse("name: t\naxes: {placement: [none]}\ninclude: [{placement: before_model}]\n")
    assert [c.settings["placement"] for c in m.cells] == ["none", "before_model"]


def test_cell_id_is_stable_and_ignores_key_order_and_defaults():
    a = {"placement": "none", "devices": 1}
    full = CellSettings.model_validate(a).model_dump(mode="json")
    assert cell_id(a) == cell_id(dict(reversed(list(full.items()))))
    assert len(cell_id(a)) == 12 and int(cell_id(a), 16) >= 0
    assert cell_id(a) != cell_id({"placement": "before_model"})
    # the digest is pinned: changing how ids are made breaks resume of old results
    assert cell_id({}) == cell_id(CellSettings().model_dump(mode="json")) == "ce90aff5781e"
    assert cell_id(a) == "2cacd3f31a5b"  # devices=1 is the default: not in the id


def test_cell_ids_are_golden():
    """Ids written down once, by the scheme of docs/matrix.md (first 12 hex of the sha256 of
    the canonical JSON, keys sorted, of the image and the non-default settings): any change to
    how ids are made fails here, as it would orphan every results folder on resume."""
    image = "ghcr.io/org/workload:2.4"
    varied = {"image": image, "placement": "none", "threads": 2, "cudnn_benchmark": True}
    canonical = (
        b'{"cudnn_benchmark":true,"image":"ghcr.io/org/workload:2.4","placement":"none",'
        b'"threads":2}'
    )
    assert hashlib.sha256(canonical).hexdigest()[:12] == "1a16068c2f97"
    assert cell_id({"image": image}) == "19907951c4e5"
    assert cell_id(varied) == "1a16068c2f97"
    assert cell_id({**varied, "devices": 1, "seed": 201014}) == "1a16068c2f97"  # defaults
    assert cell_id({"image": "local"}) == cell_id({}) == "ce90aff5781e"
    # and the cells a matrix expands into carry them
    m = parse(
        f"name: t\nrun: {{repeats: 1}}\naxes:\n  image: ['{image}']\n"
        "  placement: [before_model, none]\n"
        "include: [{placement: none, threads: 2, cudnn_benchmark: true}]\n"
    )
    assert [c.id for c in m.cells] == ["19907951c4e5", "1a16068c2f97"]


def test_cell_settings_match_the_contract():
    assert tuple(CellSettings.model_fields) == NAMES
    defaults = RunSpec()
    for key, value in CellSettings().model_dump().items():
        assert getattr(defaults, key) == value, key


def test_names_are_readable_unique_and_filesystem_safe():
    m = load_matrix(ROOT / "matrix.yaml")
    names = [c.name for c in m.cells]
    assert len(set(names)) == len(names)
    assert all(n.replace("-", "").replace("_", "").replace(".", "").isalnum() for n in names)
    quick = load_matrix(ROOT / "examples" / "placement-quick.yaml")
    assert quick.cells[2].name == "local-cpu1-before_model-det1-bench0-algoff"


def test_validation_names_file_line_and_fix():
    with pytest.raises(MatrixError) as info:
        load_matrix(RES / "matrix_bad.yaml")
    text = str(info.value)
    assert "matrix_bad.yaml:5: unknown key 'placment'" in text
    assert "did you mean 'placement'" in text
    assert "matrix_bad.yaml:6:" in text and "quote them" in text
    assert "matrix_bad.yaml:7: axes.devices is empty" in text
    assert "matrix_bad.yaml:8:" in text and "whole number" in text


def test_wrong_type_in_run_block_and_enum_values_listed():
    e = error_of("name: t\nrun:\n  repeats: two\naxes: {placement: [somewhere]}\n")
    assert "m.yaml:3:" in str(e) and "run.repeats" in str(e)
    assert "m.yaml:4:" in str(e) and "'before_model'" in str(e)


def test_yaml_syntax_error_gives_line():
    e = error_of("name: t\naxes:\n  placement: [none\n  devices: [1]\n")
    assert str(e).startswith("m.yaml:") and "YAML syntax error" in str(e)


def test_duplicate_cells_are_errors():
    e = error_of("name: t\naxes:\n  placement: [none, before_model, none]\n")
    assert "m.yaml:3:" in str(e) and "twice" in str(e)
    e = error_of(
        "name: t\naxes: {placement: [none]}\ninclude:\n  - {placement: none}\n"
        "  - {placement: before_model}\n  - {placement: before_model, devices: 1}\n"
    )
    assert "duplicate cell" in str(e) and "m.yaml:6:" in str(e)


def test_duplicate_yaml_key_is_an_error():
    e = error_of("name: t\naxes: {placement: [none]}\naxes: {devices: [1]}\n")
    assert "m.yaml:3:" in str(e) and "twice" in str(e)


def test_max_runs_cap_says_how_to_raise_it():
    e = error_of("name: t\nrun: {repeats: 3, max_runs: 5}\naxes: {seed: [1, 2]}\n")
    assert "6 runs" in str(e) and "max_runs: 6" in (e.hint or "")


def test_schema_file_is_up_to_date_and_every_yaml_refers_to_it():
    assert (ROOT / "docs" / "matrix.schema.json").read_text() == schema_text()
    schema = json.loads(schema_text())
    assert schema["additionalProperties"] is False
    # workflows: own schema; golden: a results folder kept as data, its matrix copied as run
    skip = {".venv", ".git", ".github", "results", "mutants", "golden"}
    yamls = [
        p
        for p in ROOT.rglob("*.y*ml")
        if not skip & set(p.relative_to(ROOT).parts) and p.suffix in (".yaml", ".yml")
    ]
    assert yamls
    for path in yamls:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = (path.parent / first.split("=", 1)[1]).resolve()
        assert target == (ROOT / "docs" / "matrix.schema.json").resolve(), path


def test_an_unknown_key_with_brackets_is_named_not_dropped():
    # Found by hypothesis: pydantic's type tags contain "[" and are hidden from the path; a
    # user's key that contains one must still be reported.
    text = "name: ok\naxes:\n  placement: [none]\n'[x]': 0\n"
    with pytest.raises(MatrixError) as caught:
        parse_matrix(text, Path("m.yaml"))
    assert "m.yaml:4:" in caught.value.message
    assert "unknown key '[x]' in the top level" in caught.value.message
