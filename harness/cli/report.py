"""``harness report DIR``: the reproducibility report of a results folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.report import write_reports


def command(
    results: Annotated[Path, typer.Argument(help="a results folder written by `harness run`")],
    formats: Annotated[
        list[str], typer.Option("--format", "-f", help="md | json | csv; repeat for several")
    ] = ["md", "json", "csv"],  # noqa: B006 - typer copies it
    plots: Annotated[
        bool, typer.Option(help="draw |Δloss| plots for cells that do not reproduce")
    ] = True,
) -> int:
    """Write report.md / report.json / report.csv (and plots/) into the results folder."""
    for path in write_reports(results, formats, plots=plots):
        typer.echo(str(path))
    return 0
