"""The results folder: lock, manifest identity, resume decisions, host-written failures."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.errors import StoreError
from harness.executors import RunIdentity
from harness.executors.fake import FakeExecutor, write_fake_record
from harness.matrix import parse_matrix
from harness.results import layout
from harness.results.manifest import MANIFEST_FORMAT_VERSION, read_manifest
from harness.results.run_reader import load_record
from harness.results.store import ResultsDir, RunState, record_failure, set_aside_notices
from harness.run.matrix_runner import RunConfig, run_matrix

QUICK = "name: q\nrun: {repeats: 2}\naxes: {placement: [none, before_model]}\n"


def matrix(text: str = QUICK):
    return parse_matrix(text, Path("q.yaml"))


def test_lock_names_the_other_pid(tmp_path: Path):
    code = (
        "import sys, time; from harness.results.store import ResultsDir\n"
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


def _finished_run(root: Path) -> None:
    """A run record that says ok: the folder holds a finished run of its matrix."""
    run = root / "cells" / "c" / "repeat-0"
    run.mkdir(parents=True)
    (run / "run.json").write_text('{"status": "ok"}')


def test_another_matrix_is_refused_but_a_new_timeout_is_not(tmp_path: Path):
    store = ResultsDir(tmp_path)
    store.write_manifest(matrix())
    _finished_run(tmp_path)
    store.write_manifest(matrix(QUICK.replace("repeats: 2", "repeats: 2, timeout_s: 5")))
    with pytest.raises(StoreError, match="finished run.* of the matrix 'q'"):
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
    assert not store.finished(run_dir, spec, RunIdentity(image_id="sha256:" + "e" * 64))
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


# ---------------------------------------------------------------- resume keyed on what ran

LOCAL = RunIdentity(workload_digest="a" * 64, python="3.11.7", torch="2.14.1+cpu")
IMAGE_A = RunIdentity(image_id="sha256:" + "a" * 64, base_digest="sha256:" + "0" * 64)
IMAGE_B = RunIdentity(image_id="sha256:" + "b" * 64, base_digest="sha256:" + "0" * 64)


def finished_run(store: ResultsDir, identity: RunIdentity | None = None, repeat: int = 0):
    cell = matrix().cells[0]
    spec = cell.spec(repeat)
    run_dir = store.run_dir(cell, repeat)
    store.prepare_run(run_dir, spec)
    write_fake_record(spec, run_dir, identity=identity)
    return spec, run_dir


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("now", "why"),
    [
        (dataclasses.replace(LOCAL, workload_digest="b" * 64), "by other workload code"),
        (dataclasses.replace(LOCAL, python="3.12.1"), "by another Python (3.11.7 -> 3.12.1)"),
        (dataclasses.replace(LOCAL, torch="2.15.0+cpu"), "with another torch"),
        (IMAGE_B, "in another workload image (sha256:aaaaaaaa... -> sha256:bbbbbbbb...)"),
    ],
)
def test_a_run_of_another_identity_is_set_aside_whole(tmp_path: Path, now, why):
    """Each compared field: a finished run made by something else is not reused; moved aside
    whole (the same bytes) under superseded/<time>/cells/<cell>/repeat-<k>/, never deleted."""
    store = ResultsDir(tmp_path)
    made_by = IMAGE_A if now is IMAGE_B else LOCAL
    spec, run_dir = finished_run(store, made_by)
    assert store.check_run(run_dir, spec, made_by).action == "reuse"
    assert store.check_run(run_dir, spec, RunIdentity()).action == "reuse"  # None: not compared
    assert store.check_run(run_dir, spec).action == "reuse"
    state = store.check_run(run_dir, spec, now)
    assert state.action == "set_aside" and state.why[0] == "finished run"
    assert why in state.why[1] and state.why[1].startswith("made ")
    assert not store.finished(run_dir, spec, now)

    before = files_of(run_dir)
    where = store.set_aside([run_dir])
    assert not run_dir.exists()
    assert where.parent == tmp_path / "superseded"
    moved = where / "cells" / run_dir.parent.name / run_dir.name
    assert files_of(moved) == before
    assert store.set_aside([]) == where  # one folder per harness run


def test_an_old_record_without_the_field_is_another_identity(tmp_path: Path):
    store = ResultsDir(tmp_path)
    spec, run_dir = finished_run(store, identity=None)  # provenance holds no digest
    state = store.check_run(run_dir, spec, LOCAL)
    assert state.action == "set_aside"
    assert "by other workload code (digest none recorded -> aaaaaaaa...)" in state.why[1]


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("truncate", "unreadable"),
        ("delete", "missing"),
        ("reshape", "shape"),
        ("one-ulp", "does not hash to digests.trajectory"),
    ],
)
def test_a_run_whose_losses_do_not_bear_out_its_record_is_set_aside(
    tmp_path: Path, damage: str, says: str, caplog
):
    store = ResultsDir(tmp_path)
    spec, run_dir = finished_run(store)
    losses_path = run_dir / "losses.npy"
    losses = np.load(losses_path)
    if damage == "truncate":
        losses_path.write_bytes(losses_path.read_bytes()[:100])
    elif damage == "delete":
        losses_path.unlink()
    elif damage == "reshape":
        np.save(losses_path, losses[:-1])
    else:
        losses.view("<u4")[3, 0] += 1
        np.save(losses_path, losses)
    with caplog.at_level(logging.INFO, logger="harness"):
        state = store.check_run(run_dir, spec)
    assert state.action == "set_aside"
    assert state.why == ("finished run", "whose losses.npy does not bear out its run.json")
    assert says in caplog.text and str(run_dir) in caplog.text


def test_resume_reruns_an_ok_run_whose_losses_file_is_missing(tmp_path: Path):
    """A finished run whose run.json says ok but whose losses.npy is gone is not reused: resume
    sets the folder aside whole and runs that repeat again; the other runs are kept as they
    are, and nothing else runs."""
    out = tmp_path / "r"
    config = RunConfig(matrix=matrix(), out=out, progress="quiet", formats=())
    run_matrix(config, FakeExecutor(seconds=0.01))
    store = ResultsDir(out)
    cells = matrix().cells
    victim = store.run_dir(cells[0], 1)
    others = [store.run_dir(c, k) for c in cells for k in range(2)]
    others.remove(victim)
    kept = {d: files_of(d) for d in others}
    (victim / "losses.npy").unlink()
    state = store.check_run(victim, cells[0].spec(1))
    assert state == RunState(
        "set_aside", ("finished run", "whose losses.npy does not bear out its run.json")
    )
    assert not store.finished(victim, cells[0].spec(1))

    notices = io.StringIO()
    again = FakeExecutor(seconds=0.01)
    summary = run_matrix(dataclasses.replace(config, notice_stream=notices), again)
    assert again.calls == [(cells[0].id, 1)]  # that repeat only
    assert summary.set_aside == 1
    assert "set aside 1 finished run whose losses.npy does not bear out its run.json" in (
        notices.getvalue()
    )
    (moved,) = (out / "superseded").glob(f"*/cells/{victim.parent.name}/repeat-1")
    assert sorted(p.name for p in moved.iterdir()) == ["run.json", "run.log", "spec.json"]
    assert ResultsDir(out).finished(victim, cells[0].spec(1))  # rerun, with its losses
    assert {d: files_of(d) for d in others} == kept


def test_what_is_not_a_result_is_cleared_and_what_is_one_is_set_aside(tmp_path: Path):
    """prepare_run deletes only a folder without a run.json or with a failed one."""
    store = ResultsDir(tmp_path)
    cell = matrix().cells[0]
    spec = cell.spec(0)
    run_dir = store.run_dir(cell, 0)
    store.prepare_run(run_dir, spec)
    (run_dir / "run.log").write_text("killed mid-run\n")
    assert store.check_run(run_dir, spec).action == "run"  # never finished: no record
    store.prepare_run(run_dir, spec)
    assert sorted(p.name for p in run_dir.iterdir()) == ["spec.json"]
    assert not (tmp_path / "superseded").exists()

    record_failure(run_dir, spec, "failed", "exit code 1")
    assert store.check_run(run_dir, spec).action == "run"  # failed: not a result
    store.prepare_run(run_dir, spec)
    assert not (tmp_path / "superseded").exists()

    write_fake_record(spec, run_dir)  # an ok run: prepare_run never deletes it
    before = files_of(run_dir)
    store.prepare_run(run_dir, spec)
    assert sorted(p.name for p in run_dir.iterdir()) == ["spec.json"]
    (moved,) = (tmp_path / "superseded").glob("*/cells/*/repeat-0")
    assert files_of(moved) == before


def test_set_aside_notices_count_and_say_why(tmp_path: Path):
    lines = set_aside_notices(
        {
            ("finished run", "made by other workload code (digest 1234abcd... -> 5678ef01...)"): 6,
            ("run", "whose run.json cannot be read"): 1,
        },
        tmp_path / "superseded" / "20261127T150000Z",
    )
    assert lines == [
        "set aside 6 finished runs made by other workload code (digest 1234abcd... -> "
        f"5678ef01...) in {tmp_path}/superseded/20261127T150000Z/; they will be rerun",
        f"set aside 1 run whose run.json cannot be read in {tmp_path}/superseded/"
        "20261127T150000Z/; it will be rerun",
    ]


def test_superseded_folders_never_collide(tmp_path: Path):
    now = dt.datetime(2026, 11, 27, 15, 0, 0, tzinfo=dt.timezone.utc)
    first = layout.new_superseded_dir(tmp_path, now)
    assert first == tmp_path / "superseded" / "20261127T150000Z"
    first.mkdir(parents=True)
    assert layout.new_superseded_dir(tmp_path, now).name == "20261127T150000Z-2"


# ---------------------------------------------------------------- the results folder itself


@pytest.mark.parametrize("entries", [[], [".lock"]])
def test_a_missing_or_empty_folder_may_be_used(tmp_path: Path, entries: list[str]):
    assert ResultsDir(tmp_path / "new").check_out() is None
    for name in entries:
        (tmp_path / name).write_text("123")
    assert ResultsDir(tmp_path).check_out() is None


def test_a_folder_that_is_not_a_results_folder_is_refused_untouched(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "src").mkdir()
    with pytest.raises(StoreError, match="not empty and not a harness results folder") as info:
        ResultsDir(tmp_path).check_out()
    assert "notes.txt, src" in str(info.value) and "manifest.json" in str(info.value)
    config = RunConfig(matrix=matrix(), out=tmp_path, progress="quiet", formats=())
    with pytest.raises(StoreError, match="not a harness results folder"):
        run_matrix(config, FakeExecutor())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "src"]  # no .lock
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is not a folder"):
        ResultsDir(tmp_path / "file").check_out()


def test_the_lock_is_held_until_the_report_is_written(tmp_path: Path, monkeypatch):
    import harness.report

    held = []

    def make_reports(root, formats, plots=True):
        try:
            ResultsDir(root).lock()  # a second open file: flock refuses it while it is held
        except StoreError:
            held.append(True)
        return None, []

    monkeypatch.setattr(harness.report, "make_reports", make_reports)
    config = RunConfig(matrix=matrix(), out=tmp_path / "r", progress="quiet")
    run_matrix(config, FakeExecutor(seconds=0.01))
    assert held == [True]


# ---------------------------------------------------------------- host-written failure records

GPU2 = "name: g\nrun: {repeats: 1}\naxes: {placement: [none], accelerator: [gpu], devices: [2]}\n"


def test_a_run_that_died_without_a_record_gets_a_whole_failed_one(tmp_path: Path):
    """No run.json: the host writes one that says what failed, how long it ran, on how many
    ranks, with the log's tail (the whole log when it is short, byte for byte)."""
    from harness.contract.record import ErrorType

    spec = matrix(GPU2).cells[0].spec(0)
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "run.log").write_text("start\nCUDA out of memory\n")
    record_failure(run_dir, spec, ErrorType.OOM, "out of memory (exit 137)", seconds=12.5)
    data = json.loads((run_dir / "run.json").read_text())
    assert data["status"] == "failed" and data["written_by"] == "host"
    assert data["spec"] == spec.to_dict()
    assert data["ranks"] == 2 and data["timing"]["wall_seconds"] == 12.5
    assert data["error"] == {
        "type": "oom",
        "message": "out of memory (exit 137)",
        "traceback": None,
        "log_tail": "start\nCUDA out of memory",
    }
    # a failure type the host names in its own words is recorded as given
    (tmp_path / "s").mkdir()
    record_failure(tmp_path / "s", spec, "disk_full", "no space left on device")
    assert load_record(tmp_path / "s").error.type == "disk_full"


