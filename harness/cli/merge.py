"""``harness merge DIR... -o DIR``: join the shards' results folders into one, with its report.

Exit codes (harness/exit_codes.py): 0 merged; EXIT_CONFLICT when two successful copies of one
run hold different results (both are kept, the merged folder and its report are written);
EXIT_BAD_INPUT when nothing was merged (another matrix, an input in use, mixed code without
``--allow-mixed``, an output that is not empty).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.cli.options import out_option
from harness.contract.machine import Machine
from harness.exit_codes import EXIT_CONFLICT, EXIT_OK
from harness.report.exporters import REPORT_FORMATS
from harness.results.merge import MergeResult, describe_conflict, merge
from harness.text import terminal_safe


def _say(text: str, err: bool = False) -> None:
    """Names, versions and digests come from the inputs' records: printed inert."""
    typer.echo(terminal_safe(text), err=err)


def command(
    inputs: Annotated[list[Path], typer.Argument(help="results folders of one matrix's shards")],
    out: Annotated[Path, out_option("the new merged results folder")],
    report: Annotated[bool, typer.Option(help="write report.md/json/csv and plots")] = True,
    allow_mixed: Annotated[
        bool,
        typer.Option(
            "--allow-mixed",
            help="merge folders made by different harness or workload code, or different images "
            "of one name; the merged manifest lists what differs (merge.mixed)",
        ),
    ] = False,
) -> int:
    """Merge results folders of the same matrix; keeps every run, lists duplicates; exits 1
    when two successful copies of a run differ (both are kept)."""
    result = merge(inputs, out, formats=REPORT_FORMATS if report else (), allow_mixed=allow_mixed)
    _say(
        f"merged {len(result.inputs)} folders into {result.out}: {result.runs} runs, "
        f"{result.cells} cells"
    )
    for m in result.mixed:
        _say(f"  MIXED (--allow-mixed): {m.describe()}", err=True)
    for line in machine_lines(result):
        _say(line)
    for d in result.duplicates:
        if d.identical:
            _say(f"  same run in {d.kept} and {d.other}, identical: kept one ({d.run})")
        else:
            _say(
                f"  CONFLICT {describe_conflict(d)}; kept {d.kept}, the other is in "
                f"{result.out / (d.conflict_path or '')}",
                err=True,
            )
    if result.missing_cells:
        _say(
            f"  {len(result.missing_cells)} cells are in no input (the report lists them as "
            f"missing): {', '.join(result.missing_cells)}",
            err=True,
        )
    for path in result.reports:
        if path.suffix == ".md":
            _say(f"report: {path}")
    conflicts = result.result_conflicts
    if conflicts:
        _say(
            f"error: {len(conflicts)} run{'s' if len(conflicts) != 1 else ''} "
            f"{'have' if len(conflicts) != 1 else 'has'} two successful copies with different "
            f"results: {', '.join(d.run for d in conflicts)}. Both copies are kept (cells/ and "
            f"{result.out / 'conflicts'}); the merged manifest lists them (merge.conflicts)",
            err=True,
        )
        return EXIT_CONFLICT
    return EXIT_OK


def machine_lines(result: MergeResult) -> list[str]:
    """The inputs' machines, when more than one ran them: runs compared across them may
    differ by the machine (the report marks them)."""
    every: dict[str, Machine] = {}
    for machines in result.machines.values():
        for key, machine in machines.items():
            every.setdefault(key, machine)
    if len(every) < 2:
        return []
    lines = [
        f"  the inputs ran on {len(every)} machines (the report marks runs compared across them):"
    ]
    for folder, machines in result.machines.items():
        shown = ", ".join(
            f"{key} (CPU capability {machine.cpu_capability or 'unknown'})"
            for key, machine in machines.items()
        )
        lines.append(f"    {folder}: {shown or 'none recorded'}")
    return lines
