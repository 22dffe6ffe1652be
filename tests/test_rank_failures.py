"""A DDP rank that fails ends its run as failed, fast, with every rank's error in the record.

CPU DDP (gloo, two processes of one thread) through a real ``harness run``, with one rank made
to fail by the test-only fault switch (``run.test_fault``, docs/workload.md): locally and in a
container. Lightning's launcher SIGKILLs rank 0 when another rank exits with an error; the
failing rank has written ``rank-<r>.error.json`` first, so the record (rank 0's, or the host's)
names that rank's error. A rank left waiting for a hung one fails after ``run.ddp_timeout_s``.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from fault_tools import Harness, no_processes_left, records, write_matrix

pytestmark = pytest.mark.slow

#: far above the few seconds a failing rank takes to end the run: a run that ends only by a
#: DDP timeout or the run's timeout is too slow for these tests
DDP_TIMEOUT_S = 600
RUN_TIMEOUT_S = 240
BOUND_S = 90
#: the DDP timeout of the hang tests; it also bounds how long rank 0 waits for the other ranks
#: to start (importing torch on a loaded CI machine takes a while), so not too short
HANG_DDP_TIMEOUT_S = 25
HANG_BOUND_S = HANG_DDP_TIMEOUT_S + 70


def ddp_matrix(path: Path, name: str, fault: str, *, ddp_timeout_s: float, image: str = "") -> Path:
    """One cell: 2 CPU ranks of one thread, 30 steps, the given fault."""
    return write_matrix(
        path,
        name,
        steps=30,
        timeout_s=RUN_TIMEOUT_S,
        image=image or None,
        run_extra=f", ddp_timeout_s: {ddp_timeout_s}, test_fault: {fault}",
        tail="  devices: [2]\n",
    )


def run_to_the_end(harness: Harness) -> tuple[int, float]:
    start = time.monotonic()
    try:
        code = harness.finish(timeout=RUN_TIMEOUT_S + 120)
    finally:
        harness.kill()
    return code, time.monotonic() - start


def the_record(out: Path):
    (record,) = records(out).values()
    return record


def assert_rank_1_raised(out: Path, record, text: str) -> None:
    assert record.status == "failed"
    assert record.error.type == "InjectedFault", record.error
    assert record.error.message == "rank 1: test fault: raised on rank 1 at step 3"
    ranks = {r.rank: r for r in record.error.ranks}
    assert set(ranks) == {0, 1}, record.error.ranks
    assert ranks[1].type == "InjectedFault"
    assert "test fault: raised on rank 1 at step 3" in ranks[1].message
    assert ranks[0].message  # rank 0's own error (gloo saw its peer go), or its being killed
    assert "InjectedFault" in record.error.traceback
    assert "rank 1: test fault: raised on rank 1 at step 3" in text  # the progress line
    report = (out / "report.md").read_text()
    assert "test fault: raised on rank 1 at step 3" in report


def test_a_failing_rank_fails_the_run_fast_with_both_ranks_errors_locally(tmp_path: Path):
    fault = "{kind: raise, rank: 1, step: 3}"
    matrix = ddp_matrix(tmp_path / "m.yaml", "rank-raise", fault, ddp_timeout_s=DDP_TIMEOUT_S)
    out = tmp_path / "out"
    harness = Harness(matrix, out, report=True)
    code, seconds = run_to_the_end(harness)
    assert code == 1, harness.text[-3000:]
    assert seconds < BOUND_S, harness.text[-3000:]
    assert no_processes_left(out, harness.pid) == []
    assert_rank_1_raised(out, the_record(out), harness.text)


def test_a_rank_waiting_for_a_hung_one_fails_after_the_ddp_timeout_locally(tmp_path: Path):
    """Rank 0 hangs (it is not dead: its sockets stay open); rank 1 waits in the collective
    for ``ddp_timeout_s`` (25 s here, not Lightning's 30 minutes), fails, and Lightning's
    launcher kills the hung rank 0."""
    fault = "{kind: hang, rank: 0, step: 2}"
    matrix = ddp_matrix(tmp_path / "m.yaml", "rank-hang", fault, ddp_timeout_s=HANG_DDP_TIMEOUT_S)
    out = tmp_path / "out"
    harness = Harness(matrix, out, report=True)
    code, seconds = run_to_the_end(harness)
    assert code == 1, harness.text[-3000:]
    assert seconds < HANG_BOUND_S, harness.text[-3000:]
    assert no_processes_left(out, harness.pid) == []
    record = the_record(out)
    assert record.status == "failed" and record.written_by == "host"
    ranks = {r.rank: r for r in record.error.ranks}
    assert set(ranks) == {0, 1}, record.error.ranks
    assert "timed out" in ranks[1].message.lower() or "timeout" in ranks[1].message.lower()
    assert record.error.message.startswith("rank 1: ")
    assert "after DDP rank 1 failed" in ranks[0].message  # killed by Lightning, and said so
    spec = json.loads((next(out.glob("cells/*/repeat-0")) / "spec.json").read_text())
    assert spec["ddp_timeout_s"] == HANG_DDP_TIMEOUT_S


# --- in a container -------------------------------------------------------------------------


def containers_of(client, name: str) -> list:
    from test_docker_cli import ours

    return ours(client, name)


@pytest.mark.docker
def test_a_failing_rank_fails_the_run_fast_in_a_container(client, workload_image, tmp_path):
    from conftest import BASE_IMAGE

    name = f"rank-raise-{uuid.uuid4().hex[:6]}"
    fault = "{kind: raise, rank: 1, step: 3}"
    matrix = ddp_matrix(
        tmp_path / "m.yaml", name, fault, ddp_timeout_s=DDP_TIMEOUT_S, image=BASE_IMAGE
    )
    out = tmp_path / "out"
    harness = Harness(matrix, out, "--executor", "docker", report=True)
    code, seconds = run_to_the_end(harness)
    assert code == 1, harness.text[-3000:]
    assert seconds < BOUND_S, harness.text[-3000:]
    assert containers_of(client, name) == []
    assert no_processes_left(out, harness.pid) == []
    assert_rank_1_raised(out, the_record(out), harness.text)


@pytest.mark.docker
def test_a_hung_rank_0_is_killed_in_a_container(client, workload_image, tmp_path):
    """In a container rank 0 used to be PID 1, which ignores the SIGKILL Lightning's launcher
    sends it from inside: the hung rank 0 kept the container until the run's timeout. With an
    init process as PID 1 it dies, and the run fails within the DDP timeout and a few seconds."""
    from conftest import BASE_IMAGE

    name = f"rank-hang-{uuid.uuid4().hex[:6]}"
    fault = "{kind: hang, rank: 0, step: 2}"
    matrix = ddp_matrix(
        tmp_path / "m.yaml", name, fault, ddp_timeout_s=HANG_DDP_TIMEOUT_S, image=BASE_IMAGE
    )
    out = tmp_path / "out"
    harness = Harness(matrix, out, "--executor", "docker", report=True)
    code, seconds = run_to_the_end(harness)
    assert code == 1, harness.text[-3000:]
    assert seconds < HANG_BOUND_S, harness.text[-3000:]
    assert containers_of(client, name) == []
    assert no_processes_left(out, harness.pid) == []
    record = the_record(out)
    assert record.status == "failed" and "timeout" not in record.error.type
    assert record.error.message.startswith("rank 1: "), record.error
    assert {r.rank for r in record.error.ranks} == {0, 1}
