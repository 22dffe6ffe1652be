"""``harness plan FILE``: the cells and runs a matrix makes, without running them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from harness.cli.options import control_option
from harness.matrix import load_matrix
from harness.run.schedule import need_of
from harness.run.shard import MAX_SHARDS, github_matrix, plan_shards


def _count(n: int, noun: str) -> str:
    """``1 core``, ``2 cores``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def plan_data(matrix_path: Path, control: bool = False) -> dict[str, Any]:
    matrix = load_matrix(matrix_path, control=control)
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
                **({"control": True} if cell.control else {}),
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
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="text | json | github (github: with --shards, one line of JSON for "
            "strategy.matrix: ${{ fromJSON(...) }})",
        ),
    ] = "text",
    shards: Annotated[
        int | None,
        typer.Option(
            help=f"split the cells into at most N shards (1 to {MAX_SHARDS}), balanced by "
            "expected run time and GPU count; `harness run --shard I/N` runs one"
        ),
    ] = None,
    control: Annotated[
        bool, control_option("with a control cell per image, as `harness run --control`")
    ] = False,
) -> int:
    """List the cells and runs of a matrix without running them."""
    if shards is not None:
        return _shards_command(matrix, shards, fmt, control)
    if fmt == "github":
        raise typer.BadParameter("github needs --shards N", param_hint="--format")
    data = plan_data(matrix, control)
    if fmt == "json":
        typer.echo(json.dumps(data, indent=2))
        return 0
    if fmt != "text":
        raise typer.BadParameter("choose text or json", param_hint="--format")
    typer.echo(f"{data['name']}: {len(data['cells'])} cells, {data['runs']} runs")
    for c in data["cells"]:
        res = _count(c["cores"], "core") + (f", {_count(c['gpus'], 'GPU')}" if c["gpus"] else "")
        mark = "  control" if c.get("control") else ""
        typer.echo(f"  {c['id']}  {c['name']}  x{c['repeats']}  ({res}){mark}")
    return 0


def _shards_command(matrix_path: Path, shards: int, fmt: str, control: bool = False) -> int:
    matrix = load_matrix(matrix_path, control=control)
    planned = plan_shards(matrix, shards)
    data = github_matrix(planned)
    if fmt == "github":
        typer.echo(json.dumps(data, separators=(",", ":")))
    elif fmt == "json":
        for entry, shard in zip(data["include"], planned, strict=True):
            entry["cost"] = shard.cost
            entry["cell_ids"] = [c.id for c in shard.cells]
        typer.echo(json.dumps(data, indent=2))
    elif fmt == "text":
        typer.echo(f"{matrix.model.name}: {len(matrix.cells)} cells in {len(planned)} shards")
        for shard in planned:
            gpus = f", {shard.gpus} GPUs" if shard.gpus else ""
            typer.echo(
                f"  shard {shard.index}/{shard.total}: {len(shard.cells)} cells, "
                f"cost {shard.cost:g}{gpus}"
            )
            for cell in shard.cells:
                typer.echo(f"    {cell.id}  {cell.name}")
    else:
        raise typer.BadParameter("choose text, json or github", param_hint="--format")
    return 0
