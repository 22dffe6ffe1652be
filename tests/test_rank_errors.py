"""Without training: the rank error files and their merging into ``error.ranks``, the workload's
fallback record when building the full one fails, signals classified, and the new ``run:``
fields (``ddp_timeout_s``, ``test_fault``) reaching the spec without changing any spec, cell
id or matrix digest of a matrix that does not set them."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from harness.contract import RunSpec, SpecError
from harness.contract.record import (
    RANK_ERROR_FILE,
    RankError,
    RunError,
    read_rank_errors,
    with_rank_errors,
    write_rank_error,
)
from harness.matrix import load_matrix
from harness.results.run_reader import load_record, validate_record
from harness.results.store import record_failure

# --- rank error files ------------------------------------------------------------------------


def rank_file(run_dir: Path, rank: int, kind: str, message: str, at: float) -> None:
    write_rank_error(run_dir, rank, RunError(kind, message, f"Traceback {kind}"), at)


def test_the_host_names_the_rank_that_failed_first_and_lists_every_rank(tmp_path):
    rank_file(tmp_path, 1, "ValueError", "bad batch", at=100.0)
    record_failure(tmp_path, RunSpec(devices=2), "killed", "killed by SIGKILL after rank 1")
    error = load_record(tmp_path).error
    assert (error.type, error.message) == ("ValueError", "rank 1: bad batch")
    assert error.traceback == "Traceback ValueError"
    assert error.ranks == [
        RankError(0, "killed", "killed by SIGKILL after rank 1"),
        RankError(1, "ValueError", "bad batch"),
    ]


def test_the_earliest_rank_error_is_the_runs_error(tmp_path):
    rank_file(tmp_path, 0, "RuntimeError", "Connection closed by peer", at=200.0)
    rank_file(tmp_path, 1, "IndexError", "index 7 is out of bounds", at=100.0)
    record_failure(tmp_path, RunSpec(devices=2), "killed", "killed by SIGKILL")
    error = load_record(tmp_path).error
    assert (error.type, error.message) == ("IndexError", "rank 1: index 7 is out of bounds")
    assert [(r.rank, r.type) for r in error.ranks] == [(0, "RuntimeError"), (1, "IndexError")]


def test_ranks_stopped_by_the_harness_do_not_replace_its_error(tmp_path):
    """A timeout stops every rank with SIGINT: the run's error stays the timeout."""
    rank_file(tmp_path, 1, "Interrupted", "interrupted by SIGINT (Ctrl-C)", at=1.0)
    record_failure(tmp_path, RunSpec(devices=2), "timeout", "timed out after 5 s")
    error = load_record(tmp_path).error
    assert (error.type, error.message) == ("timeout", "timed out after 5 s")
    assert [r.rank for r in error.ranks] == [0, 1]


def test_a_run_the_host_stopped_keeps_the_hosts_error(tmp_path):
    rank_file(tmp_path, 1, "RuntimeError", "Timed out waiting 40000ms for recv", at=1.0)
    spec = RunSpec(devices=2)
    record_failure(tmp_path, spec, "timeout", "timed out after 240 s", first_rank_error=False)
    error = load_record(tmp_path).error
    assert (error.type, error.message) == ("timeout", "timed out after 240 s")
    assert [(r.rank, r.type) for r in error.ranks] == [(0, "timeout"), (1, "RuntimeError")]


def test_the_workloads_own_failed_record_keeps_its_error_and_gains_the_ranks(tmp_path):
    from harness.contract.record import failed_record, write_record

    own = RunError("DataError", "bad MNIST", "tb")
    write_record(tmp_path, failed_record({"devices": 2}, own, ranks=2, written_by="workload"))
    rank_file(tmp_path, 1, "RuntimeError", "Connection closed by peer", at=1.0)
    record_failure(tmp_path, RunSpec(devices=2), "failed", "exited with code 1")
    record = load_record(tmp_path)
    assert (record.error.type, record.error.message) == ("DataError", "bad MNIST")
    assert [(r.rank, r.type) for r in record.error.ranks] == [(0, "DataError"), (1, "RuntimeError")]
    assert record.written_by == "workload"


def test_a_single_process_run_has_no_ranks_and_ignores_rank_files(tmp_path):
    rank_file(tmp_path, 0, "ValueError", "x", at=1.0)
    record_failure(tmp_path, RunSpec(), "killed", "killed by SIGKILL")
    error = load_record(tmp_path).error
    assert (error.type, error.ranks) == ("killed", None)


def test_records_without_ranks_still_load():
    data = {"status": "failed", "spec": {}, "error": {"type": "x", "message": "y"}}
    assert validate_record(data).error.ranks is None


def test_rank_files_that_are_not_regular_files_or_not_the_format_are_left_out(tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"rank": 0, "type": "T", "message": "SECRET", "time": 1}))
    (tmp_path / RANK_ERROR_FILE.format(rank=0)).symlink_to(secret)
    os.mkfifo(tmp_path / RANK_ERROR_FILE.format(rank=1))
    (tmp_path / RANK_ERROR_FILE.format(rank=2)).write_text('{"rank": 3, "type": "T"}')
    (tmp_path / RANK_ERROR_FILE.format(rank=3)).write_bytes(b"\xff not json")
    rank_file(tmp_path, 4, "ValueError", "m" * 10_000, at=1.0)
    found = read_rank_errors(tmp_path, 5)
    assert [f.rank for f in found] == [4]
    assert len(found[0].error.message) == 4000  # capped


