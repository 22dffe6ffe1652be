"""The files of one run folder, and the atomic writes every side uses for them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SPEC_FILE = "spec.json"
RECORD_FILE = "run.json"
LOSSES_FILE = "losses.npy"
TENSORBOARD_DIR = "tensorboard"
LOG_FILE = "run.log"


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file so that a reader sees the old one or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        # A full disk or a signal must not leave half a file behind, even a hidden one.
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON (sorted keys, indented) through write_bytes_atomic."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
