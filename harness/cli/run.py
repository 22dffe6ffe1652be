"""``harness run FILE``: run every repeat of every cell, then write the report and print its
answer: per image the summary sentence and the verdict grid (harness/report/terminal.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from harness.cli.interrupts import cancel_on_signals
from harness.cli.options import (
    control_option,
    data_dir_option,
    executor_option,
    out_option,
    progress_option,
    python_option,
    runs_per_gpu_option,
)
from harness.errors import HarnessError, print_error
from harness.matrix import LoadedMatrix, load_matrix
from harness.report.exporters import REPORT_FORMATS
from harness.report.terminal import print_summary
from harness.results.manifest import read_manifest
from harness.results.store import ResultsDir
from harness.run.matrix_runner import (
    RunConfig,
    RunSummary,
    make_executor,
    packed_gpus,
    run_matrix,
)
from harness.run.shard import parse_shard


class WorkloadStopped(HarnessError):
    """``harness run`` stopped starting runs: the user's training failed (exit 2)."""


def command(
    matrix: Annotated[Path, typer.Argument(help="the matrix YAML file")],
    out: Annotated[
        Path | None,
        out_option(
            "results folder: new, empty, or one `harness run` wrote, to resume it "
            "(default results/<name>-<UTC time>/)"
        ),
    ] = None,
    executor: Annotated[
        str,
        executor_option(
            "(auto: image 'local' runs as a local process, other images in containers)"
        ),
    ] = "auto",
    progress: Annotated[
        str | None, progress_option("(default: rich on a terminal, plain otherwise)")
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            help="GPU ids to use, e.g. 0,1 (default: nvidia-smi -L); an id named n times runs "
            "n 1-GPU runs side by side on that GPU, e.g. 0,0,0,0"
        ),
    ] = None,
    runs_per_gpu: Annotated[
        str,
        runs_per_gpu_option(
            "1-GPU runs side by side on each GPU: 1 (default), N, or auto: as many as the GPU "
            "check measured fit this GPU and cell (--packing), else 1; DDP cells are never packed"
        ),
    ] = "1",
    packing: Annotated[
        Path | None,
        typer.Option(
            help="the packing measurement --runs-per-gpu auto reads (written by `bash "
            "scripts/gpu-check.sh OUT packing`; default ~/.cache/harness/gpu-packing.json)"
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        data_dir_option(
            "MNIST folder (default: HARNESS_MNIST_DIR, else downloaded and verified "
            "into ~/.cache/harness/mnist)"
        ),
    ] = None,
    python: Annotated[
        str | None,
        python_option(
            "interpreter with the workload installed, for the local executor "
            "(default: HARNESS_WORKLOAD_PYTHON, else this one)"
        ),
    ] = None,
    report: Annotated[
        bool, typer.Option(help="write report.md/json/csv and plots at the end")
    ] = True,
    shard: Annotated[
        str | None,
        typer.Option(
            help="run only shard I of N (e.g. 2/4), as split by `harness plan --shards N`"
        ),
    ] = None,
    control: Annotated[
        bool,
        control_option(
            "add to each image a control cell that must not reproduce (placement none), as "
            "control: true in the matrix does; a folder run with it resumes with it"
        ),
    ] = False,
) -> int:
    """Run the matrix. Exit codes: 0 every run succeeded; 1 some runs failed (the report lists
    them); 2 bad input (the matrix, a flag, the results folder: the message names the fix) or
    your own training failed (no further run is started); 130 interrupted (finished runs are
    kept)."""
    shard_spec = parse_shard(shard) if shard is not None else None
    loaded = load_matrix(matrix, control=control)
    if out is not None:  # refused before MNIST is fetched or an image is built
        ResultsDir(out).check_out()
        if not loaded.model.control and _has_controls(out):
            loaded = load_matrix(matrix, control=True)
    gpus, notice = packed_gpus(loaded, runs_per_gpu, gpus=gpus, shard=shard_spec, packing=packing)
    if notice is not None:
        sys.stderr.write(f"harness: {notice}\n")
    config = RunConfig(
        matrix=loaded,
        out=out,
        progress=progress,
        gpus=gpus,
        formats=REPORT_FORMATS if report else (),
        shard=shard_spec,
    )
    chosen = make_executor(loaded, executor, shard=shard_spec, data_dir=data_dir, python=python)
    with cancel_on_signals(config.cancel):  # finished results stay
        summary = run_matrix(config, chosen)
    stopped = _workload_stopped(summary, chosen.options.code_dir, loaded)
    _tell(summary, progress)
    if stopped is not None:
        sys.stderr.write("harness: stopped on the error in your training shown above\n")
        return stopped.exit_code
    return summary.exit_code


def _has_controls(out: Path) -> bool:
    """The folder was run with control cells (``--control``): resuming it makes them again,
    as its ``matrix.yaml`` copy says, whether or not the option is given again."""
    manifest = read_manifest(out)
    return manifest is not None and any(c.control for c in manifest.cells)


def _workload_stopped(
    summary: RunSummary, snapshot: Path | None, loaded: LoadedMatrix
) -> WorkloadStopped | None:
    """The user's own training failed: its message (their file and line) and what to do, printed
    first, before the grid of the runs it stopped; no traceback (exit 2)."""
    failure = summary.workload_error
    if failure is None or summary.interrupted:
        return None
    text = failure.text()
    yours = loaded.code_dir
    if snapshot is not None and yours is not None:  # the snapshot ran; you edit your folder
        text = text.replace(f"{snapshot}/", f"{yours}/")
    stopped = WorkloadStopped(text, failure.hint(summary.out))
    print_error(stopped)
    return stopped


def _tell(summary: RunSummary, progress: str | None) -> None:
    """The answer (summary and grid), then the paths scripts read."""
    if summary.report is not None:
        print_summary(summary.report, progress, sys.stdout)
    for path in summary.reports:
        if path.suffix == ".md":
            typer.echo(f"report: {path}")
    typer.echo(f"results: {summary.out}")
