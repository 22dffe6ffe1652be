"""The verdict grid (harness/report/grid.py) on hand-made cells: which settings go down the
side and which across, the entries no cell has, the row limit that keeps the Markdown report's
first screen under 60 lines, and the labels."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_report_summaries import cell

from harness.contract.settings import REPORT_SETTINGS
from harness.matrix import load_matrix
from harness.report.grid import MAX_ROWS, constant, grids, make_grid, row_limit
from harness.report.markdown import render_markdown
from harness.report.report_data import Report
from harness.report.summaries import describe_image

ROOT = Path(__file__).resolve().parents[1]


def _matrix_cells(path: Path) -> list:
    """A matrix file's cells as report cells: the seed set late diverges."""
    out = []
    for c in load_matrix(path).cells:
        settings = dict(c.settings)
        verdict = "reproduces" if settings["placement"] == "before_model" else "diverges"
        out.append(cell(c.name, verdict, **settings))
    return out


def test_one_varying_setting_goes_down_the_side_with_one_verdict_column():
    cells = [
        cell("a", "diverges", placement="none"),
        cell("b", "diverges", placement="before_trainer"),
        cell("c", placement="before_model"),
    ]
    grid = make_grid("repo/a:1", cells)
    assert (grid.row_axes, grid.column_axes) == (("placement",), ())
    assert [grid.row_label(r) for r in range(3)] == ["none", "before_trainer", "before_model"]
    assert [grid.verdict(r, 0) for r in range(3)] == ["diverges", "diverges", "reproduces"]
    assert grid.column_label(0) == "verdict" and grid.row_header() == "placement"
    assert grid.counts() == {"reproduces": 1, "diverges": 2, "unknown": 0}


def test_a_single_cell_is_one_entry():
    grid = make_grid("img", [cell("a", placement="none")])
    assert (grid.rows, grid.columns) == ([()], [()])
    assert grid.row_label(0) == "the cell" and grid.verdict(0, 0) == "reproduces"


def test_matrix_yaml_splits_into_12_rows_and_5_columns_with_the_excluded_entries_empty():
    cells = [c for c in _matrix_cells(ROOT / "matrix.yaml") if "2.5.1" in c.settings["image"]]
    grid = make_grid(cells[0].settings["image"], cells)
    assert len(cells) == 48
    assert set(grid.column_axes) == {"model", "cudnn_deterministic", "cudnn_benchmark"}
    assert (len(grid.rows), len(grid.columns)) == (12, 5)
    assert len(grid.entries) == 48  # 60 entries, 12 of them excluded by the matrix
    assert grid.column_label(0) == "model=mlp · det=true · bench=false"
    assert grid.row_header() == "devices · placement · alg · ws"
    row = next(r for r in range(12) if grid.row_label(r) == "1 · none · off · unset")
    assert [grid.verdict(row, c) for c in range(5)] == ["diverges", "diverges", None, None, None]
    # every cell sits at the entry its settings name
    for (r, c), member in grid.entries.items():
        named = dict(zip(grid.row_axes, grid.rows[r], strict=True))
        named.update(zip(grid.column_axes, grid.columns[c], strict=True))
        assert all(member.settings[k] == v for k, v in named.items())


def test_rows_never_pass_the_limit_even_when_columns_must():
    """144 cells on one image cannot fit 12 x 8: the rows hold, the columns give."""
    cells = _matrix_cells(ROOT / "matrix.yaml")
    images = sorted({c.settings["image"] for c in cells})
    for c in cells:  # one image, the three told apart by their seed
        c.settings["seed"] = images.index(c.settings["image"])
        c.settings["image"] = "one"
    grid = make_grid("one", cells)
    assert len(grid.rows) <= MAX_ROWS < len(grid.columns) * len(grid.rows)
    assert len(grid.entries) == 144


@pytest.mark.parametrize(("images", "rows"), [(0, 12), (1, 12), (3, 12), (4, 7), (5, 5), (9, 1)])
def test_the_row_limit_shrinks_past_three_images(images: int, rows: int):
    assert row_limit(images) == rows


