"""Slots: which cores and GPUs each run holds, and running jobs side by side without
oversubscribing.

A run needs ``threads x devices`` cores (one torch process per device, each with ``threads``
threads) and, for GPU cells, ``devices`` GPU ids. Jobs start in plan order; when the next job
does not fit, a later one that fits may go first (backfill), so slots do not sit idle.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

from harness.contract import RunSpec
from harness.errors import HarnessError
from harness.executors.base import Slot
from harness.run.gpu_packing import Device
from harness.subprocesses import ToolError, ToolNotFound, run_tool

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Host:
    """What this machine offers: cores the harness may use and GPU ids."""

    cpus: tuple[int, ...]
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class Need:
    cores: int
    gpus: int


def need_of(spec: RunSpec) -> Need:
    return Need(
        cores=spec.threads * spec.devices, gpus=spec.devices if spec.accelerator == "gpu" else 0
    )


def parse_gpu_list(text: str) -> tuple[int, ...]:
    """``0,1`` -> (0, 1); used for --gpus and CUDA_VISIBLE_DEVICES."""
    try:
        return tuple(int(p) for p in text.split(",") if p.strip() != "")
    except ValueError as exc:
        raise HarnessError(f"cannot read GPU list {text!r}", "write GPU ids like 0,1") from exc


def detect_host(gpus: str | None = None) -> Host:
    """Cores from the affinity mask; GPUs from --gpus, CUDA_VISIBLE_DEVICES or nvidia-smi -L."""
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    if gpus is not None:
        return Host(cpus, parse_gpu_list(gpus))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return Host(cpus, parse_gpu_list(visible))
    return Host(cpus, _nvidia_smi_gpus())


#: Seconds ``nvidia-smi -L`` may take before the GPUs count as unseen.
NVIDIA_SMI_TIMEOUT_S = 20
NO_NVIDIA_SMI = "nvidia-smi not found"


def nvidia_gpus() -> tuple[list[str], str | None]:
    """``nvidia-smi -L``'s GPU lines, or why there are none (shared by slots and doctor)."""
    try:
        proc = run_tool(["nvidia-smi", "-L"], timeout_s=NVIDIA_SMI_TIMEOUT_S)
    except ToolNotFound:
        return [], NO_NVIDIA_SMI
    except ToolError as exc:
        return [], f"nvidia-smi -L failed: {exc.message}"
    if proc.returncode != 0:
        return [], f"nvidia-smi -L exited {proc.returncode}: {proc.stderr.strip()[:300]}"
    return [ln.strip() for ln in proc.stdout.splitlines() if ln.startswith("GPU ")], None


def gpu_device() -> Device | None:
    """This machine's GPU model and memory (``nvidia-smi --query-gpu``), for
    ``--runs-per-gpu auto``; None where it cannot be read or the GPUs are not all alike."""
    query = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
    try:
        proc = run_tool(query, timeout_s=NVIDIA_SMI_TIMEOUT_S)
    except (ToolNotFound, ToolError):
        return None
    rows = {line.strip() for line in proc.stdout.splitlines() if line.strip()}
    if proc.returncode != 0 or len(rows) != 1 or "," not in next(iter(rows)):
        return None
    name, mib = (part.strip() for part in next(iter(rows)).rsplit(",", 1))
    try:
        return Device(name, int(float(mib)) * 1024 * 1024)
    except ValueError:
        return None


def _nvidia_smi_gpus() -> tuple[int, ...]:
    lines, error = nvidia_gpus()
    if error is not None and error != NO_NVIDIA_SMI:
        log.warning("%s", error)
    return tuple(range(len(lines)))


