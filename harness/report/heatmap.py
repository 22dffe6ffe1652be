"""The verdict grid of each image as a PNG heatmap, ``plots/grid-<image>.png``, for the Markdown
report to embed: the grid of harness/report/grid.py, one square per entry.

Made to be read in a browser at GitHub's ~1,000-pixel content width: the picture is at most
1,000 pixels wide (squares narrow as columns are added), its text at least 9 pt. Colour-blind
safe: the Okabe-Ito blue and vermillion, and grey, and every square also carries its verdict's
symbol (✔ ✘ ?, the heavy forms of the terminal's ✓ ✗), so the shape says it without the
colour. Text from run records (image names, setting values) goes through ``text.clean`` and is
drawn without mathtext, so a ``$`` in a tampered name is a dollar sign, not a formula that fails
to parse.

The layout is computed in pixels from the measured text (no ``bbox_inches="tight"``, which would
decide the width after the fact). A grid that cannot be drawn (OSError, ValueError) leaves its
image without a picture and a warning, never a traceback.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.contract.files import write_bytes_atomic
from harness.errors import StoreError
from harness.report.grid import MEANING, TERMINAL_MARK, Grid, counted, grids, short, value_text
from harness.report.inert_text import clean
from harness.report.plots import file_stem
from harness.report.report_data import DIVERGES, REPRODUCES, UNKNOWN, Report
from harness.results import layout
from harness.results.safe_paths import real_dir

log = logging.getLogger(__name__)

#: Okabe-Ito (Color Universal Design): blue and vermillion stay apart for every common colour
#: vision deficiency; grey for no verdict; an entry no cell has is left nearly white.
COLOURS = {REPRODUCES: "#0072B2", DIVERGES: "#D55E00", UNKNOWN: "#999999"}
NO_CELL_COLOUR = "#F0F0F0"
NO_CELL_MEANING = "no cell (the matrix leaves it out)"
#: The grid's symbols, in their heavy forms where DejaVu Sans has one (✔ ✘): the light ✓ ✗ read
#: thin at 14 pt.
SYMBOLS = {REPRODUCES: "\u2714", DIVERGES: "\u2718", UNKNOWN: TERMINAL_MARK[UNKNOWN]}

DPI = 100
#: GitHub's content column, in pixels: the picture is never wider.
MAX_WIDTH = 1000
MIN_WIDTH = 320
#: Row labels take at most this share of the width; longer values are shortened with "…".
MAX_LABEL_SHARE = 0.45
FONT = 10  # pt, labels and legend
TITLE_FONT = 12
SYMBOL_FONT = 16
PAD = 10  # px
GAP = 12  # px between the columns of the row labels
CELL_HEIGHT = 34  # px
MIN_CELL_WIDTH = 44
GROUP_GAP = 6  # px between groups of rows with another first row value
#: No line of text is longer: 1,000 pixels hold fewer characters.
MAX_CHARS = 300
#: An upright column label (too many columns for labels across) is at most this long.
MAX_UPRIGHT = 240  # px


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


def title(grid: Grid) -> tuple[str, str]:
    """(the image, its counts): ``1 of 3 cells reproduce (1 diverges, 1 unknown)``."""
    counts = grid.counts()
    total = sum(counts.values())
    rest = [counted(v, counts[v]) for v in (DIVERGES, UNKNOWN) if counts[v]]
    more = f" ({', '.join(rest)})" if rest else ""
    return clean(grid.image), f"{counts[REPRODUCES]} of {total} cells reproduce{more}"


@dataclass
class _Text:
    """Measures text in pixels with the figure's renderer."""

    renderer: Any
    prop: Any

    def width(self, text: str, size: float, bold: bool = False) -> float:
        prop = self.prop.copy()
        prop.set_size(size)
        prop.set_weight("bold" if bold else "normal")
        if not text:
            return 0.0
        w, _h, _d = self.renderer.get_text_width_height_descent(text, prop, ismath=False)
        return float(w)

    def fit(self, text: str, size: float, width: float, bold: bool = False) -> str:
        """``text``, shortened in the middle with "…" until it is at most ``width`` wide."""
        if len(text) <= MAX_CHARS and self.width(text, size, bold) <= width:
            return text

        def keeping(keep: int) -> str:
            head = (keep + 1) // 2
            return f"{text[:head]}…{text[len(text) - (keep - head) :]}"

        # keeping(low) fits (or is just "…"), keeping(high) does not (past MAX_CHARS: assumed)
        low, high = 0, min(len(text) - 1, MAX_CHARS)
        while high - low > 1:
            middle = (low + high) // 2
            if self.width(keeping(middle), size, bold) <= width:
                low = middle
            else:
                high = middle
        return keeping(low)


