"""A run that cannot train still ends in a run record that says why, and a non-zero exit."""

from __future__ import annotations

import gzip
import json
import shutil

from harness.contract import RECORD_FILE
from harness.record import load_record
from harness.workload.data import MNIST_MD5


def test_missing_mnist_fails_before_training(workload, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = workload({}, tmp_path / "out", data_dir=empty)
    assert result.returncode == 1
    record = load_record(tmp_path / "out")
    assert record.status == "failed" and record.steps == 0
    assert record.error.type == "DataError"
    assert "train-images-idx3-ubyte" in record.error.message
    assert "HARNESS_MNIST_DIR" in record.error.message
    assert "Traceback" in record.error.traceback
    assert record.digests.init_weights is None


def test_corrupt_mnist_names_the_file(workload, tmp_path, mnist_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in MNIST_MD5:
        shutil.copy(mnist_dir / f"{name}.gz", bad / f"{name}.gz")
    labels = bytearray(gzip.decompress((bad / "train-labels-idx1-ubyte.gz").read_bytes()))
    labels[-1] = (labels[-1] + 1) % 10
    (bad / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    # --data-dir wins over HARNESS_MNIST_DIR (the good copy).
    result = workload({}, tmp_path / "out", data_dir=bad, env={"HARNESS_MNIST_DIR": str(mnist_dir)})
    assert result.returncode == 1
    record = load_record(tmp_path / "out")
    assert record.status == "failed"
    assert "train-labels-idx1-ubyte.gz: MD5" in record.error.message


def test_bad_spec_writes_a_failed_record(workload, tmp_path):
    result = workload({"placement": "sometimes"}, tmp_path)
    assert result.returncode == 2
    data = json.loads((tmp_path / RECORD_FILE).read_text())
    assert data["status"] == "failed" and "placement must be one of" in data["error"]["message"]
    assert load_record(tmp_path).error.type == "SpecError"


def test_a_loss_that_becomes_nan_fails_the_run_naming_the_step(workload, tmp_path, mnist_dir):
    spec = {"learning_rate": 1.0e30, "max_steps_per_epoch": 20, "epochs": 3}
    result = workload(spec, tmp_path, data_dir=mnist_dir)
    assert result.returncode == 1, result.stderr
    record = load_record(tmp_path)
    assert record.status == "failed" and record.error.type == "NonFiniteLoss"
    assert "from step 1 (epoch 0, batch 1)" in record.error.message
    # it stopped at the end of the epoch where it happened, and kept what it recorded
    assert record.steps == 20 and record.steps_per_epoch == [20]


def test_a_large_but_finite_learning_rate_is_a_run_like_any(workload, tmp_path, mnist_dir):
    spec = {"learning_rate": 1.0e6, "max_steps_per_epoch": 20, "epochs": 1}
    result = workload(spec, tmp_path, data_dir=mnist_dir)
    assert result.returncode == 0, result.stderr
    assert load_record(tmp_path).ok
