"""The answer in the terminal: what ``harness run`` and ``harness report`` print at the end, so
the user learns it without opening a file: per image, the summary sentence and the verdict grid
(grid.py's ``Grid``, the same one the Markdown and the heatmap draw), then a legend, then the
answer's lines (what changes the bits, the recipe per image, the controls).

Three modes, as the progress display has (harness/run/progress.py): ``rich`` (a ``rich`` table per
image, entries coloured), ``plain`` (aligned text, for CI logs and pipes) and ``quiet`` (nothing).
Every string taken from the report (image names, sentences, setting values: text from run
records and matrix files) goes through ``harness.text.terminal_safe``, and rich draws it as
``Text``, never as markup. A stream that cannot encode the marks (an ASCII locale) gets ASCII
marks, and any other character it cannot encode becomes ``?``: the summary never crashes the end
of a long run.
"""

from __future__ import annotations

import os
import sys
import textwrap
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from harness.report.answer_text import lead_lines
from harness.report.grid import MEANING, NO_CELL, TERMINAL_MARK, Grid, grids, short, value_text
from harness.report.report_data import DIVERGES, REPRODUCES, UNKNOWN, Report
from harness.text import terminal_safe

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

MODES = ("rich", "plain", "quiet")
#: The marks where the stream cannot encode ✓ ✗ ·: still one column wide, still distinct.
ASCII_MARK: dict[str, str] = {REPRODUCES: "o", DIVERGES: "X", UNKNOWN: "?"}
ASCII_NO_CELL = "."
#: What the legend says for "no cell here" (the matrix excluded it).
NO_CELL_MEANING = "no such cell"
#: Where the stream is not a terminal, and the most a terminal's width counts for: a sentence
#: wider than this reads badly.
WIDTH = 100
#: Between two columns of a plain grid.
GAP = "  "
#: Colour-blind-safe (blue against orange), and bold so that the shape carries it too.
STYLE: dict[str, str] = {REPRODUCES: "bold blue", DIVERGES: "bold dark_orange", UNKNOWN: "dim"}


def resolve_mode(mode: str | None, stream: TextIO) -> str:
    """``None``: rich where ``stream`` is a terminal, plain otherwise (as the progress does)."""
    if mode is not None:
        return mode
    isatty = getattr(stream, "isatty", None)
    return "rich" if isatty is not None and isatty() else "plain"


def print_summary(
    report: Report,
    mode: str | None,
    stream: TextIO | None = None,
    report_path: str | Path | None = None,
) -> None:
    """Print each image's sentence and grid, the legend and (given) ``report: PATH`` to
    ``stream`` (default stdout) in ``mode`` (rich | plain | quiet | None: see
    ``resolve_mode``)."""
    out = stream or sys.stdout
    mode = resolve_mode(mode, out)
    if mode == "quiet":
        return
    ascii_only = not can_encode(out, "".join(TERMINAL_MARK.values()) + NO_CELL)
    if mode == "rich":
        _print_rich(report, out, report_path, ascii_only)
    else:
        width = min(WIDTH, _terminal_width(out) or WIDTH)
        lines = render_plain(report, width=width, ascii_only=ascii_only, report_path=report_path)
        out.write("".join(_fit(out, line) + "\n" for line in lines))
    out.flush()


def render_plain(
    report: Report,
    *,
    width: int = WIDTH,
    ascii_only: bool = False,
    report_path: str | Path | None = None,
) -> list[str]:
    """The plain summary as lines: per image the sentence (wrapped to ``width``), the grid and
    a blank line; then the legend (the marks that occur) and ``report: PATH``."""
    marks, empty = _marks(ascii_only)
    lines: list[str] = []
    used: set[str | None] = set()
    for grid in grids(report):
        lines += sentence_lines(report, grid.image, width=width, ascii_only=ascii_only)
        lines.append("")
        lines += grid_lines(grid, ascii_only=ascii_only)
        lines.append("")
        used |= grid.verdicts_shown()
    legend = [f"{marks[v]} {MEANING[v]}" for v in TERMINAL_MARK if v in used]
    if None in used:
        legend.append(f"{empty} {NO_CELL_MEANING}")
    names = abbreviations(report)
    if names:
        lines += textwrap.wrap(names, width)
    if legend:
        lines.append(GAP.join(legend))
    machines = machines_line(report)
    if machines:
        lines += textwrap.wrap(machines, width)
    for line in lead_lines(report.answer):
        lines += textwrap.wrap(line, width, subsequent_indent="  ")
    if report_path is not None:
        lines.append(f"report: {report_path}")
    return [terminal_safe(line) for line in lines]


