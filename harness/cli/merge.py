"""``harness merge DIR... -o DIR``: join the shards' results folders into one, with its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.merge import merge


def command(
    inputs: Annotated[list[Path], typer.Argument(help="results folders of one matrix's shards")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the new merged results folder")],
    report: Annotated[bool, typer.Option(help="write report.md/json/csv and plots")] = True,
) -> int:
    """Merge results folders of the same matrix; keeps every run, lists duplicates."""
    result = merge(inputs, out, formats=("md", "json", "csv") if report else ())
    typer.echo(
        f"merged {len(result.inputs)} folders into {result.out}: {result.runs} runs, "
        f"{result.cells} cells"
    )
    for d in result.duplicates:
        if d.identical:
            typer.echo(f"  same run in {d.kept} and {d.other}, identical: kept one ({d.run})")
        else:
            typer.echo(
                f"  CONFLICT {d.run}: different records in {d.kept} and {d.other}; kept "
                f"{d.kept}, the other is in {result.out / d.conflict_path}",
                err=True,
            )
    if result.missing_cells:
        typer.echo(
            f"  {len(result.missing_cells)} cells are in no input (the report lists them as "
            f"missing): {', '.join(result.missing_cells)}",
            err=True,
        )
    for path in result.reports:
        if path.suffix == ".md":
            typer.echo(f"report: {path}")
    return 0
