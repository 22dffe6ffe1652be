"""The GPU probe: its verdicts on hand-made probe outputs (one per way a GPU image fails), the
probe script run for real on this GPU-less machine, its container kwargs (the runs' own), and,
on the real engine, the probe run in the workload image under the runs' hardening."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.contract import RunSpec
from harness.contract.probe_marks import GPU_PROBE_MARK
from harness.executors.base import ExecutorOptions, RunStatus, Slot
from harness.executors.docker import DockerExecutor
from harness.executors.docker_kwargs import LABEL_CELL
from harness.executors.docker_outcome import NO_GPU_RUNTIME_HINT
from harness.executors.gpu_probe_host import (
    PROBE_CELL,
    PROBE_MODULE,
    ProbeResult,
    classify,
    no_gpu_runtime,
    parse_output,
    probe_host,
    probe_kwargs,
    run_container_probe,
)
from harness.executors.images import WorkloadImage

IMAGE = WorkloadImage(
    base="nvcr.io/nvidia/pytorch:24.01-py3",
    tag="harness-workload:x",
    image_id="sha256:" + "1" * 64,
    base_digest="sha256:" + "2" * 64,
    base_digest_kind="repo_digest",
    code_digest="3" * 64,
    built=False,
)


def facts(**changes: Any) -> dict[str, Any]:
    """A probe result that passed on 2 H100s; ``changes`` make it the failure under test."""
    result: dict[str, Any] = {
        "ok": True,
        "expected": 2,
        "stage": "done",
        "error": None,
        "warnings": [],
        "torch": "2.3.0+cu121",
        "cuda": "12.1",
        "driver_cuda": "12.4",
        "arch_list": ["sm_80", "sm_90"],
        "device_count": 2,
        "devices": [
            {"index": 0, "name": "NVIDIA H100", "capability": "9.0"},
            {"index": 1, "name": "NVIDIA H100", "capability": "9.0"},
        ],
    }
    result.update(changes)
    return result


def output_of(result: dict[str, Any], noise: str = "some torch warning\n") -> str:
    return noise + GPU_PROBE_MARK + json.dumps(result) + "\n"


def verdict(result: dict[str, Any], code: int = 1, gpus: int = 2) -> ProbeResult:
    out = output_of(result)
    return classify(parse_output(out), code, out, gpus)


def test_a_passing_probe_is_ok() -> None:
    assert verdict(facts(), code=0) == ProbeResult(True, "", facts())


def test_driver_too_old_in_torchs_words() -> None:
    result = facts(
        ok=False,
        stage="available",
        error="torch.cuda.is_available() is False",
        warnings=[
            "CUDA initialization: The NVIDIA driver on your system is too old "
            "(found version 11040). Please update your GPU driver"
        ],
        driver_cuda="11.4",
    )
    got = verdict(result)
    assert not got.ok
    assert got.message.startswith("the NVIDIA driver is too old for this image's CUDA")
    assert "built for CUDA 12.1" in got.message and "driver supports CUDA 11.4" in got.message
    assert "upgrade the host's NVIDIA driver" in got.message


def test_driver_too_old_from_the_versions_alone() -> None:
    """No words from torch (an older torch warns nothing): the driver's CUDA major version is
    below the image's, and CUDA is unavailable."""
    result = facts(ok=False, stage="available", error="torch.cuda.is_available() is False")
    result.update(driver_cuda="11.8", cuda="12.1")
    assert verdict(result).message.startswith("the NVIDIA driver is too old")
    result.update(driver_cuda="12.0")  # same major: not called a driver problem
    assert "too old" not in verdict(result).message


def test_driver_insufficient_at_the_matmul() -> None:
    result = facts(
        ok=False,
        stage="matmul",
        error="RuntimeError: CUDA error: CUDA driver version is insufficient for CUDA runtime "
        "version",
    )
    assert verdict(result).message.startswith("the NVIDIA driver is too old")


def test_no_kernel_image_names_the_gpu_and_the_arch_list() -> None:
    result = facts(
        ok=False,
        stage="matmul",
        error="RuntimeError: CUDA error: no kernel image is available for execution on the device",
        devices=[{"index": 0, "name": "NVIDIA B200", "capability": "10.0"}],
    )
    got = verdict(result)
    assert got.message.startswith("no kernel image is available for this GPU")
    assert "NVIDIA B200 (compute capability 10.0)" in got.message
    assert "sm_80, sm_90" in got.message and "built for this GPU's architecture" in got.message


