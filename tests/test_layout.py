"""The results layout and its manifest: one module names them, the manifest's format is checked
when read, and a folder of the old cell-id scheme is refused by every verb with a clear message
(real CLI processes, no traceback), never misread."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import StoreError
from harness.executors.fake import write_fake_record
from harness.matrix import CELL_ID_SCHEME, parse_matrix
from harness.results import layout
from harness.results.manifest import MANIFEST_FORMAT_VERSION, read_manifest
from harness.results.store import ResultsDir

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "placement-quick.yaml"

#: What a results folder of harness 0.1.0 before cell-id scheme 2 held (format_version 1): ids
#: hashed every setting, defaults included, so they name other cells (or none) today.
OLD_CELL = {
    "id": "3f0c3b1c9a52",
    "name": "local-cpu1-none-det1-bench0-algoff",
    "dir": "cells/local-cpu1-none-det1-bench0-algoff--3f0c3b1c9a52",
    "settings": {
        "image": "local",
        "accelerator": "cpu",
        "devices": 1,
        "placement": "none",
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "deterministic_algorithms": "off",
        "threads": 1,
        "seed": 201014,
        "epochs": 1,
        "max_steps_per_epoch": 200,
    },
}


def old_scheme_folder(root: Path) -> Path:
    """A results folder as the previous harness wrote it: manifest format 1 and cells/."""
    text = QUICK.read_text()
    manifest = {
        "format_version": 1,
        "name": "placement-quick",
        "matrix_path": str(QUICK),
        "matrix_text": text,
        "matrix_sha256": "0" * 64,
        "matrix_digest": "1" * 64,
        "repeats": 2,
        "harness_version": "0.1.0",
        "created_at": "2025-01-01T00:00:00+00:00",
        "shard": None,
        "cells": [OLD_CELL],
    }
    run_dir = root / OLD_CELL["dir"] / "repeat-0"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"format_version": 1, "status": "ok"}))
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (root / "matrix.yaml").write_text(text)
    return root


def harness_cli(*args: str | Path) -> subprocess.CompletedProcess:
    """The real CLI in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def assert_refused_as_old(proc: subprocess.CompletedProcess, folder: Path) -> None:
    err = proc.stderr
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "Traceback" not in proc.stdout
    assert f"error: {folder} was made by an older harness" in err
    assert "old cell-id scheme" in err
    assert "cannot be resumed or reported by this version" in err
    assert "hint: run the matrix into a new folder (--out NEW_DIR)" in err
    assert "harness 0.1.0, the version that made it (harness_version in manifest.json)" in err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != layout.LOCK_FILE
    }


def test_run_into_an_old_scheme_folder_is_refused_and_leaves_it_alone(tmp_path: Path):
    old = old_scheme_folder(tmp_path / "old")
    before = snapshot(old)
    data = tmp_path / "data"  # the fake executor reads no data
    data.mkdir()
    proc = harness_cli(
        "run", QUICK, "-o", old, "--executor", "fake", "--progress", "quiet", "--data-dir", data
    )
    assert_refused_as_old(proc, old)
    assert snapshot(old) == before


def test_report_of_an_old_scheme_folder_is_refused(tmp_path: Path):
    old = old_scheme_folder(tmp_path / "old")
    assert_refused_as_old(harness_cli("report", old), old)
    assert not (old / "report.md").exists()


