"""The report a person reads in ten seconds, over matrix.yaml's own 144 cells (records made
without training, as benchmarks/bench_report.py makes them): a verdict grid per image of at
most 12 rows, a first screen (everything before the first ``<details>``) under 60 lines, the
long tables folded, and the JSON and CSV still holding every cell and every setting."""

from __future__ import annotations

import csv
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from gfm import render, tables
from test_report import base_losses, make_results, write_run

from harness.contract.settings import REPORT_SETTINGS
from harness.matrix import load_matrix
from harness.report import make_reports
from harness.report.grid import MAX_ROWS, grids

ROOT = Path(__file__).resolve().parents[1]


def _verdict_of(settings: dict) -> str:
    """A plausible GPU result: the seed placed late diverges, and so do the CNN's cuDNN cells
    without determinism; one flag combination on one image failed to run."""
    if settings["placement"] != "before_model":
        return "diverges"
    if settings["model"] == "cnn" and (
        not settings["cudnn_deterministic"] or settings["cudnn_benchmark"]
    ):
        return "diverges"
    if "2.5.1" in settings["image"] and settings["devices"] == 2:
        if settings["deterministic_algorithms"] == "on" and settings["cublas_workspace"] == "unset":
            return "unknown"
    return "reproduces"


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("matrix-144")
    verdicts = write_matrix_yaml_set(root)
    report, _ = make_reports(root, ["md", "json", "csv"], max_plots=2)
    return {
        "root": root,
        "report": report,
        "verdicts": verdicts,
        "md": (root / "report.md").read_text(),
    }


def write_matrix_yaml_set(root: Path) -> dict[str, str]:
    """Records of matrix.yaml's 144 cells, 2 repeats each, made without training; returns the
    verdict each cell was made to have."""
    matrix = load_matrix(ROOT / "matrix.yaml")
    cells = [
        {
            "id": c.id,
            "name": c.name,
            "dir": f"cells/{c.name}--{c.id}",
            "settings": dict(c.settings),
        }
        for c in matrix.cells
    ]
    make_results(root, cells, repeats=2)
    base = base_losses()
    verdicts = {}
    for cell in cells:
        verdict = verdicts[cell["name"]] = _verdict_of(cell["settings"])
        write_run(root, cell, 0, base)
        if verdict == "unknown":
            write_run(root, cell, 1, None, status="failed", error={"type": "x", "message": "x"})
            continue
        other = base.copy()
        if verdict == "diverges":
            other[7, 0] = np.nextafter(other[7, 0], np.float32(10))
        write_run(root, cell, 1, other)
    return verdicts


def test_the_generated_set_is_matrix_yamls_shape(big: dict):
    report = big["report"]
    assert len(report.cells) == 144
    assert len({c.settings["image"] for c in report.cells}) == 3
    assert {c.name: c.verdict for c in report.cells} == big["verdicts"]


def test_a_grid_per_image_of_at_most_12_rows(big: dict):
    found = grids(big["report"])
    assert [g.image for g in found] == [i.image for i in big["report"].images]
    for grid in found:
        assert 1 < len(grid.rows) <= MAX_ROWS
        assert len(grid.entries) == 48  # every cell of the image has its entry ...
        cells = [c for c in big["report"].cells if c.settings["image"] == grid.image]
        shown = {(r, c): grid.verdict(r, c) for (r, c) in grid.entries}
        assert sorted(shown.values()) == sorted(c.verdict for c in cells)  # ... its verdict
        # every axis that varies is down the side or across the top; no constant one is
        assert set(grid.row_axes) | set(grid.column_axes) == {
            "devices",
            "placement",
            "model",
            "cudnn_deterministic",
            "cudnn_benchmark",
            "deterministic_algorithms",
            "cublas_workspace",
        }


def test_the_first_screen_is_the_sentences_the_grids_and_the_cost(big: dict):
    md = big["md"]
    first = md.split("<details", 1)[0]
    assert len(first.splitlines()) < 60, first
    html = render(first)
    grid_tables = tables(html)
    assert len(grid_tables) == 3  # one grid per image, and no other table
    for table, grid in zip(grid_tables, grids(big["report"]), strict=True):
        header, *rows = table
        assert len(rows) == len(grid.rows) <= MAX_ROWS
        assert {e for row in rows for e in row[1:]} <= {"✅", "❌", "❔", "·"}
    for image in big["report"].summaries:
        assert f"On {image}," in html  # the summary sentence of each image
    assert "Cost of determinism" in html and "the median of 30 cells" in html
    assert "12 of 144" not in first  # the counts are the real ones:
    good = sum(v == "reproduces" for v in big["verdicts"].values())
    assert f"{good} of 144 cells reproduce bit for bit" in html


def test_the_long_tables_are_folded_and_every_cell_is_in_one(big: dict):
    html = render(big["md"])
    folded = html.split("<details", 1)[1]
    cells_tables = [t for t in tables(folded) if t[0][0] == "verdict"]
    assert len(cells_tables) == 3 and [len(t) - 1 for t in cells_tables] == [48, 48, 48]
    names = {row[-1].split(" (plot)")[0] for t in cells_tables for row in t[1:]}
    assert names == set(big["verdicts"])
    assert "<details><summary>48 cells on pytorch/pytorch:2.5.1" in big["md"]
    for heading in ("## Across images and GPU counts", "## Cost of determinism"):
        section = big["md"].split(heading, 1)[1].split("\n## ", 1)[0]
        assert "<details>" in section  # 72 + 48 comparisons, 90 twins: folded


def test_json_and_csv_keep_every_cell_and_every_setting(big: dict):
    data = json.loads((big["root"] / "report.json").read_text())
    assert len(data["cells"]) == len(data["table"]) == 144
    # entry and params are columns only where a matrix runs a build function (its params.<key>)
    shown = set(REPORT_SETTINGS) - {"entry", "params"}
    for row in data["table"]:
        assert shown <= set(row) and not {"entry", "params"} & set(row)
        assert row["verdict"] == big["verdicts"][row["name"]]
    rows = list(csv.DictReader(io.StringIO((big["root"] / "report.csv").read_text())))
    assert len(rows) == 144 and {r["name"] for r in rows} == set(big["verdicts"])
    assert shown <= set(rows[0]) and not {"entry", "params"} & set(rows[0])
    assert {r["image"] for r in rows} == {c.settings["image"] for c in big["report"].cells}


def test_each_images_heatmap_is_drawn_and_embedded(big: dict):
    report, md = big["report"], big["md"]
    assert set(report.grid_plots) == {g.image for g in grids(report)}
    html = render(md)
    for image, path in report.grid_plots.items():
        png = (big["root"] / path).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        assert 400 <= width <= 1000 and 200 <= height <= 1000, (image, width, height)
        assert f'<img src="{path}" alt="verdict grid of {image}: ' in html
    assert md.index("## Heatmaps") > md.index("<details")  # after the first screen
