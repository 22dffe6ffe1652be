"""`harness report DIR` over a folder of your own runs: run records that
``harness.lightning.ReproRecorder`` wrote, made here by hand (no training, no torch). Each test
goes through the real CLI (``main``, in-process; one through ``python -m harness.cli``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_report import EPOCHS, base_losses, digest, make_cell, make_results, write_run

from harness.cli import main
from harness.contract.record import (
    Digests,
    EpochSummary,
    Provenance,
    RunError,
    RunRecord,
    WeightDigests,
    write_record,
)
from harness.report.records import group_id

ROOT = Path(__file__).resolve().parents[1]
PARAMETERS = ["net.0.weight", "net.0.bias"]
#: What a report writes into the folder it reports (with plots/ when something diverges).
REPORT_FILES = {"report.md", "report.json", "report.csv"}


def own_run(
    root: Path,
    folder: str,
    name: str,
    losses: np.ndarray | None,
    *,
    threads: int = 1,
    seed: int | None = 7,
    torch: str = "2.3.1",
    gpus: list[dict] | None = None,
    weights: np.ndarray | None = None,
    final: str = "w",
    status: str = "ok",
    error: RunError | None = None,
) -> Path:
    """One run folder as ReproRecorder writes it: run.json, losses.npy (and weights.npy)."""
    run_dir = root / folder
    run_dir.mkdir(parents=True)
    spec = {
        "external": True,
        "cell_name": name,
        "cell_id": "",
        "entry": "mymodel:LitNet",
        "params": {},
        "seed": seed,
        "repeat": 0,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "deterministic_algorithms": "off",
        "threads": threads,
    }
    if losses is not None:
        np.save(run_dir / "losses.npy", losses)
    if weights is not None:
        np.save(run_dir / "weights.npy", weights)
    steps = 0 if losses is None else len(losses)
    record = RunRecord(
        status=status,  # type: ignore[arg-type]
        spec=spec,
        error=error,
        steps=steps,
        ranks=1,
        steps_per_epoch=[60, 60] if steps else [],
        digests=Digests(
            trajectory=digest(losses) if losses is not None else None,
            init_weights="i" if losses is not None else None,
            final_weights=final if losses is not None else None,
        ),
        epochs=[EpochSummary(e, 60, f, val_acc=0.9) for e, f in EPOCHS] if steps else [],
        weights=WeightDigests(PARAMETERS, "hash_tensor") if weights is not None else None,
        provenance=Provenance(
            python="3.11.9", torch=torch, threads=threads, cpu_model="cpu", gpus=gpus or []
        ),
    )
    write_record(run_dir, record)
    return run_dir


def weight_hashes(differ_from: int | None = None) -> np.ndarray:
    """uint64 [steps, 2]: one hash per step and parameter; the bias column changes from
    ``differ_from`` on."""
    rows = np.arange(2 * len(base_losses()), dtype="<u8").reshape(-1, 2)
    if differ_from is not None:
        rows[differ_from:, 1] += np.uint64(1)
    return rows


def report(root: Path, *args: str) -> int:
    return main(["report", str(root), "--progress", "plain", *args])


def said(capsys) -> str:
    """What the report printed, its lines joined (the sentence is wrapped to the width)."""
    return " ".join(capsys.readouterr().out.split())


def report_json(root: Path) -> dict:
    return json.loads((root / "report.json").read_text())


def group(data: dict, name: str) -> dict:
    return next(c for c in data["cells"] if c["name"] == name)


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_two_equal_runs_reproduce(tmp_path: Path, capsys):
    for folder in ("mon", "tue"):
        own_run(tmp_path, folder, "nightly", base_losses(), weights=weight_hashes())
    assert report(tmp_path) == 0
    out = said(capsys)
    assert "Of 1 group of your own runs, 1 reproduces bit for bit" in out
    assert "nightly: 2 runs reproduce bit for bit." in out
    assert "Its runs differ" not in out
    data = report_json(tmp_path)
    assert data["source"] == "own_runs"
    (cell,) = data["cells"]
    assert (cell["name"], cell["verdict"], cell["reproducible"]) == ("nightly", "reproduces", True)
    assert cell["id"] == group_id("nightly")
    assert [r["path"] for r in cell["runs"]] == ["mon", "tue"]
    assert [r["repeat"] for r in cell["runs"]] == [0, 1]
    assert cell["init_equal"] is True and cell["final_equal"] is True
    assert cell["differences"] == []
    # the settings the records give, none the matrix would fill in by default
    assert cell["settings"]["threads"] == 1 and cell["settings"]["external"] is True
    assert "placement" not in cell["settings"]
    md = (tmp_path / "report.md").read_text()
    assert "**1 of 1 groups reproduce bit for bit**" in md
    assert "placement=" not in md and "Across images" not in md
    assert REPORT_FILES <= {p.name for p in tmp_path.iterdir()}


def test_two_runs_differing_from_step_7_diverge_there(tmp_path: Path, capsys):
    """The matrix report's verdict and divergence: step 7 (epoch 0, batch 7), its |Δloss| and
    ULPs, and the weights' first differing step and parameter from weights.npy."""
    base = base_losses()
    changed = base.copy()
    changed[7:, 0] += np.float32(0.125)
    own_run(tmp_path, "a", "nightly", base, weights=weight_hashes())
    own_run(tmp_path, "b", "nightly", changed, weights=weight_hashes(5), final="w2")
    assert report(tmp_path) == 0
    out = said(capsys)
    assert "first divergence at epoch 0, batch 7 (step 7), max |Δloss| 0.125" in out
    assert "the weights differ from step 5 (net.0.bias)" in out
    cell = group(report_json(tmp_path), "nightly")
    assert (cell["verdict"], cell["reproducible"]) == ("diverges", False)
    d = cell["first_divergence"]
    assert (d["step"], d["epoch"], d["batch"], d["repeat"]) == (7, 0, 7, 1)
    assert d["max_abs_delta"] == pytest.approx(0.125, rel=1e-3)
    assert d["max_ulps"] > 0
    w = cell["weights_divergence"]
    assert (w["step"], w["parameter"], w["repeat"]) == (5, "net.0.bias", 1)
    assert cell["init_equal"] is True and cell["final_equal"] is False
    assert cell["runs"][1]["path"] == "b"
    assert cell["plot"] and (tmp_path / cell["plot"]).is_file()  # the |Δloss| plot, for free


