"""SIGTERM and Ctrl-C (SIGINT) to a training workload still leave a failed run.json saying so.

Python's default SIGTERM kills without a record; during ``fit`` Lightning turns SIGTERM into
``SIGTERMException`` and Ctrl-C into ``sys.exit(1)``, both ``SystemExit``. Each test runs the
real workload (``python -m harness.workload``, real MNIST, real Lightning), held at a known
training step by the test-only ``hang`` fault, and signals it there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO
from fault_tools import no_processes_left

from harness.results.run_reader import load_record, load_weight_hashes
from harness.workload.faults import HANG_LINE

pytestmark = pytest.mark.slow


class Workload:
    """``python -m harness.workload`` on a spec, its output read line by line."""

    def __init__(self, spec: dict, out: Path, mnist_dir: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "spec.json").write_text(json.dumps(spec))
        argv = [sys.executable, "-m", "harness.workload", "--spec", str(out / "spec.json")]
        argv += ["--out", str(out), "--data-dir", str(mnist_dir)]
        self.proc = subprocess.Popen(  # argv list, no shell
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, needle: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not any(needle in line for line in list(self.lines)):
            assert self.proc.poll() is None, "".join(self.lines)[-3000:]
            assert time.monotonic() < deadline, "".join(self.lines)[-3000:]
            time.sleep(0.05)

    def finish(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
            self._reader.join(timeout=10)


HANG_AT_STEP_5 = {"max_steps_per_epoch": 50, "test_fault": {"kind": "hang", "rank": 0, "step": 5}}


@pytest.mark.parametrize(
    ("sig", "kind", "message"),
    [
        (signal.SIGTERM, "Terminated", "terminated by SIGTERM"),
        (signal.SIGINT, "Interrupted", "interrupted by SIGINT (Ctrl-C)"),
    ],
)
def test_a_signal_during_training_leaves_a_failed_record_saying_so(
    tmp_path, mnist_dir, sig, kind, message
):
    out = tmp_path / "out"
    run = Workload(HANG_AT_STEP_5, out, mnist_dir)
    try:
        run.wait_for(HANG_LINE)
        run.proc.send_signal(sig)
    finally:
        code = run.finish()
    assert code == 1, "".join(run.lines)[-3000:]
    record = load_record(out)
    assert record.status == "failed" and record.written_by == "workload"
    assert (record.error.type, record.error.message) == (kind, message)
    assert record.spec["test_fault"] == HANG_AT_STEP_5["test_fault"]
    assert record.timing.wall_seconds is not None
    # the steps made before the signal are kept, their parameter hashes with them
    assert record.steps == 5
    assert load_weight_hashes(out, record).shape == (5, 4)


def test_sigterm_to_a_ddp_run_leaves_a_failed_record(tmp_path, mnist_dir):
    """Two CPU ranks, rank 0 held at step 3: SIGTERM to both (as the local executor's
    escalation sends it to the process group) ends the run with a Terminated record."""
    out = tmp_path / "out"
    spec = {
        "devices": 2,
        "max_steps_per_epoch": 30,
        "test_fault": {"kind": "hang", "rank": 0, "step": 3},
    }
    run = Workload(spec, out, mnist_dir)
    try:
        run.wait_for(HANG_LINE)
        os.killpg(run.proc.pid, signal.SIGTERM)
    finally:
        code = run.finish()
    assert code == 1, "".join(run.lines)[-3000:]
    assert no_processes_left(out, run.proc.pid) == []  # rank 1 too
    record = load_record(out)
    assert record.status == "failed"
    assert (record.error.type, record.error.message) == ("Terminated", "terminated by SIGTERM")
