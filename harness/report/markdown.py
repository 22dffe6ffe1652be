"""The GitHub-flavored Markdown report. Everything taken from run records, logs, manifests and
provenance is escaped or validated (harness/report/inert_text.py) so it cannot break a table, inject
HTML, make a link, carry control characters, or close a code block: cell names and settings,
error messages, log tails, torch versions; image digests and ids are shown only when they
match their patterns."""

from __future__ import annotations

import html
import re
import statistics
from typing import Any
from urllib.parse import quote

from harness.contract.machine import limits_text
from harness.contract.settings import TWIN
from harness.diagnose.words import markdown as diagnosis_markdown
from harness.report import inert_text as inert
from harness.report.flatten import cell_row
from harness.report.grid import MARK, MEANING, NO_CELL, Grid, constant, counted, grids
from harness.report.heatmap import title as heatmap_title
from harness.report.machines import MACHINE_CAVEAT, MachineInfo
from harness.report.own_runs import values_text
from harness.report.report_data import (
    DIVERGES,
    OWN_RUNS,
    REPRODUCES,
    UNKNOWN,
    CellReport,
    Divergence,
    Report,
)
from harness.report.summaries import CUBLAS_PROMISE, PARAM_PREFIX, fmt_setting, label

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def escape(text: Any) -> str:
    """Safe inside a table cell: no pipes, HTML, links, autolinks, control characters or line
    breaks survive as markup, and the text never starts a workflow command."""
    s = inert.strip_controls(str(text))
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _SPECIAL.sub(r"\\\1", s)
    s = " ".join(s.split())
    return inert.defuse_commands(inert.neutralise_links(s))


def fence(text: str) -> str:
    """A code block of ``text`` (control characters stripped) whose fence is longer than any
    backtick run inside it, so nothing in it can close it; no line of it starts a workflow
    command."""
    text = inert.defuse_commands(inert.strip_controls(text, multiline=True))
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}text\n{text}\n{ticks}"


def code(value: str | None, kind: str = "digest") -> str:
    """A digest (``kind`` "digest") or image id ("id") as inline code when it matches its
    pattern, ``(invalid)`` when it does not, — when there is none."""
    checked = inert.image_digest(value) if kind == "digest" else inert.image_id(value)
    if checked is None:
        return "—"
    return inert.INVALID if checked == inert.INVALID else f"`{checked}`"


def yes_no(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "**no**")


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _delta(delta: float | None, ulps: int | None) -> str:
    if delta is None:
        return "—"
    return _num(delta, ".3g") + (f" ({ulps})" if ulps is not None else "")


def _divergence(d: Divergence | None) -> str:
    if d is None:
        return "—"
    if d.shape_differs and d.max_abs_delta is None:
        return "shapes differ"
    where = f"{d.epoch} / {d.batch} / {d.step}" if d.epoch is not None else f"step {d.step}"
    return where


def _cell_divergence(cell: CellReport) -> str:
    """The cells table's divergence: the losses', with the weights' first divergent step added
    only where it says more (an earlier step, or weights that differ under equal losses)."""
    text = _divergence(cell.first_divergence)
    w = cell.weights_divergence
    first = cell.first_divergence
    if w is None or (first is not None and first.step == w.step):
        return text
    if first is None:
        return f"weights: step {w.step}"
    return f"{text} (weights: step {w.step})"


def table_lines(header: list[str], body: list[list[str]]) -> list[str]:
    """A GFM table; the cells must already be escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return lines


def render_markdown(report: Report) -> bytes:
    """The report: first what a reader takes in at a glance (the counts, each image's summary
    sentence and verdict grid, the cost of determinism), then the long sections, folded.

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
    out += _cells(report, grid_list, shared)
    out += _heatmaps(report, grid_list)
    out += _diagnoses(report)
    out += _user_seeds(report)
    for section in (_differences, _unknown, _comparisons, _costs, _images, _merge, _failures):
        out += section(report)
    out.append("")
    return "\n".join(out).encode("utf-8")


#: A cells table of more rows than this, and any other long table, is folded.
OPEN_ROWS = 12


