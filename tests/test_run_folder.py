"""Nothing in a run folder is followed (no engine): the host's writes, its reads, the scan after
a container run, the capped log, where the live log is.

A container's run folder is mounted read-write, so its workload can leave anything there: a
symbolic link at ``run.log`` (the host would copy the file it points to into run.json and the
report), at a temporary name of the host's atomic write (the host would overwrite the file it
points to), a FIFO (a reader would hang). Each test plants one and checks the host neither
reads nor writes through it, nor waits on it. The same code on the real engine, with a hostile
image: tests/test_hostile_run_folder.py.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.contract import LOG_FILE, RECORD_FILE, ErrorType, write_json_atomic
from harness.contract.files import UnsafeFile, open_regular, write_bytes_atomic
from harness.contract.record import RunError, failed_record, write_record
from harness.executors.base import RunOutcome, RunStatus
from harness.executors.docker import DockerExecutor
from harness.executors.fake import write_fake_record
from harness.matrix import parse_matrix
from harness.results.run_reader import CorruptRun, RecordError, load_losses, load_record, log_tail
from harness.results.store import record_failure
from harness.results.untrusted_run_folder import (
    TailLog,
    capture_path,
    live_log,
    place_log,
    planted_message,
    reject_planted,
)
from harness.run.progress import last_epoch

SECRET = "s3cret-of-the-host-4f1d"
QUICK = "name: q\nrun: {repeats: 1}\naxes: {placement: [none]}\n"


def spec():
    return parse_matrix(QUICK, Path("q.yaml")).cells[0].spec(0)


def outside(tmp_path: Path, name: str, text: str) -> Path:
    """A file of the host's outside the run folder."""
    path = tmp_path / "host" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def run_folder(tmp_path: Path) -> Path:
    run_dir = tmp_path / "cells" / "c" / "repeat-0"
    run_dir.mkdir(parents=True)
    return run_dir