def test_a_failed_record_of_the_workload_keeps_its_error_and_gains_the_log_tail(tmp_path: Path):
    from harness.contract.record import ErrorType, RunError, failed_record, write_record

    spec = matrix().cells[0].spec(0)
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "run.log").write_text("loading MNIST\nDataError: train-images missing\n")
    error = RunError(type="DataError", message="train-images missing", traceback="Traceback: x")
    write_record(run_dir, failed_record(spec.to_dict(), error, written_by="workload"))
    record_failure(run_dir, spec, ErrorType.FAILED, "exit code 1")
    data = json.loads((run_dir / "run.json").read_text())
    assert data["status"] == "failed" and data["written_by"] == "workload"
    assert data["error"] == {
        "type": "DataError",
        "message": "train-images missing",
        "traceback": "Traceback: x",
        "log_tail": "loading MNIST\nDataError: train-images missing",
    }
    # a failed record that says nothing of why gets the host's reason
    write_record(run_dir, failed_record(spec.to_dict(), None, written_by="workload"))
    record_failure(run_dir, spec, ErrorType.KILLED, "killed by SIGKILL")
    assert json.loads((run_dir / "run.json").read_text())["error"] == {
        "type": "killed",
        "message": "killed by SIGKILL",
        "traceback": None,
        "log_tail": "loading MNIST\nDataError: train-images missing",
    }


