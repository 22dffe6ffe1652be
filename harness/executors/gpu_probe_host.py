"""The GPU probe, host side: run ``harness.workload.gpu_probe`` where a GPU image's runs will
run, and turn what it saw into a verdict with the fix.

Per GPU image and GPU count, before the image's runs, ``DockerExecutor.prepare`` starts one
container built by the same function as the runs' (``container_kwargs``: the same hardening,
user, memory limit, labels, and the device request of one slot's GPU count), with the probe as
its entry point. The probe imports torch, checks ``torch.cuda.is_available()``, the device count,
and a matmul on each GPU; its exit code and its JSON line are both checked, under a timeout.
A failed probe fails that image's GPU runs at once with ``ProbeResult.message``; the matrix
goes on with the other images. ``harness doctor`` runs the same probe (``probe_host`` on the
host's interpreter, ``run_container_probe`` in an image).

``classify`` is a pure function of the probe's output, tested with hand-made outputs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.contract import RunSpec
from harness.contract.probe_marks import GPU_PROBE_MARK
from harness.executors.base import Slot
from harness.executors.docker_kwargs import LABEL_CELL
from harness.executors.docker_outcome import NO_GPU_RUNTIME_HINT, is_no_gpu_runtime
from harness.subprocesses import ToolError, ToolTimedOut, run_tool

#: The module the probe container runs (it is in every workload image, under harness/workload).
PROBE_MODULE = "harness.workload.gpu_probe"
#: How long the probe may take: a container start, torch's import and CUDA's initialisation.
PROBE_TIMEOUT_S = 180.0
#: The cell label of a probe container (cleanup finds it by the run label like any other).
PROBE_CELL = "gpu-probe"

DRIVER_HINT = (
    "upgrade the host's NVIDIA driver to one that supports this CUDA, or use an image built "
    "for the CUDA the driver supports (nvidia-smi prints it as 'CUDA Version')"
)
KERNEL_HINT = (
    "use an image whose torch is built for this GPU's architecture (torch.cuda.get_arch_list() "
    "must list it), e.g. a newer PyTorch/CUDA image for a new GPU"
)
CPU_TORCH_HINT = "use a CUDA build of PyTorch (e.g. pytorch/pytorch:*-cuda*) for GPU cells"
COUNT_HINT = (
    "the image or the engine changes which GPUs a container sees: look for "
    "CUDA_VISIBLE_DEVICES or NVIDIA_VISIBLE_DEVICES set in the image, and the NVIDIA runtime's "
    "configuration"
)
UNAVAILABLE_HINT = (
    "check that a container sees the GPU at all (docker run --rm --gpus 1 IMAGE nvidia-smi) "
    "and that the NVIDIA Container Toolkit is installed and the engine restarted after it"
)
NO_RESULT_HINT = "run the probe by hand to see it fail: python -m harness.workload.gpu_probe N"

#: torch's words for a driver older than the CUDA it was built with
DRIVER_TOO_OLD = (
    "driver version is insufficient",
    "driver on your system is too old",
    "CUDA driver version is insufficient",
)
NO_KERNEL_IMAGE = ("no kernel image is available",)


@dataclass(frozen=True)
class ProbeResult:
    """The verdict on one (image, GPU count): ``message`` says what is wrong and the fix."""

    ok: bool
    message: str = ""
    facts: dict[str, Any] = field(default_factory=dict)


def parse_output(output: str) -> dict[str, Any] | None:
    """The probe's JSON object (its last result line), or None where it printed none."""
    for line in reversed(output.splitlines()):
        if line.startswith(GPU_PROBE_MARK):
            try:
                facts = json.loads(line[len(GPU_PROBE_MARK) :])
            except ValueError:
                return None
            return facts if isinstance(facts, dict) else None
    return None


def _version_tuple(text: str | None) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in str(text).split(".")[:2])
    except ValueError:
        return None


def _versions(facts: dict[str, Any]) -> str:
    driver = facts.get("driver_cuda") or "unknown"
    built = facts.get("cuda")
    return f"torch {facts.get('torch')}, built for CUDA {built}; driver supports CUDA {driver}"


def _said(facts: dict[str, Any]) -> str:
    """The error and torch's warnings, as one text to search and to quote."""
    return " | ".join(str(t) for t in [facts.get("error"), *facts.get("warnings", [])] if t)