def promptly(call: Callable[[], Any], seconds: float = 10) -> Any:
    """``call()``'s result, failing (not hanging) if it blocks: a read of a FIFO would."""
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the test thread
            box["error"] = exc

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        # Unblock it so the process can end: open the FIFO's other side.
        pytest.fail(f"{call} blocked for {seconds} s", pytrace=False)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def unblock_fifo(path: Path) -> None:
    """Open a FIFO's writing side once, so a reader stuck on it (a planted bug) gets EOF."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    os.close(fd)


# -- writes ------------------------------------------------------------------------------------


def test_an_atomic_write_never_writes_through_a_link_at_its_old_temporary_name(tmp_path: Path):
    """The fixed temporary name ``.run.json.tmp`` planted as a link: the write goes to a fresh
    file under a random name, the linked file is untouched and no temporary file is left."""
    victim = outside(tmp_path, "victim", "the host's own file\n")
    run_dir = run_folder(tmp_path)
    for name in (".run.json.tmp", ".run.json..tmp", "run.json.tmp"):
        (run_dir / name).symlink_to(victim)
    write_json_atomic(run_dir / RECORD_FILE, {"a": 1})
    assert victim.read_text() == "the host's own file\n"
    assert json.loads((run_dir / RECORD_FILE).read_text()) == {"a": 1}
    assert not (run_dir / RECORD_FILE).is_symlink()
    left = sorted(p.name for p in run_dir.iterdir())
    assert left == sorted([".run.json.tmp", ".run.json..tmp", "run.json.tmp", RECORD_FILE])


def test_an_atomic_write_replaces_a_link_at_its_target_never_its_target(tmp_path: Path):
    victim = outside(tmp_path, "victim", "the host's own file\n")
    run_dir = run_folder(tmp_path)
    (run_dir / RECORD_FILE).symlink_to(victim)
    write_bytes_atomic(run_dir / RECORD_FILE, b"new\n")
    assert victim.read_text() == "the host's own file\n"
    assert not (run_dir / RECORD_FILE).is_symlink()
    assert (run_dir / RECORD_FILE).read_bytes() == b"new\n"


def test_a_new_file_gets_the_mode_open_would_give_it(tmp_path: Path):
    """Records stay readable by the team (0o666 less the umask), as open() made them."""
    umask = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "f", b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


def test_a_host_failure_record_neither_reads_nor_writes_through_planted_links(tmp_path: Path):
    """record_failure after a container planted ``run.log`` -> a secret and ``.run.json.tmp``
    -> a file of the host's: the record carries no secret, the host's file is unchanged."""
    secret = outside(tmp_path, "secret", f"{SECRET}\n")
    victim = outside(tmp_path, "victim", "keep me\n")
    run_dir = run_folder(tmp_path)
    (run_dir / LOG_FILE).symlink_to(secret)
    (run_dir / ".run.json.tmp").symlink_to(victim)
    record_failure(run_dir, spec(), ErrorType.FAILED, "exit code 3")
    text = (run_dir / RECORD_FILE).read_text()
    assert SECRET not in text
    assert victim.read_text() == "keep me\n"
    assert load_record(run_dir).error.message == "exit code 3"


# -- reads -------------------------------------------------------------------------------------


def test_open_regular_refuses_a_link_and_says_so(tmp_path: Path):
    secret = outside(tmp_path, "secret", SECRET)
    (tmp_path / "link").symlink_to(secret)
    with pytest.raises(UnsafeFile, match="a symbolic link"):
        open_regular(tmp_path / "link")
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing")
    with pytest.raises(UnsafeFile, match="a symbolic link"):
        open_regular(tmp_path / "dangling")
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "nothing")
    with open_regular(secret) as handle:  # a regular file reads as ever
        assert handle.read() == SECRET.encode()


@pytest.mark.parametrize("reader", ["open_regular", "log_tail", "last_epoch", "load_record"])
def test_a_fifo_is_refused_at_once_never_waited_on(tmp_path: Path, reader: str):
    run_dir = run_folder(tmp_path)
    name = RECORD_FILE if reader == "load_record" else LOG_FILE
    fifo = run_dir / name
    os.mkfifo(fifo)
    calls: dict[str, Callable[[], Any]] = {
        "open_regular": lambda: open_regular(fifo),
        "log_tail": lambda: log_tail(run_dir),
        "last_epoch": lambda: last_epoch(run_dir),
        "load_record": lambda: load_record(run_dir),
    }
    try:
        if reader == "open_regular":
            with pytest.raises(UnsafeFile, match="a FIFO, not a regular file"):
                promptly(calls[reader])
        elif reader == "load_record":
            with pytest.raises(RecordError, match="a FIFO, not a regular file"):
                promptly(calls[reader])
        else:
            assert promptly(calls[reader]) in ("", None)
    finally:
        unblock_fifo(fifo)


def test_a_socket_is_refused(tmp_path: Path):
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(UnsafeFile, match="a socket"):
            open_regular(path)


def test_readers_of_the_run_folder_do_not_follow_links(tmp_path: Path):
    """run.log, run.json and losses.npy each planted as a link to a file the host can read:
    none is read; the record and the losses are errors that say why."""
    run_dir = run_folder(tmp_path)
    secret = outside(tmp_path, "secret", f"epoch 1/1 done: {SECRET}\n")
    (run_dir / LOG_FILE).symlink_to(secret)
    assert log_tail(run_dir) == ""
    assert last_epoch(run_dir) is None

    good = run_folder(tmp_path / "good")
    write_fake_record(spec(), good)
    (run_dir / RECORD_FILE).symlink_to(good / RECORD_FILE)
    with pytest.raises(RecordError, match="a symbolic link"):
        load_record(run_dir)
    (run_dir / "losses.npy").symlink_to(good / "losses.npy")
    assert load_losses(good).shape == np.load(good / "losses.npy").shape
    with pytest.raises(CorruptRun, match="a symbolic link"):
        load_losses(run_dir)


# -- the scan after a container run ------------------------------------------------------------


def test_the_scan_removes_links_and_special_files_unfollowed_and_names_each(tmp_path: Path):
    secret = outside(tmp_path, "secret", SECRET)
    elsewhere = tmp_path / "host" / "folder"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("kept\n")
    run_dir = run_folder(tmp_path)
    (run_dir / "losses.npy").write_bytes(b"regular")
    (run_dir / LOG_FILE).symlink_to(secret)
    (run_dir / ".run.json.tmp").symlink_to(tmp_path / "host" / "not-yet")
    (run_dir / "tensorboard").mkdir()
    (run_dir / "tensorboard" / "deep").symlink_to("/etc/hostname")
    (run_dir / "tensorboard" / "events").write_bytes(b"ev")
    (run_dir / "dirlink").symlink_to(elsewhere, target_is_directory=True)
    os.mkfifo(run_dir / "pipe")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(run_dir / "sock"))
    planted = reject_planted(run_dir)

    assert [(p.path, p.kind, p.target) for p in planted] == [
        (".run.json.tmp", "a symbolic link", str(tmp_path / "host" / "not-yet")),
        ("dirlink", "a symbolic link", str(elsewhere)),
        ("pipe", "a FIFO", None),
        (LOG_FILE, "a symbolic link", str(secret)),
        ("sock", "a socket", None),
        ("tensorboard/deep", "a symbolic link", "/etc/hostname"),
    ]
    assert all(p.removed for p in planted)
    left = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*"))
    assert left == ["losses.npy", "tensorboard", "tensorboard/events"]
    assert secret.read_text() == SECRET and (elsewhere / "keep").read_text() == "kept\n"
    message = planted_message(planted)
    assert message.startswith("the container left 4 symbolic links in the run folder: ")
    assert f"run.log -> {secret} (not followed; removed)" in message
    assert "; and a FIFO in the run folder: pipe (removed)" in message
    assert "; and a socket in the run folder: sock (removed)" in message
    assert reject_planted(run_dir) == []  # nothing left to find


def test_the_message_names_one_link_as_the_issue_words_it(tmp_path: Path):
    run_dir = run_folder(tmp_path)
    (run_dir / LOG_FILE).symlink_to("/etc/hostname")
    assert planted_message(reject_planted(run_dir)) == (
        "the container left a symbolic link in the run folder: "
        "run.log -> /etc/hostname (not followed; removed)"
    )


def test_planted_names_are_shown_printable_and_bounded(tmp_path: Path):
    run_dir = run_folder(tmp_path)
    for i in range(12):
        (run_dir / f"l{i:02d}").symlink_to("x" * 300)
    (run_dir / "bad\nname").symlink_to("\x1b[31m::error::x")
    message = planted_message(reject_planted(run_dir))
    assert "\n" not in message and "\x1b" not in message
    assert "bad\\nname -> \\x1b[31m::error::x" in message
    assert "13 symbolic links" in message and "and 3 more" in message
    assert "x" * 201 not in message


def test_a_folder_the_host_cannot_list_is_reported(tmp_path: Path):
    if os.geteuid() == 0:
        # root lists even a mode-000 folder: a folder that is not there stands in for it
        planted = reject_planted(tmp_path / "gone")
    else:
        run_dir = run_folder(tmp_path)
        (run_dir / "closed").mkdir(mode=0)
        planted = reject_planted(run_dir)
    assert len(planted) == 1 and planted[0].problem
    assert "a folder the host cannot list" in planted_message(planted)


def test_a_run_that_planted_anything_has_failed_even_after_exit_0(tmp_path: Path):
    """DockerExecutor's check after the container ended: exit 0 and an ok record, but a link
    in the folder: the run is failed, with the error type and the message naming it."""
    run_dir = run_folder(tmp_path)
    ok = RunOutcome(RunStatus.OK, 3.0, 0)
    assert DockerExecutor._check_run_folder(run_dir, ok) is ok
    (run_dir / LOG_FILE).symlink_to("/etc/hostname")
    failed = DockerExecutor._check_run_folder(run_dir, ok)
    assert failed.status is RunStatus.FAILED and failed.exit_code == 0
    assert failed.error_type is ErrorType.UNSAFE_RUN_FOLDER
    assert failed.message.startswith("the container left a symbolic link in the run folder")
    (run_dir / "pipe").symlink_to("/x")
    timeout = RunOutcome(RunStatus.TIMEOUT, 9.0, 137, "timed out after 9 s")
    failed = DockerExecutor._check_run_folder(run_dir, timeout)
    assert failed.status is RunStatus.FAILED and failed.message.endswith("; timed out after 9 s")


def test_the_hosts_error_replaces_a_failed_record_of_a_run_that_planted_links(tmp_path: Path):
    """A workload that planted links and wrote a failed record of its own: its words are not
    what the report shows; the host's are."""
    run_dir = run_folder(tmp_path)
    error = RunError(type="RuntimeError", message="all is well, nothing to see")
    write_record(run_dir, failed_record(spec().to_dict(), error, written_by="workload"))
    message = "the container left a symbolic link in the run folder: run.log -> /x"
    record_failure(run_dir, spec(), ErrorType.UNSAFE_RUN_FOLDER, message)
    record = load_record(run_dir)
    assert record.error.type == "unsafe_run_folder" and record.written_by == "host"
    assert record.error.message.startswith(message)