def fold(summary: str, body: list[str], *, open_: bool = False) -> list[str]:
    """``body`` (Markdown) under a ``<details>`` whose ``summary`` is plain text (HTML-escaped
    here: a summary line is raw HTML, where Markdown escapes would show)."""
    tag = "<details open>" if open_ else "<details>"
    return [f"{tag}<summary>{html_text(summary)}</summary>", "", *body, "", "</details>", ""]


def html_text(text: Any) -> str:
    """One line of text, inert in raw HTML: no tags, no controls, no autolinks."""
    s = " ".join(inert.strip_controls(str(text)).split())
    s = html.escape(s, quote=False).replace("[", "&#91;").replace("]", "&#93;")
    return inert.neutralise_links(s)


def _settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(fmt_setting(k, v) for k, v in settings.items())


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
        line += f" {who} {escape(_settings_text(shared))}."
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


def _images(report: Report) -> list[str]:
    if not report.images:
        return []
    body = [
        [
            escape(i.image),
            ", ".join(code(d) for d in i.digests)
            or ("— (this machine's Python)" if i.image == "local" else "—"),
            ", ".join(code(d, "id") for d in i.image_ids) or "—",
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


#: The cells table's columns after the verdict, the divergence and the varying settings.
_CELL_COLUMNS = [
    "repeats",
    "distinct",
    "max abs Δloss (ULPs)",
    "weights equal (init / final)",
    "val acc",
    "s/epoch",
    "cell",
]
DIVERGENCE_COLUMN = "divergence (epoch / batch / step)"


def _cells(report: Report, grid_list: list[Grid], shared: dict[str, Any]) -> list[str]:
    """Per image, every cell: the verdict first, then where it diverges, then only the
    settings that vary on that image (the others are listed once above: ``shared`` across the
    matrix, the image's own above its table)."""
    out = ["## Cells", ""]
    for grid in grid_list:
        cells, moving = grid.cells, grid.axes
        body = []
        local = {k: v for k, v in grid.constant.items() if k not in shared}
        if local:
            body += [f"Every cell on this image has {escape(_settings_text(local))}.", ""]
        header = ["verdict", DIVERGENCE_COLUMN, *map(_column, moving), *_CELL_COLUMNS]
        links = diagnosis_links(report)
        body += table_lines(header, [_cell_cells(c, moving, links) for c in cells])
        counts = ", ".join(counted(v, n) for v, n in grid.counts().items() if n)
        summary = f"{len(cells)} {'cell' if len(cells) == 1 else 'cells'} on {grid.image}: {counts}"
        out += fold(summary, body, open_=len(cells) <= OPEN_ROWS)
    out += [
        "Divergence is the first (epoch / batch / global step), 0-based, where a repeat's "
        "losses differ from the first repeat's (`weights: step N`: the first step after which "
        "its parameters differ, where that is another step); |Δloss| and ULPs are the largest "
        "over all steps and repeats. A cell reproduces when at least two repeats ran and every "
        "one of them finished with a verified, finite, bit-identical loss trajectory and "
        "bit-identical final weights; it diverges when such runs differ; it is unknown when "
        "any run failed, is missing, corrupt, empty or not finite.",
        "",
    ]
    moved = [c for c in report.cells if c.machines_differ]
    if moved:
        out += [
            "Cells whose repeats ran on different machines (marked *machines differ*): the "
            f"machines alone can make their bits differ; {MACHINE_CAVEAT}.",
            "",
            *(f"- {escape(c.name)}: {escape(c.machines_differ)}" for c in moved),
            "",
        ]
    unplotted = [c for c in report.cells if c.verdict == DIVERGES and not c.plot]
    if unplotted and any(c.plot for c in report.cells):
        out += [
            f"{len(unplotted)} cells that do not reproduce have no plot (plots are drawn for "
            "the first cells only: `harness report DIR --max-plots 0` draws all); their "
            "losses.npy files hold the data.",
            "",
        ]
    return out


def _column(key: str) -> str:
    """A setting's column header: its name; a ``params`` key is the user's text, escaped."""
    return escape(label(key)) if key.startswith(PARAM_PREFIX) else key


def setting_text(row: dict, key: str) -> Any:
    """A setting's cell in the table: its value, and for ``cublas_workspace`` the value its
    runs had in force where that says more (``auto (:4096:8)``, ``auto (unset)``, or a
    recorded value other than the one asked for; a cell of an older folder, without the
    setting, had ``auto``)."""
    value = row[key]
    in_force = row.get("cublas_workspace_in_force") if key == "cublas_workspace" else None
    if key == "cublas_workspace" and value is None and in_force is not None:
        value = "auto"
    if in_force is not None and (value == "auto" or in_force != value):
        return f"{value} ({in_force})"
    return value


def diagnosis_links(report: Report) -> dict[str, list[str]]:
    """cell id -> the anchors of the diagnoses that compared it."""
    links: dict[str, list[str]] = {}
    for entry in report.diagnoses:
        for cell_id in dict.fromkeys(entry.cells):
            links.setdefault(cell_id, []).append(entry.anchor)
    return links


def _cell_cells(
    cell: CellReport, moving: list[str], diagnosed: dict[str, list[str]] | None = None
) -> list[str]:
    """One row of the cells table, escaped: the verdict first, the cell's name last."""
    row = cell_row(cell)
    acc = "—"
    if cell.val_acc_mean is not None:
        acc = f"{cell.val_acc_mean:.4f}"
        acc += f"&nbsp;±&nbsp;{cell.val_acc_sd:.4f}" if cell.val_acc_sd is not None else ""
    name = escape(cell.name)
    if cell.plot:
        name += f" ([plot]({quote(cell.plot)}))"
    for anchor in (diagnosed or {}).get(cell.id, []):
        name += f" ([diagnosis](#{anchor}))"
    repeats = str(cell.repeats)
    if cell.ok_runs != cell.repeats:
        repeats = f"{cell.ok_runs}/{cell.repeats}"
    divergence = _cell_divergence(cell)
    if cell.machines_differ:
        divergence += " (*machines differ*)"
    return [
        f"{MARK[cell.verdict]}&nbsp;{cell.verdict}",  # kept on one line in a narrow column
        divergence,
        *(escape(setting_text({**cell.settings, **row}, k)) for k in moving),
        repeats,
        str(cell.distinct_trajectories),
        _delta(row["max_abs_delta"], row["max_ulps"]),
        f"{yes_no(cell.init_equal)}&nbsp;/&nbsp;{yes_no(cell.final_equal)}",
        acc,
        _num(cell.seconds_per_epoch, ".2f"),
        name,
    ]


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


def _unknown(report: Report) -> list[str]:
    """The cells without a verdict, apart, with why; they are in no summary's counts."""
    out = ["## Cells without a verdict", ""]
    unknown = [c for c in report.cells if c.verdict == UNKNOWN]
    if not unknown:
        return out + ["None: every cell reproduces or diverges.", ""]
    out += [
        "These cells neither reproduce nor diverge as far as their runs show: a run failed, is "
        "missing, corrupt, empty or not finite, or there are not two repeats. They are left "
        "out of the summaries above.",
        "",
    ]
    items = [f"- **{escape(c.name)}**: {escape(c.unknown_because)}" for c in unknown]
    if len(items) > OPEN_ROWS:
        return out + fold(f"{len(items)} cells", items)
    return out + items + [""]


def _merge(report: Report) -> list[str]:
    """Merge conflict copies and mixed code: only for a merged folder that has them."""
    if not report.conflicts and not report.mixed_code:
        return []
    out = ["## Merge conflicts", ""]
    if report.mixed_code:
        out += [
            "The merged folders were made by different code (`harness merge --allow-mixed`):",
            "",
        ]
        out += [f"- {escape(line)}" for line in report.mixed_code]
        out.append("")
    if report.conflicts:
        out += [
            "`harness merge` found two different copies of these runs; it kept one in `cells/` "
            "and the other in the folder named. The verdict of each cell counts every copy "
            "whose record says ok.",
            "",
        ]
        body = [
            [
                escape(c.cell),
                str(c.repeat),
                escape(c.kept) or "—",
                escape(c.kept_status),
                escape(c.path),
                escape(c.status) + (f" ({escape(c.problem)})" if c.problem else ""),
                {True: "same", False: "**different**", None: "—"}[c.same_result],
            ]
            for c in report.conflicts
        ]
        header = ["cell", "repeat", "kept", "status", "other copy", "status", "result"]
        out += table_lines(header, body)
        out.append("")
    return out


def _differences(report: Report) -> list[str]:
    """Own runs: what the runs of each group differ in, from their records (the usual reason
    runs of one training diverge)."""
    differing = [c for c in report.cells if c.differences]
    if report.source != OWN_RUNS:
        return []
    out = ["## What differs between runs", ""]
    if not differing:
        return out + [
            "Nothing the records compare: in each group, every run had the same flags, "
            "threads, software and GPU.",
            "",
        ]
    out += [
        "The flags, threads, seed, software and hardware each run's record gives, where the runs "
        "of a group do not agree (run folders in brackets). Any of them can change the bits.",
        "",
    ]
    body = [
        [escape(c.name), escape(d.what), escape(values_text(d.values)), MARK[c.verdict]]
        for c in differing
        for d in c.differences
    ]
    return out + table_lines(["group", "differs in", "values (runs)", "verdict"], body) + [""]


def _comparisons(report: Report) -> list[str]:
    if report.source == OWN_RUNS:
        return []  # one image, no GPU-count axis: nothing to compare across
    out = ["## Across images and GPU counts", ""]
    if not report.comparisons:
        out.append("No two cells differ only in their image or only in their GPU count.")
        return out + [""]
    body = []
    for comp in report.comparisons:
        varying = ", ".join(f"{escape(v)}: {escape(n)}" for v, n in comp.cells)
        body.append([escape(comp.axis), varying, yes_no(comp.equal), _divergence(comp.divergence)])
    header = ["axis", "cells (value: cell)", "trajectories equal", "first divergence"]
    table = table_lines(header, body)
    if len(body) > OPEN_ROWS:
        equal = sum(c.equal is True for c in report.comparisons)
        differ = sum(c.equal is False for c in report.comparisons)
        rest = len(body) - equal - differ
        summary = f"{len(body)} comparisons: {equal} equal, {differ} differ, {rest} without a run"
        out += fold(summary, table)
    else:
        out += table + [""]
    notes = []
    for comp in report.comparisons:  # a difference there need not come from the compared axis
        cells = ", ".join(escape(n) for _, n in comp.cells)
        if comp.machines_differ:
            notes.append(
                f"- {escape(comp.axis)} ({cells}): {escape(comp.machines_differ)}; "
                f"{MACHINE_CAVEAT}."
            )
        if comp.gpus_differ:
            notes.append(
                f"- {escape(comp.axis)} ({cells}): {escape(comp.gpus_differ)}; {CUBLAS_PROMISE}."
            )
    return out + notes + ([""] if notes else [])


def _costs(report: Report) -> list[str]:
    if not report.costs:  # the first screen says so
        return []
    out = ["## Cost of determinism", ""]
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
    table = table_lines(header, body)
    if len(body) > OPEN_ROWS:
        return out + fold(f"{len(body)} cells against their twins", table)
    return out + table + [""]


def _failures(report: Report) -> list[str]:
    out = ["## Failed runs", ""]
    if not report.failures:
        out.append("None.")
    else:
        out += [
            "Every run that did not finish ok: failed, missing, or corrupt (its record says ok "
            "but its losses.npy does not load, has another shape than recorded, or does not "
            "hash to the recorded digest; or its run.json is unreadable).",
            "",
        ]
    for f in report.failures:
        out += [f"### {escape(f.cell)} repeat {f.repeat}: {escape(f.type)}", ""]
        if f.path:
            out += [f"Run folder: {escape(f.path)}", ""]
        out += [escape(f.message) or "(no message)", ""]
        if f.log_tail:
            out += ["<details><summary>log tail</summary>", "", fence(f.log_tail), ""]
            out += ["</details>", ""]
    return out
