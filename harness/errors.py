"""One user-error type, caught in one place (the CLI), carrying what to do next."""

from __future__ import annotations

import sys

from harness.exit_codes import EXIT_BAD_INPUT
from harness.text import terminal_safe


class HarnessError(Exception):
    """An error the user can act on: ``message`` says what happened, ``hint`` what to do."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


def print_error(exc: HarnessError) -> int:
    """``error:`` and ``hint:`` on stderr, terminal-safe, no traceback; the exit code. The CLI's
    one printer of a HarnessError, also used by the Slurm tasks' entry point."""
    sys.stderr.write(f"error: {terminal_safe(exc.message, multiline=True)}\n")
    if exc.hint:
        sys.stderr.write(f"  hint: {terminal_safe(exc.hint, multiline=True)}\n")
    sys.stderr.flush()
    return exc.exit_code


class MatrixError(HarnessError):
    """A matrix file that cannot be used: names the file, the line and the fix."""


class ExecutorError(HarnessError):
    """An executor that cannot start runs at all (no daemon, no image, no GPU runtime)."""


class StoreError(HarnessError):
    """A results folder that cannot be used (locked, another matrix, not writable)."""
