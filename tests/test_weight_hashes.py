"""Per-step parameter hashes (weights.npy): the record's field, the host's reader, the first
weight divergence and how the report shows it beside the losses', on hand-made records; and
the hashes themselves on small tensors (no training: the real runs' weights.npy is checked in
tests/test_workload_runs.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_report import base_losses, make_cell, make_results, write_run

from harness.contract import WEIGHTS_FILE
from harness.contract.record import RunRecord, WeightDigests, write_record
from harness.report import analyze
from harness.report.exporters import render_json
from harness.report.markdown import render_markdown
from harness.report.trajectories import differing_parameters, first_weight_divergence
from harness.results.run_reader import RecordError, load_record, load_weight_hashes

PARAMS = ["model.1.weight", "model.1.bias", "model.3.weight", "model.3.bias"]
STEPS = len(base_losses())


def hashes(seed: int = 0, steps: int = STEPS) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**63, (steps, len(PARAMS))).astype("<u8")


def add_weights(
    root: Path, cell: dict, repeat: int, rows: np.ndarray, *, kind: str = "hash_tensor"
) -> Path:
    """Give a run that write_run made a weights.npy and run.json's ``weights``."""
    run_dir = root / cell["dir"] / f"repeat-{repeat}"
    np.save(run_dir / WEIGHTS_FILE, rows)
    data = json.loads((run_dir / "run.json").read_text())
    data["weights"] = {"parameters": PARAMS, "hash": kind}
    data["files"] = {"losses": "losses.npy", "weights": WEIGHTS_FILE}
    (run_dir / "run.json").write_text(json.dumps(data))
    return run_dir


def diverged(rows: np.ndarray, step: int, column: int) -> np.ndarray:
    """``rows`` with every row from ``step`` on changed in ``column`` (and later ones after)."""
    out = rows.copy()
    out[step:, column] ^= np.uint64(1)
    out[step + 1 :, :] ^= np.uint64(2)
    return out


def test_first_weight_divergence_is_the_first_differing_row_over_the_common_length():
    a = hashes()
    assert first_weight_divergence(a, a.copy()) is None
    assert first_weight_divergence(a, diverged(a, 37, 2)) == 37
    assert first_weight_divergence(a, diverged(a, 0, 0)) == 0
    assert first_weight_divergence(a, diverged(a, STEPS - 1, 3)) == STEPS - 1
    assert first_weight_divergence(a, a[:50].copy()) is None  # equal as far as both go
    assert first_weight_divergence(a[:50], diverged(a, 49, 1)) == 49
    with pytest.raises(ValueError):
        first_weight_divergence(a, a[:, :3])


def test_differing_parameters_names_each_column_that_differs_in_order():
    a = hashes()
    b = diverged(a, 5, 2)
    assert differing_parameters(a[5], b[5], PARAMS) == ["model.3.weight"]
    assert differing_parameters(a[6], b[6], PARAMS) == PARAMS
    assert differing_parameters(a[4], b[4], PARAMS) == []


def _cells(root: Path) -> tuple[dict, dict]:
    """A cell whose weights part at step 10 and losses at 75 (the threads case), and one whose
    weights and losses part at the same step."""
    early = make_cell("early", placement="none")
    same = make_cell("same", placement="before_trainer")
    make_results(root, [early, same], repeats=2)
    base, rows = base_losses(), hashes()
    later = base.copy()
    later[75:] += 0.001
    for cell, step in ((early, 10), (same, 75)):
        write_run(root, cell, 0, base)
        write_run(root, cell, 1, later, final="w2")
        add_weights(root, cell, 0, rows)
        add_weights(root, cell, 1, diverged(rows, step, 2))
    return early, same