# -- the container's log -----------------------------------------------------------------------


def test_the_log_is_captured_outside_the_run_folder_and_placed_as_run_log(tmp_path: Path):
    """While it runs, the log lies beside the run folder (the container cannot see it) and the
    progress display reads it there; after, it replaces whatever the container left at
    run.log, never writing through a link."""
    secret = outside(tmp_path, "secret", SECRET)
    run_dir = run_folder(tmp_path)
    capture = capture_path(run_dir)
    assert capture.parent == run_dir.parent and not capture.is_relative_to(run_dir)
    assert live_log(run_dir) == run_dir / LOG_FILE  # a local run: its own run.log
    with TailLog(capture) as log:
        log.write(b"epoch 1/3 done: loss 0.5\n")
        (run_dir / LOG_FILE).symlink_to(secret)
        assert live_log(run_dir) == capture
        assert last_epoch(run_dir) == (1, 3)
    place_log(capture, run_dir)
    assert not (run_dir / LOG_FILE).is_symlink() and not capture.exists()
    assert (run_dir / LOG_FILE).read_text() == "epoch 1/3 done: loss 0.5\n"
    assert secret.read_text() == SECRET
    assert live_log(run_dir) == run_dir / LOG_FILE and last_epoch(run_dir) == (1, 3)


