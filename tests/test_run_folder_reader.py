"""One reader per file format (issue 30): run folders are read by harness/results/run_reader.py
alone (one ladder of what can be wrong with run.json, the lenient spec, never through a link
below the results folder), ``losses.npy`` once per report, one trajectory hash on both sides,
and one check of an output folder for ``run``, ``merge`` and ``submit``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from test_report import base_losses, by_name, make_cell, make_results, write_run

from harness.contract.trajectory_hash import trajectory_sha256
from harness.errors import StoreError
from harness.report import analyze, make_reports, trajectories
from harness.results import run_reader
from harness.results.out_folder import MERGE_OUT, SUBMIT_OUT, check_out_folder
from harness.results.run_reader import RecordError, lenient_spec, load_record


def test_the_trajectory_hash_is_over_float32_little_endian_c_order_bytes():
    """The one definition the workload records and the host checks: any dtype, byte order or
    layout of the same values gives the same digest."""
    losses = np.linspace(1, 2, 12, dtype="<f4").reshape(6, 2)
    want = hashlib.sha256(losses.tobytes()).hexdigest()
    assert trajectory_sha256(losses) == want
    assert trajectory_sha256(losses.astype(">f4")) == want
    assert trajectory_sha256(np.asfortranarray(losses)) == want
    assert trajectory_sha256(losses[:1]) != want


@pytest.mark.parametrize(
    ("content", "message", "why"),
    [
        (None, ": no run record", "unreadable (No such file or directory)"),
        (b"{", ": not valid JSON (", "not valid JSON ("),
        (b"\xff", ": not valid JSON (", "not valid JSON ("),
        (b"[]", ": not a run record of format ", "not a run record of format "),
    ],
)
def test_one_ladder_says_what_is_wrong_with_run_json_with_and_without_its_path(
    tmp_path: Path, content: bytes | None, message: str, why: str
):
    if content is not None:
        (tmp_path / "run.json").write_bytes(content)
    with pytest.raises(RecordError) as info:
        load_record(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'run.json'}{message}")
    assert info.value.why.startswith(why) and str(tmp_path) not in info.value.why


def test_a_link_below_the_results_folder_is_not_read_through(tmp_path: Path):
    """A run folder that is a link (to a run elsewhere) is not read: its record and spec are
    refused, and the report shows the run as corrupt, naming the link."""
    root = tmp_path / "results"
    cell = make_cell("a", placement="none")
    make_results(root, [cell], repeats=2)
    for k in range(2):
        write_run(root, cell, k, base_losses())
    run_dir = root / cell["dir"] / "repeat-1"
    elsewhere = tmp_path / "elsewhere"
    run_dir.rename(elsewhere)
    run_dir.symlink_to(elsewhere)
    assert load_record(run_dir).ok  # without a root: as before
    with pytest.raises(RecordError, match="is a symbolic link"):
        load_record(run_dir, root=root)
    assert lenient_spec(run_dir) and lenient_spec(run_dir, root=root) == {}
    (_, linked) = by_name(analyze(root))["a"].runs
    assert linked.status == "corrupt"
    assert linked.problem == (
        f"corrupt run.json: {cell['dir']}/repeat-1 is a symbolic link (not followed)"
    )


def test_a_report_reads_each_losses_file_once(tmp_path: Path, monkeypatch):
    """Verified once when the runs are read, then compared and plotted from memory."""
    cell = make_cell("bad", placement="none")
    make_results(tmp_path, [cell], repeats=3)
    for k in range(3):
        write_run(tmp_path, cell, k, base_losses() + np.float32(0.01 * k))
    reads: list[Path] = []
    load = run_reader.load_losses

    def counted(run_dir):
        reads.append(Path(run_dir))
        return load(run_dir)

    monkeypatch.setattr(run_reader, "load_losses", counted)
    monkeypatch.setattr(trajectories, "load_losses", counted)
    make_reports(tmp_path, ["md", "json"], max_plots=0)
    assert by_name(analyze(tmp_path))["bad"].verdict == "diverges"
    assert len(reads) == len(set(reads)) * 2 == 6  # twice: make_reports, then analyze
    assert (tmp_path / "report.json").exists()
    json.loads((tmp_path / "report.json").read_text())  # the arrays stay out of it


def test_merge_s_output_check_is_as_careful_as_run_s(tmp_path: Path):
    """Not a folder, or not empty (naming what it holds): refused in merge's words."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError) as info:
        check_out_folder(tmp_path / "file", MERGE_OUT)
    assert str(info.value) == (
        f"{tmp_path}/file exists and is not a folder\n"
        "  hint: merge into a new or empty folder (-o DIR)"
    )
    full = tmp_path / "full"
    full.mkdir()
    for name in "abcde":
        (full / name).write_text("")
    with pytest.raises(StoreError, match=r"is not empty \(it holds a, b, c and 2 more\); nothing"):
        check_out_folder(full, MERGE_OUT)
    check_out_folder(tmp_path / "new", MERGE_OUT)  # missing: fine
    (tmp_path / "empty").mkdir()
    check_out_folder(tmp_path / "empty", MERGE_OUT)


def test_submit_s_output_check_keeps_its_words(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError) as info:
        check_out_folder(tmp_path / "file", SUBMIT_OUT)
    assert str(info.value).endswith("exists and is not a folder\n  hint: give --out a new folder")
    for name in "abcd":
        (tmp_path / name).write_text("")
    with pytest.raises(StoreError) as info:
        check_out_folder(tmp_path, SUBMIT_OUT)
    assert str(info.value).startswith(
        f"{tmp_path} is not empty and has no slurm/submission.json: it is not a folder harness "
        "submit slurm wrote (it holds a, b, c and more); nothing was written to it\n"
    )
