"""The GitHub-flavored Markdown report. Everything taken from run records, logs, manifests and
provenance is escaped or validated (harness/report/inert_text.py) so it cannot break a table, inject
HTML, make a link, carry control characters, or close a code block: cell names and settings,
error messages, log tails, torch versions; image digests and ids are shown only when they
match their patterns."""

from __future__ import annotations

import statistics
from typing import Any
from urllib.parse import quote

from harness.contract.machine import limits_text
from harness.contract.settings import TWIN
from harness.diagnose.words import markdown as diagnosis_markdown
from harness.report.grid import MARK, MEANING, NO_CELL, Grid, constant, grids
from harness.report.heatmap_layout import title as heatmap_title
from harness.report.machines import MachineInfo
from harness.report.markdown_answer import answer_lead, answer_section
from harness.report.markdown_blocks import escape, html_text, table_lines
from harness.report.markdown_cells import cells_section, settings_text
from harness.report.markdown_sections import (
    comparisons_section,
    costs_section,
    differences_section,
    failures_section,
    images_section,
    merge_section,
    unknown_section,
)
from harness.report.report_data import DIVERGES, OWN_RUNS, REPRODUCES, Report
from harness.report.summaries import fmt_setting

#: The long sections after the first screen, in their order.
_SECTIONS = (
    differences_section,
    unknown_section,
    comparisons_section,
    costs_section,
    images_section,
    merge_section,
    failures_section,
)


def render_markdown(report: Report) -> bytes:
    """The report: first what a reader takes in at a glance (the counts, each image's summary
    sentence and verdict grid, the cost of determinism, the answer's lines), then the long
    sections, folded (the answer's tables and code first).

    Plots are linked and the grid heatmaps embedded only where ``write_plots`` and
    ``write_grid_plots`` drew them (``cell.plot``, ``report.grid_plots``): the GitHub job
    summary, rendered from ``analyze`` alone, has none, since it cannot show a file of the
    results folder."""
    grid_list = grids(report)
    shared = constant(report.cells)
    out = _title(report, shared)
    for grid in grid_list:
        out += _image_grid(report, grid)
    out += _cost_line(report)
    out += answer_lead(report)
    out += answer_section(report)  # the first fold: the answer's tables and code
    out += cells_section(report, grid_list, shared)
    out += _heatmaps(report, grid_list)
    out += _diagnoses(report)
    out += _user_seeds(report)
    for section in _SECTIONS:
        out += section(report)
    out.append("")
    return "\n".join(out).encode("utf-8")


def _title(report: Report, shared: dict[str, Any]) -> list[str]:
    """The counts, the legend and ``shared``, the settings every cell has."""
    total = len(report.cells)
    good = sum(1 for c in report.cells if c.verdict == REPRODUCES)
    bad = sum(1 for c in report.cells if c.verdict == DIVERGES)
    unknown = total - good - bad
    legend = ", ".join(f"{MARK[v]} {MEANING[v]}" for v in MARK)
    line = (
        f"**{good} of {total} cells reproduce bit for bit**, {bad} diverge, {unknown} are "
        f"unknown. {legend}, {NO_CELL} no such cell in the matrix."
    )
    if report.source == OWN_RUNS:  # each cell is a group of runs of one name
        line = (
            f"Your own runs (ReproRecorder), grouped by name: **{good} of {total} groups "
            f"reproduce bit for bit**, {bad} diverge, {unknown} are unknown. {legend}."
        )
    if shared:
        who = "The runs of every group have" if report.source == OWN_RUNS else "Every cell has"
        line += f" {who} {escape(settings_text(shared))}."
    return [f"# Reproducibility report: {escape(report.name)}", "", line, "", *_machines(report)]


def _machine_text(m: MachineInfo) -> str:
    parts = [m.cpu, f"CPU capability {m.capability or 'unknown'}"]
    parts += [f"ISA limits {limits_text(m.isa_limits)}"] if m.isa_limits else []
    parts += [f"GPUs {', '.join(m.gpus)}"] if m.gpus else []
    return ", ".join(parts)


def _machines(report: Report) -> list[str]:
    """The machines that ran the runs: one line for one, a table for more (the bits of CPU
    training depend on the machine: docs/results.md, "Machines")."""
    if not report.machines:
        return []
    if len(report.machines) == 1:
        (m,) = report.machines
        return [f"**Machine** `{m.fingerprint}`: {escape(_machine_text(m))}.", ""]
    header = ["machine", "CPU", "capability", "ISA limits", "GPUs", "runs", "cells"]
    body = [
        [
            f"`{m.fingerprint}`",
            escape(m.cpu),
            escape(m.capability or "unknown"),
            escape(limits_text(m.isa_limits)),
            escape(", ".join(m.gpus) or "none"),
            str(m.runs),
            str(m.cells),
        ]
        for m in report.machines
    ]
    line = (
        f"**{len(report.machines)} machines ran these runs** (a machine is the CPU and GPUs "
        "with the code path in force: a `cpu_isa` ceiling or an exported ISA limit makes "
        "another): runs compared across them are marked, since CPU and GPU kernels, and so "
        "the bits, depend on the machine."
    )
    return [line, "", *table_lines(header, body), ""]


