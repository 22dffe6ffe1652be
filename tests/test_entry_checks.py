"""Mistakes in the user's build function, told early and where they are (issue 29, items 2, 4).

- an entry typo fails ``harness run`` before any run (exit 2, "did you mean", nothing written
  that blocks the corrected matrix), and the corrected matrix then runs into the same --out;
- a build function's error names its file and line, with its traceback in run.log; a missing
  ``settings.params`` key lists the cell's params;
- a build function that seeds torch itself is recorded (``provenance.user_seed``) and the report
  says placement has no effect there.

Real parts: the local executor's interpreter, real Lightning training on random tensors.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.workload.entry_check import check, container_check, did_you_mean, static_check
from harness.workload.params import MissingParam, Params

ROOT = Path(__file__).resolve().parents[1]

TINYMLP = """\
import torch
import pytorch_lightning as pl
from torch.utils.data import DataLoader, TensorDataset

SEEDS = False


class TinyMLP(pl.LightningModule):
    def __init__(self, width):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, width), torch.nn.ReLU(), torch.nn.Dropout(0.5),
            torch.nn.Linear(width, 2),
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _data():
    gen = torch.Generator().manual_seed(123)
    x = torch.randn(64, 8, generator=gen)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8, shuffle=True)


def build(settings):
    if SEEDS:
        pl.seed_everything(7)
    return TinyMLP(settings.params["width"]), _data()


def build_typo(settings):
    return TinyMLP(settings.params["widht"]), _data()
"""

MATRIX = """\
name: tiny-mlp
workload:
  entry: {entry}
  path: code
  params: {{width: 8}}
run: {{repeats: 2, epochs: 1, timeout_s: 300}}
axes:
  placement: [{placement}]
"""


def _setup(root: Path, entry: str, placement: str = "none", seeds: bool = False) -> Path:
    code = root / "code"
    code.mkdir(exist_ok=True)
    (code / "tinymlp.py").write_text(TINYMLP.replace("SEEDS = False", f"SEEDS = {seeds}"))
    path = root / "entrytypo.yaml"
    path.write_text(MATRIX.format(entry=entry, placement=placement))
    return path


def _run(matrix: Path, out: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    argv = [sys.executable, "-m", "harness.cli", "run", str(matrix), "--out", str(out)]
    argv += ["--executor", "local", "--progress", "plain"]
    start = time.monotonic()
    proc = subprocess.run(  # argv list, no shell
        argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    return proc, time.monotonic() - start


# ---------------------------------------------------------------- pure logic


def test_a_missing_param_lists_the_cells_params():
    params = Params({"width": 8, "act": "relu"}, lambda v: v)
    with pytest.raises(KeyError) as info:
        params["widht"]
    assert isinstance(info.value, MissingParam)
    assert str(info.value).startswith("'widht': the cell has no such param (its params: 'act', ")
    assert params == {"width": 8, "act": "relu"} and params.get("nope") is None


def test_did_you_mean_is_over_the_modules_functions(tmp_path: Path, monkeypatch):
    (tmp_path / "own_dym.py").write_text("def build(s):\n    pass\ndef helper(s):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import own_dym  # type: ignore[import-not-found]

    assert did_you_mean(own_dym, "buld") == " (did you mean `build`?)"
    assert did_you_mean(own_dym, "zzzzzz") == " (its functions: `build`, `helper`)"
    said = check("own_dym:buld", tmp_path)
    assert said is not None and "did you mean `build`" in said


def test_a_syntax_error_is_located_in_the_users_file(tmp_path: Path, monkeypatch):
    (tmp_path / "own_syntax.py").write_text("x = 1\ndef build(s)\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for said in (
        check("own_syntax:build", tmp_path),
        static_check("own_syntax:build", tmp_path)[1],
    ):
        assert said is not None
        assert said.startswith(f"{tmp_path / 'own_syntax.py'}:2: ")
        assert "SyntaxError" in said


def test_the_source_tells_a_missing_function_without_importing(tmp_path: Path):
    (tmp_path / "own_static.py").write_text(
        "import torch\nfrom x import y as build_model\nif True:\n    def build(s):\n        pass\n"
    )
    assert static_check("own_static:build", tmp_path) == (True, None)
    assert static_check("own_static:build_model", tmp_path) == (True, None)
    decided, said = static_check("own_static:buld", tmp_path)
    assert decided and said is not None and "(did you mean `build`?)" in said
    (tmp_path / "own_star.py").write_text("from os.path import *\n")
    assert static_check("own_star:join", tmp_path) == (False, None)  # then it is imported


# ---------------------------------------------------------------- real runs


@pytest.mark.slow
def test_an_entry_typo_fails_before_any_run_then_the_fixed_matrix_uses_the_same_out(
    tmp_path: Path,
):
    out = tmp_path / "out"
    proc, seconds = _run(_setup(tmp_path, "tinymlp:buld"), out)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 2, said
    assert "has no attribute `buld` (did you mean `build`?)" in said, said
    assert f"({tmp_path / 'code' / 'tinymlp.py'})" in said  # the user's file, not its copy
    assert "no run was started" in said
    assert seconds < 5, f"the entry check took {seconds:.1f} s"
    assert not (out / "manifest.json").exists() and not (out / "cells").exists()

    fixed, _ = _run(_setup(tmp_path, "tinymlp:build"), out)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr


def test_the_hosts_check_of_a_container_entry_tells_only_what_the_source_shows(tmp_path: Path):
    """A container's Python may be newer than the host's: only a name the parsed source lacks
    is told; what the host cannot parse, or a module not in the code folder, is the run's."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "tinymlp.py").write_text(TINYMLP)
    said = container_check("tinymlp:buld", code)
    assert said == (
        f"workload entry 'tinymlp:buld': module `tinymlp` ({code / 'tinymlp.py'}) has no "
        "attribute `buld` (did you mean `build`?); define `def buld(settings): ...` there, or "
        "fix the name after the colon"
    )
    assert container_check("tinymlp:build", code) is None
    (code / "newer.py").write_text("def build[T](settings): ...\nthis is not python 3.11\n")
    assert container_check("newer:buld", code) is None  # the host cannot parse it: the run says
    assert container_check("json:buld", code) is None  # not the user's module
    (code / "star.py").write_text("from tinymlp import *\n")
    assert container_check("star:anything", code) is None  # the source cannot show its names


