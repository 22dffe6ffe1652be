"""Settings of the built-in MNIST experiment (``hidden_size``, ``model`` ...) with an ``entry``.

The user's build function never reads them, so cells that differ only there would train
identically: the matrix refuses them at file:line and points at ``params``; they are left out
of entry cells' names, reports and "did you mean" (issue 29, item 3; docs/faults.md row 65).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from harness.contract.settings import BUILTIN_ONLY
from harness.errors import MatrixError
from harness.matrix import parse_matrix
from harness.report.report_data import CellReport
from harness.report.summaries import report_keys

PATH = Path("m.yaml")
OWN = "name: own\nworkload:\n  entry: mynet:build\n  params: {width: 8}\n"


def test_the_builtin_only_settings_are_the_four_the_built_in_reads() -> None:
    assert BUILTIN_ONLY == {"model", "hidden_size", "learning_rate", "batch_size"}


@pytest.mark.parametrize("name", sorted(BUILTIN_ONLY))
def test_an_axis_of_a_builtin_setting_with_an_entry_is_refused_at_its_line(name: str) -> None:
    value = '["mlp", "cnn"]' if name == "model" else "[16, 32]"
    text = OWN + f"axes:\n  threads: [1]\n  {name}: {value}\n"
    with pytest.raises(MatrixError) as caught:
        parse_matrix(text, PATH)
    assert caught.value.message.startswith(f"m.yaml:7: {name} is a setting of the built-in")
    assert "entry (mynet:build)" in caught.value.message
    assert "params" in caught.value.hint and f"{name}: 16" in caught.value.hint


def test_an_include_entry_with_an_entry_axis_is_refused_at_the_include() -> None:
    text = (
        "name: mixed\naxes:\n  entry: [null, 'mynet:build']\n"
        "include:\n  - {entry: 'mynet:build', hidden_size: 16}\n"
    )
    with pytest.raises(MatrixError) as caught:
        parse_matrix(text, PATH)
    assert caught.value.message.startswith("m.yaml:5: hidden_size is a setting of the built-in")


def test_builtin_cells_still_take_them() -> None:
    text = "name: b\naxes:\n  hidden_size: [16, 32]\n"
    cells = parse_matrix(text, PATH).cells
    assert [c.name for c in cells] == [
        "local-cpu1-before_model-det1-bench0-algoff-h16",
        "local-cpu1-before_model-det1-bench0-algoff-h32",
    ]


def test_a_mixed_matrix_names_entry_cells_without_builtin_settings() -> None:
    text = (
        "name: mixed\naxes:\n  entry: [null, 'mynet:build']\n"
        "include:\n  - {entry: null, hidden_size: 16}\n"
    )
    names = [c.name for c in parse_matrix(text, PATH).cells]
    assert "-h16-" in names[0], names
    assert "-h64" not in names[1], names
    assert len(set(names)) == 2


def test_did_you_mean_does_not_answer_a_user_param_with_a_builtin_setting() -> None:
    text = OWN + "axes:\n  hidden_sise: [16, 32]\n"
    with pytest.raises(MatrixError) as caught:
        parse_matrix(text, PATH)
    assert "hidden_size" not in caught.value.message
    assert "params" in caught.value.message
    # without an entry the built-in setting is the likely meaning
    with pytest.raises(MatrixError) as caught:
        parse_matrix("name: b\naxes:\n  hidden_sise: [16, 32]\n", PATH)
    assert "did you mean 'hidden_size'" in caught.value.message


def _cell(settings: dict[str, object]) -> CellReport:
    """The one field report_keys reads."""
    return cast(CellReport, SimpleNamespace(settings=settings))


def test_an_entry_cells_report_has_no_builtin_setting_column() -> None:
    base = {"image": "local", "model": "mlp", "hidden_size": 64, "placement": "none"}
    own = [_cell({**base, "entry": "mynet:build", "params.width": 8})]
    assert not BUILTIN_ONLY & set(report_keys(own))
    assert "model" in report_keys([_cell({**base, "entry": None})])


def test_plan_refuses_hidden_size_with_an_entry(tmp_path: Path) -> None:
    matrix = tmp_path / "own.yaml"
    matrix.write_text(OWN + "axes:\n  hidden_size: [16, 32]\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "plan", str(matrix)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"{matrix}:6: hidden_size is a setting of the built-in MNIST" in done.stderr
    assert "params" in done.stderr and "Traceback" not in done.stderr
