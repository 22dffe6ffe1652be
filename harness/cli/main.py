"""The typer app, one registration line per verb, and the one place that catches HarnessError.

Exit codes (harness/exit_codes.py): 0 every run succeeded, 1 some runs failed (compare: a
regression), 2 bad input (matrix, flags, folder), 130 interrupted (Ctrl-C or SIGTERM); finished
results are kept in every case.
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from harness import DISTRIBUTION
from harness.cli import (
    baseline,
    compare,
    diagnose,
    doctor,
    merge,
    plan,
    report,
    run,
    schema,
    status,
    submit,
)
from harness.cli.help_style import apply, help_text
from harness.errors import HarnessError, print_error
from harness.exit_codes import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK
from harness.text import TerminalSafeFormatter

app = typer.Typer(
    name="harness",
    help="Run a PyTorch reproducibility matrix and report which settings reproduce bit for bit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
apply()


def harness_version() -> str:
    """The installed package's version ("unknown" when run from a bare source tree)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"harness {harness_version()}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="log what the harness decides")
    ] = False,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    logging.getLogger("harness").setLevel(logging.INFO if verbose else logging.WARNING)


for _name, _module in (
    ("run", run),
    ("plan", plan),
    ("report", report),
    ("schema", schema),
    ("doctor", doctor),
    ("merge", merge),
    ("compare", compare),
    ("baseline", baseline),
    ("diagnose", diagnose),
):
    app.command(_name, help=help_text(_module.command))(_module.command)
app.add_typer(submit.app, name="submit")
app.command("status", help=help_text(status.command))(status.command)


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit code (the console script passes it to sys.exit)."""
    # Messages and log lines may quote run records, logs and manifests: printed terminal-safe.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TerminalSafeFormatter("harness: %(levelname)s: %(message)s"))
    logging.basicConfig(handlers=[handler])
    try:
        result = app(args=argv, prog_name="harness", standalone_mode=False)
    except HarnessError as exc:
        return print_error(exc)
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    except typer.TyperException as exc:
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            sys.stderr.write(f"error: {exc.format_message()}\n")
        return EXIT_BAD_INPUT
    return result if isinstance(result, int) else EXIT_OK