@pytest.mark.docker
def test_a_container_cells_entry_typo_fails_before_any_image_or_container(tmp_path: Path, client):
    from conftest import BASE_IMAGE

    path = _setup(tmp_path, "tinymlp:buld")
    path.write_text(path.read_text().replace("axes:\n", f"axes:\n  image: [{BASE_IMAGE}]\n"))
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "harness.cli", "run", str(path), "--out", str(out)]
    start = time.monotonic()
    proc = subprocess.run(  # argv list, no shell
        [*argv, "--progress", "plain"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    seconds = time.monotonic() - start
    said = proc.stdout + proc.stderr
    assert proc.returncode == 2, said
    assert "has no attribute `buld` (did you mean `build`?)" in said, said
    assert f"({tmp_path / 'code' / 'tinymlp.py'})" in said  # the user's file, not its copy
    assert "no run was started" in said
    assert seconds < 5, f"the entry check took {seconds:.1f} s"
    assert not (out / "cells").exists()
    assert not client.containers.list(all=True, filters={"label": f"harness.out={out}"})


@pytest.mark.slow
def test_a_build_functions_error_names_its_line_and_its_traceback_is_in_run_log(
    tmp_path: Path,
):
    out = tmp_path / "out"
    proc, _ = _run(_setup(tmp_path, "tinymlp:build_typo"), out)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 2, said
    assert "its params: 'width'" in said, said
    # the user's own file (not the results folder's snapshot that ran), error before the grid
    error = next(line for line in proc.stderr.splitlines() if line.startswith("error: "))
    assert f"{tmp_path / 'code' / 'tinymlp.py'}:" in error, error
    last = proc.stderr.splitlines()[-1]
    assert last == "harness: stopped on the error in your training shown above"
    logs = list((out / "cells").glob("*/repeat-0/run.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text
    assert 'settings.params["widht"]' in text  # the user's own line


@pytest.mark.slow
def test_a_build_function_that_seeds_itself_is_recorded_and_reported(tmp_path: Path):
    out = tmp_path / "out"
    proc, _ = _run(_setup(tmp_path, "tinymlp:build", seeds=True), out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = sorted((out / "cells").glob("*/repeat-*/run.json"))
    assert len(records) == 2
    for path in records:
        assert json.loads(path.read_text())["provenance"]["user_seed"] == 7
    report = json.loads((out / "report.json").read_text())
    (cell,) = report["cells"]
    assert cell["verdict"] == "reproduces"  # placement none "reproduces": the user's seed
    assert "your build function seeds the generator itself" in cell["detail"]
    assert "your build function seeds the generator itself" in (out / "report.md").read_text()


@pytest.mark.slow
def test_a_build_function_that_does_not_seed_records_no_user_seed(tmp_path: Path):
    out = tmp_path / "out"
    proc, _ = _run(_setup(tmp_path, "tinymlp:build", placement="before_trainer"), out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for path in (out / "cells").glob("*/repeat-*/run.json"):
        assert json.loads(path.read_text())["provenance"]["user_seed"] is None
    (cell,) = json.loads((out / "report.json").read_text())["cells"]
    assert "seeds the generator itself" not in cell["detail"]
