"""A container's run folder, as the host handles it: nothing in it is followed.

The run folder (``<results>/cells/<cell>/repeat-<k>/``) is mounted read-write at ``/out``, so
the workload controls every entry in it. The host therefore:

- keeps the container's log outside the mount while it runs: ``capture_path`` (a hidden file
  beside the run folder, in the cell folder the container cannot see), written by ``TailLog``
  with a cap (``LOG_CAP_BYTES``, the tail kept);
- after the container ended, removes every symbolic link, FIFO, socket and device left in the
  folder without following it (``reject_planted``), and fails the run naming each
  (``planted_message``);
- then renames its capture into the folder as ``run.log`` (``place_log``): a rename replaces
  whatever lies at ``run.log`` itself, never a link's target.

``live_log`` says where a run's log is while it runs, for the progress display. Host side only.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from harness.contract.files import LOG_FILE, create_new, create_temp, file_kind

#: The most of a container's stdout and stderr kept in run.log: its last 4 MiB.
LOG_CAP_BYTES = 4 * 1024 * 1024
#: The smallest cap a TailLog takes (its note of dropped bytes must fit many times over).
MIN_LOG_CAP_BYTES = 4096
#: At most this many planted entries are named in a message; the rest are counted.
MAX_NAMED = 10
#: Names and link targets are shown up to this many characters.
MAX_NAME_CHARS = 200


def capture_path(run_dir: Path) -> Path:
    """Where the host writes a container run's log while it runs: ``.repeat-<k>.log`` in the
    cell folder, beside the run folder and outside the container's mount."""
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.log"


def live_log(run_dir: Path) -> Path:
    """Where a run's log is now: the host's capture while a container run is in flight, else
    ``run.log`` in the run folder (a local run writes there itself; a finished container run's
    capture has been placed there)."""
    capture = capture_path(run_dir)
    return capture if os.path.lexists(capture) else Path(run_dir) / LOG_FILE


# -- the capped log ----------------------------------------------------------------------------


class TailLog:
    """An append-only log file that keeps its last ``cap`` bytes at most.

    When a write takes it over the cap, the file is rewritten (atomically: a reader sees the old
    file or the new one) with its last ``cap // 2`` bytes, cut at a line start where one is
    near, under a first line that says how many bytes were dropped so far. So the file never
    holds much more than ``cap`` bytes, and always the newest output.
    """

    def __init__(self, path: Path, cap: int = LOG_CAP_BYTES) -> None:
        if cap < MIN_LOG_CAP_BYTES:
            raise ValueError(f"a log cap must be at least {MIN_LOG_CAP_BYTES} bytes, not {cap}")
        self.path = Path(path)
        self.cap = cap
        self.dropped = 0  # bytes of output dropped so far
        self._header = 0  # length of the note at the file's start (0: none yet)
        self._size = 0
        _remove_entry(self.path)  # a stale capture of an earlier attempt
        self._fd = create_new(self.path, readable=True)

    def write(self, data: bytes) -> None:
        _write_all(self._fd, data)
        self._size += len(data)
        if self._size > self.cap:
            self._compact()

    def _compact(self) -> None:
        keep = self.cap // 2
        start = max(self._header, self._size - keep)
        tail = os.pread(self._fd, self._size - start, start)
        newline = tail.find(b"\n", 0, min(len(tail), 1024))
        if 0 <= newline < len(tail) - 1:
            tail = tail[newline + 1 :]
        self.dropped += self._size - self._header - len(tail)
        note = (
            f"[harness: the first {self.dropped} bytes of this log were dropped; "
            f"it keeps the last {self.cap} bytes at most]\n"
        ).encode()
        fd, tmp = create_temp(self.path.parent, f".{self.path.name}.", readable=True)
        try:
            _write_all(fd, note + tail)
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(self._fd)
        self._fd = fd
        self._header = len(note)
        self._size = len(note) + len(tail)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> TailLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- after the container ended ----------------------------------------------------------------


@dataclass(frozen=True)
class Planted:
    """One entry the container left that the host does not go through: where (relative to the
    run folder), what it is, and a link's target (as text, never resolved)."""

    path: str
    kind: str
    target: str | None = None
    removed: bool = True
    problem: str | None = None

    def describe(self) -> str:
        link = f" -> {_shown(self.target)}" if self.target is not None else ""
        if self.problem is not None:
            return f"{_shown(self.path)}{link}: {self.problem}"
        fate = "removed" if self.removed else "could not be removed"
        followed = "not followed; " if self.kind == "a symbolic link" else ""
        return f"{_shown(self.path)}{link} ({followed}{fate})"


def reject_planted(run_dir: Path) -> list[Planted]:
    """Remove every symbolic link, FIFO, socket and device under ``run_dir`` without following
    any (lstat, unlink; links to folders are not descended), and say what each was. A folder
    that cannot be listed is reported too: the host could not check it."""
    run_dir = Path(run_dir)
    found: list[Planted] = []
    stack = [run_dir]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                listed = sorted(entries, key=lambda e: e.name)
        except OSError as exc:
            rel = os.path.relpath(folder, run_dir)
            problem = f"a folder the host cannot list ({exc.strerror or exc})"
            found.append(Planted(rel, "a folder", problem=problem))
            continue
        for entry in listed:
            path = Path(entry.path)
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(mode):
                stack.append(path)
                continue
            if stat.S_ISREG(mode):
                continue
            target = _readlink(path) if stat.S_ISLNK(mode) else None
            found.append(
                Planted(
                    path.relative_to(run_dir).as_posix(),
                    file_kind(mode),
                    target,
                    removed=_unlink(path),
                )
            )
    return sorted(found, key=lambda p: p.path)


def planted_message(planted: list[Planted]) -> str:
    """One line naming each planted entry, e.g. ``the container left a symbolic link in the run
    folder: run.log -> /etc/hostname (not followed; removed)``."""
    groups: dict[str, list[Planted]] = {}
    for entry in planted:
        groups.setdefault(entry.kind, []).append(entry)
    parts = []
    for kind, entries in groups.items():
        named = ", ".join(e.describe() for e in entries[:MAX_NAMED])
        more = f" and {len(entries) - MAX_NAMED} more" if len(entries) > MAX_NAMED else ""
        what = kind if len(entries) == 1 else f"{len(entries)} {_plural(kind)}"
        parts.append(f"{what} in the run folder: {named}{more}")
    return "the container left " + "; and ".join(parts)


def place_log(capture: Path, run_dir: Path) -> None:
    """Put the host's capture of a container's log into the run folder as ``run.log``, by
    rename: whatever the container left at that name (a file, a link, a folder) is replaced or
    removed, never written through. No capture: nothing is placed."""
    dest = Path(run_dir) / LOG_FILE
    if not os.path.lexists(capture):
        return
    try:
        os.replace(capture, dest)
    except OSError as exc:
        if exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise
        _remove_entry(dest)
        os.replace(capture, dest)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _remove_entry(path: Path) -> None:
    """Remove whatever is at ``path`` (a folder with its contents), following no link."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)  # on Linux rmtree never follows a link out of the tree
    else:
        path.unlink()


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError as exc:
        return f"(unreadable: {exc.strerror})"


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def _shown(text: str) -> str:
    """A name or link target as it may appear in a message: printable, bounded."""
    shown = text if text.isprintable() else ascii(text)[1:-1]
    if len(shown) > MAX_NAME_CHARS:
        shown = shown[:MAX_NAME_CHARS] + "..."
    return shown


def _plural(kind: str) -> str:
    noun = kind.removeprefix("a ")
    return "FIFOs" if noun == "FIFO" else f"{noun}s"
