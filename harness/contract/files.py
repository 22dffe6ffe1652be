"""The files of one run folder, and the atomic writes and safe reads every side uses for them.

A container's run folder is mounted read-write into it, so whatever lies there when the host
looks may have been planted by the workload: a symbolic link to a file of the host's, a FIFO
that blocks a reader, a device. The host never goes through one: writes create a fresh file
under a random name (``O_CREAT|O_EXCL|O_NOFOLLOW``) and rename it over the target (a rename
replaces a link itself, never what it points to); reads go through ``open_regular``, which
opens only a regular file and never blocks. Standard library only: the workload uses the same
functions inside its container.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
from pathlib import Path
from typing import IO, Any

SPEC_FILE = "spec.json"
RECORD_FILE = "run.json"
LOSSES_FILE = "losses.npy"
#: per-step parameter hashes, uint64 [steps, n_params] (harness/workload/weights.py)
WEIGHTS_FILE = "weights.npy"
TENSORBOARD_DIR = "tensorboard"
LOG_FILE = "run.log"
#: A replay for `harness diagnose` (harness/workload/replay.py): the hashes, and the logged
#: step's operation outputs.
REPLAY_FILE = "replay.json"
REPLAY_OUTPUTS_FILE = "replay-outputs.npz"

#: Flags of a file the host creates: never through a link, never over an existing entry.
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
#: Flags of a file the host reads: not through a link, and without blocking on a FIFO.
READ_FLAGS = (
    os.O_RDONLY
    | os.O_NOFOLLOW
    | os.O_NONBLOCK
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


class UnsafeFile(OSError):
    """A run-folder entry that is a symbolic link or not a regular file: never read through."""


def file_kind(mode: int) -> str:
    """What an entry is, in words: ``a symbolic link``, ``a FIFO``, ``a regular file``..."""
    for test, words in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return words
    return "not a regular file"


def _unsafe(path: Path, kind: str) -> UnsafeFile:
    what = f"{kind} (not followed)" if kind == "a symbolic link" else f"{kind}, not a regular file"
    return UnsafeFile(errno.EINVAL, what, str(path))


def open_regular(path: str | Path) -> IO[bytes]:
    """``path`` opened for reading in binary, only if it is a regular file (not a link to one).

    A symbolic link, FIFO, socket or device raises UnsafeFile (an OSError whose strerror says
    which) at once: nothing is followed, nothing blocks. A missing file is FileNotFoundError.
    """
    path = Path(path)
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENXIO, errno.EOPNOTSUPP):
            try:  # a link (ELOOP under O_NOFOLLOW) or a socket (ENXIO): say which
                kind = file_kind(os.lstat(path).st_mode)
            except OSError:
                raise exc from None
            raise _unsafe(path, kind) from exc
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _unsafe(path, file_kind(mode))
        os.set_blocking(fd, True)  # a regular file never blocks; plain reads from here on
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path) -> bytes:
    """The bytes of a regular file (``open_regular``'s rules)."""
    with open_regular(path) as handle:
        return handle.read()


def create_new(path: str | Path, *, readable: bool = False) -> int:
    """A new file at ``path``, opened for writing (and reading, if ``readable``): FileExistsError
    if anything (a link too) is there already. Its mode is 0o666 less the umask, as ``open``'s."""
    flags = (CREATE_FLAGS & ~os.O_WRONLY) | os.O_RDWR if readable else CREATE_FLAGS
    return os.open(Path(path), flags, 0o666)


def create_temp(
    folder: Path, prefix: str, suffix: str = ".tmp", *, readable: bool = False
) -> tuple[int, Path]:
    """A new file under a random name in ``folder`` (``create_new``): its fd and path. Nothing
    planted at a fixed name can be written through."""
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            return create_new(path, readable=readable), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(folder))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file so that a reader sees the old one or the new one, never half of one.

    The data goes to a new file under a random name beside ``path`` (created with O_EXCL and
    O_NOFOLLOW), then is renamed over ``path``: a link planted at ``path`` or at any temporary
    name is replaced or ignored, never written through.
    """
    path = Path(path)
    fd, tmp = create_temp(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A full disk or a signal must not leave half a file behind, even a hidden one.
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON (sorted keys, indented) through write_bytes_atomic."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
