"""The rule of tests/conftest.py: only a test marked ``gpu`` may skip; any other skip fails.

Checked on a throwaway suite run by a real pytest with this conftest as its plugin.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SUITE = """
import pytest

def test_skips():
    pytest.skip("no engine here")

@pytest.fixture
def needs_root():
    pytest.skip("needs root")

def test_fixture_skips(needs_root):
    pass

@pytest.mark.skipif(True, reason="a marker's skip")
def test_marker_skips():
    pass

@pytest.mark.gpu
def test_gpu_skips():
    pytest.skip("no GPU here")

@pytest.mark.xfail(reason="known")
def test_xfails():
    assert False

def test_passes():
    pass
"""


def pytest_on(folder: Path, name: str, source: str, *args: str) -> tuple[int, str]:
    """Run pytest with tests/conftest.py as its plugin on one test file in ``folder``."""
    folder.mkdir()
    (folder / name).write_text(source)
    (folder / "pytest.ini").write_text("[pytest]\nmarkers =\n  gpu: may skip\n  docker: engine\n")
    proc = subprocess.run(  # argv list
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q", "-rA"]
        + list(args),
        cwd=folder,
        env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_only_gpu_tests_may_skip(tmp_path: Path) -> None:
    code, out = pytest_on(tmp_path / "suite", "test_suite.py", SUITE)
    assert code == 1, out
    summary = out.strip().splitlines()[-1]
    # test_skips fails; the fixture's and the marker's skips error in setup, as a failing
    # fixture does; the gpu skip stays a skip, counted; xfail and pass are untouched.
    for count in ("1 failed", "1 passed", "1 skipped", "1 xfailed", "2 errors"):
        assert count in summary, summary
    assert "SKIPPED [1] test_suite.py" in out and "no GPU here" in out
    assert "FAILED test_suite.py::test_skips - skipped: no engine here" in out
    assert "test_suite.py:5: this test skipped" in out
    for reason in ("skipped: needs root", "skipped: a marker's skip"):
        assert reason in out, reason
    assert out.count("only tests marked `gpu` may skip") == 3, out


def test_a_module_that_skips_itself_fails_to_collect(tmp_path: Path) -> None:
    source = 'import pytest\npytest.skip("whole module", allow_module_level=True)\n'
    code, out = pytest_on(tmp_path / "module", "test_module.py", source)
    assert code == 2, out  # a collection error, as an import error would be
    assert "skipped: whole module" in out and "test_module.py:2: this module skipped" in out
    assert "only tests marked `gpu` may skip" in out


def test_a_test_using_the_engine_is_a_docker_test(tmp_path: Path) -> None:
    """So ``-m "not docker"`` (scripts/test.sh without an engine) leaves out every such test."""
    source = "def test_engine(client):\n    pass\n\ndef test_plain():\n    pass\n"
    code, out = pytest_on(tmp_path / "engine", "test_engine.py", source, "-m", "not docker")
    assert code == 0, out
    assert "1 passed, 1 deselected" in out, out
