"""What changed between the matrix a results folder was made from and the one run into it now.

Why: ``harness run --out`` into a folder of another matrix is refused (its runs would be judged
against cells they were not made for); the refusal says what changed, how to replace or keep
the old results, and a folder that holds no run record at all (a start that failed before
any run) is simply taken over by the new matrix.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from harness.errors import StoreError
from harness.matrix import LoadedMatrix
from harness.results import layout
from harness.results.manifest import Manifest
from harness.results.run_reader import lenient_record

#: at most this many changed lines of the matrix file are quoted
SHOWN_LINES = 6


def runs_held(root: Path) -> tuple[int, int]:
    """How many run records lie under ``<root>/cells``, and how many of them say ok (a record
    that cannot be read counts as finished: it may be evidence). Read through the regular-file
    reader: a FIFO there is not waited on."""
    records = layout.record_paths(root)
    finished = 0
    for path in records:
        data = lenient_record(path.parent)
        finished += data is None or data.get("status") == "ok"
    return len(records), finished


def changed_lines(old_text: str, new_text: str) -> list[str]:
    """The matrix file's lines that differ, ``-`` old and ``+`` new, at most SHOWN_LINES."""
    diff = difflib.unified_diff(old_text.splitlines(), new_text.splitlines(), lineterm="", n=0)
    lines = [
        line.strip() if line[0] not in "+-" else f"{line[0]} {line[1:].strip()}"
        for line in diff
        if line[:1] in "+-" and not line.startswith(("---", "+++"))
    ]
    if len(lines) > SHOWN_LINES:
        lines = lines[:SHOWN_LINES] + [f"... ({len(lines) - SHOWN_LINES} more)"]
    return lines


def changed_cells(old: Manifest, matrix: LoadedMatrix) -> str:
    """``2 cells only in the old matrix (a, b), 1 only in the new (c)``; "" when the same."""
    old_names = {c.name for c in old.cells}
    new_names = {c.name for c in matrix.cells}
    parts = []
    for what, names in (("old", old_names - new_names), ("new", new_names - old_names)):
        if names:
            shown = ", ".join(sorted(names)[:4]) + (", ..." if len(names) > 4 else "")
            parts.append(f"{len(names)} cell(s) only in the {what} matrix ({shown})")
    return "; ".join(parts)


def another_matrix(root: Path, old: Manifest, matrix: LoadedMatrix) -> StoreError:
    """The refusal of a folder made from another matrix, saying what changed and the ways on."""
    same_file = str(old.matrix_path) == str(matrix.path)
    made = (
        f"an earlier version of {matrix.path}"
        if same_file
        else f"{old.matrix_path}, not {matrix.path}"
    )
    what = "; ".join(
        part
        for part in (
            "lines changed: " + " | ".join(changed_lines(old.matrix_text or "", matrix.text))
            if old.matrix_text
            else "",
            changed_cells(old, matrix),
        )
        if part
    )
    records, kept = runs_held(root)
    failed = f" and {records - kept} failed one(s)" if records > kept else ""
    return StoreError(
        f"{root} holds {kept} finished run(s){failed} of the matrix {old.name!r} made from "
        f"{made}" + (f" ({what})" if what else ""),
        f"to replace them, pass another --out or delete {root} and rerun; to keep them, run "
        f"that matrix again (its text is {root / layout.MATRIX_FILE}) or give the new one "
        "another --out",
    )