@pytest.mark.parametrize("images", [1, 3, 4, 5])
def test_the_first_screen_stays_under_60_lines_for_several_images(tmp_path: Path, images: int):
    base = _matrix_cells(ROOT / "matrix.yaml")
    first = base[0].settings["image"]
    cells = [
        cell(f"{c.name}-{i}", c.verdict, **{**c.settings, "image": f"repo/img:{i}"})
        for i in range(images)
        for c in base
        if c.settings["image"] == first
    ]
    by_image = {f"repo/img:{i}": [] for i in range(images)}
    for c in cells:
        by_image[c.settings["image"]].append(c)
    report = Report(
        name="many",
        root=tmp_path,
        cells=cells,
        summaries={image: describe_image(image, members) for image, members in by_image.items()},
        comparisons=[],
        costs=[],
        failures=[],
    )
    md = render_markdown(report).decode()
    first_screen = md.split("<details", 1)[0]
    assert len(first_screen.splitlines()) < 60
    found = grids(report)
    assert len(found) == images
    assert all(len(g.rows) <= row_limit(images) and len(g.entries) == 48 for g in found)


def test_the_settings_every_cell_shares():
    cells = [
        cell("a", placement="none", threads=2, model=None, accelerator="cpu"),
        cell("b", placement="before_model", threads=2, model=None, accelerator="cpu"),
    ]
    cells[1].settings["image"] = "repo/b:2"  # the image varies: never listed
    shared = constant(cells)
    assert shared["threads"] == 2 and shared["accelerator"] == "cpu"  # their own values
    assert shared["model"] == "mlp"  # a folder from before the setting ran its default
    assert "placement" not in shared and "image" not in shared
    assert list(shared) == [k for k in REPORT_SETTINGS if k in shared]  # in table order
    assert constant([]) == {}


def test_several_cells_without_row_axes_are_every_cell():
    cells = [cell("a", placement="none"), cell("b", placement="before_model")]
    grid = make_grid("img", cells, max_rows=1)  # one row: the placement goes across
    assert (grid.row_axes, grid.column_axes) == ((), ("placement",))
    assert grid.row_label(0) == "every cell"
    assert [grid.column_label(c) for c in range(2)] == ["placement=none", "placement=before_model"]


def test_cells_the_settings_do_not_tell_apart_get_their_name_as_an_axis():
    """Two cells with the same settings (two groups of own runs, or cells found on disk) would
    share one entry and one would vanish from the grid: their names tell them apart."""
    cells = [cell("a", "reproduces", placement="none"), cell("b", "diverges", placement="none")]
    grid = make_grid("img", cells)
    assert (grid.row_axes, grid.column_axes) == (("name",), ())
    assert [grid.row_label(r) for r in range(2)] == ["a", "b"]
    assert [grid.verdict(r, 0) for r in range(2)] == ["reproduces", "diverges"]
    assert grid.axes == []  # no setting: the cells table adds no column for it
    distinct = [cell("a", placement="none"), cell("b", placement="before_model")]
    assert "name" not in make_grid("img", distinct).row_axes  # a matrix's cells: unchanged


def test_the_fewest_entries_win_and_columns_only_break_ties():
    """A sparse set of 22 cells: devices and placement across (more columns, fewer empty
    entries) beats placement and seed down the side with fewer columns."""
    picked = [
        ("before_model", 1, 1, 2), ("before_model", 2, 2, 2), ("before_trainer", 1, 1, 2),
        ("before_trainer", 1, 3, 2), ("before_trainer", 2, 1, 2), ("before_trainer", 2, 3, 2),
        ("before_trainer", 3, 2, 1), ("before_trainer", 3, 2, 2), ("before_trainer", 3, 3, 1),
        ("before_trainer", 3, 3, 2), ("before_trainer", 4, 1, 2), ("before_trainer", 4, 3, 1),
        ("none", 1, 3, 2), ("none", 2, 3, 1), ("none", 2, 3, 2), ("none", 4, 3, 2),
        ("process_start", 1, 1, 2), ("process_start", 1, 2, 1), ("process_start", 2, 3, 1),
        ("process_start", 2, 3, 2), ("process_start", 4, 1, 1), ("process_start", 4, 3, 1),
    ]  # fmt: skip
    cells = [
        cell(f"c{i}", placement=p, seed=s, threads=t, devices=d)
        for i, (p, s, t, d) in enumerate(picked)
    ]
    grid = make_grid("img", cells)
    assert (grid.row_axes, grid.column_axes) == (("threads", "seed"), ("devices", "placement"))