def test_a_cpu_only_torch() -> None:
    result = facts(ok=False, stage="available", cuda=None, error="is_available() is False")
    got = verdict(result)
    assert "is a CPU-only build" in got.message and "CUDA build of PyTorch" in got.message


def test_cuda_unavailable_for_another_reason() -> None:
    result = facts(ok=False, stage="available", error="torch.cuda.is_available() is False")
    got = verdict(result)
    assert got.message.startswith("torch.cuda.is_available() is False (torch 2.3.0+cu121")
    assert "NVIDIA Container Toolkit" in got.message


def test_device_count_mismatch() -> None:
    result = facts(
        ok=False, stage="count", device_count=1, error="torch.cuda.device_count() is 1, expected 2"
    )
    got = verdict(result, gpus=2)
    assert got.message.startswith("device count mismatch: the run's slot has 2 GPU(s)")
    assert "torch sees 1" in got.message and "NVIDIA_VISIBLE_DEVICES" in got.message


def test_torch_that_does_not_import() -> None:
    result = facts(ok=False, stage="import", error="ModuleNotFoundError: No module named 'torch'")
    assert verdict(result).message.startswith("the image's python cannot import torch")


def test_the_exit_code_is_checked_as_well_as_the_result() -> None:
    assert not verdict(facts(), code=1).ok  # says ok, exits 1
    assert "disagree" in verdict(facts(), code=1).message
    bad = facts(ok=False, stage="matmul", error="RuntimeError: boom")
    assert not verdict(bad, code=0).ok  # says failed, exits 0


def test_no_result_line_quotes_the_output() -> None:
    output = "Segmentation fault (core dumped)\n"
    got = classify(parse_output(output), 139, output, 1)
    assert not got.ok and "exited with code 139 and printed no result" in got.message
    assert "Segmentation fault" in got.message
    assert parse_output(GPU_PROBE_MARK + "{not json\n") is None


def test_no_gpu_runtime_says_so_with_the_fix() -> None:
    got = no_gpu_runtime(
        RuntimeError('could not select device driver "" with capabilities: [[gpu]]'), ["runc"]
    )
    assert not got.ok and got.message.startswith("this Docker engine has no GPU runtime")
    assert "runtimes: runc" in got.message and NO_GPU_RUNTIME_HINT in got.message


def test_the_probe_script_on_this_machine_fails_with_its_json_line() -> None:
    """The real script, the host's real torch, no GPU: exit 1, one parsable line, and a verdict
    (the same path ``harness doctor`` takes)."""
    got = probe_host(sys.executable, 1)
    assert not got.ok
    assert got.facts["stage"] == "available" and got.facts["torch"]
    assert "is_available() is False" in got.message or "CPU-only" in got.message


def test_the_probe_script_refuses_a_bad_count() -> None:
    from harness.workload.gpu_probe import main

    assert main(["0"]) == 2 and main(["two"]) == 2 and main([]) == 2


def executor(tmp_path: Path) -> DockerExecutor:
    """A Docker executor whose image is known, so its kwargs need no engine."""
    made = DockerExecutor(
        ExecutorOptions(run_label="lbl", data_dir=tmp_path / "mnist", memory_limit="3g")
    )
    made._images[IMAGE.base] = IMAGE
    return made


def test_the_probe_container_is_a_runs_container_with_the_probe_as_entry(tmp_path: Path) -> None:
    made = executor(tmp_path)
    spec = RunSpec(image=IMAGE.base, accelerator="gpu", devices=2, cell_id="c1")
    probe = probe_kwargs(spec, 2, tmp_path / "probe", made._container_kwargs)
    run = made._container_kwargs(spec, Slot(cpus=(), gpus=(0, 1)), tmp_path / "probe")
    assert probe["entrypoint"] == ["python", "-m", PROBE_MODULE] and probe["command"] == ["2"]
    assert probe["labels"][LABEL_CELL] == PROBE_CELL
    differ = {"entrypoint", "command", "labels"}
    assert {k: v for k, v in probe.items() if k not in differ} == {
        k: v for k, v in run.items() if k not in differ
    }
    # the hardening itself, so a change to it shows here too
    assert probe["image"] == IMAGE.image_id and probe["network_mode"] == "none"
    assert probe["cap_drop"] == ["ALL"] and probe["read_only"] is True
    assert probe["security_opt"] == ["no-new-privileges"] and probe["mem_limit"] == "3g"
    (request,) = probe["device_requests"]
    assert request["DeviceIDs"] == ["0", "1"]


