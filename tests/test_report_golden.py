"""The report's bytes are pinned over two fixed sets of records, so that a refactoring that
means to change nothing can show it changed nothing: the quick matrix's real records (made on
one machine and kept as data: the report reads records, it computes no float of its own) and
matrix.yaml's 144 cells made without training (test_report_layout.py).

The golden files were written before the restructuring of issue 30. A change that means to
change the report rewrites them with ``HARNESS_WRITE_GOLDEN=1`` and shows the diff for review.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_report_layout import write_matrix_yaml_set

from harness.report import make_reports

GOLDEN = Path(__file__).resolve().parent / "resources" / "golden"
FORMATS = ("md", "json", "csv")


def _check(root: Path, expected: Path) -> None:
    make_reports(root, list(FORMATS), max_plots=0)
    if os.environ.get("HARNESS_WRITE_GOLDEN") == "1":
        expected.mkdir(parents=True, exist_ok=True)
        for fmt in FORMATS:
            shutil.copyfile(root / f"report.{fmt}", expected / f"report.{fmt}")
    for fmt in FORMATS:
        got = (root / f"report.{fmt}").read_bytes()
        want = (expected / f"report.{fmt}").read_bytes()
        assert got == want, f"report.{fmt} differs from {expected / f'report.{fmt}'}"


def test_the_quick_matrix_s_real_records_give_the_golden_report(tmp_path: Path) -> None:
    root = tmp_path / "quick"
    shutil.copytree(GOLDEN / "quick-results", root)
    _check(root, GOLDEN / "quick-report")


def test_matrix_yaml_s_144_cells_give_the_golden_report(tmp_path: Path) -> None:
    write_matrix_yaml_set(tmp_path)
    _check(tmp_path, GOLDEN / "matrix-144-report")


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_changed_report_fails_the_comparison(tmp_path: Path, fmt: str) -> None:
    """The comparison is byte for byte: one byte more in any format fails it."""
    root = tmp_path / "quick"
    shutil.copytree(GOLDEN / "quick-results", root)
    changed = tmp_path / "golden"
    shutil.copytree(GOLDEN / "quick-report", changed)
    with (changed / f"report.{fmt}").open("ab") as f:
        f.write(b" ")
    with pytest.raises(AssertionError, match=f"report.{fmt} differs"):
        _check(root, changed)
