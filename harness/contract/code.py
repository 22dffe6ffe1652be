"""The digest of the workload's code: what a run record's ``provenance.workload_digest`` holds.

Standard library only, so that the host can ask any interpreter for it (resume compares it)
without importing torch.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


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
    regular file below ``root``, not in ``__pycache__`` or a hidden folder (``.git``,
    ``.venv``), not ``*.pyc``; symbolic links are not followed. Sorted by their path below
    ``root``."""
    found = []
    for folder, dirs, files in os.walk(root):  # never into linked folders
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in files:
            path = Path(folder) / name
            if path.suffix != ".pyc" and path.is_file() and not path.is_symlink():
                found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def user_code_digest(root: Path) -> str:
    """sha256 over each of ``user_code_files``: its path below ``root``, a NUL byte, its size, a
    NUL byte and its bytes (the size keeps two files from reading as one): what a run of the
    user's build function records as ``provenance.user_code_digest``."""
    digest = hashlib.sha256()
    for path in user_code_files(root):
        data = path.read_bytes()
        name = path.relative_to(root).as_posix().encode()
        digest.update(name + b"\0" + str(len(data)).encode() + b"\0" + data)
    return digest.hexdigest()