def test_merge_compare_and_baseline_refuse_an_old_scheme_folder(tmp_path: Path):
    old = old_scheme_folder(tmp_path / "old")
    assert_refused_as_old(harness_cli("merge", old, "-o", tmp_path / "merged"), old)
    assert not (tmp_path / "merged").exists()
    assert_refused_as_old(harness_cli("compare", old, old), old)
    assert_refused_as_old(harness_cli("baseline", old, "-o", tmp_path / "golden.json"), old)
    assert not (tmp_path / "golden.json").exists()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "not readable JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"name": "x", "cells": []}', "format_version is None"),
        (f'{{"format_version": 2, "cell_id_scheme": {CELL_ID_SCHEME}}}', "cells"),
        (f'{{"format_version": 2, "cell_id_scheme": {CELL_ID_SCHEME}, "cells": 3}}', "cells"),
        (
            f'{{"format_version": 2, "cell_id_scheme": {CELL_ID_SCHEME}, "cells": [{{"id": 1}}]}}',
            "cells.0",
        ),
        ('{"format_version": 2, "cells": []}', "cell_id_scheme is None"),
    ],
)
def test_a_damaged_manifest_is_a_clean_error(tmp_path: Path, text: str, says: str):
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(StoreError, match="manifest") as info:
        read_manifest(tmp_path)
    assert says in str(info.value)
    proc = harness_cli("report", tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert says in proc.stderr and "hint:" in proc.stderr


def test_a_newer_format_is_refused_too(tmp_path: Path):
    data = {"format_version": 99, "harness_version": "9.0", "cells": []}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(StoreError, match="made by a newer harness") as info:
        read_manifest(tmp_path)
    assert "harness 9.0" in str(info.value)


def test_the_manifest_records_its_format_and_the_cell_id_scheme(tmp_path: Path):
    matrix = parse_matrix(QUICK.read_text(), QUICK)
    store = ResultsDir(tmp_path)
    assert store.read_manifest() is None
    store.write_manifest(matrix)
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["format_version"] == MANIFEST_FORMAT_VERSION == 2
    assert data["cell_id_scheme"] == CELL_ID_SCHEME
    assert "merged_from" not in data and "merge" not in data
    manifest = read_manifest(tmp_path)
    assert [c.id for c in manifest.cells] == [c.id for c in matrix.cells]
    assert [c.dir for c in manifest.cells] == [f"cells/{c.name}--{c.id}" for c in matrix.cells]
    assert store.run_dir(matrix.cells[0], 1) == tmp_path / manifest.cells[0].dir / "repeat-1"
    store.write_manifest(matrix)  # resume: the same matrix, the same format
    assert read_manifest(tmp_path) == manifest


def test_repeat_folders_are_found_by_their_number(tmp_path: Path):
    cell = tmp_path / "cells" / "a--0123456789ab"
    for name in ("repeat-2", "repeat-0", "repeat-10", "repeat-x", "notes"):
        (cell / name).mkdir(parents=True)
    assert [k for k, _ in layout.repeat_dirs(cell, None)] == [0, 2, 10]
    assert layout.repeat_dirs(cell, 2) == [(0, cell / "repeat-0"), (1, cell / "repeat-1")]
    runs = list(layout.run_dirs(tmp_path))
    assert [(d, k) for d, k, _ in runs] == [("a--0123456789ab", k) for k in (0, 10, 2)]


def _string_constants(path: Path) -> list[str]:
    """The string literals of a module, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def _path_parts(path: Path) -> list[str]:
    """The string literals joined onto a path with ``/`` (``root / "cells"``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node.right.value
        for node in ast.walk(tree)
        if isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Div)
        and isinstance(node.right, ast.Constant)
        and isinstance(node.right.value, str)
    ]


def test_only_the_layout_module_names_the_results_layout():
    """manifest.json, the cells/ folder and repeat-<k> are spelled in harness/results/layout.py
    alone (and in harness/contract/code.py, standard library only, which cannot import it: it
    knows a results folder inside the user's code by its manifest;
    tests/test_user_code_identity.py checks the two agree)."""
    offenders = []
    for path in sorted((ROOT / "harness").rglob("*.py")):
        if path == ROOT / "harness" / "results" / "layout.py":
            continue
        code_py = path == ROOT / "harness" / "contract" / "code.py"
        for text in _string_constants(path):
            named = "manifest.json" in text and not (code_py and text == layout.MANIFEST_FILE)
            if named or "repeat-" in text or text.startswith("cells/"):
                offenders.append(f"{path.relative_to(ROOT)}: {text!r}")
        for part in _path_parts(path):
            if part in (layout.CELLS_DIR, layout.MATRIX_FILE, layout.LOCK_FILE, layout.PLOTS_DIR):
                offenders.append(f"{path.relative_to(ROOT)}: / {part!r}")
    assert offenders == []


