"""Control cells (issue 31): a cell per image that must not reproduce. The matrix adds or marks
it (``control: true``, ``--control``), the manifest records it, and the report withholds every
``reproduces`` verdict on an image whose control reproduced. Hand-made records, no training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_report import base_losses, make_cell, make_results, write_run

from harness.cli import main
from harness.errors import MatrixError
from harness.matrix import cell_id, parse_matrix
from harness.report import analyze
from harness.report.controls import withheld_because
from harness.results.manifest import Manifest, ManifestCell, read_manifest

ROOT = Path(__file__).resolve().parents[1]
PATH = Path("m.yaml")
TWO_IMAGES = (
    "name: t\nrun: {repeats: 2}\naxes:\n  image: [local, 'a/torch:1']\n"
    "  placement: [before_model, process_start]\n  threads: [1, 2]\n"
)


def parse(text: str, control: bool = False):
    return parse_matrix(text, PATH, control=control)


def test_a_control_cell_is_added_per_image_after_the_matrix_cells():
    plain, loaded = parse(TWO_IMAGES), parse(TWO_IMAGES + "control: true\n")
    assert [c.name for c in loaded.cells[:8]] == [c.name for c in plain.cells]
    assert [c.id for c in loaded.cells[:8]] == [c.id for c in plain.cells]
    added = loaded.cells[8:]
    assert [c.control for c in loaded.cells] == [False] * 8 + [True, True]
    assert [c.settings["image"] for c in added] == ["local", "a/torch:1"]
    for cell in added:  # the image's first cell, the seed set nowhere
        first = next(c for c in plain.cells if c.settings["image"] == cell.settings["image"])
        assert cell.settings == {**first.settings, "placement": "none"}
        assert cell.id == cell_id(cell.settings)
    assert added[0].name == "local-cpu1-none-det1-bench0-algoff-t1"
    assert len({c.name for c in loaded.cells}) == len({c.id for c in loaded.cells}) == 10
    assert loaded.total_runs == 20


def test_an_existing_cell_with_the_control_settings_is_marked_not_repeated():
    text = "name: t\naxes:\n  placement: [before_model, none]\n  seed: [1, 2]\n"
    plain, loaded = parse(text), parse(text, control=True)
    assert [(c.id, c.name) for c in loaded.cells] == [(c.id, c.name) for c in plain.cells]
    marked = [c for c in loaded.cells if c.control]
    assert [(c.settings["placement"], c.settings["seed"]) for c in marked] == [("none", 1)]


def test_control_is_in_the_digest_only_when_true():
    base = "name: t\naxes:\n  placement: [before_model, none]\n"
    digest = parse(base).digest
    assert parse(base + "control: false\n").digest == digest  # every existing digest stays
    assert parse(base + "control: true\n").digest != digest
    assert parse(base, control=True).digest == parse(base + "control: true\n").digest
    quick = (ROOT / "examples" / "placement-quick.yaml").read_text()
    # the digest pinned before control existed (tests/test_matrix_cells.py)
    pinned = "15a957eb05d60a7052c495fc086403089914d0cd48fee9e32446e5e483745b54"
    assert parse(quick).digest == pinned


@pytest.mark.parametrize(
    ("text", "written"),
    [
        (TWO_IMAGES, "control: true\n" + TWO_IMAGES),
        (
            "# a comment\n  name: t\n  axes: {placement: [before_model]}\n",  # indented
            "# a comment\n  control: true\n  name: t\n  axes: {placement: [before_model]}\n",
        ),
        (
            "{name: t, axes: {placement: [before_model]}}\n",  # one flow mapping
            "{control: true, name: t, axes: {placement: [before_model]}}\n",
        ),
        (
            "name: t\ncontrol: false  # off for now\naxes: {placement: [before_model]}\n",
            "name: t\ncontrol: true  # off for now\naxes: {placement: [before_model]}\n",
        ),
    ],
    ids=["block", "indented", "flow", "false"],
)
def test_the_option_writes_the_key_into_the_text_a_results_folder_keeps(text, written):
    """The copy in the results folder makes the same cells when resume, merge or diagnose
    read it again, and the file's other lines stay as they were."""
    loaded = parse(text, control=True)
    assert loaded.text == written
    again = parse(loaded.text)
    assert again.model.control is True
    assert [(c.id, c.name, c.control) for c in again.cells] == [
        (c.id, c.name, c.control) for c in loaded.cells
    ]
    assert again.digest == loaded.digest


