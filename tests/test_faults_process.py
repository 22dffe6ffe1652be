"""Process faults, injected for real into a running ``harness run`` (local executor, real MNIST).

Faults 1, 3 and 11 (one test), 4 (SIGTERM; SIGINT and SIGKILL are in test_resume.py) and 8 of
docs/faults.md.
Each test checks: finished results intact, no process left, a message that says what happened
and what to do, and a resume that completes the rest.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from fault_tools import (
    Harness,
    cpus_allowed,
    finished_files,
    no_processes_left,
    records,
    resume_completes,
    wait_for_text,
    workload_pid,
    write_matrix,
)

pytestmark = pytest.mark.slow


def test_sigkilled_workload_fails_its_run_and_the_matrix_goes_on(tmp_path: Path):
    """Fault 1: the workload is SIGKILLed in the middle of its second epoch."""
    matrix = write_matrix(tmp_path / "m.yaml", "kill", repeats=2, steps=600, epochs=3)
    out = tmp_path / "out"
    first = Harness(matrix, out)
    try:
        victim = next(iter(sorted(out.glob("cells/*/repeat-0"))), None)
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.05)
            victim = next(iter(sorted(out.glob("cells/*/repeat-0"))), None)
        assert victim is not None
        pid = workload_pid(victim)
        wait_for_text(victim / "run.log", "epoch 1/3 done")
        os.kill(pid, signal.SIGKILL)
        code = first.finish(timeout=600)
    finally:
        first.kill()
    assert code == 1, first.text[-3000:]  # some runs failed; not a crash
    assert no_processes_left(out, first.pid) == []
    got = records(out)
    killed, other = got["repeat-0"], got["repeat-1"]
    assert killed.status == "failed" and killed.error.type == "killed"
    assert "SIGKILL" in killed.error.message and "rerun the same command" in killed.error.message
    assert "epoch 1/3 done" in killed.error.log_tail  # the log tail is kept
    assert other.ok and other.steps == 1800  # the matrix went on
    assert "failed" in first.text and "killed by SIGKILL" in first.text
    assert "Traceback" not in first.text
    kept = finished_files(out)
    assert kept

    text = resume_completes(Harness(matrix, out), out, kept, already_done=1)
    assert text.count("] start ") == 1


def test_hung_and_overlong_runs_time_out_and_resume_with_a_longer_timeout(tmp_path: Path):
    """Faults 11 and 3, on one matrix of two repeats.

    11: a workload SIGSTOPped as it starts hangs without output; the timeout kills its (stopped)
    process group, and the other repeat, training beside it, is ok. Both are pinned to a core of
    their own meanwhile (docs/results.md, "Slots"), read back from the kernel.
    3: run again with a timeout far below a run's length, the stopped repeat times out while it
    trains, and the finished one is kept; the fix the message names (a longer timeout) resumes
    the same folder."""
    matrix = write_matrix(tmp_path / "m.yaml", "hang", repeats=2, timeout_s=25)
    out = tmp_path / "out"
    mask = os.sched_getaffinity(0)  # the harness inherits it
    first = Harness(matrix, out)
    pinned = {}
    try:
        first.wait_for("] start ")
        victim = sorted(out.glob("cells/*/repeat-*"))[0]
        pid = workload_pid(victim)  # found while it starts (importing torch: seconds) ...
        pinned[victim.name] = cpus_allowed(pid, at_most=1)  # threads: 1, devices: 1
        os.kill(pid, signal.SIGSTOP)  # ... so it is stopped before it could have finished
        if len(mask) >= 2:  # two slots: the other repeat trains beside it
            first.wait_for("] start ", count=2)
            other = next(d for d in out.glob("cells/*/repeat-*") if d != victim)
            pinned[other.name] = cpus_allowed(workload_pid(other), at_most=1)
        code = first.finish(timeout=300)
    finally:
        first.kill()
    assert code == 1, first.text[-3000:]
    assert no_processes_left(out, first.pid) == []
    assert all(len(cores) == 1 and cores <= mask for cores in pinned.values()), (pinned, mask)
    assert len({min(cores) for cores in pinned.values()}) == len(pinned), pinned  # disjoint
    got = records(out)
    assert got[victim.name].error.type == "timeout"
    assert "timed out after 25 s" in got[victim.name].error.message
    assert [r.ok for name, r in got.items() if name != victim.name] == [True]
    kept = finished_files(out)
    assert kept

    write_matrix(matrix, "hang", repeats=2, timeout_s=1.5)  # far below a run's length
    second = Harness(matrix, out)
    try:
        code = second.finish(timeout=300)
    finally:
        second.kill()
    assert code == 1, second.text[-3000:]
    assert no_processes_left(out, second.pid) == []
    assert "1 already done" in second.text and second.text.count("] start ") == 1
    record = records(out)[victim.name]
    assert record.status == "failed" and record.error.type == "timeout"
    assert "timed out after 1.5 s" in record.error.message
    assert "raise run.timeout_s" in record.error.message
    assert "timed out after 1.5 s" in second.text and "Traceback" not in second.text
    assert finished_files(out) == kept  # the finished repeat, untouched by the short timeout

    write_matrix(matrix, "hang", repeats=2, timeout_s=600)  # the fix the message names
    text = resume_completes(Harness(matrix, out), out, kept, already_done=1)
    assert text.count("] start ") == 1


def test_sigterm_to_harness_stops_runs_and_resume_completes(tmp_path: Path):
    """Fault 4, SIGTERM (a service manager, CI cancelling a job): the run in flight is stopped
    and recorded as such, the finished one is kept, the report is written, exit 130, no process
    is left; the resume runs the stopped one only."""
    matrix = write_matrix(tmp_path / "m.yaml", "term", repeats=2)
    out = tmp_path / "out"
    first = Harness(matrix, out, cpus="0", report=True)  # one core: one run after the other
    try:
        first.wait_for("] ok ")  # repeat 0 has finished
        kept = finished_files(out)
        first.wait_for("] start ", count=2)  # repeat 1 has started ...
        victim = next(out.glob("cells/*/repeat-1"))
        workload_pid(victim)  # ... and its workload is running (importing torch: seconds)
        first.signal(signal.SIGTERM)  # to the harness alone, not its session
        code = first.finish(timeout=120)
    finally:
        first.kill()
    assert code == 130, first.text[-3000:]
    assert no_processes_left(out, first.pid) == []
    stopped = records(out)[victim.name]
    assert stopped.status == "failed", stopped
    assert stopped.error.type in ("killed", "Interrupted"), stopped.error
    aborted = [ln for ln in first.text.splitlines() if "aborted" in ln]
    assert len(aborted) == 1 and "#1 " in aborted[0], first.text[-3000:]
    assert "the harness was interrupted" in aborted[0]
    assert kept and finished_files(out) == kept  # repeat 0, byte for byte
    report = json.loads((out / "report.json").read_text())  # written, though interrupted
    assert [(f["repeat"], f["type"]) for f in report["failures"]] == [(1, stopped.error.type)]
    assert (out / "report.md").is_file()

    text = resume_completes(Harness(matrix, out), out, kept, already_done=1)
    assert text.count("] start ") == 1


def test_two_harness_runs_on_one_folder(tmp_path: Path):
    """Fault 8: the second ``harness run`` on the same --out is refused by the lock."""
    matrix = write_matrix(tmp_path / "m.yaml", "lock", steps=300)
    out = tmp_path / "out"
    first = Harness(matrix, out)
    try:
        first.wait_for("] start ")
        second = Harness(matrix, out)
        try:
            assert second.finish(timeout=120) == 2, second.text
        finally:
            second.kill()
        assert f"is in use by harness pid {first.pid}" in second.text
        assert "choose another --out" in second.text
        assert "Traceback" not in second.text
        assert first.proc.poll() is None  # the first one was not disturbed
        assert first.finish(timeout=600) == 0, first.text[-3000:]
    finally:
        first.kill()
    assert no_processes_left(out, first.pid) == []
    assert no_processes_left(out, second.pid) == []
    kept = finished_files(out)
    assert kept and all(r.ok for r in records(out).values())

    third = Harness(matrix, out)  # once the lock is free, the folder resumes (nothing left)
    try:
        assert third.finish(timeout=120) == 0, third.text
    finally:
        third.kill()
    assert "1 already done" in third.text
    assert finished_files(out) == kept
