"""scripts/demo.sh, read (running it reinstalls the shared .venv): a demo installs the workload
extra only, not the developer linters, prints pip's output only when pip fails, and leaves the
report's path to ``harness run`` (which prints it once)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _code(path: str) -> list[str]:
    """The script's command lines, comments dropped."""
    lines = (ROOT / path).read_text().splitlines()
    return [line.split(" #")[0].rstrip() for line in lines if not line.lstrip().startswith("#")]


def test_the_demo_asks_setup_for_the_workload_extra_only():
    demo = _code("scripts/demo.sh")
    setup_calls = [line for line in demo if "scripts/setup.sh" in line]
    assert setup_calls == ["HARNESS_SETUP_EXTRAS=workload bash scripts/setup.sh"]
    setup = "\n".join(_code("scripts/setup.sh"))
    assert "EXTRAS=${HARNESS_SETUP_EXTRAS:-workload,dev}" in setup
    assert 'pip install -q -e ".[$EXTRAS]"' in setup
    # without dev: done before pip's log is printed and before the linters are looked for
    stop = setup.index('if [[ ",$EXTRAS," != *,dev,* ]]; then\n  exit 0\nfi')
    assert stop < setup.index('grep -v "^WARNING: Location" "$pip_log" || true')
    assert stop < setup.index("for linter in actionlint zizmor shellcheck")


def test_the_demo_does_not_print_the_report_s_path_again():
    echoes = [line for line in _code("scripts/demo.sh") if line.lstrip().startswith("echo")]
    assert not any(re.search(r"report\.md", line) for line in echoes)
    assert any("tensorboard --logdir" in line for line in echoes)
