"""The report's long sections after the cells table, each folded when long: what differs
between own runs, the cells without a verdict, comparisons across images and GPU counts, the
cost of determinism, the images, merge conflicts and the failed runs with their log tails."""

from __future__ import annotations

from harness.report.grid import MARK
from harness.report.machines import MACHINE_CAVEAT
from harness.report.markdown_blocks import (
    OPEN_ROWS,
    code,
    escape,
    fence,
    fold,
    num,
    table_lines,
    yes_no,
)
from harness.report.markdown_cells import divergence_text
from harness.report.own_run_differences import values_text
from harness.report.report_data import OWN_RUNS, UNKNOWN, Report
from harness.report.summaries import CUBLAS_PROMISE


def images_section(report: Report) -> list[str]:
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


def unknown_section(report: Report) -> list[str]:
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


def merge_section(report: Report) -> list[str]:
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


def differences_section(report: Report) -> list[str]:
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


def comparisons_section(report: Report) -> list[str]:
    if report.source == OWN_RUNS:
        return []  # one image, no GPU-count axis: nothing to compare across
    out = ["## Across images and GPU counts", ""]
    if not report.comparisons:
        out.append("No two cells differ only in their image or only in their GPU count.")
        return out + [""]
    body = []
    for comp in report.comparisons:
        varying = ", ".join(f"{escape(v)}: {escape(n)}" for v, n in comp.cells)
        body.append(
            [escape(comp.axis), varying, yes_no(comp.equal), divergence_text(comp.divergence)]
        )
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


def costs_section(report: Report) -> list[str]:
    if not report.costs:  # the first screen says so
        return []
    out = ["## Cost of determinism", ""]
    body = [
        [
            escape(c.cell),
            escape(c.twin),
            num(c.seconds_per_epoch, ".2f"),
            num(c.twin_seconds_per_epoch, ".2f"),
            num(c.ratio, ".2f"),
        ]
        for c in report.costs
    ]
    header = ["cell", "nondeterministic twin", "s/epoch", "twin s/epoch", "ratio"]
    table = table_lines(header, body)
    if len(body) > OPEN_ROWS:
        return out + fold(f"{len(body)} cells against their twins", table)
    return out + table + [""]


def failures_section(report: Report) -> list[str]:
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
