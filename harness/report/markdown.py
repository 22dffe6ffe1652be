"""The GitHub-flavored Markdown report. User text (cell settings, error messages, logs) is
escaped so it cannot break a table or inject HTML or links."""

from __future__ import annotations

import re
from typing import Any

from harness.contract.settings import REPORT_SETTINGS, TWIN
from harness.report.flatten import cell_row
from harness.report.model import CellReport, Divergence, Report
from harness.report.summaries import fmt_setting

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def escape(text: Any) -> str:
    """Safe inside a table cell: no pipes, HTML, links or line breaks survive as markup."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _SPECIAL.sub(r"\\\1", s)
    return " ".join(s.split())


def fence(text: str) -> str:
    """A code block whose fence is longer than any backtick run inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}text\n{text}\n{ticks}"


def yes_no(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "**no**")


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _divergence(d: Divergence | None) -> str:
    if d is None:
        return "—"
    if d.shape_differs and d.max_abs_delta is None:
        return "shapes differ"
    where = f"{d.epoch} / {d.batch} / {d.step}" if d.epoch is not None else f"step {d.step}"
    return where


def table_lines(header: list[str], body: list[list[str]]) -> list[str]:
    """A GFM table; the cells must already be escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return lines


def render_markdown(report: Report) -> bytes:
    """The report, one section after another."""
    sections = (
        _title,
        _summaries,
        _images,
        _cells,
        _comparisons,
        _costs,
        _failures,
    )
    out: list[str] = []
    for section in sections:
        out += section(report)
    out.append("")
    return "\n".join(out).encode("utf-8")


def _title(report: Report) -> list[str]:
    total = len(report.cells)
    good = sum(1 for c in report.cells if c.reproducible)
    return [
        f"# Reproducibility report: {escape(report.name)}",
        "",
        f"{good} of {total} cells reproduce bit for bit. A cell reproduces when every repeat "
        "finished with a bit-identical loss trajectory and bit-identical final weights.",
        "",
    ]


def _summaries(report: Report) -> list[str]:
    out = ["## Summary per image", ""]
    out += [f"- **{escape(image)}**: {escape(text)}" for image, text in report.summaries.items()]
    return out + [""]


def _images(report: Report) -> list[str]:
    if not report.images:
        return []
    body = [
        [
            escape(i.image),
            ", ".join(f"`{d}`" for d in i.digests)
            or ("— (this machine's Python)" if i.image == "local" else "—"),
            ", ".join(f"`{d}`" for d in i.image_ids) or "—",
            escape(", ".join(i.torch)) or "—",
            str(i.cells),
        ]
        for i in report.images
    ]
    return [
        "## Images",
        "",
        "The digest pins what ran: a tag can move, a digest cannot.",
        "",
        *table_lines(["image", "digest", "image id", "torch", "cells"], body),
        "",
    ]


#: The cells table's columns after the cell and its settings.
_CELL_COLUMNS = [
    "repeats",
    "distinct",
    "reproducible",
    "divergence (epoch / batch / step)",
    "max abs Δloss",
    "ULPs",
    "init equal",
    "final equal",
    "val acc",
    "s/epoch",
]


def _cells(report: Report) -> list[str]:
    out = [
        "## Cells",
        "",
        "Divergence is the first (epoch / batch / global step), 0-based, where a repeat's "
        "losses differ from the first repeat's; |Δloss| and ULPs are the largest over all "
        "steps and repeats.",
        "",
    ]
    header = ["cell", *REPORT_SETTINGS, *_CELL_COLUMNS]
    out += table_lines(header, [_cell_cells(c) for c in report.cells]) + [""]
    unplotted = [c for c in report.cells if c.reproducible is False and not c.plot]
    if unplotted and any(c.plot for c in report.cells):
        out += [
            f"{len(unplotted)} cells that do not reproduce have no plot (plots are drawn for "
            "the first cells only: `harness report DIR --max-plots 0` draws all); their "
            "losses.npy files hold the data.",
            "",
        ]
    return out


def _cell_cells(cell: CellReport) -> list[str]:
    """One row of the cells table, escaped."""
    row = cell_row(cell)
    acc = "—"
    if cell.val_acc_mean is not None:
        acc = f"{cell.val_acc_mean:.4f}"
        acc += f" ± {cell.val_acc_sd:.4f}" if cell.val_acc_sd is not None else ""
    name = escape(cell.name)
    if cell.plot:
        name += f" ([plot]({cell.plot}))"
    repeats = str(cell.repeats)
    if cell.ok_runs != cell.repeats:
        repeats = f"{cell.ok_runs}/{cell.repeats}"
    return [
        name,
        *(escape(row[k]) for k in REPORT_SETTINGS),
        repeats,
        str(cell.distinct_trajectories),
        yes_no(cell.reproducible),
        _divergence(cell.first_divergence),
        _num(row["max_abs_delta"], ".3g"),
        "—" if row["max_ulps"] is None else str(row["max_ulps"]),
        yes_no(cell.init_equal),
        yes_no(cell.final_equal),
        acc,
        _num(cell.seconds_per_epoch, ".2f"),
    ]


def _comparisons(report: Report) -> list[str]:
    out = ["## Across images and GPU counts", ""]
    if not report.comparisons:
        out.append("No two cells differ only in their image or only in their GPU count.")
        return out + [""]
    body = []
    for comp in report.comparisons:
        varying = ", ".join(f"{escape(v)}: {escape(n)}" for v, n in comp.cells)
        body.append([escape(comp.axis), varying, yes_no(comp.equal), _divergence(comp.divergence)])
    header = ["axis", "cells (value: cell)", "trajectories equal", "first divergence"]
    return out + table_lines(header, body) + [""]


def _costs(report: Report) -> list[str]:
    out = ["## Cost of determinism", ""]
    if not report.costs:
        twin = ", ".join(fmt_setting(k, v) for k, v in TWIN.items())
        out.append(
            f"No cell has a nondeterministic twin in this matrix (the same settings with {twin})."
        )
        return out + [""]
    body = [
        [
            escape(c.cell),
            escape(c.twin),
            _num(c.seconds_per_epoch, ".2f"),
            _num(c.twin_seconds_per_epoch, ".2f"),
            _num(c.ratio, ".2f"),
        ]
        for c in report.costs
    ]
    header = ["cell", "nondeterministic twin", "s/epoch", "twin s/epoch", "ratio"]
    return out + table_lines(header, body) + [""]


def _failures(report: Report) -> list[str]:
    out = ["## Failed runs", ""]
    if not report.failures:
        out.append("None.")
    for f in report.failures:
        out += [
            f"### {escape(f.cell)} repeat {f.repeat}: {escape(f.type)}",
            "",
            escape(f.message) or "(no message)",
            "",
        ]
        if f.log_tail:
            out += ["<details><summary>log tail</summary>", "", fence(f.log_tail), ""]
            out += ["</details>", ""]
    return out
