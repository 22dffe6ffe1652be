"""Resume after an interrupted ``harness run``: SIGINT (Ctrl-C) and SIGKILL, on real training.

The second run completes only the rest; finished run records stay byte-identical; no process
of the interrupted run is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.record import RecordError, load_record

ROOT = Path(__file__).resolve().parents[1]
MATRIX = """\
name: resume
run: {repeats: 2, epochs: 1, max_steps_per_epoch: 60, threads: 1, timeout_s: 600}
axes:
  placement: [none, before_model]
"""

pytestmark = pytest.mark.slow


def harness_run(matrix: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(matrix),
            "--out",
            str(out),
            "--progress",
            "plain",
            "--no-report",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def processes_of(out: Path, session: int) -> list[int]:
    """Live processes that belong to the run: in its session or naming its results folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, sid = fields[0], int(fields[3])
        if state != "Z" and (sid == session or str(out).encode() in cmdline):
            found.append(int(entry.name))
    return found


def finished_runs(out: Path) -> dict[Path, tuple[bytes, bytes]]:
    done = {}
    for run_dir in sorted(out.glob("cells/*/repeat-*")):
        try:
            if load_record(run_dir).ok:
                done[run_dir] = (
                    (run_dir / "run.json").read_bytes(),
                    (run_dir / "losses.npy").read_bytes(),
                )
        except RecordError:
            pass
    return done


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupted_run_resumes(tmp_path: Path, sig: signal.Signals):
    matrix = tmp_path / "resume.yaml"
    matrix.write_text(MATRIX)
    out = tmp_path / "results"
    first = harness_run(matrix, out)
    lines = []
    deadline = time.monotonic() + 300
    for line in first.stderr:  # wait until one run has finished, then interrupt
        lines.append(line)
        if "] ok " in line or time.monotonic() > deadline:
            break
    assert any("] ok " in ln for ln in lines), "".join(lines)
    if sig is signal.SIGINT:
        os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    else:
        first.send_signal(signal.SIGKILL)
    rest = first.stderr.read()
    code = first.wait(timeout=60)
    assert code == (130 if sig is signal.SIGINT else -signal.SIGKILL), rest[-2000:]

    deadline = time.monotonic() + 15
    while processes_of(out, first.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_of(out, first.pid) == []

    done = finished_runs(out)
    assert 1 <= len(done) < 4
    second = harness_run(matrix, out)
    log = second.stderr.read()
    assert second.wait(timeout=600) == 0, log[-3000:]
    assert f"{len(done)} already done" in log
    assert log.count("] start ") == 4 - len(done)
    for run_dir, (record, losses) in done.items():
        assert (run_dir / "run.json").read_bytes() == record
        assert (run_dir / "losses.npy").read_bytes() == losses
    assert len(finished_runs(out)) == 4
