"""``harness diagnose RESULTS``: where two runs first part ways, and which operation did it."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from harness.cli.interrupts import cancel_on_signals
from harness.cli.options import data_dir_option, executor_option, python_option
from harness.diagnose import Diagnosis, level_from, run_diagnosis, runner_factory
from harness.report.exporters import REPORT_FORMATS
from harness.results.layout import DIAGNOSES_DIR, DIAGNOSIS_FILE
from harness.text import terminal_safe


def _pair(values: list[str] | None, option: str) -> tuple[str, str] | None:
    if not values:
        return None
    if len(values) != 2:
        raise typer.BadParameter("give exactly two", param_hint=option)
    return values[0], values[1]


def _repeats(values: list[int] | None) -> tuple[int, int] | None:
    if not values:
        return None
    if len(values) != 2 or min(values) < 0:
        raise typer.BadParameter("give two repeat numbers, e.g. 0 1", param_hint="--repeats")
    return values[0], values[1]


def command(
    results: Annotated[Path, typer.Argument(help="a results folder written by `harness run`")],
    cell: Annotated[
        str | None,
        typer.Option(
            help="the cell whose repeats to compare, by id or name (default: the "
            "first cell that does not reproduce)"
        ),
    ] = None,
    cells: Annotated[
        list[str] | None,
        typer.Option(help="two cells that should agree (id or name): --cells A --cells B"),
    ] = None,
    repeats: Annotated[
        list[int] | None,
        typer.Option(
            help="which repeats: --repeats 0 --repeats 1 (default: 0 and the first "
            "that differs from it; with --cells, repeat 0 of each)"
        ),
    ] = None,
    level: Annotated[
        str | None,
        typer.Option(
            help="ops (every aten operation, DebugMode) or modules (module outputs "
            "and gradients; the fallback for torch without DebugMode)"
        ),
    ] = None,
    rank: Annotated[int, typer.Option(help="which DDP rank's operations to compare")] = 0,
    max_steps: Annotated[
        int | None,
        typer.Option(
            help="when the records show no divergence, replay at most this many "
            "steps looking for one (default: all the runs took)"
        ),
    ] = None,
    executor: Annotated[str, executor_option("as `harness run` chose it")] = "auto",
    data_dir: Annotated[Path | None, data_dir_option("MNIST folder, as for `harness run`")] = None,
    python: Annotated[
        str | None, python_option("interpreter for the local executor, as for `harness run`")
    ] = None,
    report: Annotated[bool, typer.Option(help="rewrite report.md with the diagnosis")] = True,
    code: Annotated[
        Path | None,
        typer.Option(
            help="the folder of your code (workload.path) to replay, when the results folder "
            "has no snapshot of it (code moved, or runs made before snapshots): its digest must "
            "be the one the runs recorded; the folder the manifest names is never used unless "
            "given here"
        ),
    ] = None,
) -> int:
    """Replay two runs (two repeats of a cell, or two cells) with every operation of their
    first divergent step logged, and say where they part ways: the initial weights, the data,
    or the first operation whose output bits differ. Exit 0 when it could tell, even when the
    replays do not diverge."""
    pair = _pair(cells, "--cells")
    if pair is not None and cell is not None:
        raise typer.BadParameter("use --cell or --cells, not both", param_hint="--cells")
    say = lambda line: print(terminal_safe(line), file=sys.stderr)  # noqa: E731
    cancel = threading.Event()  # Ctrl-C, SIGTERM: the replays stop, exit 130
    with cancel_on_signals(cancel):
        diagnosis = run_diagnosis(
            results,
            runner_factory(results, executor, data_dir, python, cancel, code=code, say=say),
            cell=cell,
            cells=pair,
            repeats=_repeats(repeats),
            level=level_from(level),
            rank=rank,
            max_steps=max_steps,
            say=say,
        )
    _tell(results, diagnosis, report)
    return 0


def _tell(results: Path, diagnosis: Diagnosis, report: bool) -> None:
    """The diagnosis in sentences, then the report rewritten with it, then the paths."""
    typer.echo(terminal_safe(diagnosis.title))
    for line in diagnosis.sentences:
        typer.echo(terminal_safe(f"  {line}"))
    if report:
        from harness.report import make_reports

        _, written = make_reports(results, REPORT_FORMATS)
        for path in written:
            if path.suffix == ".md":
                typer.echo(f"report: {path}")
    typer.echo(f"diagnosis: {results / DIAGNOSES_DIR / diagnosis.name / DIAGNOSIS_FILE}")