def test_three_runs_of_two_names_are_two_groups(tmp_path: Path, capsys):
    """Runs group by name, in folder-name order: the repeat index is the position."""
    base = base_losses()
    own_run(tmp_path, "1-ablation", "ablation", base_losses(seed=3))
    own_run(tmp_path, "2-nightly", "nightly", base)
    own_run(tmp_path, "3-nightly", "nightly", base)
    assert report(tmp_path) == 0
    data = report_json(tmp_path)
    assert [c["name"] for c in data["cells"]] == ["ablation", "nightly"]
    nightly = group(data, "nightly")
    runs = [(r["repeat"], r["path"]) for r in nightly["runs"]]
    assert runs == [(0, "2-nightly"), (1, "3-nightly")]
    assert nightly["verdict"] == "reproduces"
    ablation = group(data, "ablation")
    assert ablation["verdict"] == "unknown"
    assert ablation["unknown_because"] == "one repeat: nothing to compare"
    out = capsys.readouterr().out
    assert "Of 2 groups of your own runs, 1 reproduces bit for bit, 0 diverge" in " ".join(
        out.split()
    )
    # the grid tells the groups apart by name, though their settings are the same
    grid = out.split("\n\n")[1].splitlines()
    rows = [line.split() for line in grid]
    assert rows == [["name", "verdict"], ["ablation", "?"], ["nightly", "✓"]]


