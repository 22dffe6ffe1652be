"""``harness submit slurm FILE --shards N --out DIR``: the matrix as a Slurm job array of shards
and a merge job after it (harness/slurm/); ``--dry-run`` shows the scripts and sbatch lines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.cli.options import data_dir_option, out_option, python_option, slurm_executor_option
from harness.matrix import LoadedMatrix, load_matrix
from harness.run.shard import MAX_SHARDS
from harness.slurm.batch_scripts import array_spec, resources, shown
from harness.slurm.submission import Submitted
from harness.slurm.submit import Prepared, prepare, resolve_request, submit
from harness.text import terminal_safe

app = typer.Typer(
    help="Submit a matrix to a batch scheduler: each shard a job, then one job merging them.",
    no_args_is_help=True,
)


def _say(text: str, err: bool = False) -> None:
    typer.echo(terminal_safe(text, multiline=True), err=err)


@app.command("slurm")
def slurm(
    matrix: Annotated[Path, typer.Argument(help="the matrix YAML file")],
    out: Annotated[
        Path,
        out_option(
            "the submission folder: new, empty, or an earlier submission's, to resubmit "
            "what is missing or failed; the merged results and report land in it"
        ),
    ],
    shards: Annotated[
        int | None,
        typer.Option(
            help=f"array tasks, as `harness plan --shards N` splits the cells (1 to "
            f"{MAX_SHARDS}; default: the earlier submission's, else 1)"
        ),
    ] = None,
    partition: Annotated[str | None, typer.Option(help="slurm.partition")] = None,
    account: Annotated[str | None, typer.Option(help="slurm.account")] = None,
    qos: Annotated[str | None, typer.Option(help="slurm.qos")] = None,
    time: Annotated[
        str | None,
        typer.Option(
            help="slurm.time: each array task's limit, e.g. 4:00:00 (default: the "
            "worst case from run.timeout_s)"
        ),
    ] = None,
    gpu_type: Annotated[
        str | None, typer.Option(help="slurm.gpu_type: ask for --gres=gpu:TYPE:K")
    ] = None,
    cpus_per_task: Annotated[
        int | None, typer.Option(help="slurm.cpus_per_task (default: one run's cores)")
    ] = None,
    sbatch_option: Annotated[
        list[str] | None,
        typer.Option(
            "--sbatch-option",
            help="an extra #SBATCH option for every job, e.g. --sbatch-option=--mem=16G; "
            "repeat for several (replaces slurm.sbatch)",
        ),
    ] = None,
    executor: Annotated[str | None, slurm_executor_option("slurm.executor")] = None,
    python: Annotated[
        str | None,
        python_option("slurm.python: the nodes' Python with the harness (default: this one)"),
    ] = None,
    data_dir: Annotated[
        Path | None,
        data_dir_option(
            "MNIST as the nodes see it (default: slurm.data_dir, else HARNESS_MNIST_DIR)"
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="print the batch scripts and the sbatch lines; submit nothing"
        ),
    ] = False,
) -> int:
    """Submit the matrix as a Slurm job array (one task per shard) and a merge job after it;
    again over the same --out, only the shards with runs missing or failed."""
    loaded = load_matrix(matrix)
    request = resolve_request(
        loaded,
        {
            "partition": partition,
            "account": account,
            "qos": qos,
            "time": time,
            "gpu_type": gpu_type,
            "cpus_per_task": cpus_per_task,
            "sbatch": sbatch_option,
            "executor": executor,
            "python": python,
        },
        data_dir,
    )
    prepared = prepare(loaded, out, shards, request)
    if dry_run:
        _show(prepared)
        return 0
    _tell_submitted(loaded, prepared, submit(prepared))
    return 0


def _tell_submitted(loaded: LoadedMatrix, prepared: Prepared, done: Submitted) -> None:
    """What went to Slurm: the arrays and their shards, the merge job, how to follow it."""
    _say(
        f"submitted {loaded.model.name} into {prepared.root}: {prepared.total} shard"
        f"{'s' if prepared.total != 1 else ''}, {loaded.total_runs} runs"
    )
    if prepared.complete:
        _say(f"  shards with every run done, not submitted: {array_spec(prepared.complete)}")
    for group, array in zip(prepared.groups, done.arrays, strict=True):
        _say(f"  array job {array.job}: shards {array_spec(group.shards)} ({resources(group)})")
    after = " after the arrays (afterany)" if done.arrays else ""
    _say(f"  merge job {done.merge}{after}: merged results and report into {prepared.root}")
    if prepared.request.data_dir is None:
        _say(_NO_DATA, err=True)
    _say(f"follow it: harness status {prepared.root}")


_NO_DATA = (
    "harness: note: no MNIST folder given (--data-dir, slurm.data_dir or HARNESS_MNIST_DIR): "
    "each task downloads MNIST into its user's cache, which needs network on the nodes"
)


def _show(prepared: Prepared) -> None:
    """The dry run: every script as it would be written, then the sbatch lines in order."""
    where = terminal_safe(prepared.root)  # one line: a line break in --out would end it
    _say(f"# harness submit slurm --dry-run: nothing is submitted or written ({where})")
    if prepared.complete:
        _say(f"# shards with every run done, not submitted: {array_spec(prepared.complete)}")
    for path, text in prepared.scripts.items():
        _say(f"\n# ---- {terminal_safe(path)}")
        typer.echo(terminal_safe(text, multiline=True), nl=False)  # checked, and never raw
    _say("\n# ---- the sbatch lines, in this order")
    placeholders = []
    for group, argv in prepared.array_commands():
        _say(f"# array {group.number}: shards {array_spec(group.shards)} ({resources(group)})")
        _say(shown(argv))
        placeholders.append(f"<job id of array {group.number}>")
    _say(shown(prepared.merge_command(placeholders)))
    if prepared.request.data_dir is None:
        _say(_NO_DATA, err=True)