def test_a_bad_control_value_names_its_line():
    with pytest.raises(MatrixError) as info:
        parse("name: t\naxes: {placement: [none]}\ncontrol: maybe\n")
    assert "m.yaml:3:" in str(info.value) and "control" in str(info.value)


def test_the_control_cells_count_against_max_runs():
    text = "name: t\nrun: {repeats: 2, max_runs: 4}\naxes: {seed: [1, 2]}\n"
    assert parse(text).total_runs == 4
    with pytest.raises(MatrixError) as info:
        parse(text, control=True)
    assert "3 cells (with the control cells) x 2 repeats = 6 runs" in str(info.value)


def test_the_manifest_writes_control_only_where_it_is_set():
    loaded = parse(TWO_IMAGES, control=True)
    data = Manifest(cells=[ManifestCell.of(c) for c in loaded.cells]).to_dict()
    assert ["control" in c for c in data["cells"]] == [False] * 8 + [True, True]
    assert data["cells"][-1]["control"] is True
    golden = ROOT / "tests" / "resources" / "golden" / "quick-results"
    manifest = read_manifest(golden)
    assert manifest is not None and not any(c.control for c in manifest.cells)
    assert manifest.to_dict() == json.loads((golden / "manifest.json").read_text())


def test_plan_and_run_with_control_and_resume_without_it(tmp_path: Path, capsys):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        "name: t\nrun: {repeats: 2, epochs: 1, max_steps_per_epoch: 3}\n"
        "axes: {placement: [before_model]}\n"
    )
    assert main(["plan", str(matrix), "--control"]) == 0
    out = capsys.readouterr().out
    assert "2 cells, 4 runs" in out and "local-cpu1-none-det1-bench0-algoff" in out
    assert out.rstrip().endswith("control")
    assert main(["plan", str(matrix), "--format", "json"]) == 0
    assert "control" not in capsys.readouterr().out
    out_dir = tmp_path / "out"
    data = tmp_path / "data"  # the fake executor reads no data
    data.mkdir()
    argv = ["run", str(matrix), "-o", str(out_dir), "--executor", "fake", "--progress", "quiet"]
    argv += ["--data-dir", str(data)]
    assert main([*argv, "--control", "--no-report"]) == 0
    assert "control: true" in (out_dir / "matrix.yaml").read_text()
    assert "control" not in matrix.read_text()
    first = read_manifest(out_dir)
    assert first is not None and [c.control for c in first.cells] == [False, True]
    assert main([*argv, "--no-report"]) == 0  # the folder's control cells are made again
    again = read_manifest(out_dir)
    assert again is not None and again.cells == first.cells
    report = analyze(out_dir)  # the fake executor's control reproduces: nothing is seen
    assert [c.control for c in report.cells] == [False, True]
    assert [r.seen for r in report.answer.controls] == [False]
    assert [c.verdict for c in report.cells] == ["unknown", "unknown"]  # no reproduces here
    (recipe,) = report.answer.recipes
    assert recipe.cell is None and recipe.withheld


@pytest.fixture
def two_images(tmp_path: Path) -> tuple[Path, dict[str, dict]]:
    """Per image a cell that reproduces, one that diverges, and a control cell."""
    cells = {}
    for image in ("local", "a/torch:1"):
        tag = image.replace("/", "_").replace(":", "_")
        cells[f"same-{tag}"] = make_cell(f"same-{tag}", image=image)
        cells[f"diverge-{tag}"] = make_cell(f"diverge-{tag}", image=image, threads=2)
        control = make_cell(f"control-{tag}", image=image, placement="none")
        cells[f"control-{tag}"] = {**control, "control": True}
    make_results(tmp_path, list(cells.values()), repeats=2)
    return tmp_path, cells


def _write(root: Path, cell: dict, diverge_at: int | None) -> None:
    base = base_losses()
    for k in range(2):
        losses = base.copy()
        if diverge_at is not None and k == 1:
            losses[diverge_at, 0] += np.float32(0.5)
        write_run(root, cell, k, losses)


def _answer(root: Path, cells: dict[str, dict], control: dict[str, int | None]):
    for name, cell in cells.items():
        if name.startswith("control-"):
            _write(root, cell, control[name])
        else:
            _write(root, cell, 30 if name.startswith("diverge-") else None)
    report = analyze(root)  # analyze applies the controls once
    return {c.name: c for c in report.cells}, report.answer.controls, _withheld(report)


