"""The container kwargs for one run, built without Docker: GPUs, cpuset, mounts, hardening."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.contract import RunSpec
from harness.executors.base import Slot
from harness.executors.docker_kwargs import container_kwargs
from harness.executors.docker_outcome import is_no_gpu_runtime
from harness.images import WorkloadImage

IMAGE = WorkloadImage(
    base="base:1",
    tag="img:tag",
    image_id="sha256:" + "1" * 64,
    base_digest="base@sha256:" + "2" * 64,
    base_digest_kind="repo_digest",
    code_digest="3" * 64,
    built=False,
)


def kwargs_for(spec: RunSpec, slot: Slot, tmp_path: Path) -> dict:
    return container_kwargs(
        spec, slot, tmp_path / "run", image=IMAGE, data_dir=tmp_path / "mnist", run_label="lbl"
    )


@settings(deadline=None)
@given(gpus=st.lists(st.integers(0, 15), min_size=1, max_size=8, unique=True))
def test_gpu_cell_requests_exactly_its_slot_gpus(gpus: list[int]) -> None:
    spec = RunSpec(accelerator="gpu", devices=len(gpus))
    kwargs = kwargs_for(spec, Slot(cpus=(0,), gpus=tuple(gpus)), Path("/tmp/x"))
    (request,) = kwargs["device_requests"]
    assert request["DeviceIDs"] == [str(g) for g in gpus]
    assert request["Capabilities"] == [["gpu"]]
    assert request["Count"] == 0  # device_ids, not "any N GPUs"
    assert kwargs["environment"]["CUDA_VISIBLE_DEVICES"] == ",".join(
        str(i) for i in range(len(gpus))
    )


def test_cpu_cell_has_no_device_request_and_a_cpuset(tmp_path: Path) -> None:
    kwargs = kwargs_for(RunSpec(threads=2), Slot(cpus=(3, 5)), tmp_path)
    assert "device_requests" not in kwargs
    assert kwargs["cpuset_cpus"] == "3,5"
    assert "nano_cpus" not in kwargs
    assert kwargs["environment"]["OMP_NUM_THREADS"] == "2"
    assert kwargs["environment"]["MKL_NUM_THREADS"] == "2"


def test_hardening_mounts_labels_and_command(tmp_path: Path) -> None:
    spec = RunSpec(cell_id="abc123", repeat=4, pythonhashseed=7)
    kwargs = kwargs_for(spec, Slot(cpus=(0,)), tmp_path)
    assert kwargs["network_mode"] == "none"
    assert kwargs["read_only"] is True
    assert "/tmp" in kwargs["tmpfs"]
    assert kwargs["cap_drop"] == ["ALL"]
    assert kwargs["security_opt"] == ["no-new-privileges"]
    assert kwargs["pids_limit"] > 0
    assert kwargs["user"] == f"{os.getuid()}:{os.getgid()}"
    assert kwargs["labels"] == {
        "harness.run": "lbl",
        "harness.cell": "abc123",
        "harness.repeat": "4",
    }
    mounts = {m["Target"]: m for m in kwargs["mounts"]}
    assert mounts["/data"]["ReadOnly"] is True
    assert mounts["/data"]["Source"] == str((tmp_path / "mnist").resolve())
    assert mounts["/out"]["ReadOnly"] is False
    assert kwargs["command"] == ["--spec", "/out/spec.json", "--out", "/out", "--data-dir", "/data"]
    env = kwargs["environment"]
    assert env["PYTHONHASHSEED"] == "7" and env["HOME"] == "/tmp"
    # what the host knows of the image reaches the record's provenance, outside the spec
    assert env["HARNESS_IMAGE_ID"] == IMAGE.image_id
    assert env["HARNESS_IMAGE_DIGEST"] == IMAGE.base_digest
    assert kwargs["image"] == IMAGE.image_id  # never the tag, which a build can move
    assert "CUBLAS_WORKSPACE_CONFIG" not in env


@pytest.mark.parametrize(
    ("accelerator", "algorithms", "expected"),
    [
        ("gpu", "on", True),
        ("gpu", "warn", True),
        ("gpu", "off", False),
        ("cpu", "on", True),
        ("cpu", "off", False),
    ],
)
def test_cublas_workspace_exactly_when_deterministic_algorithms_are_asked_for(
    tmp_path: Path, accelerator: str, algorithms: str, expected: bool
) -> None:
    spec = RunSpec(accelerator=accelerator, deterministic_algorithms=algorithms)
    env = kwargs_for(spec, Slot(cpus=(0,), gpus=(1,)), tmp_path)["environment"]
    assert ("CUBLAS_WORKSPACE_CONFIG" in env) is expected


def test_no_gpu_runtime_error_is_recognised() -> None:
    assert is_no_gpu_runtime(
        Exception('500 Server Error: could not select device driver "" with capabilities: [[gpu]]')
    )
    assert not is_no_gpu_runtime(Exception("No such image: foo"))
