"""The user's own code across run, resume, merge and diagnose, with real runs (real Lightning,
the local executor; issue 28, items 2 to 5, 9 and 18): a results folder inside ``workload.path``
resumes with zero reruns; an edit made while the matrix runs reaches no run, and each record's
digest is that of the code it ran; diagnose replays that code (the snapshot), checks what made
the runs, and takes another folder only when named with ``--code`` and of the same digest; merge
refuses shards made from other code.

The user's build function here edits its own source folder as it starts (a param names the
file): the edit lands after the matrix started, before its later runs import anything.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import BASE_IMAGE

from harness.contract.code import user_code_digest

pytestmark = pytest.mark.slow

TINY = """\
import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

LR = 0.01


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


def build(settings):
    edit = settings.params.get("edit")
    if edit and "LR = 0.01" in Path(edit).read_text():  # the user edits the code meanwhile
        path = Path(edit)
        temp = path.with_name(f".{os.getpid()}.tmp")  # renamed over it: never half a file
        temp.write_text(path.read_text().replace("LR = 0.01", "LR = 0.5"))
        os.replace(temp, path)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=generator)
    return Tiny(), DataLoader(TensorDataset(x, (x.sum(1) > 0).long()), batch_size=8)
"""

MATRIX = """\
name: tiny
run: {{repeats: 2, epochs: 1, max_steps_per_epoch: 12}}
workload:
  entry: tiny:build
  path: code
  params: {params}
axes:
  placement: [{placements}]
"""


def project(root: Path, params: str = "{}", placements: str = "before_model") -> Path:
    (root / "code").mkdir(parents=True)
    (root / "code" / "tiny.py").write_text(TINY)
    matrix = root / "matrix.yaml"
    matrix.write_text(MATRIX.format(params=params, placements=placements))
    return matrix


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI on one core (``taskset``): runs go one after another."""
    return subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-m", "harness.cli", *args],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip


def run(matrix: Path, out: Path) -> subprocess.CompletedProcess[str]:
    proc = harness("run", str(matrix), "--out", str(out), "--executor", "local", "--no-report",
                   "--progress", "plain")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def records(out: Path) -> dict[str, dict]:
    return {
        str(p.parent.relative_to(out)): json.loads(p.read_text())
        for p in sorted(out.glob("cells/*/repeat-*/run.json"))
    }


