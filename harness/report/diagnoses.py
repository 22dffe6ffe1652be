"""The diagnoses of a results folder (``harness diagnose``), read for the report.

A diagnosis.json is read like any other file of the folder: anything can have written it, so
what does not have the expected shape is left out, and its text is made inert where it is shown.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from harness.contract.files import open_regular
from harness.layout import DIAGNOSES_DIR, DIAGNOSIS_FILE
from harness.report.model import DiagnosisEntry

log = logging.getLogger(__name__)

#: A diagnosis folder's name: ``<cell id>-<repeat>--<cell id>-<repeat>``.
_NAME = re.compile(r"^[0-9a-f]{6,64}-[0-9]+--[0-9a-f]{6,64}-[0-9]+$")
_LIMIT = 1 << 20


def _read(path: Path) -> Any:
    with open_regular(path) as handle:
        return json.loads(handle.read(_LIMIT))


def _entry(folder: Path, root: Path) -> DiagnosisEntry | None:
    try:
        data = _read(folder / DIAGNOSIS_FILE)
        runs = data["runs"]
        cells = [str(r["cell_id"]) for r in runs]
        sentences = [str(s) for s in data["sentences"]]
        finding = data["finding"]
        op = finding.get("op")
        return DiagnosisEntry(
            name=folder.name,
            title=str(data["title"]),
            cells=cells,
            kind=str(finding["kind"]),
            sentences=sentences,
            op=op if isinstance(op, dict) else None,
            path=str((folder / DIAGNOSIS_FILE).relative_to(root)),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("left out of the report: %s: %s", folder / DIAGNOSIS_FILE, exc)
        return None


def load_diagnoses(root: Path) -> list[DiagnosisEntry]:
    found = []
    for folder in sorted((Path(root) / DIAGNOSES_DIR).glob("*")):
        if folder.is_dir() and not folder.is_symlink() and _NAME.match(folder.name):
            entry = _entry(folder, Path(root))
            if entry is not None:
                found.append(entry)
    return found
