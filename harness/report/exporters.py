"""Exporters: pure functions from the report model to bytes, looked up by format name."""

from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Callable
from typing import Any

from harness.errors import HarnessError
from harness.report.flatten import rows, to_jsonable
from harness.report.markdown import render_markdown
from harness.report.report_data import Report
from harness.results.layout import REPORT_FILES

#: 2: three verdicts (``verdict``: reproduces | diverges | unknown, ``unknown_because``,
#: ``reproducible`` null exactly when unknown), runs checked against their files (status
#: ``corrupt``), merge conflict copies (``conflict_copies``, ``conflicts``), ``mixed_code``;
#: since then, added keys only: ``machines``, each run's ``machine`` (its fingerprint), each
#: cell's and comparison's ``machines_differ``; ``answer`` (what changes the bits, the recipes,
#: the noise, the controls), each cell's ``control``, each run's ``val_loss``. The schema:
#: docs/report.schema.json (harness/report/report_schema.py).
REPORT_FORMAT_VERSION = 2


def _runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs as JSON: the absolute ``run_dir`` left out (``path`` is relative to the folder),
    the machine as its fingerprint (``machines`` has each machine's facts once)."""
    out = []
    for run in runs:
        entry = {k: v for k, v in run.items() if k != "run_dir"}
        machine = entry.get("machine")
        entry["machine"] = machine.get("fingerprint") if isinstance(machine, dict) else None
        out.append(entry)
    return out


def render_json(report: Report) -> bytes:
    cells = []
    for cell in report.cells:
        entry = to_jsonable(cell)
        entry["runs"] = _runs(entry.pop("runs"))
        entry["conflict_copies"] = _runs(entry.pop("conflict_copies"))
        cells.append(entry)
    data = {
        "format_version": REPORT_FORMAT_VERSION,
        "name": report.name,
        "source": report.source,
        "summaries": report.summaries,
        "cells": cells,
        "table": rows(report),
        "comparisons": to_jsonable(report.comparisons),
        "costs": [{**to_jsonable(c), "ratio": c.ratio} for c in report.costs],
        "failures": to_jsonable(report.failures),
        "images": to_jsonable(report.images),
        "conflicts": to_jsonable(report.conflicts),
        "mixed_code": report.mixed_code,
        "diagnoses": to_jsonable(report.diagnoses),
        "machines": to_jsonable(report.machines),
        "answer": to_jsonable(report.answer),
    }
    return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode("utf-8")


def render_csv(report: Report) -> bytes:
    table = rows(report)
    buffer = io.StringIO()
    if table:
        writer = csv.DictWriter(buffer, fieldnames=list(table[0]), lineterminator="\n")
        writer.writeheader()
        for row in table:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue().encode("utf-8")


#: format name -> (file name, renderer)
EXPORTERS: dict[str, tuple[str, Callable[[Report], bytes]]] = {
    fmt: (REPORT_FILES[fmt], render)
    for fmt, render in (("md", render_markdown), ("json", render_json), ("csv", render_csv))
}

#: The report formats, in the order they are written: ``--format``'s choices, and what ``run``,
#: ``merge`` and ``diagnose`` write.
REPORT_FORMATS: tuple[str, ...] = tuple(EXPORTERS)


def check_format(fmt: str) -> str:
    """``fmt`` when the registry has it; else the error naming the nearest one and the rest."""
    if fmt not in EXPORTERS:
        close = difflib.get_close_matches(fmt, EXPORTERS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise HarnessError(
            f"unknown report format {fmt!r}", f"{hint}available: {', '.join(EXPORTERS)}"
        )
    return fmt
