"""``harness compare BASELINE CURRENT``: a Markdown diff; exits non-zero on a regression, and
when a trajectory changed on another machine, and when the gate cannot judge the current
results (no cell in both, baseline cells missing, another matrix): harness/gates/compare.py has the
rules, harness/exit_codes.py the codes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from harness.cli.options import choice_option
from harness.gates.baseline import load_result_set
from harness.gates.compare import compare
from harness.gates.gate_markdown import render_markdown


def command(
    baseline: Annotated[Path, typer.Argument(help="results folder or golden-digests file")],
    current: Annotated[Path, typer.Argument(help="results folder or golden-digests file")],
    fmt: Annotated[str, choice_option("--format", ("md", "json"))] = "md",
    allow_removed: Annotated[
        bool,
        typer.Option(
            "--allow-removed",
            help="pass when baseline cells are missing from the current results (still listed)",
        ),
    ] = False,
    allow_changed_matrix: Annotated[
        bool,
        typer.Option(
            "--allow-changed-matrix",
            help="pass when the two sets come from different matrices (matrix digests differ)",
        ),
    ] = False,
) -> int:
    """Compare two result sets (harness/exit_codes.py has the codes).

    Exit codes: 0 no regression; 1 reproducibility regressed; 2 bad input (a folder or file
    that is not a result set); 3 not comparable: no cell is in both, baseline cells are missing
    or the matrix changed (the output says which, and the flag that accepts it); 4 a trajectory
    changed on another machine than the baseline's. A regression wins over 4, 4 over 3."""
    result = compare(
        load_result_set(baseline),
        load_result_set(current),
        allow_removed=allow_removed,
        allow_changed_matrix=allow_changed_matrix,
    )
    if fmt == "json":
        data = {
            **dataclasses.asdict(result),
            "regressions": len(result.regressions),
            "refusals": [dataclasses.asdict(r) for r in result.refusals],
            "exit_code": result.exit_code,
        }
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(render_markdown(result))
    for c in result.machine_changes:
        typer.echo(
            f"error: machine changed: {c.name} ({c.cell_id}) has another trajectory on the same "
            "image, on another machine than the baseline's (see 'machine changed')",
            err=True,
        )
    for r in result.refusals:
        accept = f" ({r.accepted_by} accepts it)" if r.accepted_by else ""
        typer.echo(f"error: not comparable: {r.reason}{accept}", err=True)
    return result.exit_code
