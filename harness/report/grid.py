"""The verdict grid: one image's cells as a pivot table of verdicts, so a reader takes in the
whole matrix at a glance instead of reading a row per cell.

Rows and columns are the settings that vary on that image; settings the same in every cell are
left out (the report lists them once). Which varying settings go down the side and which across
the top is chosen, not fixed: a matrix with ``exclude`` entries is sparse, and the split that
leaves the fewest empty entries within at most ``MAX_ROWS`` rows and ``MAX_COLUMNS`` columns
reads best (for matrix.yaml: model, placement and the cuDNN flags down the side, GPU count,
deterministic algorithms and the cuBLAS workspace across, 9 x 8 for 48 cells). The Markdown
report, the terminal summary and the PNG heatmap all draw the same ``Grid``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness.contract.settings import BY_NAME
from harness.report.report_data import DIVERGES, REPRODUCES, UNKNOWN, CellReport, Report
from harness.report.summaries import label, report_keys, setting_keys, varying

#: A grid taller than this no longer reads at a glance; wider than MAX_COLUMNS does not fit
#: GitHub's 1,000-pixel column.
MAX_ROWS = 12
MAX_COLUMNS = 8
#: Splits are searched exhaustively up to this many varying settings (2**n splits), past it
#: settings fill the rows in table order.
_SEARCH_LIMIT = 10
#: Where two splits are as good, the one with these down the side wins: the post's question is
#: where the seed goes, per model and GPU count.
_ROW_FIRST = ("devices", "model", "placement", "name")  # name: NAME_AXIS, a list of groups

#: Each verdict as a symbol: Markdown (emoji, colour and shape), and terminal (one cell wide).
MARK: dict[str, str] = {REPRODUCES: "✅", DIVERGES: "❌", UNKNOWN: "❔"}
TERMINAL_MARK: dict[str, str] = {REPRODUCES: "✓", DIVERGES: "✗", UNKNOWN: "?"}
#: An entry of the grid that no cell has (the matrix excluded it).
NO_CELL = "·"
#: A grid axis that is no setting: the cell's name. It is added where the settings that vary do
#: not tell the cells apart, and always for groups of own runs (harness/report/own_runs.py),
#: whose name is what the user gave them.
NAME_AXIS = "name"
#: What each symbol means, in the order a legend lists them.
MEANING: dict[str, str] = {
    REPRODUCES: "reproduces",
    DIVERGES: "diverges",
    UNKNOWN: "unknown (a run failed, is missing or corrupt)",
}


@dataclass
class Grid:
    """One image's verdicts: ``entries[(row, column)]`` is the cell at ``rows[row]`` (values of
    ``row_axes``) and ``columns[column]`` (values of ``column_axes``); an entry no cell has is
    absent. ``constant`` holds the report settings the same in every cell of the image."""

    image: str
    row_axes: tuple[str, ...]
    column_axes: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    columns: list[tuple[Any, ...]]
    entries: dict[tuple[int, int], CellReport]
    constant: dict[str, Any]

    def verdict(self, row: int, column: int) -> str | None:
        cell = self.entries.get((row, column))
        return None if cell is None else cell.verdict

    def row_header(self) -> str:
        """The rows' axes, named: the first header cell."""
        return " · ".join(short(a) for a in self.row_axes)

    def row_label(self, row: int) -> str:
        if not self.row_axes:
            return "every cell" if len(self.entries) > 1 else "the cell"
        return " · ".join(value_text(v) for v in self.rows[row])

    def column_parts(self, column: int) -> list[str]:
        """The column's header, one ``short=value`` per column axis (``verdict`` where there
        is none): on one line in Markdown, stacked in the terminal and the heatmap."""
        if not self.column_axes:
            return ["verdict"]
        return [
            f"{short(a)}={value_text(v)}"
            for a, v in zip(self.column_axes, self.columns[column], strict=True)
        ]

    def column_label(self, column: int) -> str:
        return " · ".join(self.column_parts(column))

    @property
    def cells(self) -> list[CellReport]:
        """The image's cells, in the report's order (``make_grid`` enters them in it)."""
        return list(self.entries.values())

    @property
    def axes(self) -> list[str]:
        """The settings that vary on the image, in table order (``params.<key>`` in its place)."""
        chosen = (*self.row_axes, *self.column_axes)
        return [k for k in setting_keys(self.cells) if k in chosen]

    def counts(self) -> dict[str, int]:
        """Cells per verdict."""
        out = dict.fromkeys(MARK, 0)
        for cell in self.entries.values():
            out[cell.verdict] += 1
        return out

    def verdicts_shown(self) -> set[str | None]:
        """The verdicts the grid shows, None for an entry no cell has: what a legend lists."""
        shown: set[str | None] = {c.verdict for c in self.entries.values()}
        if len(self.entries) < len(self.rows) * len(self.columns):
            shown.add(None)
        return shown