def check_fits(specs: Sequence[RunSpec], host: Host) -> None:
    """Plan-time check: every run fits this host on its own, or a HarnessError says why."""
    for spec in specs:
        need = need_of(spec)
        if need.cores > len(host.cpus):
            raise HarnessError(
                f"cell {spec.cell_name} needs {need.cores} cores (threads {spec.threads} x "
                f"devices {spec.devices}) but this host gives the harness {len(host.cpus)}",
                "lower run.threads or devices in the matrix, or run on a bigger machine",
            )
        if need.gpus > 1 and len(set(host.gpus)) < len(host.gpus):
            raise HarnessError(
                f"cell {spec.cell_name} uses {need.gpus} GPUs (DDP), but --gpus names a GPU "
                "more than once (to run several 1-GPU runs side by side on it)",
                "name each GPU once for a matrix with DDP cells",
            )
        if need.gpus > len(host.gpus):
            raise HarnessError(
                f"cell {spec.cell_name} needs {need.gpus} GPU(s) but this host has "
                f"{len(host.gpus)}",
                "run on a GPU host, pass --gpus 0,1 to name the GPUs, or exclude GPU cells",
            )


class SlotPool:
    """Free cores and GPUs; ``acquire`` hands out disjoint slots, ``release`` returns them."""

    def __init__(self, host: Host) -> None:
        self._free_cpus = list(host.cpus)
        self._free_gpus = list(host.gpus)
        self._lock = threading.Lock()

    def acquire(self, need: Need) -> Slot | None:
        with self._lock:
            if need.cores > len(self._free_cpus) or need.gpus > len(self._free_gpus):
                return None
            cpus, self._free_cpus = self._free_cpus[: need.cores], self._free_cpus[need.cores :]
            gpus, self._free_gpus = self._free_gpus[: need.gpus], self._free_gpus[need.gpus :]
            return Slot(tuple(cpus), tuple(gpus))

    def release(self, slot: Slot) -> None:
        with self._lock:
            self._free_cpus = sorted(self._free_cpus + list(slot.cpus))
            self._free_gpus = sorted(self._free_gpus + list(slot.gpus))


@dataclass
class Job(Generic[T]):
    item: T
    need: Need


def run_jobs(
    jobs: Sequence[Job[T]],
    pool: SlotPool,
    work: Callable[[T, Slot], R],
    cancel: threading.Event,
    on_done: Callable[[T, R | BaseException], None] | None = None,
    on_tick: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
) -> list[tuple[T, R | BaseException]]:
    """Run every job once its slot is free; stop starting new ones once ``cancel`` is set, or
    ``stop`` (which, unlike ``cancel``, lets the runs in flight finish: no executor watches it).

    ``work`` runs in a worker thread (executors block); its exception becomes that job's
    result, so one bad job never stops the others. An exception here (in ``on_tick``,
    ``on_done``, the loop itself) sets ``cancel`` before it propagates, so the runs in flight
    stop instead of running to their end.
    """
    pending = list(jobs)
    running: dict[Future[R], tuple[Job[T], Slot]] = {}
    results: list[tuple[T, R | BaseException]] = []
    workers = max(1, len(jobs))
    with ThreadPoolExecutor(max_workers=min(workers, 64), thread_name_prefix="run") as threads:
        try:
            while pending or running:
                if not cancel.is_set() and not (stop is not None and stop.is_set()):
                    for job in list(pending):
                        slot = pool.acquire(job.need)
                        if slot is not None:
                            pending.remove(job)
                            running[threads.submit(work, job.item, slot)] = (job, slot)
                else:
                    pending.clear()
                if not running:
                    if pending:  # nothing runs and nothing fits: check_fits should prevent this
                        raise HarnessError(
                            "a run does not fit this host's free slots", "lower threads or devices"
                        )
                    break
                done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                if on_tick is not None:
                    on_tick()
                for future in done:
                    job, slot = running.pop(future)
                    pool.release(slot)
                    try:
                        result: R | BaseException = future.result()
                    except Exception as exc:  # becomes the job's outcome
                        log.exception("run crashed in the harness")
                        result = exc
                    results.append((job.item, result))
                    if on_done is not None:
                        on_done(job.item, result)
        except BaseException:
            # The harness itself failed (not a run: a run's exception is its result). Stop the
            # runs in flight, whose executors watch ``cancel``, before the pool waits for them.
            cancel.set()
            raise
    return results
