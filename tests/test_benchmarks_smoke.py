"""Every benchmark keeps working: each script under benchmarks/ runs its ``--smoke`` mode (tiny
sizes, seconds, real MNIST and real processes) and must exit 0 with its ``smoke:`` line.

The scripts are found in the folder, not listed here: a new benchmark is run too, and one
without ``--smoke`` fails (issue 32: bench_report.py wrote an old results format for months,
because nothing ran it). ``bench_container_overhead.py`` needs a Docker engine: it is a
``docker`` test, so ``-m "not docker"`` leaves it out, and without an engine it fails."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import BASE_IMAGE

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
#: What a smoke mode prints when it worked: a line starting with this.
SMOKE_LINE = "smoke:"
#: A smoke mode runs in seconds; this bounds one that hangs (a slow CI machine under load).
TIMEOUT_S = 300
#: The scripts that need a Docker engine, and the arguments their smoke mode gets.
DOCKER_SCRIPTS = {"bench_container_overhead.py": ["--base", BASE_IMAGE]}


def scripts_in(folder: Path) -> list[str]:
    """The files of ``folder`` that run as a script (an ``if __name__ == "__main__":``)."""
    return sorted(p.name for p in folder.glob("*.py") if _is_script(p.read_text()))


def _is_script(source: str) -> bool:
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
            return True
    return False


def run_smoke(script: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    """``python SCRIPT --smoke`` from the checkout's root, one thread."""
    return subprocess.run(
        [sys.executable, str(script), "--smoke", *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def smoke_problem(proc: subprocess.CompletedProcess) -> str | None:
    """Why a smoke run did not work (None: it did): its exit status, or no ``smoke:`` line."""
    if proc.returncode != 0:
        return f"exit {proc.returncode}"
    if not any(line.startswith(SMOKE_LINE) for line in proc.stdout.splitlines()):
        return f"no line starting with {SMOKE_LINE!r}"
    return None


def _env(mnist_dir: Path) -> dict[str, str]:
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    return dict(os.environ, HARNESS_MNIST_DIR=str(mnist_dir), **threads)


def _check(script: str, proc: subprocess.CompletedProcess) -> None:
    problem = smoke_problem(proc)
    assert problem is None, (
        f"benchmarks/{script} --smoke: {problem}\n--- stdout\n{proc.stdout[-3000:]}\n"
        f"--- stderr\n{proc.stderr[-3000:]}"
    )


SCRIPTS = scripts_in(BENCHMARKS)
LOCAL = [s for s in SCRIPTS if s not in DOCKER_SCRIPTS]


@pytest.fixture(scope="module")
def local_runs(
    mnist_dir: Path, request: pytest.FixtureRequest
) -> dict[str, subprocess.CompletedProcess]:
    """The smoke runs of the selected scripts that need no engine, two at a time
    (docs/testing.md, "Test time": a smoke run is mostly process starts)."""
    selected = [
        str(item.callspec.params["script"])
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.originalname == "test_the_smoke_mode_runs"
    ]
    env = _env(mnist_dir)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {s: pool.submit(run_smoke, BENCHMARKS / s, env) for s in selected}
        return {s: f.result() for s, f in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("script", LOCAL)
def test_the_smoke_mode_runs(script: str, local_runs: dict) -> None:
    _check(script, local_runs[script])


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.parametrize("script", sorted(DOCKER_SCRIPTS))
def test_the_smoke_mode_runs_on_the_engine(
    script: str, mnist_dir: Path, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("workload_image")  # an engine, and the image built once
    proc = run_smoke(BENCHMARKS / script, _env(mnist_dir), *DOCKER_SCRIPTS[script])
    _check(script, proc)


def test_the_scripts_are_found_in_the_folder() -> None:
    """Every file of benchmarks/ is a script that is run here, or a module a script imports;
    the engine's scripts are scripts too."""
    assert {"bench_report.py", "bench_schedule.py", "bench_trees.py"} <= set(SCRIPTS)
    assert set(DOCKER_SCRIPTS) <= set(SCRIPTS)
    sources = "\n".join((BENCHMARKS / s).read_text() for s in SCRIPTS)
    for path in BENCHMARKS.glob("*.py"):
        if path.name not in SCRIPTS:
            assert f"import {path.stem}" in sources or f"from {path.stem} " in sources, (
                f"benchmarks/{path.name} is neither a script nor imported by one"
            )


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_takes_smoke(script: str) -> None:
    assert '"--smoke"' in (BENCHMARKS / script).read_text(), (
        f"benchmarks/{script} has no --smoke mode: give it one (tiny sizes, seconds, a line "
        f"starting with {SMOKE_LINE!r}); tests/test_benchmarks_smoke.py runs it"
    )


def test_a_new_benchmark_without_smoke_fails(tmp_path: Path, mnist_dir: Path) -> None:
    """What the suite does with a new script that has no smoke mode, or prints no result."""
    new = tmp_path / "bench_new.py"
    new.write_text(
        "import argparse\n"
        "def main():\n"
        "    argparse.ArgumentParser().parse_args()\n"
        "    print('done')\n"
        'if __name__ == "__main__":\n'
        "    main()\n"
    )
    assert scripts_in(tmp_path) == ["bench_new.py"]
    proc = run_smoke(new, _env(mnist_dir))
    assert smoke_problem(proc) == "exit 2" and "--smoke" in proc.stderr
    new.write_text(new.read_text().replace("parse_args()", "parse_known_args()"))
    assert smoke_problem(run_smoke(new, _env(mnist_dir))) == "no line starting with 'smoke:'"
    (tmp_path / "helper.py").write_text("X = 1\n")
    assert scripts_in(tmp_path) == ["bench_new.py"]
