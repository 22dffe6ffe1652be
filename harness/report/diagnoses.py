"""The diagnoses of a results folder (``harness diagnose``), read for the report.

A diagnosis.json is read like any other file of the folder: anything can have written it, so
what does not have the expected shape is left out, and its text is made inert where it is shown.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pydantic import ValidationError

from harness.diagnose.file_checks import diagnosis_data, why_invalid
from harness.report.inert_text import clean
from harness.report.report_data import DiagnosisEntry
from harness.results.layout import DIAGNOSES_DIR, DIAGNOSIS_FILE
from harness.results.run_reader import read_json_limited

log = logging.getLogger(__name__)

#: A diagnosis folder's name: ``<cell id>-<repeat>--<cell id>-<repeat>``.
_NAME = re.compile(r"^[0-9a-f]{6,64}-[0-9]+--[0-9a-f]{6,64}-[0-9]+$")
_LIMIT = 1 << 20


def _entry(folder: Path, root: Path) -> DiagnosisEntry | None:
    try:
        data = diagnosis_data(read_json_limited(folder / DIAGNOSIS_FILE, _LIMIT))
    except ValidationError as exc:  # before ValueError: it is one
        why: object = f"not a diagnosis ({why_invalid(exc)})"
    except (OSError, ValueError) as exc:
        why = exc
    else:
        op = data.finding.op
        return DiagnosisEntry(
            name=folder.name,
            title=data.title,
            cells=[r.cell_id for r in data.runs],
            kind=data.finding.kind,
            sentences=data.sentences,
            op=op.model_dump() if op is not None else None,
            path=str((folder / DIAGNOSIS_FILE).relative_to(root)),
        )
    log.warning("left out of the report: %s: %s", clean(folder / DIAGNOSIS_FILE), clean(why))
    return None


def load_diagnoses(root: Path) -> list[DiagnosisEntry]:
    found = []
    for folder in sorted((Path(root) / DIAGNOSES_DIR).glob("*")):
        if folder.is_dir() and not folder.is_symlink() and _NAME.match(folder.name):
            entry = _entry(folder, Path(root))
            if entry is not None:
                found.append(entry)
    return found