def counted(verdict: str, n: int) -> str:
    """``n`` cells with ``verdict``, in words: "1 reproduces", "2 diverge", "1 unknown"."""
    if verdict == UNKNOWN:
        return f"{n} unknown"
    words: dict[str, str] = {REPRODUCES: "reproduce", DIVERGES: "diverge"}
    word = words[verdict]
    return f"{n} {word}s" if n == 1 else f"{n} {word}"


def short(axis: str) -> str:
    """A setting's short name in a grid: its cell-name label where it has one (``det``,
    ``alg``, ``ws``), else its name; ``<key>`` for ``params.<key>``."""
    return BY_NAME[axis].label if axis in BY_NAME and BY_NAME[axis].label else label(axis)


def value_text(value: Any) -> str:
    """A setting's value as a matrix file writes it: strings bare, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def constant(cells: list[CellReport]) -> dict[str, Any]:
    """The report settings (the image left out) with one value in every cell."""
    moving = set(varying(cells))
    out = {}
    for k in report_keys(cells):
        if k == "image" or k in moving or not cells:
            continue
        value = cells[0].settings.get(k)
        if k not in cells[0].settings and cells[0].settings.get("external") is True:
            continue  # own runs: a setting their records do not share is no default
        setting = BY_NAME.get(k)  # None for params.<key>
        # a folder written before the setting existed ran its default
        missing = value is None and setting is not None and not setting.nullable
        out[k] = setting.default if missing and setting is not None else value
    return out


#: The Markdown report's first screen (harness/report/markdown.py) holds, before its first
#: ``<details>``, 8 lines (title, counts, cost of determinism, the Cells heading, with their
#: blank lines) and per image 5 (sentence, blank, table header and separator, blank) plus the
#: grid's rows; to keep it under 60 lines, images share this many lines of rows.
_FIRST_SCREEN_ROWS = 59 - 8


def row_limit(images: int) -> int:
    """The rows a grid may have when the report shows ``images`` grids: ``MAX_ROWS`` for up to
    three images, fewer (and wider grids) past that, at least one."""
    images = max(1, images)
    return max(1, min(MAX_ROWS, (_FIRST_SCREEN_ROWS - 5 * images) // images))


def grids(report: Report) -> list[Grid]:
    """One grid per image, in the order the images first appear."""
    by_image: dict[str, list[CellReport]] = {}
    for cell in report.cells:
        by_image.setdefault(str(cell.settings.get("image")), []).append(cell)
    limit = row_limit(len(by_image))
    return [make_grid(image, cells, limit) for image, cells in by_image.items()]


def _setting(cell: CellReport, axis: str) -> Any:
    """A cell's value on a grid axis: a setting, or its name (``NAME_AXIS``)."""
    return cell.name if axis == NAME_AXIS else cell.settings.get(axis)


