"""``harness compare BASELINE CURRENT``: a Markdown diff; exits non-zero on a regression."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from harness.baseline import load_result_set
from harness.compare import compare, render_markdown


def command(
    baseline: Annotated[Path, typer.Argument(help="results folder or golden-digests file")],
    current: Annotated[Path, typer.Argument(help="results folder or golden-digests file")],
    fmt: Annotated[str, typer.Option("--format", help="md | json")] = "md",
) -> int:
    """Compare two result sets; exit 1 (EXIT_REGRESSION) when reproducibility regressed."""
    if fmt not in ("md", "json"):
        raise typer.BadParameter("choose md or json", param_hint="--format")
    result = compare(load_result_set(baseline), load_result_set(current))
    if fmt == "json":
        data = {**dataclasses.asdict(result), "regressions": len(result.regressions)}
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(render_markdown(result))
    return result.exit_code
