"""``harness diagnose`` with Docker under signals, on a real engine with real replays: SIGTERM
stops and removes its replay containers and exits 130 (as ``harness run``, fault 4); what a
diagnose killed with SIGKILL left is swept by the next ``harness run`` or ``harness diagnose``
into that folder (as fault 25 for runs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BASE_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
#: steps enough for a replay to be still running when the signal comes (tens of seconds)
STEPS = 400


def harness(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # argv list
        [sys.executable, "-m", "harness.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )


def folder_containers(client, out: Path) -> list:
    """Every container, in any state, labelled with this results folder."""
    return client.containers.list(all=True, filters={"label": f"harness.out={out.resolve()}"})


def running_replays(client, out: Path, proc: subprocess.Popen[str]) -> list:
    """Until the diagnose ``proc`` has a running replay container (its pid's label)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        mine = [
            c
            for c in folder_containers(client, out)
            if c.labels.get("harness.owner.pid") == str(proc.pid) and c.status == "running"
        ]
        if mine:
            return mine
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.3)
    raise AssertionError("no replay container ran within 300 s")


@pytest.fixture(scope="module")
def results(client, workload_image, tmp_path_factory, mnist_dir: Path) -> tuple[Path, Path, str]:
    """(matrix, results folder, cell id): two repeats of a seeded cell in containers."""
    tmp = tmp_path_factory.mktemp("diagnose-signals")
    matrix = tmp / "m.yaml"
    matrix.write_text(
        "name: diagnose-signals\n"
        f"run: {{repeats: 2, epochs: 1, max_steps_per_epoch: {STEPS}, seed: 7, threads: 1}}\n"
        "axes:\n"
        f"  image: ['{BASE_IMAGE}']\n"
        "  placement: [before_model]\n"
    )
    out = tmp / "results"
    proc = harness("run", str(matrix), "--executor", "docker", "--out", str(out),
                   "--progress", "quiet", "--no-report", "--data-dir", str(mnist_dir))  # fmt: skip
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    cell = json.loads((out / "manifest.json").read_text())["cells"][0]["id"]
    return matrix, out, cell


def test_sigterm_to_diagnose_removes_its_containers_and_leftovers_are_swept(
    client, results: tuple[Path, Path, str], mnist_dir: Path
):
    matrix, out, cell = results
    diagnose = ("diagnose", str(out), "--cell", cell, "--executor", "docker",
                "--data-dir", str(mnist_dir), "--no-report")  # fmt: skip

    # 1. SIGKILL (cannot be handled): the replay containers stay behind ...
    killed = harness(*diagnose)
    left = running_replays(client, out, killed)
    killed.kill()
    killed.communicate(timeout=60)
    assert {c.id for c in left} <= {c.id for c in folder_containers(client, out)}
    # ... and the next `harness run` into the folder removes them (every run is reused)
    rerun = harness("run", str(matrix), "--executor", "docker", "--out", str(out),
                    "--progress", "quiet", "--no-report", "--data-dir", str(mnist_dir))  # fmt: skip
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert f"left by harness pid {killed.pid} (no longer running)" in err, err
    assert folder_containers(client, out) == []

    # 2. the same leftovers of a killed diagnose are swept by the next diagnose, which ...
    killed = harness(*diagnose)
    running_replays(client, out, killed)
    killed.kill()
    killed.communicate(timeout=60)
    assert folder_containers(client, out)
    termed = harness(*diagnose)
    running_replays(client, out, termed)
    # 3. ... SIGTERM then stops: its replays are stopped and removed, exit 130, no traceback
    termed.send_signal(signal.SIGTERM)
    stdout, err = termed.communicate(timeout=120)
    assert f"left by harness pid {killed.pid} (no longer running)" in err, err
    assert termed.returncode == 130, f"{stdout}\n{err}"
    assert "interrupted: the replays of" in err and "Traceback" not in err, err
    assert folder_containers(client, out) == []
    assert not (out / "diagnoses" / f"{cell}-0--{cell}-1" / "diagnosis.json").exists()
