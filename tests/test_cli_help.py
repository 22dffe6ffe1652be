"""The command line explains itself (issue 29, item 6; docs/faults.md rows 66 and 67):
``--version``, help paragraphs rich can wrap, plain placeholders, exit codes in words,
plurals, ``status``'s and ``doctor``'s sentences, the grid's abbreviations spelled out, and
"did you mean" for a setting's values. The real CLI in a subprocess, no mocks."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from test_report_summaries import cell
from test_terminal_summary import report_of

from harness import DISTRIBUTION
from harness.doctor import docker_status, run_doctor
from harness.errors import MatrixError
from harness.matrix import parse_matrix
from harness.report.terminal import render_plain

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "placement-quick.yaml"


def harness(*args: str, columns: int = 100) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "dumb"}
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True, text=True, timeout=120, check=False, env=env, cwd=ROOT,
    )  # fmt: skip


def test_version_prints_the_installed_version() -> None:
    done = harness("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"harness {version(DISTRIBUTION)}"


def test_command_help_is_one_paragraph_line_not_the_docstring_lines() -> None:
    """Wide enough for every summary: a continuation line in the Commands box is a docstring
    line break, a sentence cut mid-way."""
    text = harness("--help", columns=500).stdout
    box = text.split("Commands")[1]
    rows = [line for line in box.splitlines() if line.startswith("│")]
    assert rows and all(not line[1:].startswith("           ") for line in rows), rows


def test_usage_has_plain_placeholders_and_flags_no_bool_type() -> None:
    text = harness("compare", "--help").stdout
    assert "Usage: harness compare [OPTIONS] BASELINE CURRENT" in text
    assert "{" not in text and "<bool>" not in text


def test_compare_help_writes_every_exit_code_in_words() -> None:
    text = " ".join(harness("compare", "--help", columns=400).stdout.split())
    assert "EXIT_" not in text
    for words in ("0 no regression", "1 reproducibility regressed", "2 bad input",
                  "3 not comparable", "4 a trajectory changed"):  # fmt: skip
        assert words in text, words


def test_run_help_names_exit_2_for_bad_input() -> None:
    text = " ".join(harness("run", "--help", columns=400).stdout.split())
    assert "2 bad input" in text and "130 interrupted" in text


def test_readme_exit_code_table_has_compare_3_and_4() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "| 3 | | not comparable" in readme
    assert "| 4 | | a trajectory changed" in readme


def test_plan_says_1_core() -> None:
    done = harness("plan", str(QUICK))
    assert done.returncode == 0, done.stderr
    assert "(1 core)" in done.stdout and "(1 cores)" not in done.stdout


def test_status_of_a_plain_results_folder_says_it_is_for_slurm_only(tmp_path: Path) -> None:
    assert "only" in harness("status", "--help").stdout
    done = harness("status", str(tmp_path))
    assert done.returncode == 2
    assert "Slurm submissions only" in done.stderr and "harness report" in done.stderr
    assert "Traceback" not in done.stderr


def test_doctor_says_in_sentences_what_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:  # fmt: skip
    """A real Docker client against a socket that does not exist; no MNIST folder given."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    monkeypatch.delenv("HARNESS_MNIST_DIR", raising=False)
    reachable, _, _, reason = docker_status()
    assert not reachable and reason == "no Docker engine runs there (the socket does not exist)"
    checks = {c.name: c for c in run_doctor(disk_path=tmp_path).checks}
    assert "None" not in checks["mnist"].detail
    assert checks["mnist"].detail.startswith("no MNIST folder given")
    assert "Connection aborted" not in checks["docker"].detail


def test_the_grid_abbreviations_are_spelled_out_under_it() -> None:
    cells = [cell(f"c{t}", threads=t, placement="none") for t in (1, 2)]
    lines = render_plain(report_of(cells))
    assert "abbreviations: t = threads" in lines


@pytest.mark.parametrize(
    ("key", "value", "meant"),
    [("placement", "before-model", "before_model"), ("accelerator", "cuda", "gpu"),
     ("deterministic_algorithms", '"Warn"', "warn")],
)  # fmt: skip
def test_did_you_mean_for_a_wrong_value(key: str, value: str, meant: str) -> None:
    with pytest.raises(MatrixError) as caught:
        parse_matrix(f"name: m\naxes:\n  {key}: [{value}]\n", Path("m.yaml"))
    assert f"did you mean {meant!r}?" in caught.value.message


def test_no_did_you_mean_for_a_far_value() -> None:
    with pytest.raises(MatrixError) as caught:
        parse_matrix("name: m\naxes:\n  accelerator: [tpu]\n", Path("m.yaml"))
    assert "did you mean" not in caught.value.message
