"""The digest of the workload's code: what a run record's ``provenance.workload_digest`` holds.

Standard library only, so that the host can ask any interpreter for it (resume compares it)
without importing torch.
"""

from __future__ import annotations

import hashlib
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