def test_the_report_shows_the_weights_first_divergence_beside_the_losses(tmp_path: Path):
    _cells(tmp_path)
    report = analyze(tmp_path)
    cells = {c.name: c for c in report.cells}
    early = cells["early"]
    assert early.verdict == "diverges" and early.first_divergence.step == 75
    w = early.weights_divergence
    assert early.weights_compared is True
    assert (w.repeat, w.step, w.epoch, w.batch, w.parameter) == (1, 10, 0, 10, "model.3.weight")
    assert cells["same"].weights_divergence.step == 75
    data = {c["name"]: c for c in json.loads(render_json(report))["cells"]}
    assert data["early"]["weights_divergence"] == {
        "repeat": 1,
        "step": 10,
        "epoch": 0,
        "batch": 10,
        "parameter": "model.3.weight",
        "copy": None,
    }
    assert data["early"]["runs"][0]["weights_parameters"] == PARAMS
    rows = {line.split("|")[-2].strip(): line for line in _cell_rows(report)}
    assert "1 / 15 / 75 (weights: step 10)" in rows["early"]
    # the same step: the losses' column as it always was
    assert "1 / 15 / 75 |" in rows["same"] and "weights:" not in rows["same"]


def _cell_rows(report) -> list[str]:
    text = render_markdown(report).decode()
    return [line for line in text.splitlines() if line.startswith("| ") and "nbsp;" in line]


def test_weights_that_differ_under_equal_losses_are_shown_and_the_verdict_stays(tmp_path: Path):
    cell = make_cell("hidden", placement="before_trainer")
    make_results(tmp_path, [cell], repeats=3)
    rows = hashes()
    write_run(tmp_path, cell, 0, base_losses())
    add_weights(tmp_path, cell, 0, rows)
    for k, step in ((1, 3), (2, 9)):  # the earliest over all repeats counts
        write_run(tmp_path, cell, k, base_losses(), final="w2")
        add_weights(tmp_path, cell, k, diverged(rows, step, 0))
    report = analyze(tmp_path)
    (only,) = report.cells
    assert only.verdict == "diverges" and only.first_divergence is None
    assert (only.weights_divergence.step, only.weights_divergence.repeat) == (3, 1)
    assert only.weights_divergence.parameter == "model.1.weight"
    assert "| weights: step 3 |" in _cell_rows(report)[0]


def test_older_records_and_damaged_or_incomparable_files_leave_the_verdict_alone(
    tmp_path: Path,
):
    early, same = _cells(tmp_path)
    before = analyze(tmp_path)
    # older records: no weights field, no file
    for k in range(2):
        run_dir = tmp_path / early["dir"] / f"repeat-{k}"
        data = json.loads((run_dir / "run.json").read_text())
        del data["weights"]
        (run_dir / "run.json").write_text(json.dumps(data))
        os.unlink(run_dir / WEIGHTS_FILE)
    # a damaged file: one row short
    damaged = tmp_path / same["dir"] / "repeat-1" / WEIGHTS_FILE
    np.save(damaged, hashes()[:-1])
    report = analyze(tmp_path)
    for cell, old in zip(report.cells, before.cells, strict=True):
        assert cell.weights_divergence is None and cell.weights_compared is False
        assert (cell.verdict, cell.first_divergence) == (old.verdict, old.first_divergence)
    text = render_markdown(report).decode()
    assert "(weights:" not in text and "| weights:" not in text
    # hashes of another kind are not compared
    np.save(damaged, diverged(hashes(), 75, 2))
    add_weights(tmp_path, same, 1, diverged(hashes(), 75, 2), kind="weighted_sum")
    assert {c.name: c.weights_compared for c in analyze(tmp_path).cells}["same"] is False


def test_a_cell_that_reproduces_does_not_read_its_weights_again(tmp_path: Path):
    cell = make_cell("fine", placement="before_model")
    make_results(tmp_path, [cell], repeats=2)
    for k in range(2):
        write_run(tmp_path, cell, k, base_losses())
        # hashes that differ, which the report would find if it read them
        add_weights(tmp_path, cell, k, diverged(hashes(), 7, 1) if k else hashes())
    (only,) = analyze(tmp_path).cells
    assert only.verdict == "reproduces"
    assert only.weights_divergence is None and only.weights_compared is False


