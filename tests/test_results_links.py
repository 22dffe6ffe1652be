"""A symbolic link planted in a results folder never leads a write, a move or a delete out of it.

One real results folder (real MNIST, real Lightning, the local executor: one unseeded cell, two
repeats of 3 steps, so it diverges and ``diagnose`` has a pair to replay). Each test copies it,
plants a link at one name the layout knows (every top-level name of harness/results/layout.py, and
the folders a diagnosis and a run write in) pointing at a folder or file outside, then runs the real
commands on it: ``harness report``, ``harness run`` (resuming it), ``harness diagnose`` and
``harness merge`` into it. The tree outside must be exactly as it was (every entry, its bytes
and mtime), and each command either works without touching the target or ends in a clear
error (exit 2, no traceback) that names the link.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.results import layout

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MATRIX = """\
name: links
run: {repeats: 2, epochs: 1, max_steps_per_epoch: 3}
axes:
  placement: [none]
"""
#: Every top-level name of a results folder; folders get a link to a folder, files to a file.
FILES = (layout.MANIFEST_FILE, layout.MATRIX_FILE, layout.LOCK_FILE, *layout.REPORT_FILES.values())
TOP_LEVEL = (*FILES, *layout.FOLDERS)


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
        env={**os.environ},
    )


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> tuple[Path, Path]:
    """(the matrix file, a results folder of real runs)."""
    tmp = tmp_path_factory.mktemp("links")
    matrix = tmp / "matrix.yaml"
    matrix.write_text(MATRIX)
    out = tmp / "results"
    proc = harness("run", str(matrix), "--out", str(out), "--progress", "quiet",
                   "--data-dir", str(mnist_dir))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return matrix, out


def snapshot(folder: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every entry under ``folder`` (links not followed): mode, size, mtime, content hash."""
    found = {}
    for here, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            path = Path(here, name)
            st = os.lstat(path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            found[str(path.relative_to(folder))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return found


def outside_tree(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "folder" / "sub").mkdir(parents=True)
    (outside / "folder" / "kept.txt").write_text("the user's own file\n")
    (outside / "folder" / "sub" / "deep.txt").write_text("deeper\n")
    (outside / "file.txt").write_text("precious\n")
    return outside


def diagnosis_name(results: Path) -> str:
    manifest = json.loads((results / layout.MANIFEST_FILE).read_text())
    cell = manifest["cells"][0]["id"]
    return f"{cell}-0--{cell}-1"


def plant(results: Path, where: str, outside: Path) -> Path:
    """A link at ``where`` (relative to the results folder), replacing what is there."""
    path = results / where
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    target = outside / ("file.txt" if where in FILES else "folder")
    path.symlink_to(target)
    return path


def check(proc: subprocess.CompletedProcess[str], what: str, *, refused: bool, named: str) -> None:
    """Exit 0 (and then the link was not written through), or a clear error; ``refused``: it
    must be a clear error that names the link."""
    assert "Traceback" not in proc.stderr, f"{what}:\n{proc.stderr}"
    assert proc.returncode in (0, 2), f"{what}: exit {proc.returncode}\n{proc.stderr}"
    if proc.returncode == 2:
        assert "error:" in proc.stderr and "hint:" in proc.stderr, f"{what}:\n{proc.stderr}"
    if refused:
        assert proc.returncode == 2, f"{what} should refuse the link:\n{proc.stdout}{proc.stderr}"
        assert named in proc.stderr, f"{what}:\n{proc.stderr}"


@pytest.mark.parametrize(
    "where",
    [*TOP_LEVEL, "diagnoses/{diagnosis}", "cells/{cell}/repeat-1"],
)
def test_a_link_in_a_results_folder_leads_nothing_out_of_it(
    where: str, made: tuple[Path, Path], tmp_path: Path, mnist_dir: Path
):
    matrix, source = made
    results = tmp_path / "results"
    shutil.copytree(source, results, symlinks=True)
    cell_dir = next(iter(layout.run_dirs(results)))[0]
    where = where.format(diagnosis=diagnosis_name(results), cell=cell_dir)
    outside = outside_tree(tmp_path)
    link = plant(results, where, outside)
    before = snapshot(outside)
    top = where.split("/")[0]
    # what each command writes in, so must refuse when it is a link (the others only read it,
    # or replace a link at a file's name by rename)
    writes = {
        "report": {layout.MANIFEST_FILE},  # plots/ a link: no plots, a warning naming it
        "run": {layout.MANIFEST_FILE, layout.LOCK_FILE, *layout.FOLDERS},
        "diagnose": {layout.MANIFEST_FILE, layout.LOCK_FILE, *layout.FOLDERS},
    }
    if where != top:  # a link deeper down: only the command that writes there must refuse it
        writes = {"report": set(), "run": {"cells"}, "diagnose": {"diagnoses"}}
    commands = {
        "report": ("report", str(results)),
        "run": ("run", str(matrix), "--out", str(results), "--progress", "quiet",
                "--data-dir", str(mnist_dir)),
        "diagnose": ("diagnose", str(results), "--data-dir", str(mnist_dir)),
    }  # fmt: skip
    for name, argv in commands.items():
        proc = harness(*argv)
        refused = top in writes[name]
        check(proc, f"harness {name} with a link at {where}", refused=refused, named=where)
        if name == "report" and where == layout.PLOTS_DIR:
            assert f"{results / where} is a symbolic link" in proc.stderr, proc.stderr
        assert snapshot(outside) == before, f"harness {name} changed {outside} through {where}"
        if not link.is_symlink():  # replaced by a file of its own (a rename), never followed
            plant(results, where, outside)  # again, for the next command
    merged = harness("merge", str(source), "--out", str(results))  # into it: refused, not empty
    check(merged, f"harness merge into a folder with a link at {where}", refused=True, named="")
    assert snapshot(outside) == before


def test_a_superseded_link_moves_no_run_out_of_the_folder(tmp_path: Path):
    """A run to set aside (its run.json damaged) with a link at ``superseded``: ``harness run``
    refuses, naming it, before anything is moved; the run stays where it was."""
    from harness.executors.fake import FakeExecutor
    from harness.matrix import load_matrix
    from harness.run.matrix_runner import RunConfig, run_matrix

    quick = ROOT / "examples" / "placement-quick.yaml"
    results = tmp_path / "results"
    config = RunConfig(matrix=load_matrix(quick), out=results, progress="quiet", formats=())
    run_matrix(config, FakeExecutor(seconds=0.0))
    _, _, run_dir = next(iter(layout.run_dirs(results)))
    (run_dir / "run.json").write_text("{")  # damaged: set aside, then rerun
    outside = outside_tree(tmp_path)
    plant(results, layout.SUPERSEDED_DIR, outside)
    before = snapshot(outside)
    proc = harness("run", str(quick), "--out", str(results), "--executor", "fake",
                   "--progress", "quiet")  # fmt: skip
    check(proc, "harness run with a link at superseded", refused=True, named="superseded")
    assert snapshot(outside) == before
    assert (run_dir / "run.json").read_text() == "{"  # not moved