def test_a_failed_probe_fails_that_images_gpu_runs_at_once(tmp_path: Path) -> None:
    """Only the GPU runs of that image and GPU count; no engine is asked (there is none)."""
    import threading

    made = executor(tmp_path)
    made._probe_failures[(IMAGE.base, 1)] = "GPU probe of image X failed: driver too old"
    gpu = RunSpec(image=IMAGE.base, accelerator="gpu", devices=1)
    outcome = made.run(
        gpu, Slot(cpus=(0,), gpus=(0,)), tmp_path, timeout_s=60, cancel=threading.Event()
    )
    assert outcome.status is RunStatus.FAILED and outcome.message.endswith("driver too old")
    assert made.probe_failure(RunSpec(image=IMAGE.base, accelerator="gpu", devices=2)) is None
    assert made.probe_failure(RunSpec(image=IMAGE.base)) is None  # a CPU run of that image
    assert made.probe_failure(RunSpec(image="other", accelerator="gpu", devices=1)) is None


@pytest.mark.docker
def test_the_probe_runs_in_the_workload_image_under_the_runs_hardening(
    client, workload_image, mnist_dir, tmp_path
) -> None:
    """On the real engine, without the GPU request (this engine has no GPU runtime): the probe
    module is in the image, runs read-only, unprivileged and offline, and its exit code and
    JSON line come back as a verdict; the container is removed."""
    made = DockerExecutor(ExecutorOptions(run_label=f"probe-{tmp_path.name}", data_dir=mnist_dir))
    made._images[workload_image.base] = workload_image

    def without_gpu_request(spec: RunSpec, slot: Slot, run_dir: Path) -> dict[str, Any]:
        kwargs = made._container_kwargs(spec, slot, run_dir)
        del kwargs["device_requests"]
        return kwargs

    spec = RunSpec(image=workload_image.base, accelerator="gpu", devices=1)
    got = run_container_probe(client, spec, 1, without_gpu_request, timeout_s=120)
    assert not got.ok
    assert got.facts["stage"] == "available" and got.facts["torch"], got.message
    assert "is_available() is False" in got.message or "CPU-only" in got.message
    assert (
        client.containers.list(all=True, filters={"label": f"harness.run={made.options.run_label}"})
        == []
    )


#: The probe's own lines on a real NVIDIA H200 (driver 580.159.04, torch 2.11.0+cu130), run by
#: hand with ``python gpu_probe.py N``: 1 GPU asked (ok), 2 asked, and CUDA_VISIBLE_DEVICES="".
H200 = {
    1: (
        0,
        '{"arch_list": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], "cuda": '
        '"13.0", "device_count": 1, "devices": [{"capability": "9.0", "index": 0, "name": '
        '"NVIDIA H200"}], "driver_cuda": "13.0", "error": null, "expected": 1, "ok": true, '
        '"stage": "done", "torch": "2.11.0+cu130", "warnings": []}',
    ),
    2: (
        1,
        '{"arch_list": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], "cuda": '
        '"13.0", "device_count": 1, "devices": [], "driver_cuda": "13.0", "error": '
        '"torch.cuda.device_count() is 1, expected 2", "expected": 2, "ok": false, "stage": '
        '"count", "torch": "2.11.0+cu130", "warnings": []}',
    ),
    0: (
        1,
        '{"arch_list": [], "cuda": "13.0", "device_count": null, "devices": [], '
        '"driver_cuda": "13.0", "error": "torch.cuda.is_available() is False", "expected": 1, '
        '"ok": false, "stage": "available", "torch": "2.11.0+cu130", "warnings": []}',
    ),
}


def test_the_verdicts_on_outputs_recorded_on_a_real_h200() -> None:
    def judge(key: int, gpus: int) -> ProbeResult:
        code, line = H200[key]
        output = GPU_PROBE_MARK + line + "\n"
        return classify(parse_output(output), code, output, gpus)

    assert judge(1, 1).ok
    assert judge(2, 2).message.startswith("device count mismatch: the run's slot has 2 GPU(s)")
    hidden = judge(0, 1).message
    assert hidden.startswith("torch.cuda.is_available() is False (torch 2.11.0+cu130, built for")
    assert "driver supports CUDA 13.0" in hidden