@pytest.mark.parametrize("left", ["folder", "fifo", "file"])
def test_placing_the_log_replaces_whatever_the_container_left(tmp_path: Path, left: str):
    run_dir = run_folder(tmp_path)
    dest = run_dir / LOG_FILE
    if left == "folder":
        dest.mkdir()
        (dest / "x").symlink_to("/etc/hostname")
    elif left == "fifo":
        os.mkfifo(dest)
    else:
        dest.write_text("fake log\n")
    capture = capture_path(run_dir)
    with TailLog(capture) as log:
        log.write(b"real log\n")
    promptly(lambda: place_log(capture, run_dir))
    assert dest.read_text() == "real log\n"


def test_a_new_capture_replaces_a_stale_one(tmp_path: Path):
    run_dir = run_folder(tmp_path)
    capture = capture_path(run_dir)
    capture.symlink_to(outside(tmp_path, "victim", "keep\n"))
    with TailLog(capture) as log:
        log.write(b"fresh\n")
    assert not capture.is_symlink() and capture.read_text() == "fresh\n"
    assert (tmp_path / "host" / "victim").read_text() == "keep\n"


def test_the_capped_log_keeps_the_tail_and_says_how_much_it_dropped(tmp_path: Path):
    cap = 4096
    lines = [f"line {i:05d} {'x' * (i % 50)}\n".encode() for i in range(3000)]
    stream = b"".join(lines)
    path = tmp_path / "log"
    with TailLog(path, cap) as log:
        for i in range(0, len(lines), 7):  # chunks of a few lines, as a stream delivers them
            log.write(b"".join(lines[i : i + 7]))
        sizes_seen = log.dropped
    data = path.read_bytes()
    first, _, kept = data.partition(b"\n")
    assert len(data) <= cap + len(first) + 1
    assert stream.endswith(kept) and kept.endswith(lines[-1])
    assert kept.startswith(b"line ")  # cut at a line start
    dropped = len(stream) - len(kept)
    assert sizes_seen == dropped
    assert first.decode() == (
        f"[harness: the first {dropped} bytes of this log were dropped; "
        f"it keeps the last {cap} bytes at most]"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["log"]  # no temporary file left


def test_a_log_under_the_cap_is_kept_whole(tmp_path: Path):
    with TailLog(tmp_path / "log", 4096) as log:
        log.write(b"a\n" * 1000)
        log.write(b"b" * 2048)  # exactly the cap
    assert (tmp_path / "log").read_bytes() == b"a\n" * 1000 + b"b" * 2048


def test_one_huge_chunk_is_capped_too(tmp_path: Path):
    with TailLog(tmp_path / "log", 4096) as log:
        log.write(bytes(range(256)) * 1000)
    data = (tmp_path / "log").read_bytes()
    assert len(data) < 4096 and data.endswith(bytes(range(256)))
    assert data.startswith(b"[harness: the first ")


def test_the_default_cap_is_4_mib():
    from harness.executors.docker_containers import LogFollower
    from harness.results.untrusted_run_folder import LOG_CAP_BYTES

    assert LOG_CAP_BYTES == 4 * 1024 * 1024
    assert LogFollower.__init__.__defaults__ == (LOG_CAP_BYTES,)


def test_the_host_takes_the_run_folder_back_after_the_container(tmp_path: Path):
    """A container that ran ``chmod 000 /out`` (and, for a root harness, owned the folder as the
    unprivileged uid) cannot lock the host out of its checks, log and failure record."""
    from harness.executors.docker_host_folders import reclaim

    run_dir = tmp_path / "repeat-0"
    run_dir.mkdir()
    if os.getuid() == 0:
        os.chown(run_dir, 65534, 65534)
    run_dir.chmod(0)
    reclaim(run_dir)
    after = run_dir.stat()
    assert (after.st_uid, after.st_gid) == (os.getuid(), os.getgid())
    assert stat.S_IMODE(after.st_mode) == 0o755
