"""``harness status DIR``: a ``harness submit slurm`` folder's jobs (from Slurm) and runs
(from its shard folders), so that nobody has to read Slurm's output files to know."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.slurm.status import ShardStatus, age, read_status, unsubmitted
from harness.text import terminal_safe


def _say(text: str, err: bool = False) -> None:
    typer.echo(terminal_safe(text, multiline=True), err=err)


def command(
    folder: Annotated[
        Path, typer.Argument(help="the --out folder of `harness submit slurm` (only that)")
    ],
) -> int:
    """Show a Slurm submission's progress (only a folder `harness submit slurm` wrote): each
    shard's runs done and its job's state, the merge job, the report.

    A `harness run` folder: `harness report FOLDER` shows its cells so far."""
    status = read_status(folder)
    record = status.record
    times = len(record.submitted)
    when = f", last at {record.last.at}" if record.last else ""
    _say(
        f"{record.matrix_name}: {status.done} of {status.runs} runs done"
        + (f", {status.failed} failed" if status.failed else "")
        + f"; {record.shards} shard{'s' if record.shards != 1 else ''}, submitted "
        f"{times} time{'s' if times != 1 else ''}{when}"
    )
    for shard in status.shards:
        _say(_shard_line(shard, status.slurm_problem is None, bool(record.submitted)))
    if status.merge_job is not None:
        state = status.merge_state or _unknown(status.slurm_problem is None)
        _say(f"  merge: job {status.merge_job}: {state}")
    if status.report is not None:
        _say(f"report: {status.report} (written {age(status.report)})")
    else:
        _say("report: none yet (the merge job writes it)")
    if status.slurm_problem is not None:
        _say(f"harness: Slurm's side is missing: {status.slurm_problem}", err=True)
    return 0


def _unknown(asked: bool) -> str:
    return "ended (Slurm no longer lists it)" if asked else "unknown (Slurm not reachable)"


def _shard_line(shard: ShardStatus, asked: bool, ever_submitted: bool) -> str:
    p = shard.progress
    runs = f"{p.done}/{p.runs} runs done" + (f", {p.failed} failed" if p.failed else "")
    if shard.job is None:
        return f"  shard {p.index}: {runs}; {unsubmitted(p, ever_submitted)}"
    state = shard.state or _unknown(asked)
    log = f"; log {shard.log}" if shard.log is not None else ""
    return f"  shard {p.index}: {runs}; job {shard.job}: {state}{log}"
