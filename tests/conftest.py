"""Shared fixtures: where real MNIST is, which interpreter runs the workload, how to run it;
and the rule that no test skips quietly (docs/testing.md, "Skips")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import docker
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
#: How to get the engine the Docker tests need (scripts/docker-engine.sh; .ci/run starts it).
START_ENGINE = (
    'start one: eval "$(bash scripts/docker-engine.sh start)" (bash .ci/run does it, and '
    "bash scripts/test.sh finds it), or point DOCKER_HOST at a running engine; or leave out "
    'the tests that need one: -m "not docker"'
)
#: The one marker whose tests may skip: there is no GPU in CI.
SKIP_ALLOWED_MARKER = "gpu"
#: Fixtures that need a Docker engine: a test using them is a docker test, marked or not.
ENGINE_FIXTURES = frozenset({"client", "workload_image"})
#: Fixtures that need a running Slurm cluster: a test using them is a slurm test.
SLURM_FIXTURES = frozenset({"slurm_cluster"})
#: Where scripts/slurm-cluster.sh writes its configuration (HARNESS_SLURM_ROOT moves it).
SLURM_CONF = Path(os.environ.get("HARNESS_SLURM_ROOT", "/var/lib/harness-slurm")) / "slurm.conf"


# --- no quiet skips ------------------------------------------------------------------------


def _as_failure(report: pytest.TestReport | pytest.CollectReport, what: str) -> None:
    """Turn a skip report into a failure that leads with the skip's reason (the line ``-ra``
    shows), then where it skipped and the rule."""
    reason, where = str(report.longrepr), ""
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        path, lineno, reason = report.longrepr  # a skip's longrepr
        where = f"{path}:{lineno}: " if lineno is not None else f"{path}: "
    reason = reason.removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = (
        f"skipped: {reason}\n{where}{what} skipped, but only tests marked "
        f"`{SKIP_ALLOWED_MARKER}` may skip: a test that needs Docker, a linter, root or a file "
        "either runs or fails (docs/testing.md, Skips)"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A skip of a test not marked ``gpu`` becomes a failure (an error when it skipped in
    setup, as a failing fixture does), with the skip's reason."""
    report = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker(SKIP_ALLOWED_MARKER) is None
    ):
        _as_failure(report, "this test")
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """A module that skips itself at import fails: it cannot be marked ``gpu`` before it is
    imported, so a GPU-only module skips in its tests or fixtures instead."""
    report = yield
    if report.skipped:
        _as_failure(report, "this module")
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses the engine's fixtures is a docker test, so ``-m "not docker"`` leaves
    out every test that needs an engine (runs before ``-m`` deselects)."""
    for item in items:
        if ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            if item.get_closest_marker("docker") is None:
                item.add_marker(pytest.mark.docker)
        if SLURM_FIXTURES & set(getattr(item, "fixturenames", ())):
            if item.get_closest_marker("slurm") is None:
                item.add_marker(pytest.mark.slurm)


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
    """A docker SDK client of a reachable engine; an unreachable engine fails the test."""
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as exc:
        error = str(exc)  # failed outside the except block, so without the chained traceback
    else:
        return client
    pytest.fail(
        f"no Docker engine reachable (DOCKER_HOST={os.environ.get('DOCKER_HOST')}): {error}; "
        f"{START_ENGINE}",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def workload_image(client):
    """The workload image on BASE_IMAGE, built once (or reused) through harness.executors.images."""
    from harness.executors.images import ensure_workload_image

    return ensure_workload_image(client, BASE_IMAGE)


@pytest.fixture(scope="session")
def slurm_cluster() -> dict[str, str]:
    """The environment of a running Slurm cluster (scripts/slurm-cluster.sh's unless
    SLURM_CONF names another); fails, never skips, when none answers."""
    env = dict(os.environ)
    if "SLURM_CONF" not in env and SLURM_CONF.is_file():
        env["SLURM_CONF"] = str(SLURM_CONF)
    try:
        proc = subprocess.run(
            ["sinfo", "--noheader", "--format=%t"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        said = proc.stdout + proc.stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        said, proc = str(exc), None
    if proc is None or proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(
            f"no Slurm cluster answers (SLURM_CONF={env.get('SLURM_CONF', 'unset')}): "
            f"{said.strip()[:300]}\nstart one (installs it if missing, as root): "
            'eval "$(bash scripts/slurm-cluster.sh start)", or leave these tests out: '
            '-m "not slurm"'
        )
    return env
