"""The verdict grid as a PNG per image (harness/report/heatmap.py), on hand-made results folders
(no training): one file per image under plots/, named in ``Report.grid_plots``, at most 1,000
pixels wide, each verdict in its own colour, and file names a tampered manifest cannot steer."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import pytest
from test_report import base_losses, make_cell, make_results, write_run

from harness.matrix import load_matrix
from harness.report import make_reports
from harness.report.heatmap import grid_plot_names, write_grid_plots
from harness.report.heatmap_layout import COLOURS, MAX_WIDTH, SYMBOLS
from harness.report.report_data import DIVERGES, REPRODUCES, UNKNOWN, CellReport, Report

REPO = Path(__file__).resolve().parents[1]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk: the file is a PNG, not just named one."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def is_colour(path: Path, colour: str) -> np.ndarray:
    """Per pixel of the PNG: is it ``colour`` (#RRGGBB, within 2/255 per channel)?"""
    import matplotlib.image

    rgb = matplotlib.image.imread(path)[..., :3]
    target = np.array([int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return np.all(np.abs(rgb - target) <= 2 / 255, axis=-1)


def pixels_of(path: Path, colour: str) -> int:
    return int(is_colour(path, colour).sum())


def squares_across(path: Path, colour: str) -> int:
    """The most squares of ``colour`` side by side on one line of pixels: runs of the colour
    nearly as long as the longest (a symbol splits a square's line into shorter pieces)."""
    runs = []
    for line in is_colour(path, colour):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], line.astype(np.int8), [0]])))
        runs.append(edges[1::2] - edges[::2])
    longest = max(r.max(initial=0) for r in runs)
    return max(int(np.sum(r >= 0.8 * longest)) for r in runs)


def fill(root: Path, cells: list[dict], *, diverge=(), fail=()) -> None:
    """Two repeats per cell: equal, or (names in ``diverge``) unequal, or (``fail``) the second
    failed."""
    make_results(root, cells, repeats=2)
    base = base_losses()
    for cell in cells:
        write_run(root, cell, 0, base)
        if cell["name"] in fail:
            error = {"type": "timeout", "message": "timed out", "log_tail": ""}
            write_run(root, cell, 1, None, status="failed", error=error)
        else:
            write_run(root, cell, 1, base + np.float32(0.5) if cell["name"] in diverge else base)


@pytest.fixture(scope="module")
def two_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Report, list[Path]]:
    """``local``: one cell that reproduces, one that diverges, one with a failed run;
    ``repo/a:1``: two cells that reproduce. ``make_reports(root, ["md"])`` over it."""
    root = tmp_path_factory.mktemp("two-images")
    cells = [
        make_cell("seeded", placement="before_model"),
        make_cell("unseeded", placement="none"),
        make_cell("failed", placement="process_start"),
        make_cell("other-a", image="repo/a:1", seed=1),
        make_cell("other-b", image="repo/a:1", seed=2),
    ]
    fill(root, cells, diverge={"unseeded"}, fail={"failed"})
    report, written = make_reports(root, ["md"])
    return root, report, written


def test_a_grid_png_per_image_named_in_the_report(two_images):
    root, report, written = two_images
    assert report.grid_plots == {
        "local": "plots/grid-local.png",
        "repo/a:1": "plots/grid-repo_a_1.png",
    }
    for relative in report.grid_plots.values():
        path = root / relative
        assert path in written
        width, height = png_size(path)
        assert 100 < width <= MAX_WIDTH and height > 100


def test_each_verdict_has_its_own_colour(two_images):
    root, _, _ = two_images
    square = 30 * 30  # a grid square is at least 44 x 34 pixels; a legend swatch is smaller
    local = root / "plots/grid-local.png"
    assert pixels_of(local, COLOURS[REPRODUCES]) > square
    assert pixels_of(local, COLOURS[DIVERGES]) > square
    assert pixels_of(local, COLOURS[UNKNOWN]) > square
    # every cell of repo/a:1 reproduces: no vermillion, not even in the legend
    other = root / "plots/grid-repo_a_1.png"
    assert pixels_of(other, COLOURS[REPRODUCES]) > 2 * square
    assert pixels_of(other, COLOURS[DIVERGES]) == 0


def test_the_symbols_are_in_the_font_the_picture_uses():
    """Shape carries the verdict without colour only if DejaVu Sans draws each symbol."""
    from matplotlib import font_manager, ft2font

    font = ft2font.FT2Font(font_manager.findfont("DejaVu Sans", fallback_to_default=False))
    bold = ft2font.FT2Font(
        font_manager.findfont(
            font_manager.FontProperties(family="DejaVu Sans", weight="bold"),
            fallback_to_default=False,
        )
    )
    assert len(set(SYMBOLS.values())) == 3
    for symbol in SYMBOLS.values():
        assert ord(symbol) in font.get_charmap() and ord(symbol) in bold.get_charmap()


def test_no_grid_png_without_plots_or_without_markdown(tmp_path: Path):
    fill(tmp_path, [make_cell("a", seed=1), make_cell("b", seed=2)])
    report, _ = make_reports(tmp_path, ["md"], plots=False)
    assert report.grid_plots == {} and not list(tmp_path.glob("plots/grid-*"))
    report, _ = make_reports(tmp_path, ["json", "csv"])
    assert report.grid_plots == {} and not list(tmp_path.glob("plots/grid-*"))
    report, _ = make_reports(tmp_path, ["md"], max_plots=1)  # cell plots' bound: not the grid's
    assert list(report.grid_plots) == ["local"] and (tmp_path / "plots/grid-local.png").exists()