def _withheld(report) -> dict[str, str]:
    """The images whose recipe the report withheld, and why."""
    return {r.image: r.withheld for r in report.answer.recipes if r.withheld}


def test_a_diverging_control_shows_the_harness_sees_a_difference(two_images):
    root, cells = two_images
    by_name, results, withheld = _answer(root, cells, {"control-local": 7, "control-a_torch_1": 12})
    assert withheld == {}
    assert [(r.image, r.cell, r.verdict, r.seen) for r in results] == [
        ("local", "control-local", "diverges", True),
        ("a/torch:1", "control-a_torch_1", "diverges", True),
    ]
    assert results[0].sentence == (
        "On local, the control cell control-local diverges, as it must (first at step 7): "
        "the harness sees a difference there."
    )
    assert by_name["same-local"].verdict == "reproduces"
    assert by_name["same-a_torch_1"].reproducible is True


def test_a_reproducing_control_withholds_reproduces_on_its_image_only(two_images):
    root, cells = two_images
    by_name, results, withheld = _answer(
        root, cells, {"control-local": None, "control-a_torch_1": 12}
    )
    reason = "the control reproduced: the harness could not see a difference on local"
    assert withheld == {"local": reason} and withheld_because("local") == reason
    assert [(r.image, r.verdict, r.seen) for r in results] == [
        ("local", "reproduces", False),
        ("a/torch:1", "diverges", True),
    ]
    for name in ("same-local", "control-local"):  # every reproduces there, the control's too
        cell = by_name[name]
        assert (cell.verdict, cell.reproducible, cell.unknown_because) == ("unknown", None, reason)
        assert reason in cell.detail
    assert by_name["diverge-local"].verdict == "diverges"  # a divergence is still seen
    assert by_name["same-a_torch_1"].verdict == "reproduces"  # the other image keeps its own
    assert by_name["control-a_torch_1"].verdict == "diverges"


def test_a_control_without_a_verdict_leaves_the_check_undone(two_images):
    root, cells = two_images
    for name, cell in cells.items():
        _write(root, cell, 30 if name.startswith("diverge-") else None)
    write_run(root, cells["control-local"], 1, None, status="failed", error={
        "type": "timeout", "message": "timed out", "log_tail": ""})  # fmt: skip
    report = analyze(root)
    results, withheld = report.answer.controls, _withheld(report)
    first = results[0]
    assert (first.image, first.verdict, first.seen) == ("local", "unknown", None)
    assert "has no verdict (1 of 2 repeats failed)" in first.sentence
    assert "could not be checked" in first.sentence
    assert list(withheld) == ["a/torch:1"]  # that image's control reproduced
    assert {c.name: c.verdict for c in report.cells}["same-local"] == "reproduces"


def test_every_control_result_names_its_cell_and_says_what_it_shows(two_images):
    """The sentence and the cell of a control in each state: diverging with its final weights
    alone differing, diverging where the step is not known, reproducing (withheld), and
    without a verdict."""
    root, cells = two_images
    for name, cell in cells.items():
        if name == "control-local":  # equal losses, other final weights
            for k in range(2):
                write_run(root, cell, k, base_losses(), final=f"w{k}")
        else:
            _write(root, cell, 30 if name.startswith("diverge-") else None)
    report = analyze(root)
    weights, reproducing = report.answer.controls
    assert (weights.cell, weights.verdict, weights.seen) == ("control-local", "diverges", True)
    assert weights.sentence == (
        "On local, the control cell control-local diverges, as it must (its final weights "
        "differ): the harness sees a difference there."
    )
    assert (reproducing.cell, reproducing.seen) == ("control-a_torch_1", False)
    assert reproducing.sentence == (
        "On a/torch:1, the control cell control-a_torch_1 reproduces, but it must not: the "
        "harness could not see a difference there, so no cell on it is said to reproduce."
    )


def test_a_control_without_a_verdict_is_named(two_images):
    root, cells = two_images
    for name, cell in cells.items():
        _write(root, cell, 30 if name.startswith(("diverge-", "control-")) else None)
    write_run(root, cells["control-local"], 1, None, status="failed", error={
        "type": "timeout", "message": "timed out", "log_tail": ""})  # fmt: skip
    first = analyze(root).answer.controls[0]
    assert (first.cell, first.verdict, first.seen) == ("control-local", "unknown", None)
    assert first.sentence == (
        "On local, the control cell control-local has no verdict (1 of 2 repeats failed): "
        "whether the harness sees a difference there could not be checked."
    )
