"""Slots and side-by-side runs, with the fake executor (no training)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.contract import RunSpec
from harness.errors import HarnessError
from harness.executors import ExecutorOptions, choose_executor, get_executor_class
from harness.executors.base import RunStatus, Slot
from harness.executors.fake import FakeExecutor
from harness.run.schedule import Host, Job, SlotPool, check_fits, need_of, parse_gpu_list, run_jobs

#: Seconds a test waits for runs to be in flight before it fails: generous, since a loaded
#: machine may be slow to start threads; a correct scheduler reaches the count in milliseconds.
IN_FLIGHT_TIMEOUT = 60.0


def run_held(tmp_path: Path, specs: list[RunSpec], host: Host, in_flight: int):
    """Schedule ``specs`` on ``host`` with every fake run held until ``in_flight`` of them run at
    once; then let them all finish. Returns the executor and the slots held at that moment.

    No clock decides anything: the runs wait on an event the test sets only after the executor
    saw ``in_flight`` runs start; a scheduler that never gets there fails after the timeout."""
    hold = threading.Event()
    fake = FakeExecutor(ExecutorOptions("t"), seconds=0, hold=hold)
    cancel = threading.Event()

    def work(spec: RunSpec, slot):
        run_dir = tmp_path / f"{spec.cell_name}-{spec.repeat}"
        run_dir.mkdir()
        return fake.run(spec, slot, run_dir, timeout_s=IN_FLIGHT_TIMEOUT * 2, cancel=cancel)

    jobs = [Job(s, need_of(s)) for s in specs]
    with ThreadPoolExecutor(max_workers=1) as scheduler:
        scheduled = scheduler.submit(run_jobs, jobs, SlotPool(host), work, cancel)
        try:
            held = fake.wait_for_running(in_flight, timeout=IN_FLIGHT_TIMEOUT)
        except TimeoutError as exc:
            cancel.set()
            pytest.fail(f"the scheduler never ran {in_flight} side by side: {exc}")
        finally:
            hold.set()
        results = scheduled.result(timeout=IN_FLIGHT_TIMEOUT)
    assert len(results) == len(specs) and all(r.ok for _, r in results)
    return fake, held


def disjoint(slots: list[Slot]) -> bool:
    cpus = [c for s in slots for c in s.cpus]
    gpus = [g for s in slots for g in s.gpus]
    return len(cpus) == len(set(cpus)) and len(gpus) == len(set(gpus))


def test_runs_go_side_by_side_without_sharing_cores(tmp_path: Path):
    specs = [RunSpec(threads=1, repeat=k, cell_name="a") for k in range(6)]
    specs += [RunSpec(threads=2, repeat=k, cell_name="b") for k in range(2)]
    fake, held = run_held(tmp_path, specs, Host(cpus=(0, 1, 2, 3)), in_flight=4)
    # Four one-core runs held at once, one per core; never more than the four cores allow.
    assert sorted(s.cpus for s in held) == [(0,), (1,), (2,), (3,)]
    assert fake.max_concurrency == 4
    # Every run was checked, as it started, against every run then in flight.
    assert fake.overlaps == []
    assert len(fake.calls) == len(specs)


def test_gpu_runs_get_disjoint_gpus(tmp_path: Path):
    specs = [
        RunSpec(accelerator="gpu", devices=d, repeat=k, cell_name=f"g{d}")
        for d in (1, 2)
        for k in range(3)
    ]
    host = Host(cpus=tuple(range(8)), gpus=(0, 1, 2))
    fake, held = run_held(tmp_path, specs, host, in_flight=3)
    # The three one-GPU runs at once, one GPU each; a two-GPU run never beside another.
    assert disjoint(held) and sorted(s.gpus for s in held) == [(0,), (1,), (2,)]
    assert fake.max_concurrency == 3
    assert fake.overlaps == []
    assert len(fake.calls) == len(specs)


def test_a_held_fake_run_ends_on_cancel_or_timeout(tmp_path: Path):
    """The hold never outlasts its run: cancel aborts it, its timeout ends it."""
    fake = FakeExecutor(ExecutorOptions("t"), seconds=0, hold=threading.Event())
    cancelled = threading.Event()
    cancelled.set()
    slot = Slot(cpus=(0,), gpus=())
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    aborted = fake.run(RunSpec(), slot, tmp_path / "a", timeout_s=60, cancel=cancelled)
    assert aborted.status is RunStatus.ABORTED
    timed_out = fake.run(RunSpec(), slot, tmp_path / "b", timeout_s=0.05, cancel=threading.Event())
    assert timed_out.status is RunStatus.TIMEOUT
    assert fake.running == [] and fake.overlaps == []
    with pytest.raises(TimeoutError, match="never 1"):
        fake.wait_for_running(1, timeout=0.01)


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


def test_a_gpu_named_n_times_takes_n_one_gpu_runs_side_by_side_but_no_ddp_run():
    """``--gpus 0,0,0`` is how scripts/gpu-check.sh runs several short 1-GPU runs on one GPU."""
    host = Host(cpus=(0, 1, 2, 3), gpus=parse_gpu_list("0,0,0"))
    pool = SlotPool(host)
    gpu = need_of(RunSpec(accelerator="gpu"))
    slots = [pool.acquire(gpu) for _ in range(3)]
    assert [s.gpus for s in slots if s is not None] == [(0,), (0,), (0,)]
    assert pool.acquire(gpu) is None
    check_fits([RunSpec(accelerator="gpu")], host)
    with pytest.raises(HarnessError, match="more than once"):  # would see GPU 0 as two ranks
        check_fits([RunSpec(accelerator="gpu", devices=2, cell_name="ddp")], host)


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