def test_tampered_image_names_stay_inside_plots_and_apart(tmp_path: Path):
    """An image is any string in a tampered manifest: it cannot name a path outside plots/, a
    ``$`` is drawn, not parsed as mathtext, and two images whose names sanitize alike get two
    files."""
    root = tmp_path / "results"
    images = ["../../outside", ".hidden", "a$\\frac{$b", "repo/a:1", "repo_a:1", "x\x1b[31my"]
    images.append("long/" * 100)  # a file name has at most 255 bytes; the title is cut short
    cells = [make_cell(f"c{i}", image=image) for i, image in enumerate(images)]
    make_results(root, cells, repeats=2)  # no runs (none would be valid): every cell unknown
    report, written = make_reports(root, ["md"])

    assert set(report.grid_plots) == set(images)
    names = list(report.grid_plots.values())
    assert len(set(names)) == len(images)
    plots = (root / "plots").resolve()
    for name in names:
        path = (root / name).resolve()
        assert path.parent == plots and path.is_file() and path.name.startswith("grid-")
        assert png_size(path)[0] <= MAX_WIDTH
    assert report.grid_plots["../../outside"] == "plots/grid-_.._outside.png"
    assert report.grid_plots[".hidden"] == "plots/grid-hidden.png"
    assert report.grid_plots["repo/a:1"] != report.grid_plots["repo_a:1"]
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == sorted(Path(n).name for n in names)


def test_file_names_of_grid_plots():
    assert grid_plot_names(["local", "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"]) == {
        "local": "grid-local.png",
        "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime": (
            "grid-pytorch_pytorch_2.5.1-cuda12.4-cudnn9-runtime.png"
        ),
    }
    same = grid_plot_names(["a/b", "a:b", "a_b"])
    assert len(set(same.values())) == 3
    assert same["a/b"].startswith("grid-a_b-") and len(same["a/b"]) == len("grid-a_b-12345678.png")
    long = grid_plot_names(["x" * 300])["x" * 300]
    assert len(long) < 130


def test_a_grid_that_cannot_be_drawn_is_a_warning(tmp_path: Path, caplog):
    fill(tmp_path, [make_cell("a", seed=1), make_cell("b", seed=2)])
    (tmp_path / "plots").write_text("a file where the folder goes")
    with caplog.at_level(logging.WARNING, logger="harness.report.heatmap"):
        report, written = make_reports(tmp_path, ["md"])
    assert report.grid_plots == {} and (tmp_path / "report.md") in written
    assert "no grid plot for local" in caplog.text


def cell_report(i: int, verdict: str, **settings) -> CellReport:
    return CellReport(
        id=f"c{i}",
        name=f"c{i}",
        settings={"image": "local", **settings},
        repeats=3,
        ok_runs=3,
        distinct_trajectories=1,
        verdict=verdict,
        reproducible={REPRODUCES: True, DIVERGES: False}.get(verdict),
        unknown_because=None,
        first_divergence=None,
        divergences=[],
        init_equal=True,
        final_equal=True,
        val_acc_mean=None,
        val_acc_sd=None,
        seconds_per_epoch=None,
        detail="",
    )


def test_many_columns_narrow_the_squares_not_widen_the_picture(tmp_path: Path):
    """30 seeds x 4 placements: the seeds go across (more than 12 rows otherwise), and the
    picture stays 1,000 pixels wide."""
    placements = ["none", "before_trainer", "before_model", "process_start"]
    grid = [(seed, placement) for seed in range(30) for placement in placements]
    cells = [
        cell_report(
            i,
            REPRODUCES if placement == "before_model" else DIVERGES,
            seed=seed,
            placement=placement,
        )
        for i, (seed, placement) in enumerate(grid)
    ]
    report = Report(
        name="seeds",
        root=tmp_path,
        cells=cells,
        summaries={},
        comparisons=[],
        costs=[],
        failures=[],
    )
    (path,) = write_grid_plots(report)
    width, _ = png_size(path)
    assert width == MAX_WIDTH
    assert squares_across(path, COLOURS[REPRODUCES]) == 30  # every column, none cut off


def matrix_report(root: Path) -> Report:
    """matrix.yaml's cells of its first image, no runs: before_model reproduces, the other
    placements diverge, every seventh cell has no verdict."""
    matrix = load_matrix(REPO / "matrix.yaml").cells
    first = [c for c in matrix if c.settings["image"] == matrix[0].settings["image"]]
    cells = []
    for i, cell in enumerate(first):
        settings = dict(cell.settings)
        verdict = REPRODUCES if settings["placement"] == "before_model" else DIVERGES
        cells.append(cell_report(i, UNKNOWN if i % 7 == 3 else verdict, **settings))
    return Report(
        name="gpu-matrix",
        root=root,
        cells=cells,
        summaries={},
        comparisons=[],
        costs=[],
        failures=[],
    )


def test_matrix_yaml_grids_fit_githubs_width(tmp_path: Path):
    """matrix.yaml's shape, 12 x 5 per image (48 cells): the picture fits 1,000 pixels across
    and a screen down, and its squares are no slivers."""
    report = matrix_report(tmp_path)
    written = write_grid_plots(report)
    assert len(written) == 1 == len(report.grid_plots)
    width, height = png_size(written[0])
    assert 600 < width <= MAX_WIDTH and 300 < height < 800
    assert squares_across(written[0], COLOURS[REPRODUCES]) == 5  # a before_model row
    assert pixels_of(written[0], COLOURS[REPRODUCES]) > 30 * 60 * 30