@pytest.fixture(scope="module")
def edited(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two cells of two repeats; the first run to start edits tiny.py's learning rate."""
    root = tmp_path_factory.mktemp("edited")
    source = root / "code" / "tiny.py"
    matrix = project(root, params=f"{{edit: '{source}'}}", placements="none, before_model")
    run(matrix, root / "results")
    assert "LR = 0.5" in source.read_text()  # the edit happened
    return root / "results"


def test_an_edit_while_the_matrix_runs_reaches_no_run(edited: Path):
    made = records(edited)
    assert len(made) == 4
    digests = {r["provenance"]["user_code_digest"] for r in made.values()}
    assert len(digests) == 1
    (digest,) = digests
    snapshot = edited / "code" / digest
    assert user_code_digest(snapshot) == digest
    assert "LR = 0.01" in (snapshot / "tiny.py").read_text()  # the code every run imported
    # two repeats of before_model ran the same code: the same losses, bit for bit
    cell = next(p for p in (edited / "cells").iterdir() if "before_model" in p.name)
    first, second = (np.load(cell / f"repeat-{k}" / "losses.npy") for k in (0, 1))
    assert first.tobytes() == second.tobytes()


def _diagnose(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cell = next(p for p in (out / "cells").iterdir() if "before_model" in p.name)
    return harness("diagnose", str(out), "--cell", cell.name.rpartition("--")[2],
                   "--repeats", "0", "--repeats", "1", "--executor", "local", "--no-report",
                   *args)  # fmt: skip


def test_diagnose_replays_the_code_that_made_the_runs(edited: Path):
    """The user's folder now holds other code (LR 0.5): the replays import the snapshot, so
    their losses are the records' bit for bit, and the line says so."""
    proc = _diagnose(edited)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the results folder's snapshot" in proc.stderr
    assert "checked against both records: python, torch, user_code_digest, workload_digest" in (
        proc.stderr
    )
    cell = next(p for p in (edited / "cells").iterdir() if "before_model" in p.name)
    (folder,) = (edited / "diagnoses").iterdir()
    for k, side in ((0, "a"), (1, "b")):
        recorded = np.load(cell / f"repeat-{k}" / "losses.npy")
        replayed = np.load(folder / side / "losses.npy")
        assert replayed.tobytes() == recorded[: len(replayed)].tobytes()


def test_diagnose_refuses_another_torch_and_code_it_cannot_trust(edited: Path, tmp_path: Path):
    out = tmp_path / "copy"
    shutil.copytree(edited, out, ignore=shutil.ignore_patterns("diagnoses", ".lock"))
    # another torch recorded than the one a replay would run
    cell = next(p for p in (out / "cells").iterdir() if "before_model" in p.name)
    record = cell / "repeat-1" / "run.json"
    data = json.loads(record.read_text())
    torch_now, data["provenance"]["torch"] = data["provenance"]["torch"], "1.0.0"
    record.write_text(json.dumps(data))
    proc = _diagnose(out)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"torch (1.0.0 recorded, {torch_now} now)" in proc.stderr
    assert "Traceback" not in proc.stderr and not (out / "diagnoses").exists()
    data["provenance"]["torch"] = torch_now
    record.write_text(json.dumps(data))
    # no snapshot: the manifest's folder is not used, --code must name the runs' code
    moved = tmp_path / "moved"  # the code as it was, somewhere else now
    (snapshot,) = (out / "code").iterdir()
    shutil.copytree(snapshot, moved)
    shutil.rmtree(out / "code")
    proc = _diagnose(out)
    assert proc.returncode == 2 and "--code PATH" in proc.stderr, proc.stderr[-3000:]
    edited_code = edited.parent / "code"
    proc = _diagnose(out, "--code", str(edited_code))
    assert proc.returncode == 2 and "is not the code that made" in proc.stderr, proc.stderr
    proc = _diagnose(out, "--code", str(moved))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"replaying your code from {moved} (--code" in proc.stderr


def test_results_inside_the_code_resume_and_merge_refuses_other_code(tmp_path: Path):
    matrix = project(tmp_path)
    code = tmp_path / "code"
    first = code / "results" / "first"  # --out inside workload.path
    run(matrix, first)
    before = records(first)
    assert len(before) == 2
    run(matrix, first)  # resume: nothing reruns, nothing is set aside
    assert records(first) == before
    assert not list(first.glob("superseded/*"))
    assert len(list((first / "code").iterdir())) == 1  # the same snapshot
    (code / "tiny.py").write_text(TINY.replace("LR = 0.01", "LR = 0.02"))
    second = code / "results" / "second"
    run(matrix, second)
    assert records(first) == before
    merged = tmp_path / "merged"
    proc = harness("merge", str(first), str(second), "--out", str(merged), "--no-report")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "your code, workload.path (run.json provenance.user_code_digest) differs" in (
        proc.stderr
    )


@pytest.mark.docker
def test_containers_import_the_snapshot_read_only(tmp_path: Path):
    """A root harness's containers (uid 65534) read the snapshot mounted at /opt/harness-user;
    the records name its digest, and the user's folder gets nothing written into it."""
    matrix = project(tmp_path)
    text = matrix.read_text().replace("placement: [before_model]", "placement: [before_model]\n"
                                      f"  image: [{BASE_IMAGE}]")  # fmt: skip
    matrix.write_text(text)
    out = tmp_path / "results"
    proc = harness("run", str(matrix), "--out", str(out), "--executor", "docker", "--no-report",
                   "--progress", "plain")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    made = records(out)
    assert len(made) == 2
    (snapshot,) = (out / "code").iterdir()
    for record in made.values():
        assert record["provenance"]["user_code_digest"] == snapshot.name
        assert record["provenance"]["image_id"]
    assert sorted(p.name for p in (tmp_path / "code").iterdir()) == ["tiny.py"]
    first, second = (np.load(out / k / "losses.npy") for k in made)
    assert first.tobytes() == second.tobytes()