def test_a_thread_count_that_differs_is_named(tmp_path: Path, capsys):
    base = base_losses()
    changed = base.copy()
    changed[30, 0] = np.nextafter(changed[30, 0], np.float32(10))
    own_run(tmp_path, "a", "nightly", base, threads=1)
    own_run(tmp_path, "b", "nightly", changed, threads=2)
    assert report(tmp_path) == 0
    out = said(capsys)
    assert "Its runs differ in threads: 1 (a), 2 (b) (that can be why)." in out
    cell = group(report_json(tmp_path), "nightly")
    assert cell["differences"] == [{"what": "threads", "values": {"a": 1, "b": 2}}]
    assert cell["detail"].endswith("; the runs differ in threads")
    assert "threads" not in cell["settings"]  # no one value: it is not a setting of the group
    md = (tmp_path / "report.md").read_text()
    section = md.split("## What differs between runs", 1)[1]
    assert "| nightly | threads | 1 \\(a\\), 2 \\(b\\) | ❌ |" in section


def test_a_hidden_folder_is_not_a_run_and_tf32_read_back_is_compared(tmp_path: Path, capsys):
    """A hidden folder (``.trash``, ``.git``) holding a record is left out; the TF32 flags that
    torch had in force (provenance.determinism) are compared, not only the spec's flags."""
    base = base_losses()
    changed = base.copy()
    changed[3, 0] = np.nextafter(changed[3, 0], np.float32(10))
    own_run(tmp_path, "a", "nightly", base)
    own_run(tmp_path, "b", "nightly", changed)
    own_run(tmp_path, ".trash", "nightly", base)
    for folder, tf32 in (("a", False), ("b", True)):
        path = tmp_path / folder / "run.json"
        data = json.loads(path.read_text())
        data["provenance"]["determinism"] = {
            "cudnn_deterministic": True,
            "cudnn_benchmark": False,
            "deterministic_algorithms": False,
            "deterministic_algorithms_warn_only": False,
            "matmul_allow_tf32": tf32,
            "cudnn_allow_tf32": tf32,
            "cublas_workspace_config": None,
        }
        path.write_text(json.dumps(data))
    assert report(tmp_path) == 0
    cell = group(report_json(tmp_path), "nightly")
    assert [r["path"] for r in cell["runs"]] == ["a", "b"]
    assert cell["differences"] == [
        {"what": "matmul_allow_tf32", "values": {"a": False, "b": True}},
        {"what": "cudnn_allow_tf32", "values": {"a": False, "b": True}},
    ]


def test_a_torch_version_and_a_gpu_that_differ_are_named_too(tmp_path: Path):
    own_run(
        tmp_path, "a", "nightly", base_losses(), gpus=[{"name": "NVIDIA A100", "sm_count": 108}]
    )
    own_run(tmp_path, "b", "nightly", base_losses(), torch="2.4.0", gpus=[{"name": "NVIDIA H100"}])
    assert report(tmp_path) == 0
    cell = group(report_json(tmp_path), "nightly")
    assert cell["verdict"] == "reproduces"
    assert cell["differences"] == [
        {"what": "torch", "values": {"a": "2.3.1", "b": "2.4.0"}},
        {"what": "gpus", "values": {"a": "NVIDIA A100 (108 SMs)", "b": "NVIDIA H100"}},
    ]


def test_a_run_without_a_seed_is_named_and_a_failed_run_s_unknowns_are_not(tmp_path: Path):
    """``seed: null`` in the spec is a value (no seed was given); a provenance the failed run
    never recorded (torch null) is no evidence of another torch."""
    h100 = [{"name": "NVIDIA H100", "sm_count": 132}]
    own_run(tmp_path, "a", "nightly", base_losses(), gpus=h100)
    own_run(tmp_path, "b", "nightly", base_losses(seed=5), seed=None, gpus=h100)
    run = own_run(tmp_path, "c", "nightly", None, status="failed", error=RunError("E", "m"))
    data = json.loads((run / "run.json").read_text())
    data["provenance"] = {}
    (run / "run.json").write_text(json.dumps(data))
    assert report(tmp_path) == 0
    cell = group(report_json(tmp_path), "nightly")
    assert cell["differences"] == [{"what": "seed", "values": {"a": 7, "b": None, "c": 7}}]
    assert "seed" not in cell["settings"]