def _contrast_text(colour: str) -> str:
    """Black or white, whichever contrasts more with ``colour`` (WCAG relative luminance)."""
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    lum = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "black" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "white"


def _line_height(size: float) -> float:
    return size * DPI / 72 * 1.3


def draw_grid(grid: Grid, path: Path) -> None:
    """Draw ``grid`` as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import Rectangle

    fig = Figure(dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    measure = _Text(canvas.get_renderer(), FontProperties(family="DejaVu Sans"))
    n_rows, n_columns = max(len(grid.rows), 1), max(len(grid.columns), 1)

    # Row labels: one column per row axis, each headed by its short name; a value the row
    # above already shows under the same earlier values is left blank (a pivot table's
    # grouping).
    if grid.row_axes:
        heads = [clean(short(a)) for a in grid.row_axes]
        values = [[clean(value_text(v)) for v in row] for row in grid.rows]
    else:
        heads, values = [""], [[clean(grid.row_label(0))]]
    label_room = MAX_WIDTH * MAX_LABEL_SHARE - GAP * (len(heads) - 1)
    each = label_room / len(heads)
    values = [[measure.fit(v, FONT, each) for v in row] for row in values]
    heads = [measure.fit(h, FONT, each, bold=True) for h in heads]
    widths = [
        max(
            [measure.width(heads[i], FONT, bold=True)] + [measure.width(r[i], FONT) for r in values]
        )
        for i in range(len(heads))
    ]
    shown = []
    for r, row in enumerate(values):
        same = r > 0
        line = []
        for i, value in enumerate(row):
            same = same and values[r - 1][i] == value and i < len(row) - 1
            line.append("" if same else value)
        shown.append(line)
    label_width = sum(widths) + GAP * (len(widths) - 1)

    # Column labels: one line per axis, ``short=value``, stacked.
    columns = [grid.column_parts(c) for c in range(n_columns)]
    columns = [[measure.fit(clean(line), FONT, MAX_UPRIGHT) for line in lines] for lines in columns]
    widest = max(measure.width(line, FONT) for lines in columns for line in lines)
    grid_left = PAD + label_width + PAD
    room = MAX_WIDTH - grid_left - PAD
    cell_width = min(max(widest + 12, MIN_CELL_WIDTH), room / n_columns)
    # Too many columns for their labels to fit across: each label one line, turned upright.
    upright = widest + 12 > cell_width
    if upright:
        columns = [[measure.fit(" · ".join(lines), FONT, MAX_UPRIGHT)] for lines in columns]
        header_height = max(measure.width(lines[0], FONT) for lines in columns)
    else:
        header_height = max(len(lines) for lines in columns) * _line_height(FONT)

    # Title and legend, fitted into the widest the picture may be.
    image, counts = title(grid)
    one_line = f"{image}: {counts}"
    text_room = MAX_WIDTH - 2 * PAD
    if measure.fit(one_line, TITLE_FONT, text_room, bold=True) == one_line:
        title_lines = [one_line]
    else:
        title_lines = [measure.fit(image, TITLE_FONT, text_room, bold=True), counts]
    legend = _legend(grid)
    swatch = _line_height(FONT)
    entry_widths = [swatch + 6 + measure.width(text, FONT) + 18 for _, _, text in legend]

    grid_width = cell_width * n_columns
    width = max(
        grid_left + grid_width + PAD,
        max(measure.width(t, TITLE_FONT, bold=True) for t in title_lines) + 2 * PAD,
        min(sum(entry_widths) + 2 * PAD, MAX_WIDTH),
        MIN_WIDTH,
    )
    width = min(math.ceil(width), MAX_WIDTH)
    legend_rows: list[list[int]] = [[]]
    used = 0.0
    for i, w in enumerate(entry_widths):
        if legend_rows[-1] and used + w > width - 2 * PAD:
            legend_rows.append([])
            used = 0.0
        legend_rows[-1].append(i)
        used += w

    # Heights, top to bottom.
    groups = [
        r > 0 and len(grid.row_axes) > 1 and grid.rows[r][0] != grid.rows[r - 1][0]
        for r in range(n_rows)
    ]
    title_height = len(title_lines) * _line_height(TITLE_FONT)
    header_top = PAD + title_height + PAD
    grid_top = header_top + header_height + 4
    row_tops = []
    y = grid_top
    for r in range(n_rows):
        y += GROUP_GAP if groups[r] else 0
        row_tops.append(y)
        y += CELL_HEIGHT
    legend_top = y + PAD
    height = int(round(legend_top + len(legend_rows) * (swatch + 6) + PAD))

    fig.set_size_inches(width / DPI, height / DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")

    def text(x: float, y: float, s: str, **kw: Any) -> None:
        kw.setdefault("fontsize", FONT)
        ax.text(x, y, s, family="DejaVu Sans", parse_math=False, clip_on=False, **kw)

    for i, line in enumerate(title_lines):
        text(
            PAD,
            PAD + i * _line_height(TITLE_FONT),
            line,
            fontsize=TITLE_FONT,
            weight="bold" if i == 0 else "normal",
            va="top",
        )
    # Corner: the row axes' names, above their columns, on the header's last line.
    x = PAD
    for head, w in zip(heads, widths, strict=True):
        text(x, grid_top - 4, head, weight="bold", va="bottom")
        x += w + GAP
    for c, lines in enumerate(columns):
        cx = grid_left + (c + 0.5) * cell_width
        for k, line in enumerate(reversed(lines)):
            y = grid_top - 4 - k * _line_height(FONT)
            text(cx, y, line, ha="center", va="bottom", rotation=90 if upright else 0)
    symbol_size = min(SYMBOL_FONT, CELL_HEIGHT * 0.65 * 72 / DPI, cell_width * 0.65 * 72 / DPI)
    for r in range(n_rows):
        top = row_tops[r]
        x = PAD
        for value, w in zip(shown[r], widths, strict=True):
            text(x, top + CELL_HEIGHT / 2, value, va="center")
            x += w + GAP
        for c in range(n_columns):
            verdict = grid.verdict(r, c)
            colour = NO_CELL_COLOUR if verdict is None else COLOURS[verdict]
            left = grid_left + c * cell_width
            ax.add_patch(
                Rectangle(
                    (left, top),
                    cell_width,
                    CELL_HEIGHT,
                    facecolor=colour,
                    edgecolor="white",
                    linewidth=2,
                )
            )
            if verdict is not None:
                text(
                    left + cell_width / 2,
                    top + CELL_HEIGHT / 2,
                    SYMBOLS[verdict],
                    fontsize=symbol_size,
                    weight="bold",
                    color=_contrast_text(colour),
                    ha="center",
                    va="center_baseline",
                )
    for k, entries in enumerate(legend_rows):
        y = legend_top + k * (swatch + 6)
        x = PAD
        for i in entries:
            colour, symbol, meaning = legend[i]
            ax.add_patch(
                Rectangle(
                    (x, y), swatch, swatch, facecolor=colour, edgecolor="#BBBBBB", linewidth=0.5
                )
            )
            if symbol:
                text(
                    x + swatch / 2,
                    y + swatch / 2,
                    symbol,
                    weight="bold",
                    color=_contrast_text(colour),
                    ha="center",
                    va="center_baseline",
                )
            text(x + swatch + 6, y + swatch / 2, meaning, va="center")
            x += entry_widths[i]
    png = io.BytesIO()
    fig.savefig(png, dpi=DPI, format="png")
    write_bytes_atomic(Path(path), png.getvalue())  # a link at the file's name is replaced


def _legend(grid: Grid) -> list[tuple[str, str, str]]:
    """(colour, symbol, meaning) for each verdict the grid shows, and for an empty entry when
    it has one."""
    shown = grid.verdicts_shown()
    out = [(COLOURS[v], SYMBOLS[v], MEANING[v]) for v in MEANING if v in shown]
    if None in shown:
        out.append((NO_CELL_COLOUR, "", NO_CELL_MEANING))
    return out
