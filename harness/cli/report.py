"""``harness report DIR``: the reproducibility report of a results folder, or of a folder of
your own runs (subfolders whose records ``harness.lightning.ReproRecorder`` wrote)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from harness.report import make_reports
from harness.report.github import DEFAULT_ARTIFACT
from harness.report.terminal import MODES, print_summary


def command(
    results: Annotated[
        Path,
        typer.Argument(
            help="a results folder written by `harness run`, or a folder whose subfolders hold "
            "your own runs' records (harness.lightning.ReproRecorder)"
        ),
    ],
    formats: Annotated[
        list[str], typer.Option("--format", help="md | json | csv; repeat for several")
    ] = ["md", "json", "csv"],  # noqa: B006 - typer copies it
    plots: Annotated[
        bool,
        typer.Option(
            help="draw each image's verdict grid as a PNG and |Δloss| plots for cells that do "
            "not reproduce"
        ),
    ] = True,
    max_plots: Annotated[
        int | None,
        typer.Option(help="draw at most this many plots (default 25; 0: one for every such cell)"),
    ] = None,
    github: Annotated[
        bool,
        typer.Option(
            "--github",
            help="append the Markdown report to $GITHUB_STEP_SUMMARY (cut to GitHub's 1 MiB "
            "limit) instead of writing report files",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="write the report files and plots/ here (made if missing) instead of into "
            "the folder reported",
        ),
    ] = None,
    artifact: Annotated[
        str, typer.Option(help="with --github: the artifact named when the report is cut")
    ] = DEFAULT_ARTIFACT,
    progress: Annotated[
        str | None,
        typer.Option(
            help="how the summary and verdict grid print at the end: rich | plain | quiet "
            "(default: rich on a terminal, plain otherwise; not with --github)"
        ),
    ] = None,
) -> int:
    """Write report.md / report.json / report.csv (and plots/) into the results folder (or
    --out), then print per image the summary sentence and the verdict grid, and the paths
    written. A folder of your own runs gets the same report, one group per run name."""
    if progress is not None and progress not in MODES:
        raise typer.BadParameter("choose rich, plain or quiet", param_hint="--progress")
    if github:
        from harness.report import analyze
        from harness.report.github import write_summary
        from harness.report.markdown import render_markdown

        markdown = render_markdown(analyze(results)).decode("utf-8")
        result = write_summary(markdown, artifact=artifact)
        note = f" (cut to {result.lines_kept} of {result.lines_total} lines)" if result.cut else ""
        typer.echo(f"job summary: {result.path}: {result.bytes_written} bytes{note}")
        return 0
    report, written = make_reports(results, formats, plots=plots, max_plots=max_plots, out=out)
    if written:  # the answer, before the paths scripts read
        print_summary(report, progress, sys.stdout)
    for path in written:
        typer.echo(str(path))
    return 0