def _record(tmp_path: Path, rows: np.ndarray | None) -> tuple[Path, RunRecord]:
    record = RunRecord(status="ok", spec={}, steps=STEPS)
    if rows is not None:
        record.weights = WeightDigests(parameters=PARAMS, hash="hash_tensor")
        np.save(tmp_path / WEIGHTS_FILE, rows)
    write_record(tmp_path, record)
    return tmp_path, load_record(tmp_path)


def test_the_record_keeps_the_weights_columns_and_older_records_load(tmp_path: Path):
    run_dir, record = _record(tmp_path, hashes())
    assert record.weights == WeightDigests(PARAMS, "hash_tensor")
    assert np.array_equal(load_weight_hashes(run_dir, record), hashes())
    data = json.loads((run_dir / "run.json").read_text())
    del data["weights"]  # a record written before the field existed
    (run_dir / "run.json").write_text(json.dumps(data))
    old = load_record(run_dir)
    assert old.weights is None and load_weight_hashes(run_dir, old) is None
    data["weights"] = {"parameters": PARAMS, "hash": "hash_tensor", "extra": 1}
    (run_dir / "run.json").write_text(json.dumps(data))
    with pytest.raises(RecordError, match="extra"):
        load_record(run_dir)


@pytest.mark.parametrize(
    "damage, says",
    [
        ("missing", "missing"),
        ("short", r"not uint64 \[120, 4\]"),
        ("int64", "got int64"),
        ("text", "unreadable"),
        ("link", "symbolic link"),
    ],
)
def test_a_damaged_weights_file_is_a_record_error_that_says_so(
    tmp_path: Path, damage: str, says: str
):
    run_dir, record = _record(tmp_path, hashes())
    path = run_dir / WEIGHTS_FILE
    path.unlink()
    if damage == "short":
        np.save(path, hashes()[:-1])
    elif damage == "int64":
        np.save(path, hashes().astype(np.int64))
    elif damage == "text":
        path.write_text("not numpy")
    elif damage == "link":
        np.save(run_dir / "elsewhere.npy", hashes())
        path.symlink_to(run_dir / "elsewhere.npy")
    with pytest.raises(RecordError, match=says):
        load_weight_hashes(run_dir, record)


def test_one_flipped_bit_changes_the_hash_and_the_recorder_writes_the_same_hashes():
    import torch

    from harness.workload.weights import Hasher, hash_into, tensor_hash, tensor_hashes

    tensors = [
        torch.randn(64, 784),
        torch.randn(7),  # an odd number of float32s: 32-bit words
        torch.randn(10, 64).t(),  # not contiguous
        torch.randn(5, dtype=torch.float64),
    ]
    whole = tensor_hashes(tensors)
    assert whole.dtype == torch.int64 and whole.shape == (4,)
    out = torch.zeros(4, dtype=torch.int64)
    hash_into(tensors, out)
    assert torch.equal(out, whole)
    empty = torch.zeros(3, 0)  # hashes to 0, the sum of nothing
    assert int(tensor_hash(empty)) == 0 and tensor_hashes([empty, tensors[1]])[1] == whole[1]
    for t in tensors:
        before = tensor_hash(t)
        element = t[(1,) * t.ndim]  # a 0-d view: one flipped bit of one element
        element.view(torch.int32 if t.element_size() == 4 else torch.int64).bitwise_xor_(4)
        assert tensor_hash(t) != before
    # a Hasher made before an in-place update hashes the tensors as they are now
    hasher = Hasher(tensors)
    for t in tensors:
        t.mul_(1.5)
    cells = torch.zeros(4, dtype=Hasher.dtype)
    hasher.into(cells.unbind(0))
    assert torch.equal(cells.view(torch.int64), tensor_hashes(tensors))


def test_a_view_that_starts_mid_word_hashes_like_its_copy():
    """An operation's output can be a slice at an odd float32 offset (a diagnosis hashes every
    output): it is hashed, not skipped, and as its contents."""
    import torch

    from harness.workload.weights import tensor_hash

    x = torch.arange(10, dtype=torch.float32)
    assert int(tensor_hash(x[1:9])) == int(tensor_hash(x[1:9].clone()))
    assert int(tensor_hash(x[1:9])) != int(tensor_hash(x[2:10]))
