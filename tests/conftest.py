"""Shared fixtures: where real MNIST is, which interpreter runs the workload, how to run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Real MNIST: HARNESS_MNIST_DIR, else ../shared/data/mnist beside the checkout."""
    path = Path(os.environ.get("HARNESS_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
    if (
        not (path / "train-images-idx3-ubyte.gz").exists()
        and not (path / "train-images-idx3-ubyte").exists()
    ):
        pytest.fail(f"MNIST not found in {path}; set HARNESS_MNIST_DIR")
    return path


@pytest.fixture(scope="session")
def venv_python() -> str:
    return sys.executable


def run_workload(
    python: str,
    spec: dict,
    out: Path,
    *,
    env: dict[str, str] | None = None,
    data_dir: Path | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess:
    """Write spec.json into ``out`` and run ``python -m harness.workload`` on it for real."""
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(spec))
    argv = [python, "-m", "harness.workload", "--spec", str(spec_path), "--out", str(out)]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        argv, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def workload(venv_python):
    """``workload(spec, out, **kw)``: run one real repeat in a fresh process (see run_workload)."""

    def _run(spec: dict, out: Path, **kwargs) -> subprocess.CompletedProcess:
        return run_workload(venv_python, spec, out, **kwargs)

    return _run