def grid_axes(cells: list[CellReport]) -> list[str]:
    """The grid's axes: the settings that vary, and the name where those do not tell the cells
    apart (two cells at one entry would hide one) or the cells are groups of own runs. A
    setting a group of own runs does not have (its runs disagree on it: the report says so
    under ``differences``) is no axis: it has no value to show."""
    own = any(c.settings.get("external") is True for c in cells)
    axes = varying(cells)
    if own:
        axes = [a for a in axes if all(a in c.settings for c in cells)]
    keys = {json.dumps([_setting(c, a) for a in axes]) for c in cells}
    if len(keys) < len(cells) or own:
        axes.append(NAME_AXIS)
    return axes


def make_grid(image: str, cells: list[CellReport], max_rows: int = MAX_ROWS) -> Grid:
    axes = grid_axes(cells)
    rank = _value_ranks(cells, axes)
    row_axes, column_axes = _split(cells, axes, rank, max_rows)

    def ordered(keys: Iterable[tuple[Any, ...]], along: tuple[str, ...]) -> list[tuple]:
        unique = {json.dumps(k): k for k in keys}.values()
        return sorted(
            unique, key=lambda k: [rank[a][json.dumps(v)] for a, v in zip(along, k, strict=True)]
        )

    rows = ordered((_values(c, row_axes) for c in cells), row_axes)
    columns = ordered((_values(c, column_axes) for c in cells), column_axes)
    row_index = {json.dumps(r): i for i, r in enumerate(rows)}
    column_index = {json.dumps(c): i for i, c in enumerate(columns)}
    entries = {
        (
            row_index[json.dumps(_values(c, row_axes))],
            column_index[json.dumps(_values(c, column_axes))],
        ): c
        for c in cells
    }
    return Grid(image, row_axes, column_axes, rows, columns, entries, constant(cells))


def _values(cell: CellReport, axes: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(_setting(cell, a) for a in axes)


def _value_ranks(cells: list[CellReport], axes: list[str]) -> dict[str, dict[str, int]]:
    """Each axis's values in the order they first appear (the matrix file's order)."""
    ranks: dict[str, dict[str, int]] = {}
    for axis in axes:
        seen: dict[str, int] = {}
        for c in cells:
            seen.setdefault(json.dumps(_setting(c, axis)), len(seen))
        ranks[axis] = seen
    return ranks


def _split(
    cells: list[CellReport], axes: list[str], rank: dict[str, dict[str, int]], max_rows: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(row axes, column axes): the split with fewest rows over ``max_rows`` (none: one row is
    always possible), then fewest columns over ``MAX_COLUMNS``, then fewest entries in all
    (fewest empty ones), then fewest columns, then the most of ``_ROW_FIRST`` down the side."""
    coded = [tuple(rank[a][json.dumps(_setting(c, a))] for a in axes) for c in cells]

    def distinct(chosen: tuple[int, ...]) -> int:
        return len({tuple(code[i] for i in chosen) for code in coded})

    if len(axes) > _SEARCH_LIMIT:
        down: list[int] = []
        for i in range(len(axes)):
            if distinct((*down, i)) > max_rows:
                break
            down.append(i)
        splits: Iterable[tuple[int, ...]] = [tuple(down)]
    else:
        splits = itertools.chain.from_iterable(
            itertools.combinations(range(len(axes)), n) for n in range(len(axes) + 1)
        )

    def score(down: tuple[int, ...]) -> tuple[int, int, int, int, int]:
        across = tuple(i for i in range(len(axes)) if i not in down)
        n_rows, n_columns = distinct(down), distinct(across)
        preferred = sum(axes[i] in _ROW_FIRST for i in down)
        return (
            max(0, n_rows - max_rows),
            max(0, n_columns - MAX_COLUMNS),
            n_rows * n_columns,
            n_columns,
            -preferred,
        )

    best = min(splits, key=score)
    return (
        tuple(axes[i] for i in best),
        tuple(a for i, a in enumerate(axes) if i not in best),
    )
