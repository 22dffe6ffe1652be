"""Resume after an interrupted ``harness run``: SIGINT (Ctrl-C) and SIGKILL, on real training.

The second run completes only the rest; finished run records stay byte-identical; no process
of the interrupted run is left behind.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from fault_tools import Harness, finished_files, no_processes_left, resume_completes

MATRIX = """\
name: resume
run: {repeats: 3, epochs: 1, max_steps_per_epoch: 60, threads: 1, timeout_s: 600}
axes:
  placement: [before_model]
"""
#: three runs: one finished, one stopped in flight (two slots), and one not yet started
RUNS = 3

pytestmark = pytest.mark.slow


def finished_runs(out: Path) -> set[tuple[str, ...]]:
    """The run folders (cells/<cell>/repeat-<k>) that hold an ok record."""
    return {Path(name).parts[:3] for name in finished_files(out)}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupted_run_resumes(tmp_path: Path, sig: signal.Signals):
    matrix = tmp_path / "resume.yaml"
    matrix.write_text(MATRIX)
    out = tmp_path / "results"
    first = Harness(matrix, out)
    try:
        first.wait_for("] ok ")  # one run has finished: interrupt now
        if sig is signal.SIGINT:
            os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        else:
            first.signal(signal.SIGKILL)
        code = first.finish(timeout=60)
    finally:
        first.kill()
    assert code == (130 if sig is signal.SIGINT else -signal.SIGKILL), first.text[-2000:]
    assert no_processes_left(out, first.pid, wait_s=15) == []

    kept = finished_files(out)
    done = len(finished_runs(out))
    assert 1 <= done < RUNS
    text = resume_completes(Harness(matrix, out), out, kept, already_done=done)
    assert text.count("] start ") == RUNS - done
    assert len(finished_runs(out)) == RUNS