def test_an_ok_record_of_a_run_the_host_saw_fail_becomes_a_failed_one(tmp_path: Path):
    from harness.contract.record import ErrorType

    spec = matrix().cells[0].spec(0)
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    write_fake_record(spec, run_dir)
    ok = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.log").write_text("epoch 1/1 done\n")
    record_failure(run_dir, spec, ErrorType.TIMEOUT, "timed out after 5 s")
    data = json.loads((run_dir / "run.json").read_text())
    assert data["status"] == "failed" and data["written_by"] == "host"
    assert data["error"] == {
        "type": "timeout",
        "message": "timed out after 5 s (after writing its record)",
        "traceback": None,
        "log_tail": "epoch 1/1 done",
    }
    assert data["digests"] == ok["digests"] and data["steps"] == ok["steps"]


def test_the_log_tail_is_the_last_lines_of_a_long_or_damaged_log(tmp_path: Path):
    """Recorded tails: the last 40 lines, at most 4000 characters, invalid UTF-8 replaced,
    no log at all an empty tail."""
    from harness.results.run_reader import log_tail

    spec = matrix().cells[0].spec(0)
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    assert log_tail(run_dir) == ""
    record_failure(run_dir, spec, "failed", "exit code 1")
    assert load_record(run_dir).error.log_tail == ""

    (run_dir / "run.log").write_bytes(b"x" * 100_000 + b"\nbad \xff byte\nlast\n")
    assert log_tail(run_dir) == "x" * 3984 + "\nbad \ufffd byte\nlast"
    lines = [f"line {i}" for i in range(100)]
    (run_dir / "run.log").write_text("\n".join(lines) + "\n")
    assert log_tail(run_dir) == "\n".join(lines[-40:])