def test_of_two_equal_splits_placement_goes_down_the_side():
    cells = [
        cell(f"c{i}", placement=p, cudnn_deterministic=d)
        for i, (p, d) in enumerate([("none", True), ("none", False), ("before_model", True)])
    ] + [cell("c3", placement="before_model", cudnn_deterministic=False)]
    grid = make_grid("img", cells, max_rows=2)  # 2 x 2 either way
    assert (grid.row_axes, grid.column_axes) == (("placement",), ("cudnn_deterministic",))


def _pairs(n: int) -> list:
    """24 cells over ``n`` settings, setting j following bit j % 5 of the cell's number: the
    settings j and j + 5 always agree."""
    names = ("devices", "placement", "model", "cudnn_deterministic", "cudnn_benchmark")
    names += ("deterministic_algorithms", "threads", "allow_tf32", "seed", "epochs")
    names += ("batch_size",)
    low = {"devices": 1, "placement": "none", "model": "mlp", "cudnn_deterministic": False}
    low |= {"cudnn_benchmark": False, "deterministic_algorithms": "off", "threads": 1}
    low |= {"allow_tf32": False, "seed": 0, "epochs": 1, "batch_size": 16}
    high = {"devices": 2, "placement": "before_model", "model": "cnn"}
    high |= {"cudnn_deterministic": True, "cudnn_benchmark": True}
    high |= {"deterministic_algorithms": "on", "threads": 2, "allow_tf32": True, "seed": 1}
    high |= {"epochs": 2, "batch_size": 32}
    return [
        cell(
            f"c{i}", **{k: (high if i >> (j % 5) & 1 else low)[k] for j, k in enumerate(names[:n])}
        )
        for i in range(24)
    ]


def test_up_to_ten_varying_settings_every_split_is_tried():
    """Ten settings: the search pairs the settings that agree, 8 rows x 3 columns for 24
    cells (settings in table order down the side would leave 8 x 24 entries)."""
    grid = make_grid("img", _pairs(10), max_rows=8)
    assert (len(grid.rows), len(grid.columns)) == (8, 3)


def test_past_ten_varying_settings_the_rows_take_them_in_table_order():
    """11 settings vary: no search over 2**11 splits; the rows take settings in table order
    while they stay within the limit, the columns the rest."""
    cells = _pairs(11)
    grid = make_grid("img", cells, max_rows=8)
    assert len(grid.row_axes) + len(grid.column_axes) == 11
    assert grid.row_axes == ("devices", "placement", "model")  # 8 rows; a fourth makes 16
    assert len(grid.rows) == 8 and len(grid.entries) == 24


def test_a_ninth_column_counts_against_a_split_before_its_entries_do():
    """Nine cells, at most 3 rows: one row of nine columns would have the fewest entries (9),
    but nine columns is one over MAX_COLUMNS; the placements down the side, 3 x 7, win."""
    picked = [
        (0, "before_model", 1), (1, "none", 2), (2, "before_trainer", 1), (2, "none", 1),
        (3, "before_model", 2), (3, "none", 2), (5, "none", 2), (7, "before_model", 1),
        (8, "none", 1),
    ]  # fmt: skip
    cells = [cell(f"c{i}", seed=s, placement=p, threads=t) for i, (s, p, t) in enumerate(picked)]
    grid = make_grid("img", cells, max_rows=3)
    assert grid.row_axes == ("placement",) and len(grid.columns) == 7
