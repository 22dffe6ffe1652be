"""Fault 12: MNIST missing or corrupt under a real ``harness run``. The workload's MD5 check
fails every run before any training (no losses), the message names the file and the fix, and
pointing --data-dir at good data resumes the matrix.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from fault_tools import Harness, finished_files, no_processes_left, records, write_matrix

from harness.workload.data import MNIST_MD5

pytestmark = pytest.mark.slow


def broken_copy(mnist_dir: Path, dest: Path, kind: str) -> Path:
    dest.mkdir()
    for name in MNIST_MD5:
        shutil.copy(mnist_dir / f"{name}.gz", dest / f"{name}.gz")
    if kind == "missing":
        (dest / "train-images-idx3-ubyte.gz").unlink()  # the training set: read first
    else:  # one label flipped: the gzip is valid, the MD5 of its content is not
        path = dest / "train-labels-idx1-ubyte.gz"
        labels = bytearray(gzip.decompress(path.read_bytes()))
        labels[100] = (labels[100] + 1) % 10
        path.write_bytes(gzip.compress(bytes(labels)))
    return dest


@pytest.mark.parametrize(
    "kind, named",
    [
        ("corrupt", "train-labels-idx1-ubyte.gz: MD5"),
        ("missing", "train-images-idx3-ubyte"),
    ],
)
def test_bad_mnist_fails_before_training_and_resumes(tmp_path, mnist_dir, kind, named):
    bad = broken_copy(mnist_dir, tmp_path / "bad", kind)
    matrix = write_matrix(tmp_path / "m.yaml", f"data-{kind}", repeats=2)
    out = tmp_path / "out"
    first = Harness(matrix, out, "--data-dir", str(bad))
    try:
        code = first.finish(timeout=600)
    finally:
        first.kill()
    assert code == 1, first.text[-3000:]
    assert no_processes_left(out, first.pid) == []
    got = records(out)
    assert len(got) == 2
    for run_dir, record in zip(sorted(out.glob("cells/*/repeat-*")), got.values(), strict=True):
        assert record.status == "failed" and record.error.type == "DataError"
        assert named in record.error.message
        assert record.steps == 0 and record.digests.init_weights is None  # nothing trained
        losses = run_dir / "losses.npy"
        assert not losses.exists() or np.load(losses).shape[0] == 0  # no step's loss
    assert named in first.text  # the progress line says it, not only the record
    fix = "copy or download it again" if kind == "corrupt" else "HARNESS_MNIST_DIR"
    assert fix in got["repeat-0"].error.message
    assert "Traceback" not in first.text

    second = Harness(matrix, out, "--data-dir", str(mnist_dir))  # the fix
    try:
        assert second.finish(timeout=600) == 0, second.text[-3000:]
    finally:
        second.kill()
    assert all(r.ok for r in records(out).values())
    kept = finished_files(out)

    third = Harness(matrix, out, "--data-dir", str(bad))  # bad data again: nothing is touched
    try:
        assert third.finish(timeout=120) == 0, third.text[-3000:]
    finally:
        third.kill()
    assert "2 already done" in third.text and "] start " not in third.text
    assert finished_files(out) == kept
