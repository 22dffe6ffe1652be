"""``harness doctor`` on this machine: real engine, real MNIST, real disk."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.doctor import check_mnist, run_doctor

REPO = Path(__file__).resolve().parents[1]
MNIST = Path(os.environ.get("HARNESS_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))


def test_real_mnist_is_found_and_its_md5s_match() -> None:
    assert check_mnist(MNIST) == (True, True, None)


def test_a_changed_mnist_file_fails_the_md5_check(tmp_path: Path) -> None:
    for path in MNIST.iterdir():
        shutil.copy(path, tmp_path / path.name)
    raw = gzip.decompress((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw[:-1] + b"\x09"))
    found, md5_ok, error = check_mnist(tmp_path)
    assert found and md5_ok is False
    assert "t10k-labels-idx1-ubyte" in error


def test_missing_mnist_is_reported(tmp_path: Path) -> None:
    found, md5_ok, error = check_mnist(tmp_path / "nowhere")
    assert not found and md5_ok is None and "nowhere" in error


def test_doctor_json_reports_this_machine(capsys) -> None:
    assert main(["doctor", "--format", "json", "--data-dir", str(MNIST)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mnist_found"] is True and data["mnist_md5_ok"] is True
    assert data["disk_free_bytes"] == pytest.approx(shutil.disk_usage(Path.cwd()).free, rel=0.05)
    assert {c["name"] for c in data["checks"]} == {
        "docker",
        "gpu runtime",
        "gpus",
        "gpu probe",
        "disk",
        "mnist",
    }
    if shutil.which("nvidia-smi") is None:
        assert data["gpus"] == [] and data["gpu_error"] == "nvidia-smi not found"
        assert data["gpu_probe"] is None  # no GPU seen, no image named: not applicable
        probe = next(c for c in data["checks"] if c["name"] == "gpu probe")
        assert probe["ok"] is None and "--image" in probe["detail"]


@pytest.mark.docker
@pytest.mark.gpu  # about the GPU runtime (its absence): skipped on an engine that has one
def test_doctor_runs_the_runs_gpu_probe_in_an_image(client, workload_image, capsys) -> None:
    """``--image``: the probe ``harness run`` runs before an image's GPU runs, in that image's
    workload image; on this engine (no GPU runtime) it fails saying so; nothing is left."""
    if "nvidia" in client.info().get("Runtimes", {}):
        pytest.skip("this engine has an NVIDIA runtime: the failure cannot be made here")
    argv = ["doctor", "--format", "json", "--data-dir", str(MNIST), "--image"]
    assert main([*argv, workload_image.base]) == 0
    data = json.loads(capsys.readouterr().out)
    probe = data["gpu_probe"]
    assert probe["ok"] is False and probe["where"] == f"container of image {workload_image.base}"
    assert probe["message"].startswith("this Docker engine has no GPU runtime")
    assert "NVIDIA Container Toolkit" in probe["message"]
    check = next(c for c in data["checks"] if c["name"] == "gpu probe")
    assert check["ok"] is False and "no GPU runtime" in check["detail"]
    label = f"harness.run=doctor-{os.getpid()}"
    assert client.containers.list(all=True, filters={"label": label}) == []


def test_doctor_probes_the_host_interpreter_with_local(capsys) -> None:
    """``--image local``: the same probe on the host's workload interpreter (real torch, no
    GPU here), with its verdict."""
    assert main(["doctor", "--format", "json", "--data-dir", str(MNIST), "--image", "local"]) == 0
    probe = json.loads(capsys.readouterr().out)["gpu_probe"]
    assert probe["where"].startswith("host (") and probe["facts"]["torch"]
    if shutil.which("nvidia-smi") is None:
        assert probe["ok"] is False and "is_available() is False" in probe["message"]


@pytest.mark.docker
def test_doctor_sees_the_engine_and_its_gpu_runtime(client) -> None:
    """The engine ``client`` reaches (an unreachable one fails there, saying how to start it)."""
    version = client.version()["Version"]
    runtimes = set(client.info()["Runtimes"])
    report = run_doctor(data_dir=MNIST)
    assert report.docker_reachable and report.docker_version == version
    assert report.gpu_runtime == ("nvidia" in runtimes)


def test_doctor_says_when_the_engine_is_unreachable(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    report = run_doctor(data_dir=MNIST)
    assert not report.docker_reachable and report.docker_error
    docker_check = next(c for c in report.checks if c.name == "docker")
    assert docker_check.ok is False and "docker-engine.sh start" in docker_check.hint


def test_doctor_table_renders(capsys) -> None:
    assert main(["doctor", "--data-dir", str(MNIST)]) == 0
    out = capsys.readouterr().out
    assert "mnist" in out and "MD5 ok" in out
