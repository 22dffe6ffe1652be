"""``ReproRecorder`` given a folder that already holds a run's record: refused before training
starts (it used to replace the record silently and leave a second TensorBoard event file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.contract import LOSSES_FILE, RECORD_FILE, TENSORBOARD_DIR, WEIGHTS_FILE

ROOT = Path(__file__).resolve().parents[1]
CODE = ROOT / "tests" / "resources" / "own_workload"


@pytest.mark.parametrize("name", [RECORD_FILE, LOSSES_FILE, WEIGHTS_FILE])
def test_a_folder_holding_a_record_is_refused_with_the_fix(tmp_path: Path, name: str):
    from harness.lightning import ReproRecorder

    (tmp_path / name).write_bytes(b"")
    with pytest.raises(FileExistsError) as caught:
        ReproRecorder(tmp_path, name="n")
    assert str(caught.value) == (
        f"ReproRecorder: {tmp_path} already holds a run's record ({name}); give each run a "
        f"folder of its own (e.g. {tmp_path.parent / (tmp_path.name + '-2')}), or remove the "
        "old one first"
    )


def test_an_empty_or_new_folder_is_taken(tmp_path: Path):
    from harness.lightning import ReproRecorder

    (tmp_path / "empty" / TENSORBOARD_DIR).mkdir(parents=True)  # a run killed before its record
    assert ReproRecorder(tmp_path / "empty").out == tmp_path / "empty"
    assert ReproRecorder(tmp_path / "new" / "a").out == tmp_path / "new" / "a"


def _script(out: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    paths = (str(CODE), str(ROOT), env.get("PYTHONPATH", ""))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    argv = [sys.executable, str(CODE / "plain_script.py"), str(out), "--seed", "11"]
    return subprocess.run(
        argv, cwd=CODE, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.slow
def test_a_second_script_run_into_the_same_folder_is_refused_and_keeps_the_first(tmp_path):
    out = tmp_path / "a"
    first = _script(out)
    assert first.returncode == 0, first.stderr[-3000:]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    second = _script(out)
    assert second.returncode != 0
    assert f"FileExistsError: ReproRecorder: {out} already holds a run's record" in second.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert len(list((out / TENSORBOARD_DIR).iterdir())) == 1  # one event file