def _image_grid(report: Report, grid: Grid) -> list[str]:
    """The image's summary sentence and its verdict grid."""
    sentence = report.summaries.get(grid.image, "")
    header = [
        escape(grid.row_header()),
        *(escape(grid.column_label(c)) for c in range(len(grid.columns))),
    ]
    body = [
        [
            escape(grid.row_label(r)),
            *(MARK.get(grid.verdict(r, c) or "", NO_CELL) for c in range(len(grid.columns))),
        ]
        for r in range(len(grid.rows))
    ]
    return [escape(sentence), "", *table_lines(header, body), ""]


def _cost_line(report: Report) -> list[str]:
    """The cost of determinism in one paragraph: per image, the median ratio of seconds per
    epoch against the nondeterministic twin (the table is under Cost of determinism)."""
    twin = ", ".join(fmt_setting(k, v) for k, v in TWIN.items())
    if not report.costs and report.source == OWN_RUNS:
        return []  # own runs are no matrix: a group without a twin is no news
    if not report.costs:
        return [
            f"**Cost of determinism**: no cell has a nondeterministic twin in this matrix (the "
            f"same settings with {escape(twin)}).",
            "",
        ]
    image_of = {c.name: str(c.settings.get("image")) for c in report.cells}
    ratios: dict[str, list[float]] = {}
    for cost in report.costs:
        values = ratios.setdefault(image_of.get(cost.cell, "?"), [])
        if cost.ratio is not None:
            values.append(cost.ratio)
    parts = []
    for image, values in ratios.items():
        if not values:
            parts.append(f"on {escape(image)}, no cell and its twin both have a time")
            continue
        spread = f" (×{min(values):.2f} to ×{max(values):.2f})" if len(values) > 1 else ""
        parts.append(
            f"on {escape(image)}, ×{statistics.median(values):.2f} the twin's time, the median of "
            f"{len(values)} cells{spread}"
        )
    return [
        f"**Cost of determinism** (seconds per epoch against the same settings with "
        f"{escape(twin)}): {'; '.join(parts)}.",
        "",
    ]


def _heatmaps(report: Report, grid_list: list[Grid]) -> list[str]:
    drawn = [
        (g.image, report.grid_plots[g.image]) for g in grid_list if g.image in report.grid_plots
    ]
    if not drawn:
        return []
    out = [
        "## Heatmaps",
        "",
        "The grids above as pictures (blue: reproduces, vermillion: diverges, grey: unknown).",
        "",
    ]
    titles = {g.image: ": ".join(heatmap_title(g)) for g in grid_list}
    for image, path in drawn:
        out += [f"![verdict grid of {escape(titles[image])}]({quote(path)})", ""]
    return out


def _diagnoses(report: Report) -> list[str]:
    """Each ``harness diagnose`` of the folder, where its cells' rows link to."""
    if not report.diagnoses:
        return []
    out = ["## Diagnoses", ""]
    for entry in report.diagnoses:
        section = diagnosis_markdown(entry.title, entry.sentences, entry.op, entry.anchor)
        out += [*section.splitlines(), "", f"Files: `{html_text(entry.path)}`.", ""]
    return out


def _user_seeds(report: Report) -> list[str]:
    """The cells whose build function seeded torch itself (``provenance.user_seed``): their
    verdict says nothing about the placement. Nothing where none did."""
    cells = [c for c in report.cells if any(r.user_seed is not None for r in c.runs)]
    if not cells:
        return []
    items = []
    for c in cells:
        seeds = ", ".join(sorted({str(r.user_seed) for r in c.runs if r.user_seed is not None}))
        placement = escape(c.settings.get("placement", "?"))
        items.append(f"- **{escape(c.name)}** (placement {placement}): torch's seed became {seeds}")
    return [
        "## Your build function seeds the generator itself",
        "",
        "In these cells your build function seeds the generator itself (`seed_everything`, "
        "`manual_seed`), so placement has no effect there: a placement of `none` reproduces "
        "because of your seed. Remove that seeding to test the placement.",
        "",
        *items,
        "",
    ]
