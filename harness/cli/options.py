"""The options several verbs share, declared once: their names, choices and checks.

A verb gives only its own help sentence (``executor_option("as `harness run` chose it")``).
The choices come from the registries that define them (the executors', the progress modes, the
report exporters'), so a new executor or format shows in ``--help`` and is accepted without a
verb changing. Typer refuses a bad value while parsing, with the registry's own words: the
unknown executor or format names the nearest one ("did you mean"), exit 2 (EXIT_BAD_INPUT).
The values stay plain strings, as the library takes them: an Enum would spell the registries'
names a second time. ``choice_option`` gives a verb's own closed set (``compare --format``) the
same refusal.
"""

from __future__ import annotations

from typing import Any, get_args

import typer

from harness.executors import EXECUTORS, get_executor_class
from harness.matrix.models import SlurmBlock
from harness.report.exporters import REPORT_FORMATS, check_format
from harness.report.terminal import MODES
from harness.run.gpu_packing import MAX_RUNS_PER_GPU

#: ``--executor`` of ``run`` and ``diagnose``: ``auto`` or a registry name. ``fake`` (the tests'
#: stand-in) is accepted but not offered in ``--help``.
EXECUTOR_CHOICES = ("auto", *EXECUTORS)
_OFFERED_EXECUTORS = tuple(name for name in EXECUTOR_CHOICES if name != "fake")
#: ``submit slurm --executor``: what ``slurm.executor`` takes (the matrix's model checks both).
SLURM_EXECUTOR_CHOICES: tuple[str, ...] = get_args(SlurmBlock.model_fields["executor"].annotation)


def _metavar(choices: tuple[str, ...]) -> str:
    """How ``--help`` shows the choices, as typer shows an Enum's: ``<rich|plain|quiet>``."""
    return f"<{'|'.join(choices)}>"


def _executor_name(value: str) -> str:
    if value not in EXECUTOR_CHOICES:
        get_executor_class(value)  # raises the registry's "unknown executor" with did-you-mean
    return value


def _either(choices: tuple[str, ...]) -> str:
    """``rich, plain or quiet``."""
    return f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else choices[0]


def choice_option(name: str, choices: tuple[str, ...], help: str | None = None) -> Any:
    """An option taking one of ``choices``; anything else is refused while parsing: ``Invalid
    value for --progress: choose rich, plain or quiet`` (exit 2)."""

    def parse(value: str) -> str:
        if value not in choices:
            raise typer.BadParameter(f"choose {_either(choices)}", param_hint=name)
        return value

    return typer.Option(name, parser=parse, metavar=_metavar(choices), help=help)


def executor_option(help: str) -> Any:
    """``--executor`` of ``run`` and ``diagnose`` (default ``auto`` in the verb)."""
    return typer.Option(
        "--executor", parser=_executor_name, metavar=_metavar(_OFFERED_EXECUTORS), help=help
    )


def slurm_executor_option(help: str) -> Any:
    """``submit slurm --executor``: checked with the ``slurm:`` section it overrides, so a bad
    value reads as a bad ``slurm.executor`` does."""
    return typer.Option("--executor", metavar=_metavar(SLURM_EXECUTOR_CHOICES), help=help)


def progress_option(help: str) -> Any:
    """``--progress``: one of the terminal's modes (default in the verb: None, by the stream)."""
    return choice_option("--progress", MODES, help)


def formats_option(help: str) -> Any:
    """``--format`` of ``report``, repeated for several: the exporters' names."""
    return typer.Option(
        "--format", parser=check_format, metavar=_metavar(REPORT_FORMATS), help=help
    )


def data_dir_option(help: str) -> Any:
    """``--data-dir``: the MNIST folder."""
    return typer.Option("--data-dir", help=help)


def python_option(help: str) -> Any:
    """``--python``: the interpreter the runs use."""
    return typer.Option("--python", help=help)


def control_option(help: str) -> Any:
    """``--control``: the matrix as if it said ``control: true`` (a control cell per image)."""
    return typer.Option("--control", help=help)


def out_option(help: str) -> Any:
    """``-o/--out``: every output folder or file (docs/contributing.md)."""
    return typer.Option("--out", "-o", help=help)


def _runs_per_gpu(value: str) -> str:
    """``auto`` or a whole number from 1 to ``MAX_RUNS_PER_GPU``, kept as text (the library
    takes ``"auto"``, ``"1"``, ``"4"``)."""
    if value == "auto":
        return value
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_RUNS_PER_GPU:
        raise typer.BadParameter(
            f"{value!r}: write auto (the GPU check's measurement decides) or a whole number of "
            f"runs from 1 to {MAX_RUNS_PER_GPU}, e.g. 4",
            param_hint="--runs-per-gpu",
        )
    return str(int(value))


def runs_per_gpu_option(help: str) -> Any:
    """``--runs-per-gpu``: how many 1-GPU runs share each GPU (harness/run/gpu_packing.py)."""
    return typer.Option("--runs-per-gpu", parser=_runs_per_gpu, metavar="<auto|N>", help=help)
