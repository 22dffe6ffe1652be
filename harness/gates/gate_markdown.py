"""``harness compare``'s Markdown: the verdict first (regressions, a changed machine, a refusal,
or none), then why the gate fails, what flags accepted, the changed cells as tables, and the
cells new or removed. Text from the result sets is escaped (harness/report/markdown_blocks.py).
"""

from __future__ import annotations

from harness.gates.compare import CellChange, CompareResult, cells_text
from harness.report.markdown_blocks import escape, table_lines


def render_markdown(result: CompareResult) -> str:
    lines = _headline(result) + _machine_notes(result) + _refusal_lines(result)
    lines += _change_lines(result)
    for title, cells in (
        ("New cells (not in the baseline)", result.new_cells),
        ("Removed cells (not in the current results)", result.removed_cells),
    ):
        if cells:
            lines += [f"### {title}", ""]
            lines += [f"- {escape(name)} (`{cid}`)" for cid, name in cells] + [""]
    return "\n".join(lines)


def _headline(result: CompareResult) -> list[str]:
    """The gate's verdict in bold and what was compared."""
    regressions = result.regressions
    if regressions:
        head = f"**{len(regressions)} regression{'s' if len(regressions) != 1 else ''}**"
    elif result.machine_changes:
        head = "**Machine changed: the gate fails.**"
    elif result.refusals:
        head = "**Not comparable: the gate fails.**"
    else:
        head = "**No regression.**"
    return [
        f"{head} Baseline `{escape(result.baseline)}`, current `{escape(result.current)}`: "
        f"{result.compared} cells in both, {len(result.new_cells)} new, "
        f"{len(result.removed_cells)} removed.",
        "",
    ]


def _machine_notes(result: CompareResult) -> list[str]:
    """Why a changed machine is not a regression, and a side that recorded no machine."""
    lines: list[str] = []
    moved = result.machine_changes
    if moved:
        n = len(moved)
        lines += [
            "### Machine changed",
            "",
            f"{cells_text(n)} changed {'their trajectories' if n != 1 else 'its trajectory'} on "
            "the same image, and ran on another machine than the baseline's: CPU and GPU "
            "kernels, and so the bits, differ between machines, so this is not called a "
            "regression of the code. Make the baseline on a machine like this one (its "
            "fingerprint is in the report's header), or pin CI to the baseline's machine.",
            "",
        ]
    if result.machines_unknown:
        lines += [
            f"The {result.machines_unknown} "
            f"{'records' if result.machines_unknown == 'baseline' else 'record'} no machine "
            "(made before machines were "
            "recorded): the machines could not be compared, and a changed trajectory on the same "
            "image counts as a regression.",
            "",
        ]
    return lines


def _refusal_lines(result: CompareResult) -> list[str]:
    """Why the gate fails besides regressions, and what the flags given accepted."""
    lines: list[str] = []
    if result.refusals:
        failing = result.regressions or result.machine_changes
        title = "Also not comparable" if failing else "Why the gate fails"
        lines += [f"### {title}", ""]
        for r in result.refusals:
            accept = f" (`{r.accepted_by}` accepts it)" if r.accepted_by else ""
            lines.append(f"- {escape(r.reason)}{accept}.")
        lines.append("")
    accepted = [r for r in result.checks if r.accepted]
    if accepted:
        lines += ["### Accepted by flags (not failures)", ""]
        lines += [f"- {escape(r.reason)} (`{r.accepted_by}`)." for r in accepted] + [""]
    return lines


def _change_lines(result: CompareResult) -> list[str]:
    """The regressions and the other changes, one table each."""
    lines: list[str] = []
    others = [c for c in result.changes if not c.regression]
    if result.regressions:
        lines += ["### Regressions", ""] + _changes_table(result.regressions)
    if others:
        lines += ["### Other changes (not regressions)", ""] + _changes_table(others)
    if not result.changes and result.compared:
        lines += ["Every cell in both sets has the verdict and digests of the baseline.", ""]
    return lines


def _changes_table(changes: list[CellChange]) -> list[str]:
    header = ["cell", "id", "what changed", "baseline", "current"]
    body = [
        [escape(c.name), c.cell_id, escape(c.what), escape(c.baseline), escape(c.current)]
        for c in changes
    ]
    return table_lines(header, body) + [""]
