"""Results-folder faults: a run record corrupted on disk (fault 6) and a full results disk
(fault 7, a real tmpfs mounted for the test). Real runs, real files, real mounts.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fault_tools import (
    Harness,
    finished_files,
    no_processes_left,
    records,
    resume_completes,
    write_matrix,
)

from harness.contract import RECORD_FORMAT_VERSION
from harness.executors.fake import write_fake_record
from harness.matrix import parse_matrix
from harness.results.run_reader import load_record
from harness.results.store import ResultsDir

CORRUPTIONS = {
    "truncated": lambda b: b[: len(b) // 2],
    "empty": lambda b: b"",
    "binary": lambda b: bytes(range(256)) * 4,
    "not-a-mapping": lambda b: b"[1, 2, 3]\n",
    "wrong-version": lambda b: b.replace(
        f'"format_version": {RECORD_FORMAT_VERSION}'.encode(), b'"format_version": 99'
    ),
    "no-status": lambda b: b.replace(b'"status": "ok"', b'"statos": "ok"'),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_record_is_logged_and_rerun(tmp_path: Path, kind: str, caplog):
    """Fault 6 (each kind of damage, on a hand-made record): resume reruns it and says why."""
    cell = parse_matrix("name: q\naxes: {placement: [none]}\n", Path("q.yaml")).cells[0]
    store = ResultsDir(tmp_path)
    spec = cell.spec(0)
    run_dir = store.run_dir(cell, 0)
    store.prepare_run(run_dir, spec)
    write_fake_record(spec, run_dir)
    assert store.finished(run_dir, spec)
    path = run_dir / "run.json"
    path.write_bytes(CORRUPTIONS[kind](path.read_bytes()))
    with caplog.at_level(logging.INFO, logger="harness"):
        assert not store.finished(run_dir, spec)
    assert str(run_dir) in caplog.text and "rerunning" in caplog.text


@pytest.mark.slow
def test_truncated_record_found_on_resume_is_rerun(tmp_path: Path):
    """Fault 6 end to end: a finished run's run.json is cut in half before the resume."""
    matrix = write_matrix(tmp_path / "m.yaml", "corrupt", repeats=2)
    out = tmp_path / "out"
    first = Harness(matrix, out)
    try:
        assert first.finish(timeout=600) == 0, first.text[-3000:]
    finally:
        first.kill()
    broken = sorted(out.glob("cells/*/repeat-0"))[0] / "run.json"
    broken.write_bytes(broken.read_bytes()[:200])
    kept = finished_files(out)  # repeat-1 only now
    assert kept and all("repeat-1" in k for k in kept)

    damaged = broken.read_bytes()
    second = Harness(matrix, out)
    text = resume_completes(second, out, kept, already_done=1)
    assert "rerunning" in text and str(broken) in text  # logged, with the path
    assert text.count("] start ") == 1
    assert no_processes_left(out, second.pid) == []
    # the damaged record is evidence: set aside whole, never deleted, and said so
    (aside,) = out.glob("superseded/*/cells/*/repeat-0/run.json")
    assert aside.read_bytes() == damaged
    assert f"set aside 1 run whose run.json cannot be read in {aside.parents[3]}/" in text


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 16 MiB tmpfs mounted for this test alone; unmounted whatever happens."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        # CI and the dev container run as root; a disk-full test that cannot fill a disk fails.
        pytest.fail(
            "mounting a tmpfs needs root and mount(8): run the tests as root", pytrace=False
        )
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(  # argv list
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], check=True
    )
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk refuses another byte."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


@pytest.mark.slow
def test_full_results_disk_stops_cleanly_and_resumes(tmp_path: Path, small_disk: Path):
    """Fault 7: the results disk fills up after the first run finished."""
    matrix = write_matrix(tmp_path / "m.yaml", "full", repeats=2, steps=300)
    out = small_disk / "out"
    first = Harness(matrix, out, cpus="0")  # one run after the other
    try:
        first.wait_for("] ok ")
        kept = finished_files(out)
        filler = fill(small_disk)
        code = first.finish(timeout=600)
    finally:
        first.kill()
    assert code == 2, first.text[-3000:]
    assert "disk full at" in first.text and str(out) in first.text
    assert "free space" in first.text and "--out" in first.text and "resume" in first.text
    assert "Traceback" not in first.text
    assert no_processes_left(out, first.pid) == []
    assert kept and finished_files(out) == kept  # the finished run is intact
    assert not list(out.rglob(".*.tmp")), "a half-written temporary file was left behind"
    for path in out.rglob("run.json"):  # any record there is whole
        load_record(path.parent)

    filler.unlink()  # free space, then the same command resumes
    resume_completes(Harness(matrix, out), out, kept, already_done=1)
    assert len(records(out)) == 2
