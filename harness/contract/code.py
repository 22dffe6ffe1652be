"""The digests of the code a run imports: the harness's workload (``provenance.workload_digest``)
and the user's own folder (``provenance.user_code_digest``), and the snapshot of that folder the
runs import from (``snapshot_user_code``).

Standard library only, so that the host can ask any interpreter for it (resume compares it)
without importing torch.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from harness.contract.files import create_new, open_regular

#: What makes a folder below the user's code folder a harness results folder, left out of the
#: code's digest (harness/results/layout.py's MANIFEST_FILE, LOCK_FILE and slurm/SUBMISSION_FILE; a
#: test checks they agree): the lock is there from a run's first moment, the manifest in every
#: folder `harness run` or `harness merge` finished, the submission in a Slurm root.
RESULTS_MANIFEST = "manifest.json"
RESULTS_LOCK = ".lock"
RESULTS_SUBMISSION = "slurm/submission.json"
#: A manifest bigger than this is not read (a user's file of that name may be anything).
MANIFEST_READ_LIMIT = 64 << 20
#: Bytes read at a time when hashing or copying the user's files.
CHUNK = 1 << 20


def workload_files(root: Path | None = None) -> list[Path]:
    """The workload's sources below ``root`` (the ``harness`` package folder): harness/workload/,
    harness/contract/ and harness/mnist.py, sorted by their path below ``root``."""
    root = root or Path(__file__).resolve().parent.parent
    files = [
        *(root / "workload").rglob("*.py"),
        *(root / "contract").rglob("*.py"),
        root / "mnist.py",
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def workload_digest(root: Path | None = None) -> str:
    """sha256 over each workload source's path below harness/, a NUL byte, and its bytes."""
    root = root or Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in workload_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def user_code_files(root: Path) -> list[Path]:
    """The files of the user's code folder (``workload.path``) that make its digest: every
    regular file below ``root``, not in ``__pycache__``, a hidden folder (``.git``, ``.venv``)
    or a harness results folder below ``root`` (``is_results_folder``: the runs' own output,
    whose lock, records and reports change with every run), not ``*.pyc``; symbolic links are
    not followed. Sorted by their path below ``root``."""
    found = []
    for folder, dirs, files in os.walk(root):  # never into linked folders
        here = Path(folder)
        dirs[:] = sorted(
            d
            for d in dirs
            if d != "__pycache__" and not d.startswith(".") and not is_results_folder(here / d)
        )
        for name in files:
            path = here / name
            if path.suffix != ".pyc" and path.is_file() and not path.is_symlink():
                found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def is_results_folder(folder: Path) -> bool:
    """Whether ``folder`` is a harness results folder: it holds the results lock
    (``RESULTS_LOCK``) or a Slurm submission (``RESULTS_SUBMISSION``) as a regular file, or a
    harness manifest (``RESULTS_MANIFEST``: a JSON object with ``format_version`` and
    ``cells``; a file of that name that is anything else is the user's)."""
    for marker in (RESULTS_LOCK, RESULTS_SUBMISSION):
        try:
            if stat.S_ISREG(os.lstat(folder / marker).st_mode):
                return True
        except OSError:
            pass
    try:
        with open_regular(folder / RESULTS_MANIFEST) as handle:
            text = handle.read(MANIFEST_READ_LIMIT + 1)
        if len(text) > MANIFEST_READ_LIMIT:
            return False
        data = json.loads(text)
    except (OSError, ValueError):  # none, a link, a FIFO, not JSON, too big: not a harness one
        return False
    return isinstance(data, dict) and "format_version" in data and "cells" in data


def _file_header(name: str, size: int) -> bytes:
    return name.encode() + b"\0" + str(size).encode() + b"\0"


def user_code_digest(root: Path) -> str:
    """sha256 over each of ``user_code_files``: its path below ``root``, a NUL byte, its size, a
    NUL byte and its bytes (the size keeps two files from reading as one): what a run of the
    user's build function records as ``provenance.user_code_digest``. Files are read in chunks
    (a big data file in the folder costs its read, not its size in memory); a file that grows
    or shrinks while it is read counts as the bytes read, so its digest matches no copy of it."""
    digest = hashlib.sha256()
    for path in user_code_files(root):
        name = path.relative_to(root).as_posix()
        try:
            handle = open_regular(path)
        except OSError:  # gone, or replaced by a link or a FIFO since the walk: not code now
            continue
        with handle:
            size = os.fstat(handle.fileno()).st_size
            digest.update(_file_header(name, size))
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def snapshot_user_code(root: Path, store: Path) -> tuple[Path, str]:
    """A copy of the user's code folder that nothing edits while runs use it, and its digest:
    ``<store>/<digest>/`` (the results folder's ``code/``), content-addressed, so an unchanged
    folder reuses its snapshot (checked again against its name) and an edited one gets a new one.

    The copy holds exactly ``user_code_files``, read-only (write bits dropped; folders keep
    theirs, so the results folder can still be deleted), and its digest is taken from the copy,
    so the digest a run records is that of the files it imported, even when the folder is
    edited while the copy is made. ``store`` must not be, or pass through, a symbolic link."""
    wanted = user_code_digest(root)
    existing = store / wanted
    if _plain_folder(existing) and user_code_digest(existing) == wanted:
        return existing, wanted
    store.mkdir(parents=True, exist_ok=True)
    if not _plain_folder(store):
        raise OSError(errno.ENOTDIR, "not a plain folder (a link is not followed)", str(store))
    tmp = Path(tempfile.mkdtemp(prefix=".snapshot-", dir=store))
    try:
        os.chmod(tmp, 0o755)  # as its subfolders: a root harness's containers read it as 65534
        for path in user_code_files(root):
            _copy_file(path, tmp / path.relative_to(root))
        digest = user_code_digest(tmp)
        final = store / digest
        if _plain_folder(final) and user_code_digest(final) == digest:
            shutil.rmtree(tmp)
            return final, digest
        if os.path.lexists(final):  # damaged, or planted: never followed, replaced
            if _plain_folder(final):
                shutil.rmtree(final)
            else:
                os.unlink(final)
        os.rename(tmp, final)
        return final, digest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _plain_folder(path: Path) -> bool:
    """A folder that is not a symbolic link (``lstat``)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _copy_file(source: Path, dest: Path) -> None:
    """``source``'s bytes into the new file ``dest`` (its folders made), with ``source``'s mode
    less its write bits; neither is followed through a link."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = open_regular(source)
    except OSError:  # gone, or replaced by a link or a FIFO since the walk: not copied
        return
    with handle:
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode) & 0o555
        fd = create_new(dest)
        with os.fdopen(fd, "wb") as out:
            while chunk := handle.read(CHUNK):
                out.write(chunk)
        os.chmod(dest, mode | stat.S_IRUSR)
