"""Process faults, injected for real into a running ``harness run`` (local executor, real MNIST).

Faults 1, 3, 4 (SIGTERM; SIGINT and SIGKILL are in test_resume.py), 8 and 11 of docs/faults.md.
Each test checks: finished results intact, no process left, a message that says what happened
and what to do, and a resume that completes the rest.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from fault_tools import (
    Harness,
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


def test_run_past_its_timeout_is_recorded_and_resumes_with_a_longer_one(tmp_path: Path):
    """Fault 3: a timeout far below the run's length; raising it resumes the same folder."""
    matrix = write_matrix(tmp_path / "m.yaml", "slow", timeout_s=1.5)
    out = tmp_path / "out"
    first = Harness(matrix, out)
    try:
        code = first.finish(timeout=300)
    finally:
        first.kill()
    assert code == 1, first.text[-3000:]
    assert no_processes_left(out, first.pid) == []
    record = records(out)["repeat-0"]
    assert record.status == "failed" and record.error.type == "timeout"
    assert "timed out after 1.5 s" in record.error.message
    assert "raise run.timeout_s" in record.error.message
    assert "timed out after 1.5 s" in first.text

    write_matrix(matrix, "slow", timeout_s=600)  # the fix the message names
    second = Harness(matrix, out)
    try:
        assert second.finish(timeout=600) == 0, second.text[-3000:]
    finally:
        second.kill()
    assert records(out)["repeat-0"].ok
    kept = finished_files(out)
    # A later run with the short timeout again leaves the finished run alone.
    write_matrix(matrix, "slow", timeout_s=1.5)
    third = Harness(matrix, out)
    try:
        assert third.finish(timeout=120) == 0, third.text[-3000:]
    finally:
        third.kill()
    assert "1 already done" in third.text and "] start " not in third.text
    assert finished_files(out) == kept


def test_hung_worker_is_caught_by_the_timeout(tmp_path: Path):
    """Fault 11: a workload SIGSTOPped mid-run hangs without output; the timeout kills its
    (stopped) process group and the matrix goes on."""
    matrix = write_matrix(tmp_path / "m.yaml", "hang", repeats=2, steps=300, timeout_s=25)
    out = tmp_path / "out"
    first = Harness(matrix, out)
    try:
        first.wait_for("] start ")
        victim = sorted(out.glob("cells/*/repeat-0"))[0]
        pid = workload_pid(victim)
        wait_for_text(victim / "run.log", "epoch")  # after the first epoch line
        os.kill(pid, signal.SIGSTOP)
        code = first.finish(timeout=300)
    finally:
        first.kill()
    assert code == 1, first.text[-3000:]
    assert no_processes_left(out, first.pid) == []
    got = records(out)
    assert got["repeat-0"].error.type == "timeout"
    assert "raise run.timeout_s" in got["repeat-0"].error.message
    assert got["repeat-1"].ok
    kept = finished_files(out)

    resume_completes(Harness(matrix, out), out, kept, already_done=1)


def test_sigterm_to_harness_stops_runs_and_resume_completes(tmp_path: Path):
    """Fault 4, SIGTERM (a service manager, CI cancelling a job): exit 130, nothing left."""
    matrix = write_matrix(tmp_path / "m.yaml", "term", repeats=3, steps=300)
    out = tmp_path / "out"
    first = Harness(matrix, out, cpus="0")  # one core: the runs go one after another
    try:
        first.wait_for("] ok ")
        first.wait_for("] start ", timeout=60)
        first.signal(signal.SIGTERM)  # to the harness alone, not its session
        code = first.finish(timeout=120)
    finally:
        first.kill()
    assert code == 130, first.text[-3000:]
    assert no_processes_left(out, first.pid) == []
    assert "aborted" in first.text and "interrupted" in first.text
    kept = finished_files(out)
    done = sum(1 for r in records(out).values() if getattr(r, "ok", False))
    assert 1 <= done < 3

    second = Harness(matrix, out)
    try:
        assert second.finish(timeout=600) == 0, second.text[-3000:]
    finally:
        second.kill()
    assert f"{done} already done" in second.text
    assert second.text.count("] start ") == 3 - done
    assert {k: v for k, v in finished_files(out).items() if k in kept} == kept


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
