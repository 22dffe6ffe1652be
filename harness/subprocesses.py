"""One way to run an external tool (``nvidia-smi``, Slurm's commands, an interpreter asked a
question): an argument list, never a shell line; the program looked up on PATH with a clear
"not found"; a timeout; output captured as text; and one wording for what went wrong.

Every failure is a ``ToolError`` (a ``HarnessError``: a message and a hint) whose message names
the command: ``ToolNotFound`` (not on PATH), ``ToolNotStarted`` (the OS refused to start it),
``ToolTimedOut`` (no end within the timeout) and, where the caller asks ``check=True``,
``ToolFailed`` (a non-zero exit, with the tail of what it said). Callers that know more (Slurm's
controller, the local interpreter) catch these and say it in their own words.

Long-running processes that an executor manages (a run's process group and its signals) are
not tools: ``harness.executors.local`` starts those itself.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.errors import HarnessError

#: How much of a failed tool's output a message quotes (its last characters).
TAIL_CHARS = 500


class ToolError(HarnessError):
    """A tool that could not run to its end; ``argv`` is what was asked."""

    def __init__(self, message: str, hint: str | None = None, *, argv: Sequence[str] = ()) -> None:
        super().__init__(message, hint)
        self.argv = list(argv)


class ToolNotFound(ToolError):
    """The program is not on PATH."""


class ToolNotStarted(ToolError):
    """The operating system refused to start the program (missing, not executable, ...)."""


class ToolTimedOut(ToolError):
    """The program did not end within its timeout (it has been killed)."""


class ToolFailed(ToolError):
    """The program ended with a non-zero exit code (only with ``check=True``)."""

    def __init__(
        self, message: str, hint: str | None = None, *, argv: Sequence[str] = (), returncode: int
    ) -> None:
        super().__init__(message, hint, argv=argv)
        self.returncode = returncode


def find_tool(name: str, *, why: str = "", hint: str | None = None) -> str:
    """The path of the program ``name`` on PATH; ``ToolNotFound`` ("NAME not found on PATH",
    then ``why``) with ``hint`` (default: install it or put it on PATH) otherwise."""
    exe = shutil.which(name)
    if exe is None:
        raise ToolNotFound(
            f"{name} not found on PATH" + (f": {why}" if why else ""),
            hint or f"install {name}, or put the folder that holds it on PATH",
            argv=[name],
        )
    return exe


def command_line(argv: Sequence[str]) -> str:
    """``argv`` as one line to show a user (quoted as a shell would need it; never run)."""
    return shlex.join(str(a) for a in argv)


def output_tail(proc: subprocess.CompletedProcess[str], chars: int = TAIL_CHARS) -> str:
    """What a finished tool said last (stderr, else stdout), on one line, at most ``chars``."""
    said = " ".join((proc.stderr or proc.stdout or "").split())
    return said[-chars:] if said else "no output"


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The last line a failed tool printed (stderr, else stdout): the error, not a traceback."""
    last = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:]
    return last[0] if last else "no output"


def run_tool(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout_s: float,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell) with stdin closed, its output captured as text (undecodable
    bytes replaced), killed after ``timeout_s``. A bare program name is looked up on PATH
    (``find_tool``); a path is run as given. Raises ``ToolNotFound``, ``ToolNotStarted``,
    ``ToolTimedOut``, and with ``check`` ``ToolFailed``; otherwise returns the finished process
    whatever its exit code."""
    args = [str(a) for a in argv]
    if os.sep not in args[0]:
        args[0] = find_tool(args[0])
    shown = command_line([str(argv[0]), *args[1:]])
    try:
        proc = subprocess.run(  # argv list, no shell
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            cwd=cwd,
            env=None if env is None else dict(env),
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolTimedOut(f"{shown} did not finish within {timeout_s:g} s", argv=args) from exc
    except OSError as exc:
        raise ToolNotStarted(f"cannot start {argv[0]}: {exc.strerror or exc}", argv=args) from exc
    if check and proc.returncode != 0:
        raise ToolFailed(
            f"{shown} exited with code {proc.returncode}: {output_tail(proc)}",
            argv=args,
            returncode=proc.returncode,
        )
    return proc
