"""``harness doctor``: print what this machine can do (a rich table, or --format json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from harness.cli.options import choice_option, data_dir_option
from harness.doctor import DoctorReport, run_doctor


def render_table(report: DoctorReport) -> None:
    from rich.console import Console
    from rich.table import Table

    marks = {True: "[green]ok[/]", False: "[red]no[/]", None: "[dim]-[/]"}
    table = Table(title="harness doctor")
    for column in ("check", "", "detail", "hint"):
        table.add_column(column)
    for check in report.checks:
        table.add_row(check.name, marks[check.ok], check.detail, check.hint)
    Console().print(table)


def command(
    fmt: Annotated[str, choice_option("--format", ("text", "json"))] = "text",
    data_dir: Annotated[
        Path | None, data_dir_option("MNIST folder (default: HARNESS_MNIST_DIR)")
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            help="run the GPU probe in this base image's workload image (built or reused), "
            "as harness run does before its GPU runs",
        ),
    ] = None,
    gpus: Annotated[int, typer.Option("--gpus", min=1, help="GPUs the probe asks for")] = 1,
) -> None:
    """Say whether Docker, a GPU runtime, GPUs, a working GPU image, disk and MNIST are there."""
    report = run_doctor(data_dir=data_dir, image=image, gpus=gpus)
    if fmt == "json":
        typer.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        render_table(report)
