"""The verdict grid of each image as a PNG heatmap, ``plots/grid-<image>.png``, for the Markdown
report to embed: the grid of harness/report/grid.py, one square per entry.

Made to be read in a browser at GitHub's ~1,000-pixel content width: the picture is at most
1,000 pixels wide (squares narrow as columns are added), its text at least 9 pt. Colour-blind
safe: the Okabe-Ito blue and vermillion, and grey, and every square also carries its verdict's
symbol (✔ ✘ ?, the heavy forms of the terminal's ✓ ✗), so the shape says it without the
colour. Text from run records (image names, setting values) goes through ``text.clean`` and is
drawn without mathtext, so a ``$`` in a tampered name is a dollar sign, not a formula that fails
to parse.

The layout is computed in pixels from the measured text (harness/report/heatmap_layout.py; no
``bbox_inches="tight"``, which would decide the width after the fact). A grid that cannot be
drawn (OSError, ValueError) leaves its image without a picture and a warning, never a
traceback.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from harness.contract.files import write_bytes_atomic
from harness.errors import StoreError
from harness.report.grid import Grid, grids
from harness.report.heatmap_layout import (
    CELL_HEIGHT,
    COLOURS,
    DPI,
    FONT,
    GAP,
    NO_CELL_COLOUR,
    PAD,
    SYMBOL_FONT,
    SYMBOLS,
    TITLE_FONT,
    GridLayout,
    TextMeasure,
    contrast_text,
    layout_grid,
    line_height,
)
from harness.report.inert_text import clean
from harness.report.plots import file_stem
from harness.report.report_data import Report
from harness.results import layout
from harness.results.safe_paths import real_dir

log = logging.getLogger(__name__)


def grid_plot_names(images: list[str]) -> dict[str, str]:
    """image -> its PNG's file name, ``grid-<image>.png`` with anything but letters, digits and
    ``._=+-`` replaced (a name from a tampered manifest cannot leave plots/); images whose names
    come out the same get ``-<first 8 hex of sha256(image)>`` to keep them apart."""

    def base(image: str) -> str:
        name = file_stem(image, "image")
        if len(name) > 100:  # a file name has at most 255 bytes
            name = f"{name[:100]}-{_hash(image)}"
        return name

    bases = {image: base(image) for image in images}
    taken = Counter(bases.values())
    names = {
        image: name if taken[name] == 1 else f"{name}-{_hash(image)}"
        for image, name in bases.items()
    }
    return {image: f"grid-{name}.png" for image, name in names.items()}


def _hash(image: str) -> str:
    return hashlib.sha256(image.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def write_grid_plots(report: Report, out: Path | None = None) -> list[Path]:
    """Draw each image's grid into ``plots/`` of ``out`` (default: the folder reported) and name
    it in ``report.grid_plots``; returns the files written."""
    all_grids = grids(report)
    names = grid_plot_names([g.image for g in all_grids])
    out_dir = layout.plots_dir(report.root if out is None else out)
    written: list[Path] = []
    for grid in all_grids:
        name = names[grid.image]
        try:
            real_dir(out_dir.parent, out_dir, what="the report's plots")  # never a link
            draw_grid(grid, out_dir / name)
        except (OSError, ValueError, StoreError) as exc:  # StoreError: plots/ is a link
            log.warning("no grid plot for %s: %s", clean(grid.image), clean(exc))
            continue
        report.grid_plots[grid.image] = f"{layout.PLOTS_DIR}/{name}"
        written.append(out_dir / name)
    return written


def draw_grid(grid: Grid, path: Path) -> None:
    """Draw ``grid`` as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties

    fig = Figure(dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    measure = TextMeasure(canvas.get_renderer(), FontProperties(family="DejaVu Sans"))
    spot = layout_grid(grid, measure)
    fig.set_size_inches(spot.width / DPI, spot.height / DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, spot.width)
    ax.set_ylim(spot.height, 0)
    ax.axis("off")
    pen = _Pen(ax)
    _draw_labels(pen, spot)
    _draw_squares(pen, grid, spot)
    _draw_legend(pen, spot)
    png = io.BytesIO()
    fig.savefig(png, dpi=DPI, format="png")
    write_bytes_atomic(Path(path), png.getvalue())  # a link at the file's name is replaced


class _Pen:
    """Text without mathtext (a ``$`` stays a dollar sign) and squares, on the figure's axes."""

    def __init__(self, ax: Any) -> None:
        self.ax = ax

    def text(self, x: float, y: float, s: str, **kw: Any) -> None:
        kw.setdefault("fontsize", FONT)
        self.ax.text(x, y, s, family="DejaVu Sans", parse_math=False, clip_on=False, **kw)

    def square(self, xy: tuple[float, float], width: float, height: float, **kw: Any) -> None:
        from matplotlib.patches import Rectangle

        self.ax.add_patch(Rectangle(xy, width, height, **kw))

    def symbol(self, x: float, y: float, symbol: str, colour: str, **kw: Any) -> None:
        """A verdict's symbol centred at (x, y), black or white on its ``colour``."""
        self.text(
            x,
            y,
            symbol,
            weight="bold",
            color=contrast_text(colour),
            ha="center",
            va="center_baseline",
            **kw,
        )


def _draw_labels(pen: _Pen, spot: GridLayout) -> None:
    """The title; the row axes' names in the corner, on the header's last line; the column
    labels above their squares."""
    for i, line in enumerate(spot.title_lines):
        pen.text(
            PAD,
            PAD + i * line_height(TITLE_FONT),
            line,
            fontsize=TITLE_FONT,
            weight="bold" if i == 0 else "normal",
            va="top",
        )
    x: float = PAD
    for head, w in zip(spot.rows.heads, spot.rows.widths, strict=True):
        pen.text(x, spot.grid_top - 4, head, weight="bold", va="bottom")
        x += w + GAP
    columns = spot.columns
    for c, lines in enumerate(columns.lines):
        cx = spot.grid_left + (c + 0.5) * columns.cell_width
        for k, line in enumerate(reversed(lines)):
            y = spot.grid_top - 4 - k * line_height(FONT)
            rotation = 90 if columns.upright else 0
            pen.text(cx, y, line, ha="center", va="bottom", rotation=rotation)


def _draw_squares(pen: _Pen, grid: Grid, spot: GridLayout) -> None:
    """Each row's labels, then its squares, each with its verdict's symbol."""
    cell_width = spot.columns.cell_width
    symbol_size = min(SYMBOL_FONT, CELL_HEIGHT * 0.65 * 72 / DPI, cell_width * 0.65 * 72 / DPI)
    for r, top in enumerate(spot.row_tops):
        x: float = PAD
        for value, w in zip(spot.rows.shown[r], spot.rows.widths, strict=True):
            pen.text(x, top + CELL_HEIGHT / 2, value, va="center")
            x += w + GAP
        for c in range(len(spot.columns.lines)):
            verdict = grid.verdict(r, c)
            colour = NO_CELL_COLOUR if verdict is None else COLOURS[verdict]
            left = spot.grid_left + c * cell_width
            pen.square(
                (left, top),
                cell_width,
                CELL_HEIGHT,
                facecolor=colour,
                edgecolor="white",
                linewidth=2,
            )
            if verdict is not None:
                x_mid, y_mid = left + cell_width / 2, top + CELL_HEIGHT / 2
                pen.symbol(x_mid, y_mid, SYMBOLS[verdict], colour, fontsize=symbol_size)


def _draw_legend(pen: _Pen, spot: GridLayout) -> None:
    """The legend's swatches, each with its symbol and meaning, in rows."""
    swatch = spot.swatch
    for k, entries in enumerate(spot.legend_rows):
        y = spot.legend_top + k * (swatch + 6)
        x: float = PAD
        for i in entries:
            colour, symbol, meaning = spot.legend[i]
            pen.square((x, y), swatch, swatch, facecolor=colour, edgecolor="#BBBBBB", linewidth=0.5)
            if symbol:
                pen.symbol(x + swatch / 2, y + swatch / 2, symbol, colour)
            pen.text(x + swatch + 6, y + swatch / 2, meaning, va="center")
            x += spot.entry_widths[i]
