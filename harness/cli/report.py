"""``harness report DIR``: the reproducibility report of a results folder, or of a folder of
your own runs (subfolders whose records ``harness.lightning.ReproRecorder`` wrote)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from harness.cli.options import formats_option, out_option, progress_option
from harness.report import make_reports
from harness.report.exporters import REPORT_FORMATS
from harness.report.github import DEFAULT_ARTIFACT
from harness.report.terminal import print_summary

_EVERY_FORMAT = list(REPORT_FORMATS)  # --format's default (typer copies it)


def command(
    results: Annotated[
        Path,
        typer.Argument(
            help="a results folder written by `harness run`, or a folder whose subfolders hold "
            "your own runs' records (harness.lightning.ReproRecorder)"
        ),
    ],
    formats: Annotated[list[str], formats_option("repeat for several")] = _EVERY_FORMAT,
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
        out_option(
            "write the report files and plots/ here (made if missing) instead of into "
            "the folder reported"
        ),
    ] = None,
    artifact: Annotated[
        str, typer.Option(help="with --github: the artifact named when the report is cut")
    ] = DEFAULT_ARTIFACT,
    progress: Annotated[
        str | None,
        progress_option(
            "how the summary and verdict grid print at the end (default: rich on a terminal, "
            "plain otherwise; not with --github)"
        ),
    ] = None,
) -> int:
    """Write report.md / report.json / report.csv (and plots/) into the results folder (or
    --out), then print per image the summary sentence and the verdict grid, and the paths
    written. A folder of your own runs gets the same report, one group per run name."""
    if github:
        return _job_summary(results, artifact)
    report, written = make_reports(results, formats, plots=plots, max_plots=max_plots, out=out)
    if written:  # the answer, before the paths scripts read
        print_summary(report, progress, sys.stdout)
    for path in written:
        typer.echo(str(path))
    return 0


def _job_summary(results: Path, artifact: str) -> int:
    """``--github``: the Markdown report appended to the job summary, cut to GitHub's limit."""
    from harness.report import analyze
    from harness.report.github import write_summary
    from harness.report.markdown import render_markdown

    markdown = render_markdown(analyze(results)).decode("utf-8")
    result = write_summary(markdown, artifact=artifact)
    note = f" (cut to {result.lines_kept} of {result.lines_total} lines)" if result.cut else ""
    typer.echo(f"job summary: {result.path}: {result.bytes_written} bytes{note}")
    return 0
