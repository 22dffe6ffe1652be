"""report.json's schema: the committed copy is what the code generates, ``harness schema
--report`` prints it, and a report made from hand-made records (with an answer in every part)
follows it, while a report.json with a wrong word or a missing answer does not."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from test_report import base_losses, make_cell, make_results, write_run

from harness.cli import main
from harness.report import make_reports
from harness.report.report_schema import report_schema, report_schema_text

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_schema_is_the_generated_one():
    committed = (ROOT / "docs" / "report.schema.json").read_text(encoding="utf-8")
    assert committed == report_schema_text(), "harness schema --report > docs/report.schema.json"


def test_harness_schema_report_prints_it(capsys: pytest.CaptureFixture[str]):
    assert main(["schema", "--report"]) == 0
    assert json.loads(capsys.readouterr().out) == report_schema()


@pytest.fixture
def report_json(tmp_path: Path) -> dict:
    """Two seeds x two thread counts, and a diverging cell: every part of the answer has an
    entry."""
    cells = [make_cell(f"t{t}-s{s}", threads=t, seed=s) for t in (1, 2) for s in (1, 2, 3)] + [
        make_cell("late", placement="none")
    ]
    cells[-1]["control"] = True
    make_results(tmp_path, cells, repeats=3)
    for i, cell in enumerate(cells):
        for repeat in range(3):
            losses = base_losses(i)
            if cell["name"] in ("late", "t2-s3") and repeat:
                losses = losses.copy()
                losses[5 + repeat, 0] = np.nextafter(losses[5 + repeat, 0], np.float32(9))
            write_run(tmp_path, cell, repeat, losses, acc=0.9 + 0.01 * i + 0.001 * repeat)
    make_reports(tmp_path, ["json"])
    return json.loads((tmp_path / "report.json").read_text())


def test_a_report_with_every_part_of_the_answer_follows_the_schema(report_json: dict):
    answer = report_json["answer"]
    assert answer["bit_effects"] and answer["recipes"] and answer["noise"]
    assert answer["controls"]
    jsonschema.validate(report_json, report_schema())


@pytest.mark.parametrize(
    "break_it",
    [
        lambda r: r["cells"][0].update(verdict="maybe"),
        lambda r: r.pop("answer"),
        lambda r: r["answer"]["recipes"][0].pop("image"),
        lambda r: r["answer"]["noise"][0]["tests"][0].update(p_value="small"),
    ],
    ids=["verdict", "no-answer", "recipe-without-image", "p-value-text"],
)
def test_a_broken_report_does_not(report_json: dict, break_it):
    broken = copy.deepcopy(report_json)
    break_it(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, report_schema())
