"""End to end on real MNIST with real training: the post's finding on this CPU.

``before_model`` reproduces bit for bit, ``none`` does not, and the report says so in words.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.progress import last_epoch

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_quick_example_reproduces_the_post(tmp_path: Path):
    matrix = tmp_path / "quick.yaml"
    text = (ROOT / "examples" / "placement-quick.yaml").read_text()
    matrix.write_text(
        text.replace("max_steps_per_epoch: 200", "max_steps_per_epoch: 100").replace(
            "before_trainer, ", ""
        )
    )
    out = tmp_path / "results"
    # A relative --out, as a user types it: runs start in their own folders, so every path the
    # harness hands them must already be absolute.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(matrix),
            "--out",
            "results",
            "--progress",
            "plain",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    cells = {c["settings"]["placement"]: c for c in report["cells"]}
    assert cells["before_model"]["reproducible"] is True
    assert cells["before_model"]["distinct_trajectories"] == 1
    assert cells["before_model"]["first_divergence"] is None
    assert cells["none"]["reproducible"] is False
    assert cells["none"]["distinct_trajectories"] == 2
    assert cells["none"]["first_divergence"]["step"] == 0
    md = (out / "report.md").read_text()
    summary = report["summaries"]["local"]
    assert "placement=none never reproduces" in summary
    assert "placement=before_model always does" in summary
    assert "placement breaks it" in md
    runs = list(out.glob("cells/*/repeat-*"))
    assert len(runs) == 4
    for run in runs:
        assert last_epoch(run) == (1, 1)  # what the progress display reads from the log
        assert any((run / "tensorboard").rglob("*tfevents*"))
