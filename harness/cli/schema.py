"""``harness schema``: the matrix file's JSON Schema (docs/matrix.schema.json is its copy)."""

from __future__ import annotations

import typer

from harness.matrix import schema_text


def command() -> int:
    """Print the JSON Schema of the matrix file, for editors and CI checks."""
    typer.echo(schema_text(), nl=False)
    return 0