def test_without_failures_the_error_is_unchanged():
    error = RunError("x", "y")
    assert with_rank_errors(error, []) is error


# --- the workload's record when building the full one fails -----------------------------------


def failing_state(monkeypatch):
    from harness.workload.record_builder import RunState

    state = RunState(world_size=1)
    state.init_digest = "a" * 64
    state.error = RunError("AcceleratorError", "CUDA error: device-side assert triggered", "tb")

    def sticky(ranks: int) -> np.ndarray:
        raise RuntimeError("CUDA error: device-side assert triggered (again)")

    monkeypatch.setattr(state.recorder, "losses", sticky)
    return state


def test_a_failure_while_building_the_record_still_gives_the_first_error(tmp_path, monkeypatch):
    from harness.workload.record_builder import finished_record

    state = failing_state(monkeypatch)
    record = finished_record(RunSpec(), tmp_path, state, [], 0.0, "2026-01-01T00:00:00+00:00")
    assert record.status == "failed"
    assert (record.error.type, record.error.message) == (
        "AcceleratorError",
        "CUDA error: device-side assert triggered",
    )
    assert record.digests.init_weights == "a" * 64
    assert record.timing.wall_seconds is not None


def test_an_ok_run_whose_record_cannot_be_built_is_failed_with_that_error(tmp_path, monkeypatch):
    from harness.workload.record_builder import finished_record

    state = failing_state(monkeypatch)
    state.error = None
    record = finished_record(RunSpec(), tmp_path, state, [], 0.0, "2026-01-01T00:00:00+00:00")
    assert record.status == "failed" and record.error.type == "RuntimeError"
    assert "device-side assert triggered (again)" in record.error.message


# --- signals --------------------------------------------------------------------------------


def test_sigterm_raises_terminated_once_installed():
    from harness.workload import signals

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        signals.install()
        with pytest.raises(signals.Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)  # let the handler run
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def test_what_ended_the_run_is_classified():
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from harness.workload import signals

    assert signals.classify(SIGTERMException()).type == "Terminated"
    assert signals.classify(signals.Terminated()).message == "terminated by SIGTERM"
    assert signals.classify(KeyboardInterrupt()).type == "Interrupted"
    assert signals.classify(SystemExit(3)).type == "SystemExit"
    signals.received.sigint = True
    try:
        # Lightning's answer to Ctrl-C: sys.exit(1) after its graceful shutdown
        assert signals.classify(SystemExit(1)).type == "Interrupted"
    finally:
        signals.received.sigint = False
    error = signals.classify(ValueError("bad"))
    assert (error.type, error.message) == ("ValueError", "bad") and "ValueError" in error.traceback


# --- run: fields into the spec ----------------------------------------------------------------


def matrix(tmp_path: Path, run: str, axes: str = "devices: [1, 2]"):
    path = tmp_path / "m.yaml"
    path.write_text(f"name: t\nrun: {{{run}}}\naxes: {{{axes}}}\n")
    return load_matrix(path)


def test_unset_run_fields_change_no_spec_cell_id_or_digest(tmp_path):
    plain = matrix(tmp_path, "repeats: 1")
    assert all(
        "test_fault" not in c.spec(0).to_dict() and "ddp_timeout_s" not in c.spec(0).to_dict()
        for c in plain.cells
    )
    timed = matrix(tmp_path, "repeats: 1, ddp_timeout_s: 60")
    assert timed.digest == plain.digest  # a limit, like timeout_s
    assert [c.id for c in timed.cells] == [c.id for c in plain.cells]
    faulty = matrix(tmp_path, "repeats: 1, test_fault: {kind: raise, rank: 1, step: 3}")
    assert faulty.digest != plain.digest
    assert [c.id for c in faulty.cells] == [c.id for c in plain.cells]


def test_ddp_timeout_reaches_only_ddp_cells_and_the_fault_every_cell(tmp_path):
    loaded = matrix(tmp_path, "ddp_timeout_s: 60, test_fault: {kind: hang}")
    one, two = (c.spec(0) for c in loaded.cells)
    assert (one.devices, one.ddp_timeout_s, two.ddp_timeout_s) == (1, None, 60.0)
    assert one.test_fault == two.test_fault == {"kind": "hang", "rank": 0, "step": 0}
    again = RunSpec.from_dict(json.loads(json.dumps(two.to_dict())))
    assert again == two


def test_the_ddp_timeout_reaches_the_strategy():
    from harness.workload.training import ddp_timeout

    assert ddp_timeout(RunSpec(devices=2, ddp_timeout_s=12.5)).total_seconds() == 12.5
    assert ddp_timeout(RunSpec(devices=2)).total_seconds() == 180.0


@pytest.mark.parametrize(
    "changes",
    [
        {"ddp_timeout_s": 0},
        {"ddp_timeout_s": True},
        {"ddp_timeout_s": float("inf")},
        {"test_fault": {"kind": "explode"}},
        {"test_fault": {"kind": "raise", "rank": -1}},
        {"test_fault": {"kind": "raise", "when": 1}},
        {"test_fault": "raise"},
    ],
)
def test_bad_run_fields_are_spec_errors(changes):
    with pytest.raises(SpecError):
        RunSpec(**changes)
