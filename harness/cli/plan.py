"""``harness plan FILE``: the cells and runs a matrix makes, without running them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from harness.matrix import load_matrix
from harness.schedule import need_of


def plan_data(matrix_path: Path) -> dict:
    matrix = load_matrix(matrix_path)
    repeats = matrix.model.run.repeats
    cells = []
    for cell in matrix.cells:
        need = need_of(cell.spec(0))
        cells.append(
            {
                "id": cell.id,
                "name": cell.name,
                "repeats": repeats,
                "cores": need.cores,
                "gpus": need.gpus,
                "settings": cell.settings,
            }
        )
    return {
        "name": matrix.model.name,
        "cells": cells,
        "runs": matrix.total_runs,
        "matrix_digest": matrix.digest,
    }


def command(
    matrix: Annotated[Path, typer.Argument(help="the matrix YAML file")],
    output: Annotated[str, typer.Option(help="text | json")] = "text",
) -> int:
    """List the cells and runs of a matrix without running them."""
    data = plan_data(matrix)
    if output == "json":
        typer.echo(json.dumps(data, indent=2))
        return 0
    if output != "text":
        raise typer.BadParameter("choose text or json", param_hint="--output")
    typer.echo(f"{data['name']}: {len(data['cells'])} cells, {data['runs']} runs")
    for c in data["cells"]:
        res = f"{c['cores']} cores" + (f", {c['gpus']} GPUs" if c["gpus"] else "")
        typer.echo(f"  {c['id']}  {c['name']}  x{c['repeats']}  ({res})")
    return 0