def test_a_folder_whose_record_cannot_be_read_is_set_aside_not_deleted(tmp_path: Path):
    store = ResultsDir(tmp_path)
    spec, run_dir = finished_run(store)
    (run_dir / "run.json").write_text('{"format_version": 1, "sta')  # truncated
    before = files_of(run_dir)
    assert store.check_run(run_dir, spec) == RunState(
        "set_aside", ("run", "whose run.json cannot be read")
    )
    store.prepare_run(run_dir, spec)
    assert sorted(p.name for p in run_dir.iterdir()) == ["spec.json"]
    (moved,) = (tmp_path / "superseded").glob("*/cells/*/repeat-0")
    assert files_of(moved) == before


def test_verbose_log_says_why_each_run_is_rerun(tmp_path: Path, caplog):
    """What ``harness -v`` shows of resume: each rerun with its reason, one line each."""
    store = ResultsDir(tmp_path)
    spec, run_dir = finished_run(store, LOCAL)
    missing = store.run_dir(matrix().cells[1], 0)
    now = dataclasses.replace(LOCAL, python="3.12.1")
    with caplog.at_level(logging.INFO, logger="harness"):
        assert store.check_run(missing, spec) == RunState("run")
        assert store.check_run(run_dir, spec.replace(seed=1)).action == "set_aside"
        assert store.check_run(run_dir, spec, now).action == "set_aside"
        (run_dir / "losses.npy").unlink()
        assert store.check_run(run_dir, spec).action == "set_aside"
        record_failure(run_dir, spec, "failed", "exit code 1")
        assert store.check_run(run_dir, spec) == RunState("run")
        (run_dir / "run.json").write_text('{"format_version": 1, "sta')  # truncated
        assert store.check_run(run_dir, spec).action == "set_aside"
    assert caplog.messages == [
        f"rerunning {run_dir}: its spec changed",
        f"rerunning {run_dir}: it was made by another Python (3.11.7 -> 3.12.1)",
        f"rerunning {run_dir}: {run_dir}/losses.npy: missing",
        f"rerunning {run_dir}: its last attempt failed",
        f"rerunning: {run_dir}/run.json: not valid JSON (Unterminated string starting at: "
        "line 1 column 23 (char 22)); the run will be repeated",
    ]


