"""Trainings that are not one optimizer step per batch, recorded whole (real Lightning runs of
tests/resources/own_workload/variants.py): a ``training_step`` that returns None every 3rd
batch, ``accumulate_grad_batches=2``, two optimizers (manual optimization).

With ``ReproRecorder`` each trains to the end and records one row per optimizer step: the
weights hashes and the losses row by row equal what the module itself kept after each of its
real optimizer steps, skipped batches are listed, and ``harness report`` of the folder says the
two seeded runs of each reproduce. As a harness run's entry (``python -m harness.workload``) the
same modules train, and two ``before_model`` repeats give the same bits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from test_own_workload import CODE, REPO, STEPS, _env, _harness_run

from harness.contract import WEIGHTS_FILE
from harness.results.run_reader import load_record, load_weight_hashes, verified_losses

pytestmark = pytest.mark.slow

#: variants.py's epochs and batches per epoch
EPOCHS, BATCHES = 2, 9
#: variant -> (rows per epoch, skipped batches' global indexes, Lightning's global_step at the
#: end: it counts a skipped batch's step, which changes nothing, and each optimizer's step)
EXPECTED = {
    "skip": (6, [e * BATCHES + i for e in range(EPOCHS) for i in (2, 5, 8)], 18),
    "accumulate": (5, [], 10),  # 4 pairs, and the epoch's 9th batch steps alone
    "two": (9, [], 36),
}


def _variant(out: Path, variant: str) -> subprocess.CompletedProcess:
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join((str(CODE), env["PYTHONPATH"]))
    argv = [sys.executable, str(CODE / "variants.py"), str(out), "--variant", variant]
    return subprocess.run(
        [*argv, "--seed", "5"], cwd=CODE, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """Each variant trained twice, seeded alike, two processes at a time."""
    root = tmp_path_factory.mktemp("variants")
    runs = [(root / f"{v}-{k}", v) for v in EXPECTED for k in "ab"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda run: _variant(*run), runs))
    for (out, _), proc in zip(runs, done, strict=True):
        assert proc.returncode == 0, f"{out.name}: {proc.stderr[-3000:]}"
        (out / "stderr.txt").write_text(proc.stderr)
    return root


@pytest.mark.parametrize("variant", list(EXPECTED))
def test_repro_recorder_records_each_optimizer_step(recorded: Path, variant: str):
    rows, skipped, steps = EXPECTED[variant]
    out = recorded / f"{variant}-a"
    record = load_record(out)
    assert record.ok, record.error
    assert record.steps_per_epoch == [rows] * EPOCHS and record.skipped == skipped
    assert record.steps == rows * EPOCHS and global_step(out) == steps
    hashes = load_weight_hashes(out, record)
    assert hashes is not None
    assert np.array_equal(hashes, np.load(out / "own_hashes.npy"))
    assert (hashes[1:] != hashes[:-1]).any(axis=1).all()  # each row is a real step
    own = np.load(out / "own_losses.npy")
    assert np.array_equal(verified_losses(out, record)[:, 0].view("<u4"), own.view("<u4"))
    assert ("skipped" in json.loads((out / "run.json").read_text())) == bool(skipped)


def global_step(out: Path) -> int:
    """The Trainer's global_step the script printed as it ended."""
    line = next(x for x in (out / "stderr.txt").read_text().splitlines() if "global_step" in x)
    return int(line.split()[-1])


def test_harness_report_says_each_variant_reproduces(recorded: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(recorded)],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO, env=_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cells = {c["name"]: c for c in json.loads((recorded / "report.json").read_text())["cells"]}
    assert set(cells) == set(EXPECTED)
    for name, cell in cells.items():
        assert (cell["reproducible"], cell["repeats"]) == (True, 2), name
    for variant in EXPECTED:
        a, b = (recorded / f"{variant}-{k}" for k in "ab")
        assert np.array_equal(np.load(a / WEIGHTS_FILE), np.load(b / WEIGHTS_FILE))


#: the same modules as a harness run's entry: name -> (entry, rows per epoch, skipped in epoch)
ENTRIES = {
    "skips": ("variants:skips", 6, (2, 5)),  # of the 8 batches a run takes an epoch
    "accumulates": ("variants:accumulates", 4, ()),
    "two_optimizers": ("variants:two_optimizers", 8, ()),
}


@pytest.fixture(scope="module")
def entries(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("variant-entries")
    runs = [
        (name, k, {"placement": "before_model", "entry": entry, "repeat": r})
        for name, (entry, _, _) in ENTRIES.items()
        for r, k in enumerate("ab")
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        codes = list(pool.map(lambda run: _harness_run(run[2], root / f"{run[0]}-{run[1]}"), runs))
    for (name, k, _), code in zip(runs, codes, strict=True):
        out = root / f"{name}-{k}"
        assert code == 0, f"{out.name}: {(out / 'output.txt').read_text()[-3000:]}"
    return {name: (root / f"{name}-a", root / f"{name}-b") for name in ENTRIES}


@pytest.mark.parametrize("name", list(ENTRIES))
def test_a_harness_run_records_them_and_repeats_reproduce(entries, name: str):
    _, rows, skipped = ENTRIES[name]
    a, b = entries[name]
    first, second = load_record(a), load_record(b)
    epochs = len(first.steps_per_epoch)
    assert first.ok and epochs >= 1 and first.steps_per_epoch == [rows] * epochs
    assert first.skipped == [e * STEPS + i for e in range(epochs) for i in skipped]
    assert np.array_equal(verified_losses(a, first), verified_losses(b, second))
    assert np.array_equal(load_weight_hashes(a, first), load_weight_hashes(b, second))
    assert first.digests.final_weights == second.digests.final_weights


def test_a_recorder_that_cannot_record_warns_and_training_goes_on(tmp_path: Path):
    """The recorder's own failure (its TensorBoard folder is a file) never reaches the user's
    training: fit runs to the end, a RecordWarning says what stopped, and run.json is a failed
    record (``NotRecorded``) that says so."""
    import pytorch_lightning as pl
    import torch

    from harness.lightning import ReproRecorder
    from harness.workload.loss_capture import RecordWarning

    sys.path.insert(0, str(CODE))
    try:
        from tinyconv import TinyConv, TinyData
    finally:
        sys.path.remove(str(CODE))
    out = tmp_path / "run"
    out.mkdir()
    (out / "tensorboard").write_text("not a folder")
    torch.manual_seed(0)
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=4, limit_val_batches=0, accelerator="cpu",
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[ReproRecorder(out, name="broken")],
    )  # fmt: skip
    with pytest.warns(RecordWarning, match="recording stopped in on_fit_start"):
        trainer.fit(TinyConv(), TinyData())
    assert trainer.global_step == 4 and trainer.state.finished
    record = load_record(out)
    assert record.status == "failed" and record.error is not None
    assert record.error.type == "NotRecorded"
    assert "recording stopped in on_fit_start" in record.error.message
