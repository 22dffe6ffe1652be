"""Slots and side-by-side runs, with the fake executor (no training)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from harness.contract import RunSpec
from harness.errors import HarnessError
from harness.executors import ExecutorOptions, choose_executor, get_executor_class
from harness.executors.fake import FakeExecutor
from harness.schedule import Host, Job, SlotPool, check_fits, need_of, parse_gpu_list, run_jobs


def run_fake(tmp_path: Path, specs: list[RunSpec], host: Host) -> FakeExecutor:
    fake = FakeExecutor(ExecutorOptions("t"), seconds=0.2)
    cancel = threading.Event()

    def work(spec: RunSpec, slot):
        run_dir = tmp_path / f"{spec.cell_name}-{spec.repeat}"
        run_dir.mkdir()
        return fake.run(spec, slot, run_dir, timeout_s=60, cancel=cancel)

    results = run_jobs([Job(s, need_of(s)) for s in specs], SlotPool(host), work, cancel)
    assert len(results) == len(specs) and all(r.ok for _, r in results)
    return fake


def test_runs_go_side_by_side_without_sharing_cores(tmp_path: Path):
    specs = [RunSpec(threads=1, repeat=k, cell_name="a") for k in range(6)]
    specs += [RunSpec(threads=2, repeat=k, cell_name="b") for k in range(2)]
    fake = run_fake(tmp_path, specs, Host(cpus=(0, 1, 2, 3)))
    assert fake.max_concurrency == 4
    assert fake.overlaps == []


def test_gpu_runs_get_disjoint_gpus(tmp_path: Path):
    specs = [
        RunSpec(accelerator="gpu", devices=d, repeat=k, cell_name=f"g{d}")
        for d in (1, 2)
        for k in range(3)
    ]
    fake = run_fake(tmp_path, specs, Host(cpus=tuple(range(8)), gpus=(0, 1, 2)))
    assert fake.overlaps == []
    assert 2 <= fake.max_concurrency <= 3


def test_slot_pool_never_oversubscribes():
    pool = SlotPool(Host(cpus=(0, 1, 2), gpus=(5,)))
    a = pool.acquire(need_of(RunSpec(threads=2)))
    assert a is not None and a.cpus == (0, 1)
    assert pool.acquire(need_of(RunSpec(threads=2))) is None
    g = pool.acquire(need_of(RunSpec(accelerator="gpu")))
    assert g is not None and g.gpus == (5,) and g.cpus == (2,)
    assert pool.acquire(need_of(RunSpec())) is None
    pool.release(a)
    assert pool.acquire(need_of(RunSpec(threads=2))) == a


def test_plan_time_errors_name_the_cell_and_the_fix():
    with pytest.raises(HarnessError, match="needs 4 cores") as info:
        check_fits([RunSpec(threads=2, devices=2, cell_name="big")], Host(cpus=(0, 1)))
    assert "threads" in info.value.hint
    with pytest.raises(HarnessError, match="GPU"):
        check_fits([RunSpec(accelerator="gpu")], Host(cpus=(0, 1)))
    assert parse_gpu_list("0,2") == (0, 2)


def test_registry_is_lazy_and_suggests_names():
    assert get_executor_class("fake") is FakeExecutor
    with pytest.raises(HarnessError, match="unknown executor") as info:
        get_executor_class("locl")
    assert "did you mean 'local'" in info.value.hint
    assert choose_executor("auto", {"local"}) == "local"
    assert choose_executor("auto", {"pytorch/pytorch:2.5.1"}) == "docker"
    # The Docker executor runs `local` specs as local processes: a mixed matrix goes to it.
    assert choose_executor("auto", {"local", "pytorch/pytorch:2.5.1"}) == "docker"