def classify(facts: dict[str, Any] | None, exit_code: int, output: str, gpus: int) -> ProbeResult:
    """What the probe's output means, with the fix. Both the exit code and the JSON must say
    ok; an exit without a result line, or a result that disagrees with the exit code, fails."""
    tail = output.strip()[-1500:]
    if facts is None:
        return ProbeResult(
            False,
            f"the GPU probe exited with code {exit_code} and printed no result; its output: "
            f"{tail or '(none)'}; {NO_RESULT_HINT}",
        )
    if facts.get("ok") is True and exit_code == 0:
        return ProbeResult(True, "", facts)
    said = _said(facts)
    lowered = said.lower()
    stage = facts.get("stage")
    if exit_code == 0 or facts.get("ok") is True:
        message = f"the GPU probe's exit code {exit_code} and its result disagree ({said or stage})"
        return ProbeResult(False, f"{message}; {NO_RESULT_HINT}", facts)
    if stage == "import":
        message = f"the image's python cannot import torch ({said}); {CPU_TORCH_HINT}"
        return ProbeResult(False, message, facts)
    if any(words.lower() in lowered for words in DRIVER_TOO_OLD) or _driver_older(facts):
        message = (
            f"the NVIDIA driver is too old for this image's CUDA ({_versions(facts)}); "
            f"torch said: {said}; {DRIVER_HINT}"
        )
        return ProbeResult(False, message, facts)
    if any(words in lowered for words in NO_KERNEL_IMAGE):
        devices = ", ".join(
            f"{d.get('name')} (compute capability {d.get('capability')})"
            for d in facts.get("devices", [])
        )
        arch = ", ".join(facts.get("arch_list") or []) or "unknown"
        message = (
            f"no kernel image is available for this GPU: this torch ({_versions(facts)}) is "
            f"not compiled for {devices or 'the GPU'} (its arch list: {arch}); "
            f"torch said: {said}; {KERNEL_HINT}"
        )
        return ProbeResult(False, message, facts)
    if stage == "available" and not facts.get("cuda"):
        message = (
            f"the image's torch {facts.get('torch')} is a CPU-only build "
            f"(torch.version.cuda is None), so it cannot use a GPU; {CPU_TORCH_HINT}"
        )
        return ProbeResult(False, message, facts)
    if stage == "available":
        message = (
            f"torch.cuda.is_available() is False ({_versions(facts)}): {said}; {UNAVAILABLE_HINT}"
        )
        return ProbeResult(False, message, facts)
    if stage == "count":
        message = (
            f"device count mismatch: the run's slot has {gpus} GPU(s) but torch sees "
            f"{facts.get('device_count')} ({said}); {COUNT_HINT}"
        )
        return ProbeResult(False, message, facts)
    message = f"a matmul on the GPU failed ({_versions(facts)}): {said}; {UNAVAILABLE_HINT}"
    return ProbeResult(False, message, facts)


def _driver_older(facts: dict[str, Any]) -> bool:
    """CUDA unavailable and the driver's CUDA major version below the one torch was built for
    (within one major version, CUDA's minor version compatibility may still run it)."""
    if facts.get("stage") != "available":
        return False
    driver, built = _version_tuple(facts.get("driver_cuda")), _version_tuple(facts.get("cuda"))
    return bool(driver and built and driver[0] < built[0])


def no_gpu_runtime(exc: BaseException, runtimes: list[str]) -> ProbeResult:
    """The engine refused the GPU request: it has no GPU runtime."""
    explanation = getattr(exc, "explanation", None) or exc
    return ProbeResult(
        False,
        "this Docker engine has no GPU runtime: it refused the GPU request "
        f"(runtimes: {', '.join(runtimes) or 'none'}; engine said: {explanation}); "
        f"{NO_GPU_RUNTIME_HINT}",
    )


def probe_kwargs(
    spec: RunSpec,
    gpus: int,
    out_dir: Path,
    make_kwargs: Callable[[RunSpec, Slot, Path], dict[str, Any]],
) -> dict[str, Any]:
    """A run's container kwargs (``make_kwargs``: the executor's own, so the probe has exactly
    the runs' hardening and user) for a slot of ``gpus`` GPUs, running the probe instead."""
    kwargs = make_kwargs(spec, Slot(cpus=(), gpus=tuple(range(gpus))), out_dir)
    kwargs["entrypoint"] = ["python", "-m", PROBE_MODULE]
    kwargs["command"] = [str(gpus)]
    kwargs["labels"] = {**kwargs.get("labels", {}), LABEL_CELL: PROBE_CELL}
    return kwargs


def run_container_probe(
    client: Any,
    spec: RunSpec,
    gpus: int,
    make_kwargs: Callable[[RunSpec, Slot, Path], dict[str, Any]],
    *,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> ProbeResult:
    """Run the probe in a container as a run of ``spec`` would be run; always removes it."""
    import docker
    import requests

    from harness.executors.docker_containers import kill, remove

    out_dir = Path(tempfile.mkdtemp(prefix="harness-gpu-probe-"))
    container = None
    try:
        kwargs = probe_kwargs(spec, gpus, out_dir, make_kwargs)
        try:
            container = client.containers.create(**kwargs)
            container.start()
        except docker.errors.APIError as exc:
            if is_no_gpu_runtime(exc):
                return no_gpu_runtime(exc, sorted(client.info().get("Runtimes", {})))
            return ProbeResult(False, f"the GPU probe container did not start: {exc}")
        try:
            code = int(container.wait(timeout=timeout_s).get("StatusCode", -1))
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            kill(container)
            output = _logs(container)
            return ProbeResult(
                False,
                f"the GPU probe did not finish within {timeout_s:g} s (a hung CUDA "
                f"initialisation?); its output: {output.strip()[-1500:] or '(none)'}; "
                f"{NO_RESULT_HINT}",
                parse_output(output) or {},
            )
        output = _logs(container)
        return classify(parse_output(output), code, output, gpus)
    finally:
        if container is not None:
            remove(container)
        shutil.rmtree(out_dir, ignore_errors=True)


def _logs(container: Any) -> str:
    try:
        return str(container.logs(stdout=True, stderr=True).decode(errors="replace"))
    except Exception as exc:  # the verdict needs the output; say why there is none
        return f"(cannot read the probe's output: {exc})"


def probe_host(python: str, gpus: int, *, timeout_s: float = PROBE_TIMEOUT_S) -> ProbeResult:
    """Run the probe with ``python`` on the host (``harness doctor``, the local executor's
    interpreter): the same script, the same verdicts."""
    argv = [python, "-m", PROBE_MODULE, str(gpus)]
    try:
        done = run_tool(argv, timeout_s=timeout_s)
    except ToolTimedOut:
        return ProbeResult(False, f"the GPU probe did not finish within {timeout_s:g} s")
    except ToolError as exc:
        return ProbeResult(False, exc.message)
    output = done.stdout + done.stderr
    return classify(parse_output(done.stdout), done.returncode, output, gpus)
