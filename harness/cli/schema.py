"""``harness schema``: the matrix file's JSON Schema (docs/matrix.schema.json is its copy), or
with ``--report`` report.json's (docs/report.schema.json)."""

from __future__ import annotations

from typing import Annotated

import typer

from harness.matrix import schema_text


def command(
    report: Annotated[
        bool, typer.Option("--report", help="print report.json's schema, not the matrix file's")
    ] = False,
) -> int:
    """Print the JSON Schema of the matrix file (or of report.json), for editors and CI checks."""
    if report:
        from harness.report.report_schema import report_schema_text

        typer.echo(report_schema_text(), nl=False)
        return 0
    typer.echo(schema_text(), nl=False)
    return 0
