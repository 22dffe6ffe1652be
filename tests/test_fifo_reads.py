"""A FIFO where a results folder has a file (``manifest.json``, ``.lock``, a run's ``run.json``,
``slurm/submission.json``) never hangs a command: every read goes through the regular-file
reader (harness/contract/files.py ``open_regular``: ``O_NONBLOCK``, a regular file only), so each
command ends at once with a clear error naming the FIFO, or works without it. Each command runs
in a real process with a timeout: a hang fails the test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.executors.fake import FakeExecutor
from harness.matrix import load_matrix
from harness.results import layout
from harness.run.matrix_runner import RunConfig, run_matrix

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "placement-quick.yaml"
#: far more than any of these commands takes; a reader blocked on a FIFO never returns
TIMEOUT_S = 60


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        cwd=ROOT,
        env={**os.environ, "HARNESS_MNIST_DIR": "/nonexistent"},
    )


@pytest.fixture
def results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    run_matrix(
        RunConfig(matrix=load_matrix(QUICK), out=out, progress="quiet", formats=()),
        FakeExecutor(seconds=0.0),
    )
    return out


def fifo_at(path: Path) -> None:
    if path.is_dir():
        raise AssertionError(path)
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def refused(proc: subprocess.CompletedProcess[str], fifo: Path) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert str(fifo) in proc.stderr and "a FIFO" in proc.stderr, proc.stderr
    assert "hint:" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("report", "{out}"),
        ("diagnose", "{out}"),
        ("run", str(QUICK), "--out", "{out}", "--executor", "fake"),
        ("merge", "{out}", "--out", "{new}"),
    ],
    ids=lambda c: c[0],
)
def test_a_fifo_at_the_manifest_is_refused_at_once(results: Path, tmp_path: Path, command):
    fifo = results / layout.MANIFEST_FILE
    fifo_at(fifo)
    argv = [a.format(out=results, new=tmp_path / "merged") for a in command]
    refused(harness(*argv), fifo)


@pytest.mark.parametrize(
    "command",
    [
        ("run", str(QUICK), "--out", "{out}", "--executor", "fake"),
        ("merge", "{out}", "--out", "{new}"),
    ],
    ids=lambda c: c[0],
)
def test_a_fifo_at_the_results_lock_is_refused_at_once(results: Path, tmp_path: Path, command):
    fifo = results / layout.LOCK_FILE
    fifo_at(fifo)
    argv = [a.format(out=results, new=tmp_path / "merged") for a in command]
    refused(harness(*argv), fifo)


def test_a_fifo_at_a_run_record_of_a_folder_without_manifest_does_not_hang_report(results: Path):
    (results / layout.MANIFEST_FILE).unlink()
    _, _, run_dir = next(iter(layout.run_dirs(results)))
    fifo_at(run_dir / "run.json")
    proc = harness("report", str(results))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_fifo_at_the_slurm_submission_is_refused_at_once(tmp_path: Path):
    root = tmp_path / "sub"
    (root / "slurm").mkdir(parents=True)
    fifo = layout.submission_path(root)
    os.mkfifo(fifo)
    refused(harness("status", str(root)), fifo)


def test_a_fifo_at_a_replays_files_does_not_hang_the_diagnosis(results: Path):
    """``read_replay`` (what ``harness diagnose`` reads of each replay) over a run folder whose
    ``replay.json`` is a FIFO: a clear error at once, in a process that a hang would time out."""
    _, _, run_dir = next(iter(layout.run_dirs(results)))
    fifo_at(run_dir / "replay.json")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from harness.diagnose.run_pair import read_replay\n"
        "from harness.errors import HarnessError\n"
        "try:\n"
        "    read_replay('a', Path(sys.argv[1]))\n"
        "except HarnessError as exc:\n"
        "    print(exc.message)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(run_dir)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "the replay of a did not finish" in proc.stdout and "a FIFO" in proc.stdout, proc.stdout