# ---------------------------------------------------------------- names from a manifest


def results_folder(root: Path) -> Path:
    """A results folder of examples/placement-quick.yaml with a fake ok run in each cell."""
    matrix = parse_matrix(QUICK.read_text(), QUICK)
    root.mkdir(parents=True)
    store = ResultsDir(root)
    store.write_manifest(matrix)
    for cell in matrix.cells:
        spec = cell.spec(0)
        store.prepare_run(store.run_dir(cell, 0), spec)
        write_fake_record(spec, store.run_dir(cell, 0))
    return root


def tamper(root: Path, **changes: str) -> None:
    data = json.loads((root / "manifest.json").read_text())
    cell = data["cells"][0]
    for key, value in changes.items():
        cell[key] = value.format(**cell) if key == "dir" else value
    (root / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"name": "../../x", "dir": "cells/{name}--{id}"}, "cells[0].name '../../x'"),
        ({"name": "../../x"}, "cells[0].name '../../x'"),
        ({"name": "a\\b", "dir": "cells/{name}--{id}"}, "path separator"),
        ({"name": "", "dir": "cells/{name}--{id}"}, "empty"),
        ({"name": ".hidden", "dir": "cells/{name}--{id}"}, "starts with a dot"),
        ({"name": "x\x00y", "dir": "cells/{name}--{id}"}, "control character"),
        ({"id": "..", "dir": "cells/{name}--{id}"}, "cells[0].id '..'"),
        ({"dir": "../../elsewhere"}, "cells[0].dir is '../../elsewhere'"),
        ({"dir": "cells/other--0123456789ab"}, "not 'cells/"),
    ],
)
def test_names_in_a_manifest_are_checked_before_any_path_is_built(
    tmp_path: Path, changes: dict[str, str], says: str
):
    root = results_folder(tmp_path / "box" / "results")
    tamper(root, **changes)
    with pytest.raises(StoreError, match="manifest.json") as info:
        read_manifest(root)
    assert says in str(info.value)
    assert "hint: the folder was not written by `harness run`" in str(info.value)


def test_a_tampered_cell_name_writes_nothing_outside_the_folder(tmp_path: Path):
    """The issue's case: ``../../x`` as a cell name. Report and run stop with a clear error
    (exit 2, no traceback); nothing appears outside the results folder or in it."""
    box = tmp_path / "box"
    root = results_folder(box / "results")
    tamper(root, name="../../x", dir="cells/{name}--{id}")
    before = snapshot(tmp_path)
    for argv in (
        ("report", root),
        ("run", QUICK, "-o", root, "--executor", "fake", "--progress", "quiet"),
    ):
        proc = harness_cli(*argv)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "cells[0].name '../../x' is not a plain folder name" in proc.stderr
        assert snapshot(tmp_path) == before
    assert not (root / "report.md").exists() and not (tmp_path / "x.png").exists()


def test_run_into_a_folder_that_is_not_a_results_folder_is_refused(tmp_path: Path):
    """``--out`` on someone's non-empty folder: exit 2, a clear message, files unchanged (not
    even a lock file is added)."""
    mine = tmp_path / "mine"
    (mine / "src").mkdir(parents=True)
    (mine / "report.md").write_text("my own report\n")
    (mine / "src" / "main.py").write_text("print('hi')\n")
    before = snapshot(mine)
    proc = harness_cli(
        "run", QUICK, "-o", mine, "--executor", "fake", "--progress", "quiet", "--data-dir", mine
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"error: {mine} is not empty and not a harness results folder" in proc.stderr
    assert "hint: give --out a new or empty folder" in proc.stderr
    assert snapshot(mine) == before and not (mine / layout.LOCK_FILE).exists()