def abbreviations(report: Report) -> str | None:
    """The grids' short axis names spelled out (``t = threads, det = cudnn_deterministic``):
    the grid header uses cell-name labels, which nobody can guess; None when none is short."""
    seen: dict[str, str] = {}
    for grid in grids(report):
        for axis in (*grid.row_axes, *grid.column_axes):
            if axis and short(axis) != axis:
                seen.setdefault(short(axis), axis)
    if not seen:
        return None
    return "abbreviations: " + ", ".join(f"{k} = {v}" for k, v in seen.items())


def machines_line(report: Report) -> str | None:
    """When more than one machine ran the runs: which (fingerprint and CPU capability), and how
    many cells compare repeats across them; None for one machine (the report names it)."""
    if len(report.machines) < 2:
        return None
    listed = ", ".join(
        f"{m.fingerprint} (CPU capability {m.capability or 'unknown'})" for m in report.machines
    )
    moved = sum(1 for c in report.cells if c.machines_differ)
    across = f"; {moved} of {len(report.cells)} cells compare repeats across them" if moved else ""
    return f"{len(report.machines)} machines ran these runs: {listed}{across}."


def sentence_lines(report: Report, image: str, *, width: int, ascii_only: bool) -> list[str]:
    """``image``'s summary sentence wrapped to ``width``, each line made safe after the wrap
    (a line the wrap starts with ``::`` is a workflow command again)."""
    sentence = terminal_safe(report.summaries.get(image, f"On {image}:"))
    wrapped = textwrap.wrap(_text(sentence, ascii_only), width) or [""]
    return [terminal_safe(line) for line in wrapped]


def grid_lines(grid: Grid, *, ascii_only: bool = False) -> list[str]:
    """One grid as aligned text. The column headers stack one axis per line, each line led by
    the axis's short name (right-aligned over the row labels); the row axes' names head the row
    labels; each entry is its verdict's mark (or the no-cell mark), centred in its column. A
    grid without column axes has one column, ``verdict``, on the row header's line."""
    marks, empty = _marks(ascii_only)

    def safe(text: str) -> str:
        return _text(terminal_safe(text), ascii_only)

    labels = [safe(grid.row_label(r)) for r in range(len(grid.rows))]
    row_header = safe(grid.row_header())
    if grid.column_axes:
        header = [
            (safe(short(axis)), [safe(value_text(column[i])) for column in grid.columns])
            for i, axis in enumerate(grid.column_axes)
        ]
    else:
        header = [(row_header, [safe(grid.column_label(c)) for c in range(len(grid.columns))])]
    widths = [
        max([1, *(_width(values[c]) for _, values in header)]) for c in range(len(grid.columns))
    ]
    label_width = max(_width(t) for t in [row_header, *labels, *(name for name, _ in header)])

    def line(label: str, entries: Iterable[str], *, right: bool = False) -> str:
        pad = " " * (label_width - _width(label))
        lead = pad + label if right else label + pad
        cells = (_center(e, w) for e, w in zip(entries, widths, strict=True))
        return (lead + GAP + GAP.join(cells)).rstrip()

    if grid.column_axes:
        out = [line(name, values, right=True) for name, values in header]
        if row_header:
            out.append(row_header)
    else:
        out = [line(row_header, header[0][1])]
    for r, label in enumerate(labels):
        verdicts = (grid.verdict(r, c) for c in range(len(grid.columns)))
        out.append(line(label, (empty if v is None else marks[v] for v in verdicts)))
    return out


