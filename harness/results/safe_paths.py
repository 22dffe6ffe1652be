"""Folders the harness writes, moves or deletes in under a results folder: never through a link.

A results folder is input the harness cannot trust: it may have been copied, tampered with, or
written by a container (its run folder is mounted read-write). A symbolic link at ``diagnoses``,
``plots``, ``superseded``, ``cells/<cell>`` ... would lead a write, a move or an ``rmtree`` to
wherever it points. So every folder the harness uses below a results folder goes through
``real_dir``: each component below the results root is checked with ``lstat`` (never followed)
and must be a folder; a link, or a file where a folder belongs, is a ``StoreError`` naming it
and what to do, before anything is written. Files are then written by ``write_bytes_atomic``
(contract/files.py: a new file under a random name renamed over the target, so a link at a
file's own name is replaced, never followed), removed by ``remove_entry`` (a link itself, never
what it points to) and the results lock is opened by ``open_lock`` (``O_NOFOLLOW``, a regular
file only). The results root itself is the folder the user named: it may be a link.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import stat
from pathlib import Path
from typing import IO

from harness.contract.files import file_kind
from harness.errors import StoreError

__all__ = ["first_link", "open_lock", "real_dir", "refuse_link", "remove_entry", "remove_tree"]


def _parts_below(root: Path, path: Path) -> tuple[str, ...]:
    try:
        return Path(path).relative_to(root).parts
    except ValueError:
        raise ValueError(f"{path} is not under {root}") from None


def _refused(path: Path, mode: int, what: str) -> StoreError:
    kind = file_kind(mode)
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return StoreError(
            f"{path} is a symbolic link (to {target!r}), not a folder: the harness never "
            f"writes, moves or deletes through a link in a results folder ({what})",
            f"remove the link (rm {shlex.quote(str(path))}) or replace it with a real folder, "
            "then rerun; nothing was written through it",
        )
    return StoreError(
        f"{path} is {kind}, not a folder ({what})",
        "move it away (it is not something the harness wrote), then rerun",
    )


def real_dir(root: str | Path, path: str | Path, *, create: bool = True, what: str = "") -> Path:
    """``path`` (``root`` or below it) as a real folder: every component below ``root`` is
    checked with ``lstat`` and must be a folder, not a link; missing ones are created when
    ``create`` (``mkdir`` never follows a link at its own name). ``root`` is created (its own
    path, and above, followed as given) when missing. A link or another kind of entry is a
    StoreError naming it; ``what`` says what the folder is for, in the message."""
    root, path = Path(root), Path(path)
    parts = _parts_below(root, path)
    if create:
        root.mkdir(parents=True, exist_ok=True)
    here = root
    for part in parts:
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            if not create:
                return path
            try:
                os.mkdir(here)
                continue
            except FileExistsError:  # made meanwhile: check what it is
                mode = os.lstat(here).st_mode
        if not stat.S_ISDIR(mode):
            raise _refused(here, mode, what or f"the harness keeps {path} there")
    return path


def first_link(root: str | Path, path: str | Path) -> Path | None:
    """The first entry from ``root`` down to ``path`` (itself included, ``root`` not) that is a
    symbolic link, None when none is (a missing one ends the look): what a reader of a run
    folder must not go through."""
    here = Path(root)
    for part in _parts_below(here, Path(path)):
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(mode):
            return here
    return None


def refuse_link(root: str | Path, path: str | Path, *, what: str = "") -> None:
    """A StoreError when ``path`` below ``root`` is a link, or any folder above it (up to
    ``root``) is not a real folder; nothing is created. A missing ``path`` passes."""
    root, path = Path(root), Path(path)
    real_dir(root, path.parent, create=False, what=what)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise _refused(path, mode, what or f"the harness would replace {path}")


def remove_tree(root: str | Path, path: str | Path, *, what: str = "") -> None:
    """Delete the folder ``path`` below ``root`` with what it holds; a link there (or above it)
    is refused, never followed (``shutil.rmtree`` itself does not follow links inside)."""
    refuse_link(root, path, what=what)
    remove_entry(path)


def remove_entry(path: str | Path) -> None:
    """Remove whatever is at ``path`` (a folder with its contents), following no link: a link is
    removed itself."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def open_lock(path: str | Path) -> IO[str]:
    """The results lock file ``path`` opened for reading and writing, created when missing:
    never through a link, and only a regular file (a FIFO would block, a device is not ours).
    Anything else is a StoreError naming it."""
    path = Path(path)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.EOPNOTSUPP):
            raise
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            raise exc from None
        raise _lock_refused(path, mode) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _lock_refused(path, mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "a+", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def _lock_refused(path: Path, mode: int) -> StoreError:
    return StoreError(
        f"{path} is {file_kind(mode)}, not the harness's lock file: the harness never writes "
        "through a link, and does not open a FIFO or device as its lock",
        f"remove it (rm {shlex.quote(str(path))}; it holds nothing of the results), then rerun",
    )
