"""``harness run --executor docker`` end to end, in a real process: report, signals, cleanup.

Every test lists the containers by their ``harness.run`` label (``<matrix name>-<digest>``), so a
container this matrix run started is found whatever state it is in. Repeats in containers that
reproduce, with the image digest in their records and the report, are checked where a matrix
already runs them: test_faults_docker.py::test_image_that_does_not_exist.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import BASE_IMAGE

from harness.run.progress import last_epoch

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[1]


def write_matrix(
    path: Path, name: str, *, repeats: int, steps: int | None, epochs: int = 1
) -> Path:
    steps_yaml = "null" if steps is None else str(steps)
    path.write_text(
        f"name: {name}\n"
        f"run: {{repeats: {repeats}, epochs: {epochs}, max_steps_per_epoch: {steps_yaml}, "
        "seed: 201014, threads: 1, timeout_s: 600}\n"
        "axes:\n"
        f"  image: ['{BASE_IMAGE}']\n"
        "  accelerator: [cpu]\n"
        "  placement: [before_model]\n"
        "  devices: [1]\n"
    )
    return path


def ours(client, name: str) -> list:
    """Containers whose harness.run label belongs to the matrix called ``name``."""
    return [
        c
        for c in client.containers.list(all=True, filters={"label": "harness.run"})
        if c.labels.get("harness.run", "").startswith(f"{name}-")
    ]


def harness_run(matrix: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(  # argv list
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(matrix),
            "--executor",
            "docker",
            "--out",
            str(out),
            "--progress",
            "plain",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_harness_removes_its_containers(client, workload_image, tmp_path, sig) -> None:
    """Ctrl-C (SIGINT) or SIGTERM while a container trains: the container is stopped and
    removed, the run is recorded as stopped, the report is still written, exit 130."""
    name = f"sig-{uuid.uuid4().hex[:6]}"
    matrix = write_matrix(tmp_path / "m.yaml", name, repeats=1, steps=None, epochs=20)
    out = tmp_path / "out"
    proc = harness_run(matrix, out)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not [
            c for c in ours(client, name) if c.status == "running"
        ]:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.3)
        assert ours(client, name), "no container started within 300 s"
        # its first epoch done: the workload trains, its signal handlers in place (a signal
        # while it still imports torch on a loaded machine kills it before it can record)
        while time.monotonic() < deadline and not any(
            last_epoch(run) for run in out.glob("cells/*/repeat-*")
        ):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert ours(client, name) == [], output
    assert "aborted" in output and "the harness was interrupted" in output
    report = json.loads((out / "report.json").read_text())  # written, though interrupted
    # the container got SIGINT first, whatever the harness got: the workload recorded it
    assert [(f["repeat"], f["type"]) for f in report["failures"]] == [(0, "Interrupted")], output
    assert report["failures"][0]["message"] == "interrupted by SIGINT (Ctrl-C)"
    assert f"report: {out / 'report.md'}" in output