def test_what_a_set_aside_finished_run_is_called(tmp_path: Path):
    """The words of the notice: another spec; every field that differs, in order."""
    store = ResultsDir(tmp_path)
    spec, run_dir = finished_run(store, LOCAL)
    assert store.check_run(run_dir, spec.replace(seed=1)) == RunState(
        "set_aside", ("finished run", "of another spec than the one that would run now")
    )
    now = RunIdentity(workload_digest="sha256:" + "c" * 64, python="3.12.1", torch="2.15.0")
    assert store.check_run(run_dir, spec, now) == RunState(
        "set_aside",
        (
            "finished run",
            "made by other workload code (digest aaaaaaaa... -> sha256:cccccccc...) and by "
            "another Python (3.11.7 -> 3.12.1) and with another torch (2.14.1+cpu -> 2.15.0)",
        ),
    )


def test_set_aside_moves_each_existing_repeat_and_skips_the_rest(tmp_path: Path):
    """Several repeats of one cell go aside at once, each whole; a folder that is gone or is not
    a repeat folder is left alone; nothing at all to move makes no superseded folder."""
    store = ResultsDir(tmp_path)
    cell = matrix().cells[0]
    stray = tmp_path / "cells" / "notes"
    stray.mkdir(parents=True)
    gone = store.run_dir(cell, 5)
    assert store.set_aside([gone, stray]) is None
    assert not (tmp_path / "superseded").exists() and stray.exists()

    _, first = finished_run(store, repeat=0)
    _, second = finished_run(store, repeat=1)
    where = store.set_aside([gone, first, second])
    assert sorted(p.relative_to(where).as_posix() for p in where.glob("cells/*/*")) == [
        f"cells/{first.parent.name}/repeat-0",
        f"cells/{first.parent.name}/repeat-1",
    ]
    assert not first.exists() and not second.exists() and stray.exists()


