"""A run that cannot train still ends in a run record that says why, and a non-zero exit.

The real runs are made once, two side by side (each process is mostly its seconds of importing
torch), and each test reads its own.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.contract import RECORD_FILE
from harness.results.run_reader import load_record
from harness.workload.data import MNIST_MD5

Made = dict[str, tuple[subprocess.CompletedProcess, Path]]


@pytest.fixture(scope="module")
def made(workload, tmp_path_factory, mnist_dir) -> Made:
    """name -> (the process, its run folder), for every real run of this module."""
    root = tmp_path_factory.mktemp("failures")
    empty = root / "empty"
    empty.mkdir()
    bad = root / "bad"  # MNIST with one training label changed
    bad.mkdir()
    for name in MNIST_MD5:
        shutil.copy(mnist_dir / f"{name}.gz", bad / f"{name}.gz")
    labels = bytearray(gzip.decompress((bad / "train-labels-idx1-ubyte.gz").read_bytes()))
    labels[-1] = (labels[-1] + 1) % 10
    (bad / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    runs: dict[str, tuple[dict, dict]] = {
        "missing": ({}, {"data_dir": empty}),
        # --data-dir wins over HARNESS_MNIST_DIR (the good copy)
        "corrupt": ({}, {"data_dir": bad, "env": {"HARNESS_MNIST_DIR": str(mnist_dir)}}),
        "bad_spec": ({"placement": "sometimes"}, {}),
        "nan": (
            {"learning_rate": 1.0e30, "max_steps_per_epoch": 20, "epochs": 3},
            {"data_dir": mnist_dir},
        ),
        "large_lr": (
            {"learning_rate": 1.0e6, "max_steps_per_epoch": 20, "epochs": 1},
            {"data_dir": mnist_dir},
        ),
    }

    def one(name: str) -> tuple[subprocess.CompletedProcess, Path]:
        spec, kwargs = runs[name]
        out = root / name
        return workload(spec, out, **kwargs), out

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(runs, pool.map(one, runs), strict=True))


def test_missing_mnist_fails_before_training(made: Made):
    result, out = made["missing"]
    assert result.returncode == 1
    record = load_record(out)
    assert record.status == "failed" and record.steps == 0
    assert record.error.type == "DataError"
    assert "train-images-idx3-ubyte" in record.error.message
    assert "HARNESS_MNIST_DIR" in record.error.message
    assert "Traceback" in record.error.traceback
    assert record.digests.init_weights is None


def test_corrupt_mnist_names_the_file(made: Made):
    result, out = made["corrupt"]
    assert result.returncode == 1
    record = load_record(out)
    assert record.status == "failed"
    assert "train-labels-idx1-ubyte.gz: MD5" in record.error.message


def test_bad_spec_writes_a_failed_record(made: Made):
    result, out = made["bad_spec"]
    assert result.returncode == 2
    data = json.loads((out / RECORD_FILE).read_text())
    assert data["status"] == "failed" and "placement must be one of" in data["error"]["message"]
    assert load_record(out).error.type == "SpecError"


def test_a_loss_that_becomes_nan_fails_the_run_naming_the_step(made: Made):
    result, out = made["nan"]
    assert result.returncode == 1, result.stderr
    record = load_record(out)
    assert record.status == "failed" and record.error.type == "NonFiniteLoss"
    assert "from step 1 (epoch 0, batch 1)" in record.error.message
    # it stopped at the end of the epoch where it happened, and kept what it recorded
    assert record.steps == 20 and record.steps_per_epoch == [20]


def test_a_large_but_finite_learning_rate_is_a_run_like_any(made: Made):
    result, out = made["large_lr"]
    assert result.returncode == 0, result.stderr
    assert load_record(out).ok
