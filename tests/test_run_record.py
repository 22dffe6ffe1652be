"""One run-record format: every writer's run.json validates against the one definition."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.contract import RECORD_FILE, RunSpec
from harness.contract.record import (
    EPOCH_LINE,
    Determinism,
    EpochSummary,
    ErrorType,
    Libraries,
    Provenance,
    RunError,
    RunRecord,
    epoch_line,
    failed_record,
    write_record,
)
from harness.executors.fake import write_fake_record
from harness.results.run_reader import RecordError, load_record
from harness.results.store import record_failure

REPO = Path(__file__).resolve().parents[1]


def test_the_test_executor_writes_the_one_format(tmp_path: Path):
    write_fake_record(RunSpec(cell_id="c", repeat=1), tmp_path)
    record = load_record(tmp_path)
    assert record.ok and record.written_by == "test" and record.steps == 50
    assert isinstance(record.epochs[0], EpochSummary)


def test_a_host_failure_record_is_the_one_format(tmp_path: Path):
    (tmp_path / "run.log").write_text("Traceback ...\nRuntimeError: boom\n")
    record_failure(tmp_path, RunSpec(devices=2), ErrorType.TIMEOUT, "timed out", 3.0)
    record = load_record(tmp_path)
    assert not record.ok and record.written_by == "host" and record.ranks == 2
    assert record.error == RunError("timeout", "timed out", None, record.error.log_tail)
    assert "RuntimeError: boom" in record.error.log_tail
    assert record.timing.wall_seconds == 3.0


def test_an_ok_record_of_a_run_the_host_saw_fail_becomes_failed(tmp_path: Path):
    write_fake_record(RunSpec(), tmp_path)
    record_failure(tmp_path, RunSpec(), ErrorType.KILLED, "killed by SIGKILL")
    record = load_record(tmp_path)
    assert record.status == "failed" and record.error.type == "killed"
    assert record.steps == 50  # what the run recorded is kept
    assert "after writing its record" in record.error.message


def test_the_workload_writes_the_one_format_for_a_spec_it_cannot_read(tmp_path: Path):
    (tmp_path / "spec.json").write_text(json.dumps({"placement": "sometimes"}))
    argv = [sys.executable, "-m", "harness.workload", "--spec", str(tmp_path / "spec.json")]
    result = subprocess.run(
        [*argv, "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    record = load_record(tmp_path)
    assert record.written_by == "workload" and record.error.type == "SpecError"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"format_version": 1}, "format_version 1 is not 2"),
        ({"status": "maybe"}, "status"),
        ({"steps": -1}, "steps must be >= 0"),
        ({"surprise": 1}, "surprise"),
        ({"digests": {"trajectory": None, "extra": "x"}}, "extra"),
        ({"epochs": [{"epoch": 0}]}, "steps"),
        ({"provenance": {"determinism": {"cudnn_benchmark": True}}}, "cudnn_deterministic"),
        ({"provenance": {"determinism": {"cudnn_deterministic": "sometimes"}}}, "bool"),
        ({"skipped": [3, 1]}, "skipped must be increasing"),
        ({"skipped": [-1]}, "skipped must be increasing"),
    ],
)
def test_a_record_off_the_format_is_refused(tmp_path: Path, change: dict, why: str):
    data = RunRecord(status="ok", spec={}).to_dict()
    data.update(change)
    (tmp_path / RECORD_FILE).write_text(json.dumps(data))
    with pytest.raises(RecordError, match=why):
        load_record(tmp_path)


def test_skipped_batches_are_kept_and_absent_when_there_are_none(tmp_path: Path):
    """``skipped`` (batches with no loss, issue 28 item 14): written only where a batch was
    skipped, so other records keep format 2's keys; read back as written."""
    plain = RunRecord(status="ok", spec={})
    assert "skipped" not in plain.to_dict()
    write_record(tmp_path, RunRecord(status="ok", spec={}, skipped=[2, 5]))
    assert json.loads((tmp_path / RECORD_FILE).read_text())["skipped"] == [2, 5]
    assert load_record(tmp_path).skipped == [2, 5]


def test_write_record_round_trips(tmp_path: Path):
    record = failed_record({"placement": "none"}, RunError("X", "y"), ranks=3)
    write_record(tmp_path, record)
    assert load_record(tmp_path) == record


def test_a_record_without_the_determinism_flags_still_loads(tmp_path: Path):
    """Records written before ``provenance.determinism`` existed have no such key."""
    data = RunRecord(status="ok", spec={}).to_dict()
    del data["provenance"]["determinism"]
    (tmp_path / RECORD_FILE).write_text(json.dumps(data))
    assert load_record(tmp_path).provenance.determinism is None


def test_a_record_from_before_gpu_provenance_still_loads(tmp_path: Path):
    """Records written before ``libraries``, ``determinism_ranks``, ``unavailable`` and the
    GPUs' ``sm_count``/``pci_bus_id`` existed load with null / empty in their place."""
    data = RunRecord(status="ok", spec={}).to_dict()
    for key in ("libraries", "determinism_ranks", "unavailable"):
        del data["provenance"][key]
    old_gpu = {"index": 0, "name": "A", "capability": "8.0", "memory_bytes": 1, "uuid": None}
    data["provenance"]["gpus"] = [old_gpu]
    (tmp_path / RECORD_FILE).write_text(json.dumps(data))
    provenance = load_record(tmp_path).provenance
    assert (provenance.libraries, provenance.determinism_ranks) == (None, None)
    assert (provenance.unavailable, provenance.gpus) == ({}, [old_gpu])


def test_gpu_provenance_round_trips_and_refuses_unknown_keys(tmp_path: Path):
    flags = Determinism(True, False, False, False, False, False)
    libraries = Libraries(cublas="12.4.5", cublas_path="/l/libcublas.so.12", nccl="2.21.5")
    record = RunRecord(
        status="ok",
        spec={},
        provenance=Provenance(
            determinism_ranks=[flags, flags],
            libraries=libraries,
            unavailable={"libraries.cublaslt": "not loaded"},
        ),
    )
    write_record(tmp_path, record)
    assert load_record(tmp_path) == record
    data = record.to_dict()
    data["provenance"]["libraries"]["cublas_version"] = "12"  # not in the format
    (tmp_path / RECORD_FILE).write_text(json.dumps(data))
    with pytest.raises(RecordError):
        load_record(tmp_path)


def test_the_determinism_flags_round_trip(tmp_path: Path):
    flags = Determinism(
        cudnn_deterministic=False,
        cudnn_benchmark=True,
        deterministic_algorithms=True,
        deterministic_algorithms_warn_only=True,
        matmul_allow_tf32=False,
        cudnn_allow_tf32=True,
        cublas_workspace_config=":4096:8",
    )
    record = RunRecord(status="ok", spec={}, provenance=Provenance(determinism=flags))
    write_record(tmp_path, record)
    assert load_record(tmp_path).provenance.determinism == flags


def test_the_progress_line_is_the_line_the_host_reads():
    summary = EpochSummary(epoch=2, steps=10, first_step=20, val_loss=0.5, val_acc=0.9)
    line = epoch_line(summary, 5)
    assert line.startswith("epoch 3/5 done: 10 steps, val_loss 0.500000, val_acc 0.9000")
    assert EPOCH_LINE.findall(line.encode()) == [(b"3", b"5")]
    bare = epoch_line(EpochSummary(epoch=0, steps=1, first_step=0), 1)
    assert EPOCH_LINE.search(bare.encode()) and "no validation" in bare
