"""Shared fixtures: where real MNIST is, which interpreter runs the workload, how to run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# In CI the generated examples are the same on every run (derandomized), so a red CI is a real
# regression, not a new random find; locally hypothesis keeps exploring new examples.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parent.parent
#: The base image the Docker tests build the workload image on (.ci/run builds this stand-in).
BASE_IMAGE = os.environ.get("HARNESS_TEST_BASE_IMAGE", "harness-standin/pytorch:2.14.1-cpu")


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


@pytest.fixture(scope="session")
def client():
    """A docker SDK client of a reachable engine; in CI an unreachable engine fails the test."""
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as exc:
        message = f"no Docker engine reachable (DOCKER_HOST={os.environ.get('DOCKER_HOST')}): {exc}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; .ci/run starts one (scripts/docker-engine.sh start)")
        pytest.skip(message)
    return client


@pytest.fixture(scope="session")
def workload_image(client):
    """The workload image on BASE_IMAGE, built once (or reused) through harness.images."""
    from harness.images import ensure_workload_image

    return ensure_workload_image(client, BASE_IMAGE)