def test_a_failed_run_is_shown_failed_with_its_error(tmp_path: Path, capsys):
    own_run(tmp_path, "a", "nightly", base_losses())
    error = RunError("RuntimeError", "CUDA error: an illegal memory access", log_tail="boom")
    own_run(tmp_path, "b", "nightly", None, status="failed", error=error)
    assert report(tmp_path) == 0
    data = report_json(tmp_path)
    cell = group(data, "nightly")
    assert (cell["verdict"], cell["reproducible"]) == ("unknown", None)
    assert cell["unknown_because"] == "1 of 2 repeats failed"
    assert cell["runs"][1]["status"] == "failed"
    (failure,) = data["failures"]
    assert (failure["cell"], failure["repeat"], failure["path"]) == ("nightly", 1, "b")
    assert failure["type"] == "RuntimeError"
    assert failure["message"] == "CUDA error: an illegal memory access"
    md = (tmp_path / "report.md").read_text()
    assert "### nightly repeat 1: RuntimeError" in md.split("## Failed runs", 1)[1]
    assert "nightly: 2 runs, no verdict: 1 of 2 repeats failed." in said(capsys)


def test_losses_that_do_not_match_the_digest_are_corrupt(tmp_path: Path):
    """Verified as a matrix's runs are: the losses must hash to the recorded digest."""
    own_run(tmp_path, "a", "nightly", base_losses())
    run = own_run(tmp_path, "b", "nightly", base_losses())
    np.save(run / "losses.npy", base_losses(seed=1))
    assert report(tmp_path) == 0
    cell = group(report_json(tmp_path), "nightly")
    assert cell["verdict"] == "unknown" and cell["runs"][1]["status"] == "corrupt"
    assert "does not hash to digests.trajectory" in cell["unknown_because"]


def test_a_run_folder_without_a_record_is_left_out_with_a_warning(tmp_path: Path, caplog):
    """A training that died before ReproRecorder wrote run.json: not a run, but said."""
    own_run(tmp_path, "a", "nightly", base_losses())
    own_run(tmp_path, "b", "nightly", base_losses())
    (tmp_path / "c").mkdir()
    np.save(tmp_path / "c" / "losses.npy", base_losses())
    assert report(tmp_path) == 0
    assert f"{tmp_path / 'c'}: no run.json (the run did not finish?): left out" in caplog.text
    (cell,) = report_json(tmp_path)["cells"]
    assert [r["path"] for r in cell["runs"]] == ["a", "b"]


def test_out_writes_the_report_elsewhere(tmp_path: Path):
    runs = tmp_path / "runs"
    for folder in ("a", "b"):
        own_run(runs, folder, "nightly", base_losses())
    before = listing(runs)
    assert report(runs, "-o", str(tmp_path / "out")) == 0
    assert listing(runs) == before
    assert REPORT_FILES <= {p.name for p in (tmp_path / "out").iterdir()}


def test_the_report_can_be_made_again_over_its_own_output(tmp_path: Path):
    """report.md, report.json and plots/ in the folder are no runs: a second report reads the
    same runs."""
    base = base_losses()
    changed = base.copy()
    changed[7, 0] += np.float32(0.5)
    own_run(tmp_path, "a", "nightly", base)
    own_run(tmp_path, "b", "nightly", changed)
    assert report(tmp_path) == 0
    assert (tmp_path / "plots").is_dir()
    first = report_json(tmp_path)
    assert report(tmp_path) == 0
    assert report_json(tmp_path)["cells"] == first["cells"]


def test_the_real_command_line(tmp_path: Path):
    """``python -m harness.cli report DIR`` as a user runs it: the answer on stdout, then the
    paths written."""
    own_run(tmp_path, "a", "nightly", base_losses(), threads=1)
    own_run(tmp_path, "b", "nightly", base_losses(seed=2), threads=2)
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(tmp_path), "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "nightly: 2 runs diverge: 2 distinct trajectories" in " ".join(proc.stdout.split())
    assert proc.stdout.rstrip().endswith(str(tmp_path / "report.json"))


# ---------------------------------------------------------------- bad input: exit 2, no file


