"""The report's cells table: per image, every cell with its verdict first, then where it
diverges, then only the settings that vary on that image, the numbers, and the cell's name
with its plot and diagnoses linked."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from harness.report.flatten import cell_row
from harness.report.grid import MARK, Grid, counted
from harness.report.machines import MACHINE_CAVEAT
from harness.report.markdown_blocks import OPEN_ROWS, escape, fold, num, table_lines, yes_no
from harness.report.report_data import DIVERGES, CellReport, Divergence, Report
from harness.report.summaries import PARAM_PREFIX, fmt_setting, label


def settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(fmt_setting(k, v) for k, v in settings.items())


def _delta(delta: float | None, ulps: int | None) -> str:
    if delta is None:
        return "—"
    return num(delta, ".3g") + (f" ({ulps})" if ulps is not None else "")


def divergence_text(d: Divergence | None) -> str:
    if d is None:
        return "—"
    if d.shape_differs and d.max_abs_delta is None:
        return "shapes differ"
    where = f"{d.epoch} / {d.batch} / {d.step}" if d.epoch is not None else f"step {d.step}"
    return where


def _cell_divergence(cell: CellReport) -> str:
    """The cells table's divergence: the losses', with the weights' first divergent step added
    only where it says more (an earlier step, or weights that differ under equal losses)."""
    text = divergence_text(cell.first_divergence)
    w = cell.weights_divergence
    first = cell.first_divergence
    if w is None or (first is not None and first.step == w.step):
        return text
    if first is None:
        return f"weights: step {w.step}"
    return f"{text} (weights: step {w.step})"


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


def cells_section(report: Report, grid_list: list[Grid], shared: dict[str, Any]) -> list[str]:
    """Per image, every cell: the verdict first, then where it diverges, then only the
    settings that vary on that image (the others are listed once above: ``shared`` across the
    matrix, the image's own above its table)."""
    out = ["## Cells", ""]
    for grid in grid_list:
        cells, moving = grid.cells, grid.axes
        body = []
        local = {k: v for k, v in grid.constant.items() if k not in shared}
        if local:
            body += [f"Every cell on this image has {escape(settings_text(local))}.", ""]
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
        num(cell.seconds_per_epoch, ".2f"),
        name,
    ]
