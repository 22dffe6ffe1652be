"""The results folder: lock, manifest identity, resume decisions, host-written failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import StoreError
from harness.executors.fake import write_fake_record
from harness.matrix import parse_matrix
from harness.record import load_record
from harness.store import ResultsDir, record_failure

QUICK = "name: q\nrun: {repeats: 2}\naxes: {placement: [none, before_model]}\n"


def matrix(text: str = QUICK):
    return parse_matrix(text, Path("q.yaml"))


def test_lock_names_the_other_pid(tmp_path: Path):
    code = (
        "import sys, time; from harness.store import ResultsDir\n"
        f"s = ResultsDir({str(tmp_path)!r}); s.lock()\n"
        "print('locked', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match=f"pid {holder.pid}"):
            ResultsDir(tmp_path).lock()
    finally:
        holder.kill()
        holder.wait()
    store = ResultsDir(tmp_path)
    store.lock()  # free again once the holder is gone
    store.unlock()


def test_another_matrix_is_refused_but_a_new_timeout_is_not(tmp_path: Path):
    store = ResultsDir(tmp_path)
    store.write_manifest(matrix())
    store.write_manifest(matrix(QUICK.replace("repeats: 2", "repeats: 2, timeout_s: 5")))
    with pytest.raises(StoreError, match="another matrix"):
        store.write_manifest(matrix(QUICK.replace("none, ", "")))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [c["name"] for c in manifest["cells"]] == [c.name for c in matrix().cells]
    assert (tmp_path / "matrix.yaml").read_text() == manifest["matrix_text"]


def test_resume_decisions(tmp_path: Path):
    store = ResultsDir(tmp_path)
    cell = matrix().cells[0]
    spec = cell.spec(0)
    run_dir = store.run_dir(cell, 0)
    assert not store.finished(run_dir, spec)  # missing
    store.prepare_run(run_dir, spec)
    write_fake_record(spec, run_dir)
    assert store.finished(run_dir, spec)
    # another workload image (a rebuilt one) is another run; no image (local) is not checked
    assert not store.finished(run_dir, spec, image_id="sha256:" + "e" * 64)
    assert not store.finished(run_dir, spec.replace(seed=1))  # spec changed
    (run_dir / "run.json").write_text('{"format_version": 1, "sta')  # truncated
    assert not store.finished(run_dir, spec)
    store.prepare_run(run_dir, spec)
    assert sorted(p.name for p in run_dir.iterdir()) == ["spec.json"]


def test_failure_records_keep_the_log_tail(tmp_path: Path):
    cell = matrix().cells[0]
    spec = cell.spec(0)
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "run.log").write_text("".join(f"line {i}\n" for i in range(100)))
    record_failure(run_dir, spec, "timeout", "timed out after 1 s")
    record = load_record(run_dir)
    assert record.status == "failed" and record.error.type == "timeout"
    assert record.error.log_tail.endswith("line 99") and "line 59" not in record.error.log_tail
    # a record the host saw fail after it was written becomes a failed one
    write_fake_record(spec, run_dir)
    record_failure(run_dir, spec, "killed", "killed by SIGKILL")
    assert load_record(run_dir).status == "failed"
    assert load_record(run_dir).steps == 50
