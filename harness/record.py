"""Reading run records on the host: ``run.json`` validated against the contract's dataclasses.

The format is defined once, in harness/contract/record.py (standard library, so the workload
can write it without pydantic); pydantic validates a file against those same dataclasses here
before the host trusts it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from harness.contract.files import RECORD_FILE
from harness.contract.record import RECORD_FORMAT_VERSION, RunRecord


class RecordError(ValueError):
    """A run record that is missing, truncated or not of the documented format."""


@lru_cache(maxsize=1)
def _adapter() -> TypeAdapter[RunRecord]:
    return TypeAdapter(RunRecord)


def validate_record(data: Any) -> RunRecord:
    """A RunRecord from parsed JSON; pydantic's ValidationError when it is not one."""
    return _adapter().validate_python(data)


def load_record(run_dir: str | Path) -> RunRecord:
    """Read and validate ``run.json`` in ``run_dir``; a bad file is a RecordError, not a crash."""
    path = Path(run_dir) / RECORD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RecordError(f"{path}: no run record") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: not valid JSON ({exc}); the run will be repeated") from exc
    try:
        return validate_record(data)
    except ValidationError as exc:
        raise RecordError(
            f"{path}: not a run record of format {RECORD_FORMAT_VERSION}: {exc}"
        ) from exc
