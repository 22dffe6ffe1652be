"""A matrix of the user's own training only needs no MNIST (issue 28, item 13; docs/workload.md,
"Your own training"): ``harness run`` neither downloads it nor asks for it, and the build
function gets ``data_dir`` None where none is given or already there. Real runs of
tests/resources/own_workload (a tiny conv net on data from a fixed generator), local executor.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.matrix import parse_matrix
from harness.run.mnist_source import mnist_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
CODE = REPO / "tests" / "resources" / "own_workload"
OWN_ONLY = f"""\
name: own-only
workload: {{entry: "tinyconv:build", path: {json.dumps(str(CODE))}, params: {{width: 3}}}}
run: {{repeats: 1, epochs: 1, max_steps_per_epoch: 2, threads: 1, timeout_s: 300}}
axes:
  placement: [before_model]
"""


def _run(tmp_path: Path, mnist: str | None) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """``harness run`` of OWN_ONLY with an empty user cache, HARNESS_MNIST_DIR ``mnist``."""
    matrix = tmp_path / "m.yaml"
    matrix.write_text(OWN_ONLY)
    cache, out = tmp_path / "cache", tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_MNIST_DIR"}
    env["XDG_CACHE_HOME"] = str(cache)
    if mnist is not None:
        env["HARNESS_MNIST_DIR"] = mnist
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(matrix), "--out", str(out),
         "--executor", "local", "--progress", "plain"],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    return done, out, cache


@pytest.mark.parametrize("mnist", [None, "missing", "empty"])
def test_own_training_only_runs_without_mnist_and_downloads_nothing(tmp_path: Path, mnist):
    given = None if mnist is None else tmp_path / mnist
    if mnist == "empty":
        given.mkdir()  # type: ignore[union-attr]
    done, out, cache = _run(tmp_path, None if given is None else str(given))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "MNIST" not in done.stderr
    assert not (cache / "harness").exists()  # nothing downloaded into the user cache
    if given is not None:
        assert not given.exists() or list(given.iterdir()) == []
    records = list((out / "cells").glob("*/repeat-0/run.json"))
    assert len(records) == 1
    assert json.loads(records[0].read_text())["status"] == "ok"


def test_only_a_cell_of_the_built_in_asks_for_mnist(tmp_path: Path, monkeypatch, mnist_dir):
    """The decision on its own: an own-training matrix gets the cache where it is, else None;
    one cell of the built-in makes it MNIST's, verified (a real copy: nothing is downloaded)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    own = parse_matrix(OWN_ONLY, tmp_path / "m.yaml")
    assert mnist_for(own.cells) is None
    cache = tmp_path / "harness" / "mnist"
    cache.mkdir(parents=True)
    assert mnist_for(own.cells) == cache
    mixed = parse_matrix(
        OWN_ONLY.replace("  placement: [before_model]", "  entry: [null, 'tinyconv:build']"),
        tmp_path / "m.yaml",
    )
    assert {c.settings["entry"] for c in mixed.cells} == {None, "tinyconv:build"}
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):  # fmt: skip
        shutil.copyfile(Path(mnist_dir) / name, cache / name)
    assert mnist_for(mixed.cells) == cache


def test_a_container_of_own_training_without_mnist_mounts_none(tmp_path: Path):
    """The container's kwargs: no /data mount and no --data-dir where no MNIST is given."""
    from test_docker_kwargs import IMAGE

    from harness.contract import RunSpec
    from harness.executors.base import Slot
    from harness.executors.docker_kwargs import DATA_MOUNT, container_kwargs

    spec = RunSpec(entry="tinyconv:build")
    made = {
        given: container_kwargs(
            spec, Slot(cpus=(0,)), tmp_path / "run", image=IMAGE, data_dir=given, run_label="l"
        )
        for given in (None, tmp_path)
    }
    assert "--data-dir" not in made[None]["command"]
    assert [m["Target"] for m in made[None]["mounts"]] == ["/out"]
    assert made[tmp_path]["command"][-2:] == ["--data-dir", DATA_MOUNT]
    assert [m["Target"] for m in made[tmp_path]["mounts"]] == [DATA_MOUNT, "/out"]


@pytest.mark.docker
def test_own_training_only_runs_in_a_container_without_mnist(tmp_path: Path, client):
    """The same matrix on the CPU stand-in image, HARNESS_MNIST_DIR unset, the cache empty."""
    from conftest import BASE_IMAGE

    matrix = tmp_path / "m.yaml"
    matrix.write_text(OWN_ONLY.replace("axes:\n", f"axes:\n  image: [{BASE_IMAGE}]\n"))
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_MNIST_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    # the results folder (and the code snapshot in it) where the containers' user can read it
    shared = Path(tempfile.mkdtemp(prefix="own-no-mnist-"))
    shared.chmod(0o755)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "harness.cli", "run", str(matrix), "--out",
             str(shared / "results"), "--progress", "plain"],
            env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path,
        )  # fmt: skip
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert not (tmp_path / "cache" / "harness").exists()