def refused(root: Path, capsys, *args: str) -> str:
    """Run the report, expect exit 2 with no traceback and nothing written; the error text."""
    before = listing(root)
    assert report(root, *args) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    assert listing(root) == before
    return " ".join(captured.err.split())


def test_a_folder_with_no_manifest_and_no_record_is_refused(tmp_path: Path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "losses.npy").write_bytes(b"")
    err = refused(tmp_path, capsys)
    assert (
        f"error: {tmp_path} is not a results folder (no manifest.json, no cells/) and none of "
        "its subfolders holds a run record (run.json)"
    ) in err
    assert "harness.lightning.ReproRecorder" in err


def test_own_runs_beside_a_matrix_run_are_refused(tmp_path: Path, capsys):
    """A subfolder whose record is a matrix's run (no ``external``) among own runs."""
    own_run(tmp_path, "a", "nightly", base_losses())
    cell = make_cell("m")
    write_run(tmp_path, {**cell, "dir": "x"}, 0, base_losses())  # x/repeat-0/run.json
    matrix_run = tmp_path / "x" / "repeat-0"
    matrix_run.rename(tmp_path / "m")
    (tmp_path / "x").rmdir()
    err = refused(tmp_path, capsys)
    assert (
        f"error: {tmp_path} mixes records of your own runs (ReproRecorder: a) with runs of a "
        "matrix (m); nothing was written"
    ) in err


def test_own_runs_inside_a_results_folder_are_refused(tmp_path: Path, capsys):
    cell = make_cell("same")
    make_results(tmp_path, [cell], repeats=2)
    for k in range(2):
        write_run(tmp_path, cell, k, base_losses())
    own_run(tmp_path, "mine", "nightly", base_losses())
    err = refused(tmp_path, capsys)
    assert (
        f"error: {tmp_path} mixes a results folder of `harness run` with records of your own "
        "runs (ReproRecorder: mine); nothing was written"
    ) in err


def test_only_a_matrix_s_runs_without_a_manifest_are_refused(tmp_path: Path, capsys):
    """A cell folder (its repeat-k subfolders) is not a folder of own runs."""
    cell = make_cell("same")
    for k in range(2):
        write_run(tmp_path, {**cell, "dir": "."}, k, base_losses())
    err = refused(tmp_path, capsys)
    assert "are runs of a matrix, not ReproRecorder's" in err
    assert "repeat-0, repeat-1" in err


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda p: p.write_text("{not json"), "not valid JSON"),
        (lambda p: p.write_text('{"status": "ok"}'), "not a run record of format 2 (spec:"),
        (lambda p: p.write_bytes(b"\xff\xfe"), "not valid JSON"),
    ],
)
def test_a_record_that_cannot_be_read_is_named(tmp_path: Path, capsys, damage, why: str):
    own_run(tmp_path, "a", "nightly", base_losses())
    run = own_run(tmp_path, "b", "nightly", base_losses())
    damage(run / "run.json")
    err = refused(tmp_path, capsys)
    assert f"error: cannot read the run record {run / 'run.json'}: {why}" in err


def test_a_record_linked_elsewhere_is_named(tmp_path: Path, capsys):
    own_run(tmp_path, "a", "nightly", base_losses())
    run = own_run(tmp_path / "elsewhere", "b", "nightly", base_losses())
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "run.json").symlink_to(run / "run.json")
    err = refused(tmp_path, capsys)
    assert f"error: cannot read the run record {tmp_path / 'b' / 'run.json'}: " in err
    assert "symbolic link" in err


def test_a_record_without_a_name_is_named(tmp_path: Path, capsys):
    own_run(tmp_path, "a", "nightly", base_losses())
    run = own_run(tmp_path, "b", "nightly", base_losses())
    data = json.loads((run / "run.json").read_text())
    data["spec"]["cell_name"] = ""
    (run / "run.json").write_text(json.dumps(data))
    err = refused(tmp_path, capsys)
    assert f"cannot read the run record {run / 'run.json'}: spec.cell_name is not a name" in err


def test_out_is_not_made_when_the_folder_is_refused(tmp_path: Path, capsys):
    (tmp_path / "runs").mkdir()
    refused(tmp_path / "runs", capsys, "-o", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
