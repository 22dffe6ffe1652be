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
from harness.errors import HarnessError
from harness.report.own_runs import group_id
from harness.report.report_data import CellReport

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
    assert cell["detail"] == (
        "2 distinct trajectories; first divergence at epoch 0, batch 30 (step 30); "
        "the runs differ in threads"
    )
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
    assert cell["detail"].endswith("; the runs differ in matmul_allow_tf32, cudnn_allow_tf32")


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
    (tmp_path / ".trash").mkdir()  # a hidden folder is nobody's run: no warning
    np.save(tmp_path / ".trash" / "losses.npy", base_losses())
    (tmp_path / "notes.txt").write_text("a file is no run folder")
    assert report(tmp_path) == 0
    warned = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert warned == [f"{tmp_path / 'c'}: no run.json (the run did not finish?): left out"]
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


def test_one_run_s_own_folder_is_named_and_its_parent_suggested(tmp_path: Path, capsys):
    """``harness report records/a``, a folder ReproRecorder wrote: one run, not a folder of
    runs (its tensorboard/ subfolder holds no record)."""
    own_run(tmp_path, "a", "mlp", base_losses(), weights=weight_hashes())
    (tmp_path / "a" / "tensorboard").mkdir()
    err = refused(tmp_path / "a", capsys)
    assert (
        f"error: {tmp_path / 'a'} holds run.json itself: this is one run; give its parent "
        f"folder ({tmp_path}), whose subfolders are the runs to compare"
    ) in err
    assert f"hint: harness report {tmp_path}" in err
    assert "none of its subfolders" not in err
    assert report(tmp_path) == 0  # the parent is reported