def test_the_same_repeat_set_aside_twice_in_one_run_is_refused(tmp_path: Path):
    store = ResultsDir(tmp_path)
    _, run_dir = finished_run(store)
    where = store.set_aside([run_dir])
    finished_run(store)
    with pytest.raises(StoreError) as info:
        store.set_aside([run_dir])
    dest = where / "cells" / run_dir.parent.name / "repeat-0"
    assert str(info.value) == (
        f"cannot set {run_dir} aside: {dest} exists\n"
        "  hint: move that folder away, then rerun the same command"
    )
    assert run_dir.exists()


HINT_OUT = (
    "  hint: give --out a new or empty folder, or a results folder that `harness run` wrote "
    "(it has a manifest.json) to resume it"
)


def test_what_check_out_says_of_a_folder_it_refuses(tmp_path: Path, monkeypatch):
    """The exact refusals: not a folder; not empty (three names, then how many more); not
    readable (the OS's reason)."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError) as info:
        ResultsDir(tmp_path / "file").check_out()
    assert str(info.value) == f"{tmp_path}/file exists and is not a folder\n{HINT_OUT}"

    three = tmp_path / "three"
    three.mkdir()
    for name in ("c", "a", "b", ".lock"):
        (three / name).write_text("")
    with pytest.raises(StoreError) as info:
        ResultsDir(three).check_out()
    assert str(info.value) == (
        f"{three} is not empty and not a harness results folder (no manifest.json; it holds "
        f"a, b, c); nothing was written to it\n{HINT_OUT}"
    )
    for more, name in enumerate(("d", "e"), start=1):
        (three / name).write_text("")
        with pytest.raises(StoreError) as info:
            ResultsDir(three).check_out()
        assert f"(no manifest.json; it holds a, b, c and {more} more); nothing" in str(info.value)

    def unreadable(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", unreadable)
    with pytest.raises(StoreError) as info:
        ResultsDir(three).check_out()
    assert str(info.value) == f"{three} cannot be read: Permission denied\n{HINT_OUT}"


def test_a_folder_of_one_shard_refuses_another_shard_or_the_whole_matrix(tmp_path: Path):
    store = ResultsDir(tmp_path)
    store.write_manifest(matrix(), matrix().cells[:1], {"index": 1, "total": 2})
    for shard, says in (
        (None, "shard 1/2 of this matrix, not shard (all cells)"),
        ({"index": 2, "total": 2}, "shard 1/2 of this matrix, not shard 2/2"),
    ):
        with pytest.raises(StoreError) as info:
            store.write_manifest(matrix(), None, shard)
        assert str(info.value) == (
            f"{tmp_path} holds {says}\n"
            "  hint: give each shard its own --out; `harness merge` joins them"
        )
    (tmp_path / "whole").mkdir()
    whole = ResultsDir(tmp_path / "whole")
    whole.write_manifest(matrix())
    with pytest.raises(StoreError) as info:
        whole.write_manifest(matrix(), None, {"index": 1, "total": 2})
    assert "holds shard (all cells) of this matrix, not shard 1/2" in str(info.value)


def test_a_locked_folder_says_who_holds_it_and_a_new_nested_one_is_made(tmp_path: Path):
    """``--out`` may name a folder whose parents do not exist yet; a folder locked by a harness
    that has not yet written its pid is "in use by harness pid another process"."""
    import fcntl

    nested = tmp_path / "a" / "b" / "out"
    store = ResultsDir(nested)
    store.lock()
    assert (nested / ".lock").read_text() == str(os.getpid())
    store.unlock()

    with open(tmp_path / ".lock", "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, nothing written yet
        with pytest.raises(StoreError) as info:
            ResultsDir(tmp_path).lock()
    assert str(info.value) == (
        f"{tmp_path} is in use by harness pid another process\n"
        "  hint: wait for that run to finish, or choose another --out"
    )


def test_the_manifest_says_what_made_the_folder_and_keeps_its_creation_time(tmp_path: Path):
    from harness import __version__

    m = matrix()
    store = ResultsDir(tmp_path)
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    store.write_manifest(m)
    data = json.loads((tmp_path / "manifest.json").read_text())
    created = dt.datetime.fromisoformat(data.pop("created_at"))
    assert created.utcoffset() == dt.timedelta(0)
    assert before <= created <= dt.datetime.now(dt.timezone.utc)
    cells = data.pop("cells")
    assert [c["id"] for c in cells] == [c.id for c in m.cells]
    assert data == {
        "format_version": MANIFEST_FORMAT_VERSION,
        "cell_id_scheme": data["cell_id_scheme"],
        "name": "q",
        "matrix_path": "q.yaml",
        "matrix_text": QUICK,
        "matrix_sha256": m.text_sha256,
        "matrix_digest": m.digest,
        "repeats": 2,
        "harness_version": __version__,
        "shard": None,
    }
    # resume keeps the time the folder was made
    kept = json.loads((tmp_path / "manifest.json").read_text())
    kept["created_at"] = "2025-01-01T00:00:00+00:00"
    (tmp_path / "manifest.json").write_text(json.dumps(kept))
    store.write_manifest(m)
    assert read_manifest(tmp_path).created_at == "2025-01-01T00:00:00+00:00"

    _finished_run(tmp_path)
    with pytest.raises(StoreError) as info:
        store.write_manifest(matrix(QUICK.replace("none, ", "")))
    said = str(info.value)
    assert said.startswith(
        f"{tmp_path} holds 1 finished run(s) of the matrix 'q' made from an earlier version of "
        "q.yaml (lines changed: - "
    )
    assert "only in the old matrix" in said
    assert f"delete {tmp_path} and rerun" in said
    assert str(tmp_path / "matrix.yaml") in said


def test_a_folder_where_no_run_finished_is_taken_over_by_the_new_matrix(tmp_path: Path):
    store = ResultsDir(tmp_path)
    store.write_manifest(matrix())
    changed = matrix(QUICK.replace("none, ", ""))
    store.write_manifest(changed)  # no run finished: nothing to keep
    assert read_manifest(tmp_path).matrix_digest == changed.digest


def test_a_folder_holding_only_failed_runs_is_refused_and_says_so(tmp_path: Path):
    """A failed run is evidence: another matrix never takes its folder over."""
    store = ResultsDir(tmp_path)
    store.write_manifest(matrix())
    _finished_run(tmp_path)
    (tmp_path / "cells" / "c" / "repeat-0" / "run.json").write_text('{"status": "failed"}')
    with pytest.raises(StoreError) as info:
        store.write_manifest(matrix(QUICK.replace("none, ", "")))
    assert str(info.value).startswith(
        f"{tmp_path} holds 0 finished run(s) and 1 failed one(s) of the matrix 'q' made from "
    )
    assert read_manifest(tmp_path).matrix_digest == matrix().digest


def test_unlock_lets_the_next_harness_in_and_is_harmless_when_not_locked(tmp_path: Path):
    store = ResultsDir(tmp_path)
    store.unlock()  # never locked (e.g. its lock was refused): nothing to do
    store.lock()
    store.unlock()
    store.unlock()
    other = ResultsDir(tmp_path)
    other.lock()
    other.unlock()
    # a run folder named by its cell folder, as merge and report name it
    assert (
        store.run_dir("a--0123456789ab", 1) == tmp_path / "cells" / "a--0123456789ab" / "repeat-1"
    )


def test_prepare_run_leaves_the_spec_and_says_where_it_set_a_result_aside(tmp_path: Path, caplog):
    store = ResultsDir(tmp_path)
    spec, run_dir = finished_run(store)
    assert json.loads((run_dir / "spec.json").read_text()) == spec.to_dict()
    with caplog.at_level(logging.WARNING, logger="harness"):
        store.prepare_run(run_dir, spec)
    (where,) = (tmp_path / "superseded").iterdir()
    assert caplog.messages == [f"set aside {run_dir} in {where} before rerunning it"]
    assert json.loads((run_dir / "spec.json").read_text()) == spec.to_dict()


@pytest.mark.parametrize("stopped_as", ["Interrupted", "Terminated"])
def test_a_timed_out_run_says_timeout_though_its_workload_recorded_the_stop(
    tmp_path: Path, stopped_as: str
):
    """A timeout stops the run SIGINT first; the workload records that as its interruption, but
    the run's error is the host's timeout (with the fix it names), the workload's traceback
    kept out of the way; a run that failed on its own keeps its own error."""
    from harness.contract.record import ErrorType, RunError, failed_record, write_record

    spec = matrix().cells[0].spec(0)
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    error = RunError(stopped_as, "stopped by a signal", "Traceback: fit")
    write_record(run_dir, failed_record(spec.to_dict(), error, written_by="workload"))
    record_failure(run_dir, spec, ErrorType.TIMEOUT, "timed out after 5 s; raise run.timeout_s")
    data = json.loads((run_dir / "run.json").read_text())
    assert (data["status"], data["written_by"]) == ("failed", "host")
    assert data["error"]["type"] == "timeout"
    assert data["error"]["message"] == "timed out after 5 s; raise run.timeout_s"

    error = RunError("DataError", "train-images missing", "Traceback: x")
    write_record(run_dir, failed_record(spec.to_dict(), error, written_by="workload"))
    record_failure(run_dir, spec, ErrorType.TIMEOUT, "timed out after 5 s")
    data = json.loads((run_dir / "run.json").read_text())
    assert (data["error"]["type"], data["written_by"]) == ("DataError", "workload")


def test_the_progress_line_names_a_recorded_error_once(tmp_path: Path):
    """The host's own record of an outcome is not shown again as a second error; the
    workload's error is added to the line once."""
    from harness.contract.record import ErrorType, RunError, failed_record, write_record
    from harness.executors.base import RunOutcome, RunStatus
    from harness.run.run_execution import _add_recorded_error

    spec = matrix().cells[0].spec(0)
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    write_fake_record(spec, run_dir)
    written = record_failure(run_dir, spec, ErrorType.TIMEOUT, "timed out after 5 s")
    assert written == load_record(run_dir)  # what it wrote: the caller need not read it back
    outcome = RunOutcome(RunStatus.TIMEOUT, 5.0, None, "timed out after 5 s")
    _add_recorded_error(written, outcome)
    assert outcome.message == "timed out after 5 s"

    error = RunError("DataError", "train-images missing", None)
    write_record(run_dir, failed_record(spec.to_dict(), error, written_by="workload"))
    outcome = RunOutcome(RunStatus.FAILED, 1.0, 1, "exited with code 1")
    _add_recorded_error(load_record(run_dir), outcome)
    assert outcome.message == "exited with code 1: DataError: train-images missing"


