"""What the local executor asks the runs' interpreter once per matrix run, before any run: the
build functions import (``check_entries``), the matrix's ``workload.requirements`` are installed
(``check_requirements``), and what its runs would record (``probe_identity``).

Each question is a module of ``harness.workload`` run with ``python -m`` in an empty temporary
folder (the workload side: it runs in the user's interpreter, which has the harness's workload
part but maybe none of the host's dependencies), through ``harness.subprocesses.run_tool``; the
answer is the JSON on its last line that starts with the probe's mark
(``harness.contract.probe_marks``).
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.contract.probe_marks import IDENTITY_MARK, REQUIREMENTS_MARK
from harness.errors import ExecutorError
from harness.executors.base import RunIdentity
from harness.subprocesses import ToolError, ToolTimedOut, last_line, run_tool

log = logging.getLogger(__name__)

#: Seconds the interpreter may take to say what it would run (importing torch, cold: ~20 s).
PROBE_TIMEOUT_S = 300.0
#: how long importing the user's module may take before the check gives up (and the runs say)
ENTRY_CHECK_TIMEOUT_S = 120.0
IDENTITY_HINT = (
    "pass --python (or set HARNESS_WORKLOAD_PYTHON to) an interpreter that has this harness "
    "installed with its workload extra: pip install -e '.[workload]'"
)
REQUIREMENTS_HINT = "pass --python an interpreter that runs (HARNESS_WORKLOAD_PYTHON)"


def ask_python(
    python: str,
    module: str,
    mark: str,
    args: Sequence[str] = (),
    timeout_s: float = PROBE_TIMEOUT_S,
) -> tuple[subprocess.CompletedProcess[str], Any]:
    """Run ``python -m module *args`` in an empty temporary folder and read the JSON that its
    last line starting with ``mark`` carries (None: no such line, or not JSON). A ToolError
    (not found, not started, timed out) propagates: each caller says what it asked."""
    with tempfile.TemporaryDirectory(prefix="harness-probe-") as cwd:
        proc = run_tool([python, "-m", module, *args], timeout_s=timeout_s, cwd=cwd)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(mark)]
    try:
        data = json.loads(lines[-1].removeprefix(mark)) if lines else None
    except json.JSONDecodeError:
        data = None
    return proc, data


def probe_identity(python: str, timeout_s: float = PROBE_TIMEOUT_S) -> RunIdentity:
    """Ask ``python`` what its runs would record; ExecutorError when it cannot say, since then
    it cannot run the workload either."""
    try:
        proc, data = ask_python(
            python, "harness.workload.identity_probe", IDENTITY_MARK, timeout_s=timeout_s
        )
    except ToolTimedOut as exc:
        raise ExecutorError(
            f"{python} did not say within {timeout_s:g} s which workload code and torch it "
            "would run",
            IDENTITY_HINT,
        ) from exc
    except ToolError as exc:
        raise ExecutorError(exc.message, IDENTITY_HINT) from exc
    if proc.returncode != 0 or not isinstance(data, dict):
        raise ExecutorError(
            f"{python} cannot say which workload code and torch it would run "
            f"(exit code {proc.returncode}): {last_line(proc)}",
            IDENTITY_HINT,
        )

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    return RunIdentity(
        workload_digest=text("workload_digest"), python=text("python"), torch=text("torch")
    )


def check_requirements(python: str, requirements: Sequence[str]) -> None:
    """Refuse, before any run, a matrix whose ``workload.requirements`` the interpreter lacks
    (the local executor installs nothing): one subprocess asks ``python`` for them all (argv,
    no shell); an ExecutorError (exit 2) names each missing one and the fix."""
    if not requirements:
        return
    module = "harness.workload.requirements_probe"
    try:
        proc, found = ask_python(python, module, REQUIREMENTS_MARK, requirements)
    except ToolError as exc:
        raise ExecutorError(
            f"cannot ask {python} which of workload.requirements it has: {exc.message}",
            REQUIREMENTS_HINT,
        ) from exc
    if proc.returncode != 0 or not isinstance(found, list):
        raise ExecutorError(
            f"cannot ask {python} which of workload.requirements it has "
            f"(exit code {proc.returncode}): {last_line(proc)}",
            REQUIREMENTS_HINT,
        )
    missing = [(text, have) for text, have, ok in found if not ok]
    if not missing:
        return
    said = "; ".join(
        f"{text} ({'not installed' if have is None else f'{have} installed'})"
        for text, have in missing
    )
    wanted = " ".join(shlex.quote(text) for text, _ in missing)
    raise ExecutorError(
        f"the workload needs {said} in {python}, which runs the local cells "
        "(workload.requirements; the local executor installs nothing)",
        f"pip install {wanted} into {python} ({shlex.quote(python)} -m pip install {wanted}), "
        "or run in a container, where the workload image installs it",
    )


def check_entries(
    python: str, entries: Sequence[str], code_dir: Path | None, source: Path | None = None
) -> None:
    """Import each build function (``entry``) once in ``python``, the runs' interpreter, before
    any run (harness/workload/entry_check.py): a typo or a broken module is an ExecutorError
    (exit 2) with the user's file and line or a "did you mean", not a failed first run.
    ``source``: the user's folder that ``code_dir`` is a snapshot of, named in the message."""
    from harness.workload.entry_check import EXIT_ENTRY_BROKEN

    for entry in sorted(set(entries)):
        argv = [python, "-m", "harness.workload.entry_check", entry, str(code_dir or "")]
        with tempfile.TemporaryDirectory(prefix="harness-entry-") as cwd:
            try:
                proc = run_tool(argv, timeout_s=ENTRY_CHECK_TIMEOUT_S, cwd=cwd)
            except ToolError as exc:
                log.warning("could not check the entry %r before the runs: %s", entry, exc.message)
                continue  # the runs themselves say what is wrong
        if proc.returncode == EXIT_ENTRY_BROKEN:
            said = (proc.stdout.strip().splitlines() or [f"entry {entry!r} does not load"])[-1]
            if code_dir is not None and source is not None:
                said = said.replace(str(code_dir), str(source))
            raise ExecutorError(
                said,
                "fix it (the matrix's workload.entry or your module), then rerun the same "
                "command: no run was started",
            )
        if proc.returncode != 0:
            log.warning("could not check the entry %r: %s", entry, last_line(proc))