def can_encode(stream: TextIO, text: str) -> bool:
    """Whether ``stream`` can write ``text``: decided from its ``encoding`` (none, as a
    ``StringIO`` has: it holds str, so yes)."""
    encoding = getattr(stream, "encoding", None)
    if not encoding:
        return True
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _print_rich(
    report: Report, out: TextIO, report_path: str | Path | None, ascii_only: bool
) -> None:
    """A ``rich`` table per image, after its sentence; all report text as ``Text``."""
    from rich.console import Console
    from rich.text import Text

    console = Console(file=out, highlight=False, markup=False, emoji=False)
    marks, empty = _marks(ascii_only)

    def safe(text: str) -> Text:
        return Text(_fit(out, _text(terminal_safe(text), ascii_only)))

    used: set[str | None] = set()
    for grid in grids(report):
        # wrapped here, not by rich: each line checked after the wrap, then printed as it is
        width = min(WIDTH, console.width)
        for line in sentence_lines(report, grid.image, width=width, ascii_only=ascii_only):
            console.print(Text(_fit(out, line)), soft_wrap=True)
        console.print()
        table = _rich_table(grid, safe, marks, empty, named=True)
        if _natural_width(console, table) > console.width:
            # too wide with ``det=true`` headers: rich would cut them to ``de…``; the values
            # alone, their axes named once under the table
            console.print(_rich_table(grid, safe, marks, empty, named=False))
            names = safe(", ".join(short(a) for a in grid.column_axes))
            console.print(Text("columns, top to bottom: ").append_text(names), soft_wrap=True)
        else:
            console.print(table)
        console.print()
        used |= grid.verdicts_shown()
    legend = Text()
    for verdict in TERMINAL_MARK:
        if verdict in used:
            legend.append(marks[verdict], style=STYLE[verdict])
            legend.append(f" {MEANING[verdict]}{GAP}")
    if None in used:
        legend.append(empty, style="dim")
        legend.append(f" {NO_CELL_MEANING}")
    legend.rstrip()
    abbreviated = abbreviations(report)
    if abbreviated:
        console.print(safe(abbreviated), soft_wrap=True)
    if legend.plain:
        console.print(legend, soft_wrap=True)
    machines = machines_line(report)
    if machines:
        console.print(safe(machines), soft_wrap=True)
    for line in lead_lines(report.answer):
        console.print(safe(line), soft_wrap=True)
    if report_path is not None:
        console.print(safe(f"report: {report_path}"), soft_wrap=True)


def _rich_table(
    grid: Grid, safe: Callable[[str], Text], marks: dict[str, str], empty: str, *, named: bool
) -> Table:
    """One grid as a ``rich`` table: a column per row axis, then a column per grid column,
    its header one ``short=value`` per line (``named``; else the values alone), entries
    coloured by verdict."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    title = safe(grid.image)
    title.no_wrap = True  # a wrapped line could start with ``::``: a workflow command
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        collapse_padding=True,
        pad_edge=False,
    )
    for axis in grid.row_axes or ("",):
        table.add_column(safe(short(axis)) if axis else Text(""), no_wrap=True)
    for c, column in enumerate(grid.columns):
        if named or not grid.column_axes:
            head = grid.column_parts(c)
        else:
            head = [value_text(v) for v in column]
        table.add_column(Text("\n").join(safe(h) for h in head), justify="center", no_wrap=True)
    for r, row in enumerate(grid.rows):
        labels = [safe(value_text(v)) for v in row] if grid.row_axes else [safe(grid.row_label(r))]
        entries = []
        for c in range(len(grid.columns)):
            verdict = grid.verdict(r, c)
            if verdict is None:
                entries.append(Text(empty, style="dim"))
            else:
                entries.append(Text(marks[verdict], style=STYLE[verdict]))
        table.add_row(*labels, *entries)
    return table


def _marks(ascii_only: bool) -> tuple[dict[str, str], str]:
    return (ASCII_MARK, ASCII_NO_CELL) if ascii_only else (TERMINAL_MARK, NO_CELL)


def _text(text: str, ascii_only: bool) -> str:
    """Where ASCII marks are used, grid.py's ``·`` between values reads as ``/``."""
    return text.replace(" · ", " / ") if ascii_only else text


def _fit(stream: TextIO, text: str) -> str:
    """``text`` with what ``stream`` cannot encode replaced (``?``)."""
    encoding = getattr(stream, "encoding", None)
    if not encoding:
        return text
    try:
        return text.encode(encoding, "replace").decode(encoding)
    except LookupError:
        return text


def _terminal_width(stream: TextIO) -> int | None:
    """The terminal's width where ``stream`` is one, else None."""
    try:
        if not stream.isatty():
            return None
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None


def _width(text: str) -> int:
    """Columns ``text`` takes on a terminal: wide (East Asian) characters two, combining ones
    none."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def _center(text: str, width: int) -> str:
    pad = max(0, width - _width(text))
    return " " * (pad // 2) + text + " " * (pad - pad // 2)


def _natural_width(console: Console, table: Table) -> int:
    """The width ``table`` takes uncut (rich clamps a measure to the console's width)."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(1 << 16), table).maximum
