"""One way to run a tool (harness/subprocesses.py): a program missing from PATH, one that cannot
start, one that does not end in time and one that fails are each a ToolError whose message
names the command; nothing goes through a shell."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.subprocesses import (
    ToolFailed,
    ToolNotFound,
    ToolNotStarted,
    ToolTimedOut,
    find_tool,
    last_line,
    output_tail,
    run_tool,
)


def test_a_program_not_on_path_is_named_with_what_to_do() -> None:
    with pytest.raises(ToolNotFound) as caught:
        run_tool(["no-such-tool-xq", "--version"], timeout_s=5)
    assert isinstance(caught.value, HarnessError)
    assert caught.value.message == "no-such-tool-xq not found on PATH"
    assert caught.value.hint == "install no-such-tool-xq, or put the folder that holds it on PATH"
    with pytest.raises(ToolNotFound) as caught:
        find_tool("sbatch-xq", why="no Slurm here")
    assert caught.value.message == "sbatch-xq not found on PATH: no Slurm here"


def test_a_path_is_run_as_given_and_one_that_cannot_start_says_why(tmp_path: Path) -> None:
    with pytest.raises(ToolNotStarted) as caught:
        run_tool([tmp_path / "missing", "-V"], timeout_s=5)
    assert caught.value.message == f"cannot start {tmp_path / 'missing'}: No such file or directory"


def test_output_is_text_and_a_failure_is_an_outcome_unless_checked() -> None:
    code = "import sys; print('out'); print('first\\nthe error', file=sys.stderr); sys.exit(3)"
    proc = run_tool([sys.executable, "-c", code], timeout_s=30)
    assert (proc.returncode, proc.stdout) == (3, "out\n")
    assert last_line(proc) == "the error" and output_tail(proc) == "first the error"
    with pytest.raises(ToolFailed) as caught:
        run_tool([sys.executable, "-c", code], timeout_s=30, check=True)
    assert caught.value.returncode == 3
    assert caught.value.message.endswith("exited with code 3: first the error")
    assert caught.value.message.startswith(sys.executable)


def test_a_tool_that_does_not_end_in_time_is_killed_and_named() -> None:
    with pytest.raises(ToolTimedOut) as caught:
        run_tool([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
    assert caught.value.message.endswith("did not finish within 0.5 s")
    assert "time.sleep(30)" in caught.value.message  # the command, quoted as one line
