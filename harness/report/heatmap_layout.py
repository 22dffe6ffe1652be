"""The heatmap's layout, in pixels from the measured text: the colours and symbols, the
sizes, the title and legend, and where every label, square and legend entry goes
(``layout_grid``), so that harness/report/heatmap.py only draws. The picture is at most
``MAX_WIDTH`` pixels wide and its text at least 9 pt (the reasons are in heatmap.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness.report.grid import MEANING, TERMINAL_MARK, Grid, counted, short, value_text
from harness.report.inert_text import clean
from harness.report.report_data import DIVERGES, REPRODUCES, UNKNOWN

#: Okabe-Ito (Color Universal Design): blue and vermillion stay apart for every common colour
#: vision deficiency; grey for no verdict; an entry no cell has is left nearly white.
COLOURS: dict[str, str] = {REPRODUCES: "#0072B2", DIVERGES: "#D55E00", UNKNOWN: "#999999"}
NO_CELL_COLOUR = "#F0F0F0"
NO_CELL_MEANING = "no cell (the matrix leaves it out)"
#: The grid's symbols, in their heavy forms where DejaVu Sans has one (✔ ✘): the light ✓ ✗ read
#: thin at 14 pt.
SYMBOLS: dict[str, str] = {
    REPRODUCES: "\u2714",
    DIVERGES: "\u2718",
    UNKNOWN: TERMINAL_MARK[UNKNOWN],
}

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


def title(grid: Grid) -> tuple[str, str]:
    """(the image, its counts): ``1 of 3 cells reproduce (1 diverges, 1 unknown)``."""
    counts = grid.counts()
    total = sum(counts.values())
    rest = [counted(v, counts[v]) for v in (DIVERGES, UNKNOWN) if counts[v]]
    more = f" ({', '.join(rest)})" if rest else ""
    return clean(grid.image), f"{counts[REPRODUCES]} of {total} cells reproduce{more}"


@dataclass
class TextMeasure:
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


def contrast_text(colour: str) -> str:
    """Black or white, whichever contrasts more with ``colour`` (WCAG relative luminance)."""
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    lum = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "black" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "white"


def line_height(size: float) -> float:
    return size * DPI / 72 * 1.3


def legend_entries(grid: Grid) -> list[tuple[str, str, str]]:
    """(colour, symbol, meaning) for each verdict the grid shows, and for an empty entry when
    it has one."""
    shown = grid.verdicts_shown()
    out = [(COLOURS[v], SYMBOLS[v], MEANING[v]) for v in MEANING if v in shown]
    if None in shown:
        out.append((NO_CELL_COLOUR, "", NO_CELL_MEANING))
    return out


@dataclass
class RowLabels:
    """One column of labels per row axis: ``heads`` (the axes' short names), their ``widths``,
    and per row the values ``shown`` (a value the row above already shows under the same
    earlier values is blank: a pivot table's grouping)."""

    heads: list[str]
    widths: list[float]
    shown: list[list[str]]

    @property
    def width(self) -> float:
        return sum(self.widths) + GAP * (len(self.widths) - 1)


def row_labels(grid: Grid, measure: TextMeasure) -> RowLabels:
    """The row labels, each fitted into its share of ``MAX_LABEL_SHARE`` of the width."""
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
    return RowLabels(heads, widths, shown)


@dataclass
class ColumnLabels:
    """Per column its label's lines (``short=value`` stacked, or one upright line when the
    labels do not fit across), the squares' width and the header's height."""

    lines: list[list[str]]
    cell_width: float
    upright: bool
    header_height: float


def column_labels(grid: Grid, measure: TextMeasure, grid_left: float) -> ColumnLabels:
    """The column labels and the squares' width, in the room right of ``grid_left``."""
    n_columns = max(len(grid.columns), 1)
    columns = [grid.column_parts(c) for c in range(n_columns)]
    columns = [[measure.fit(clean(line), FONT, MAX_UPRIGHT) for line in lines] for lines in columns]
    widest = max(measure.width(line, FONT) for lines in columns for line in lines)
    room = MAX_WIDTH - grid_left - PAD
    cell_width = min(max(widest + 12, MIN_CELL_WIDTH), room / n_columns)
    # Too many columns for their labels to fit across: each label one line, turned upright.
    upright = widest + 12 > cell_width
    if upright:
        columns = [[measure.fit(" · ".join(lines), FONT, MAX_UPRIGHT)] for lines in columns]
        header_height = max(measure.width(lines[0], FONT) for lines in columns)
    else:
        header_height = max(len(lines) for lines in columns) * line_height(FONT)
    return ColumnLabels(columns, cell_width, upright, header_height)


def title_lines(grid: Grid, measure: TextMeasure) -> list[str]:
    """The title on one line where it fits, else the image (fitted) above its counts."""
    image, counts = title(grid)
    one_line = f"{image}: {counts}"
    text_room = MAX_WIDTH - 2 * PAD
    if measure.fit(one_line, TITLE_FONT, text_room, bold=True) == one_line:
        return [one_line]
    return [measure.fit(image, TITLE_FONT, text_room, bold=True), counts]


def legend_rows(entry_widths: list[float], width: int) -> list[list[int]]:
    """The legend's entries (their indexes) in rows that fit the picture's width."""
    rows: list[list[int]] = [[]]
    used = 0.0
    for i, w in enumerate(entry_widths):
        if rows[-1] and used + w > width - 2 * PAD:
            rows.append([])
            used = 0.0
        rows[-1].append(i)
        used += w
    return rows


@dataclass
class GridLayout:
    """Where everything of one grid's picture goes, in pixels (y grows downwards)."""

    rows: RowLabels
    columns: ColumnLabels
    title_lines: list[str]
    legend: list[tuple[str, str, str]]
    entry_widths: list[float]
    legend_rows: list[list[int]]
    grid_left: float
    grid_top: float
    row_tops: list[float]
    legend_top: float
    width: int
    height: int

    @property
    def swatch(self) -> float:
        return line_height(FONT)


def layout_grid(grid: Grid, measure: TextMeasure) -> GridLayout:
    """The whole picture's layout: labels, title and legend measured first, then the width
    (at most ``MAX_WIDTH``) and the heights, top to bottom."""
    rows = row_labels(grid, measure)
    grid_left = PAD + rows.width + PAD
    columns = column_labels(grid, measure, grid_left)
    titles = title_lines(grid, measure)
    legend = legend_entries(grid)
    swatch = line_height(FONT)
    entry_widths = [swatch + 6 + measure.width(text, FONT) + 18 for _, _, text in legend]
    width = max(
        grid_left + columns.cell_width * max(len(grid.columns), 1) + PAD,
        max(measure.width(t, TITLE_FONT, bold=True) for t in titles) + 2 * PAD,
        min(sum(entry_widths) + 2 * PAD, MAX_WIDTH),
        MIN_WIDTH,
    )
    width = min(math.ceil(width), MAX_WIDTH)
    entry_rows = legend_rows(entry_widths, width)
    grid_top = PAD + len(titles) * line_height(TITLE_FONT) + PAD + columns.header_height + 4
    row_tops = []
    y = grid_top
    for r in range(max(len(grid.rows), 1)):
        new_group = r > 0 and len(grid.row_axes) > 1 and grid.rows[r][0] != grid.rows[r - 1][0]
        y += GROUP_GAP if new_group else 0
        row_tops.append(y)
        y += CELL_HEIGHT
    legend_top = y + PAD
    height = int(round(legend_top + len(entry_rows) * (swatch + 6) + PAD))
    return GridLayout(
        rows,
        columns,
        titles,
        legend,
        entry_widths,
        entry_rows,
        grid_left,
        grid_top,
        row_tops,
        legend_top,
        width,
        height,
    )