def test_own_runs_beside_a_matrix_run_are_refused(tmp_path: Path, capsys):
    """A subfolder whose record is a matrix's run (no ``external``) among own runs."""
    own_run(tmp_path, "a", "nightly", base_losses())
    own_run(tmp_path, "b", "nightly", base_losses())
    cell = make_cell("m")
    for k, name in enumerate(("m", "n")):
        write_run(tmp_path, {**cell, "dir": "x"}, k, base_losses())  # x/repeat-k/run.json
        (tmp_path / "x" / f"repeat-{k}").rename(tmp_path / name)
    (tmp_path / "x").rmdir()
    err = refused(tmp_path, capsys)
    assert (
        f"error: {tmp_path} mixes records of your own runs (ReproRecorder: a, b) with runs of a "
        "matrix (m, n); nothing was written"
    ) in err
    assert (
        "hint: report them apart: your runs' folders in one folder, `harness run`'s results "
        "folder as it was written"
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
    assert (
        f"error: {tmp_path} is not a results folder (no manifest.json) and its subfolders' "
        "records (repeat-0, repeat-1) are runs of a matrix, not ReproRecorder's"
    ) in err
    assert "hint: give the folder `harness run` wrote (results/<name>-<time>/)" in err


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
    assert (
        f"cannot read the run record {run / 'run.json'}: spec.cell_name is not a name "
        "(ReproRecorder's name=...); nothing was written"
    ) in err
    assert "hint: rerun that training, or move its folder out of the folder reported" in err


def test_out_is_not_made_when_the_folder_is_refused(tmp_path: Path, capsys):
    (tmp_path / "runs").mkdir()
    refused(tmp_path / "runs", capsys, "-o", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- what the runs differ in, read
# record by record (the readers DIFFERENCE_FIELDS holds are made when the module is imported, so
# each is also made here, where a test can see what it reads)


def record_of(spec: dict | None = None, **provenance) -> RunRecord:
    """A run record in memory: ``spec`` and the provenance's fields."""
    return RunRecord(status="ok", spec=spec or {}, provenance=Provenance(**provenance))


def test_a_spec_key_is_read_and_null_there_is_a_value():
    from harness.report.own_run_differences import NOT_SAID, _spec

    record = record_of({"seed": None, "entry": "m:Net"})
    assert _spec("entry")(record) == "m:Net"
    assert _spec("seed")(record) is None  # no seed given: a value, not silence
    assert _spec("threads")(record) is NOT_SAID


def test_a_provenance_field_left_null_says_nothing():
    from harness.report.own_run_differences import NOT_SAID, _provenance

    record = record_of(torch="2.3.1", cuda=None)
    assert _provenance("torch")(record) == "2.3.1"
    assert _provenance("cuda")(record) is NOT_SAID


def test_the_thread_count_is_the_spec_s_else_the_provenance_s():
    from harness.report.own_run_differences import NOT_SAID, _threads

    assert _threads(record_of({"threads": 4}, threads=1)) == 4
    assert _threads(record_of({"threads": None}, threads=3)) == 3
    assert _threads(record_of({}, threads=2)) == 2
    assert _threads(record_of({})) is NOT_SAID


def test_the_gpus_are_named_with_their_sms_and_none_only_when_provenance_says_so():
    from harness.report.own_run_differences import NOT_SAID, _gpus

    gpus = [{"name": "NVIDIA H100", "sm_count": 132}, {"sm_count": None}]
    assert _gpus(record_of(torch="2.3.1", gpus=gpus)) == "NVIDIA H100 (132 SMs), unnamed GPU"
    assert _gpus(record_of(torch="2.3.1")) == "none"
    assert _gpus(record_of()) is NOT_SAID  # no provenance recorded: unknown, not "no GPU"


def test_the_machine_fields_and_isa_limits_are_read_from_the_machine():
    from harness.contract.machine import Machine
    from harness.report.own_run_differences import NOT_SAID, _machine

    machine = Machine(
        cpu_capability="AVX2",
        isa_limits={"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": None},
        fingerprint="f" * 12,
    )
    record = record_of(machine=machine)
    assert _machine("cpu_capability")(record) == "AVX2"
    assert _machine("isa_limits")(record) == "ATEN_CPU_CAPABILITY=avx2"
    assert _machine("fingerprint")(record) == "f" * 12
    assert _machine("isa_limits")(record_of(machine=Machine())) == "none"
    assert _machine("cpu_capability")(record_of(machine=Machine())) is NOT_SAID
    assert _machine("cpu_capability")(record_of()) is NOT_SAID
    assert _machine("isa_limits")(record_of()) is NOT_SAID


def test_the_flags_in_force_are_read_back_and_an_unset_workspace_is_said():
    from harness.contract.record import Determinism
    from harness.report.own_run_differences import NOT_SAID, _in_force

    def flags(workspace: str | None) -> RunRecord:
        return record_of(
            determinism=Determinism(
                cudnn_deterministic=True,
                cudnn_benchmark=False,
                deterministic_algorithms=False,
                deterministic_algorithms_warn_only=False,
                matmul_allow_tf32=True,
                cudnn_allow_tf32=False,
                cublas_workspace_config=workspace,
            )
        )

    assert _in_force("matmul_allow_tf32")(flags(None)) is True
    assert _in_force("cudnn_allow_tf32")(flags(None)) is False
    assert _in_force("cublas_workspace_config")(flags(None)) == "unset"
    assert _in_force("cublas_workspace_config")(flags(":4096:8")) == ":4096:8"
    assert _in_force("matmul_allow_tf32")(record_of()) is NOT_SAID


# ---------------------------------------------------------------- the summary's sentences


def cell_report(name: str, verdict: str, runs: int = 2, **fields) -> CellReport:
    """A group's verdict as analyze_group returns it, made by hand (only what the words read)."""
    base = dict(
        id=group_id(name),
        name=name,
        settings={},
        repeats=runs,
        ok_runs=runs,
        distinct_trajectories=1,
        verdict=verdict,
        reproducible={"reproduces": True, "diverges": False}.get(verdict),
        unknown_because=None,
        first_divergence=None,
        divergences=[],
        init_equal=None,
        final_equal=None,
        val_acc_mean=None,
        val_acc_sd=None,
        seconds_per_epoch=None,
        detail="",
        runs=[object()] * runs,  # type: ignore[list-item]
    )
    base.update(fields)
    return CellReport(**base)


def test_the_counts_of_groups_are_said_in_singular_and_plural():
    from harness.report.own_runs import describe_groups

    one = cell_report("solo", "reproduces", runs=1)
    assert describe_groups([one]) == (
        "Of 1 group of your own runs, 1 reproduces bit for bit, 0 diverge. "
        "solo: 1 run reproduce bit for bit."
    )
    cells = [
        cell_report("a", "reproduces"),
        cell_report("b", "reproduces"),
        cell_report("c", "diverges", detail="2 distinct trajectories"),
        cell_report("d", "unknown", unknown_because="one repeat: nothing to compare"),
    ]
    head = describe_groups(cells).split(" a: ")[0]
    assert head == (
        "Of 4 groups of your own runs, 2 reproduce bit for bit, 1 diverges, 1 has no verdict."
    )
    two_unknown = [cell_report(n, "unknown", unknown_because="x") for n in ("a", "b")]
    assert describe_groups(two_unknown).startswith(
        "Of 2 groups of your own runs, 0 reproduce bit for bit, 0 diverge, 2 have no verdict. "
    )
    assert (
        describe_groups([]) == "Of 0 groups of your own runs, 0 reproduce bit for bit, 0 diverge."
    )


def test_a_diverging_group_says_where_by_how_much_and_where_the_weights_went_first():
    from harness.report.own_runs import _group_sentence
    from harness.report.report_data import Divergence, RunDifference, WeightsDivergence

    loss = Divergence(repeat=1, step=7, epoch=0, batch=7, max_abs_delta=0.125, max_ulps=3)
    weights = WeightsDivergence(repeat=1, step=5, epoch=0, batch=5, parameter="net.0.bias")
    cell = cell_report(
        "nightly",
        "diverges",
        detail="first divergence at step 7; the runs differ in threads",
        first_divergence=loss,
        weights_divergence=weights,
        differences=[RunDifference(what="threads", values={"a": 1, "b": 2, "c": 1})],
    )
    assert _group_sentence(cell) == (
        "nightly: 2 runs diverge: first divergence at step 7, max |Δloss| 0.125 (3 ULPs); "
        "the weights differ from step 5 (net.0.bias). "
        "Its runs differ in threads: 1 (a, c), 2 (b) (that can be why)."
    )
    # no ULPs, weights at the loss's own step, several differences
    cell.first_divergence = Divergence(
        repeat=1, step=7, epoch=0, batch=7, max_abs_delta=0.000123456, max_ulps=None
    )
    cell.weights_divergence = WeightsDivergence(
        repeat=1, step=7, epoch=0, batch=7, parameter="net.0.bias"
    )
    cell.differences.append(RunDifference(what="torch", values={"a": "2.3.1", "b": "2.4.0"}))
    assert _group_sentence(cell) == (
        "nightly: 2 runs diverge: first divergence at step 7, max |Δloss| 0.000123. "
        "Its runs differ in threads: 1 (a, c), 2 (b); torch: 2.3.1 (a), 2.4.0 (b) "
        "(that can be why)."
    )
    # only the weights differ (the losses agree): the step, no parameter when none is named
    cell.first_divergence = None
    cell.weights_divergence = WeightsDivergence(repeat=1, step=4, epoch=0, batch=4, parameter=None)
    cell.differences = []
    assert _group_sentence(cell) == (
        "nightly: 2 runs diverge: first divergence at step 7; the weights differ from step 4."
    )
    # a divergence without a |Δloss| (the shapes differ) says none
    cell.first_divergence = Divergence(
        repeat=1, step=7, epoch=0, batch=7, max_abs_delta=None, max_ulps=2, shape_differs=True
    )
    cell.weights_divergence = None
    assert _group_sentence(cell) == "nightly: 2 runs diverge: first divergence at step 7."


def test_a_group_without_a_verdict_says_why_and_its_differences_are_no_cause():
    from harness.report.own_runs import _group_sentence
    from harness.report.report_data import RunDifference

    cell = cell_report(
        "solo",
        "unknown",
        runs=1,
        unknown_because="one repeat: nothing to compare",
        differences=[RunDifference(what="seed", values={"a": 7, "b": None})],
    )
    assert _group_sentence(cell) == (
        "solo: 1 run, no verdict: one repeat: nothing to compare. "
        "Its runs differ in seed: 7 (a), null (b)."
    )
    good = cell_report("ok", "reproduces", runs=3)
    good.differences = [RunDifference(what="gpus", values={"a": "none", "b": "NVIDIA H100"})]
    assert _group_sentence(good) == (
        "ok: 3 runs reproduce bit for bit. Its runs differ in gpus: none (a), NVIDIA H100 (b)."
    )


# ---------------------------------------------------------------- groups, settings, ids


def test_params_given_in_another_order_are_the_same_params(tmp_path: Path):
    """A value is compared (and shown) as JSON with its keys sorted: the same params written in
    another order are no difference; different ones are shown as they are."""
    from harness.report.own_run_differences import differences, values_text
    from harness.report.own_runs import OwnRun

    def run(folder: str, params: dict) -> OwnRun:
        return OwnRun(tmp_path / folder, record_of({"params": params}), "g")

    class Result:
        def __init__(self, path: str) -> None:
            self.path = path

    same = [run("a", {"lr": 0.1, "batch": 64}), run("b", {"batch": 64, "lr": 0.1})]
    assert differences([r.record for r in same], [Result("a"), Result("b")]) == []  # type: ignore[list-item]
    other = [run("a", {"lr": 0.1, "batch": 64}), run("b", {"lr": 0.2, "batch": 64})]
    (diff,) = differences([r.record for r in other], [Result("a"), Result("b")])  # type: ignore[list-item]
    assert values_text(diff.values) == '{"batch": 64, "lr": 0.1} (a), {"batch": 64, "lr": 0.2} (b)'


def test_a_group_id_is_12_hex_of_the_name_s_sha256_even_for_a_lone_surrogate():
    """A name read from JSON may hold a lone surrogate (``"\\udc80"``): it gets an id, not a
    UnicodeEncodeError."""
    import hashlib

    assert group_id("nightly") == hashlib.sha256(b"nightly").hexdigest()[:12]
    assert group_id("a\udc80") == hashlib.sha256(b"a\xed\xb2\x80").hexdigest()[:12]


def test_a_group_s_image_is_own_runs_whatever_its_specs_say(tmp_path: Path):
    from harness.report.own_runs import OWN_RUNS_IMAGE, OwnRun, group_settings

    runs = [
        OwnRun(tmp_path / f, record_of({"image": "mine:1", "threads": 2, "seed": s}), "g")
        for f, s in (("a", 1), ("b", 2))
    ]
    settings = group_settings(runs)
    assert settings == {"image": OWN_RUNS_IMAGE, "external": True, "threads": 2}


def test_a_record_that_is_not_an_object_does_not_stop_the_check_of_a_results_folder(
    tmp_path: Path,
):
    """The lenient read of a results folder's subfolders: a run.json holding a JSON list (or a
    spec that is one) is not an own run, and no AttributeError."""
    from harness.report.own_runs import refuse_own_runs_in

    for folder, text in (("a", "[1, 2]"), ("b", '{"spec": [1]}'), ("c", "{bad")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "run.json").write_text(text)
    refuse_own_runs_in(tmp_path)
    for folder in ("d", "e"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "run.json").write_text('{"spec": {"external": true}}')
    with pytest.raises(HarnessError) as caught:
        refuse_own_runs_in(tmp_path)
    assert caught.value.message.endswith("(ReproRecorder: d, e); nothing was written")
    assert caught.value.hint == (
        "move your runs' folders into a folder of their own and report it apart"
    )


def test_the_report_of_own_runs_names_its_folder_its_image_and_the_machines(tmp_path: Path):
    """report.json of a folder of own runs: the folder's name, no axis compared across, the one
    "image" (own runs) with the runs' torch, and the machine the records name."""
    machine = {
        "cpu_vendor": "GenuineIntel",
        "cpu_capability": "AVX2",
        "fingerprint": "0123456789ab",
    }
    for folder in ("a", "b"):
        run = own_run(tmp_path, folder, "nightly", base_losses())
        data = json.loads((run / "run.json").read_text())
        data["provenance"]["machine"] = machine
        (run / "run.json").write_text(json.dumps(data))
    assert report(tmp_path) == 0
    data = report_json(tmp_path)
    assert data["name"] == tmp_path.name
    assert data["comparisons"] == []
    assert [(i["image"], i["torch"], i["cells"]) for i in data["images"]] == [
        ("own runs", ["2.3.1"], 1)
    ]
    assert [m["fingerprint"] for m in data["machines"]] == ["0123456789ab"]


def test_a_record_that_vanished_or_is_wrong_deep_inside_is_named_where(tmp_path: Path):
    """A run.json gone between the listing and the read (a folder deleted while the report
    runs) is named with the system's reason; a record wrong deep inside names the field's
    path."""
    from harness.contract.record import RECORD_FORMAT_VERSION
    from harness.report.own_runs import read_own_run

    with pytest.raises(HarnessError) as caught:
        read_own_run(tmp_path / "gone")
    assert caught.value.message == (
        f"cannot read the run record {tmp_path / 'gone' / 'run.json'}: unreadable (No such file "
        "or directory); nothing was written"
    )
    assert caught.value.hint == "rerun that training, or move its folder out of the folder reported"
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "run.json").write_text(
        '{"status": "ok", "spec": {}, "provenance": {"threads": "x"}}'
    )
    with pytest.raises(HarnessError) as caught:
        read_own_run(tmp_path / "c")
    assert (
        f"not a run record of format {RECORD_FORMAT_VERSION} (provenance.threads: Input should "
        "be a valid integer"
    ) in caught.value.message
    (tmp_path / "c" / "run.json").write_text("[1]")  # not an object: the whole record is wrong
    with pytest.raises(HarnessError) as caught:
        read_own_run(tmp_path / "c")
    assert (
        f"not a run record of format {RECORD_FORMAT_VERSION} (record: Input should be a dictionary"
    ) in caught.value.message


def test_a_folder_that_cannot_be_listed_is_named_with_why(tmp_path: Path):
    from harness.report.own_runs import record_dirs

    with pytest.raises(HarnessError) as caught:
        record_dirs(tmp_path / "gone")
    assert caught.value.message == (
        f"{tmp_path / 'gone'}: cannot list the folder (No such file or directory)"
    )