@pytest.mark.parametrize(
    ("recorded", "kind", "host_wins"),
    [
        ("Terminated", "docker_unreachable", True),
        ("Interrupted", "docker_unreachable", True),
        ("Terminated", "killed", True),  # SIGTERM from outside: the host says who may have sent it
        ("Interrupted", "killed", False),  # the harness's own Ctrl-C: the workload says it well
        ("Interrupted", "timeout", True),
        ("Terminated", "failed", False),
        ("DataError", "docker_unreachable", False),  # the run's own error, not a signal
    ],
)
def test_the_hosts_reason_replaces_a_recorded_signal_only_where_it_knows_the_sender(
    tmp_path: Path, recorded: str, kind: str, host_wins: bool
):
    """A container the engine stopped as it shut down records ``Terminated``: the report must
    say that the Docker daemon went away, not only that SIGTERM came."""
    from harness.contract.record import RunError, failed_record, write_record

    spec = matrix().cells[0].spec(0)
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    error = RunError(type=recorded, message="the workload's words", traceback="Traceback: x")
    write_record(run_dir, failed_record(spec.to_dict(), error, written_by="workload"))
    record_failure(run_dir, spec, kind, "the host's words")
    got = load_record(run_dir)
    assert got.status == "failed"
    if host_wins:
        assert (got.error.type, got.error.message) == (kind, "the host's words")
        assert got.written_by == "host"
    else:
        assert (got.error.type, got.error.message) == (recorded, "the workload's words")
        assert got.written_by == "workload"
