"""Verdicts and divergences on hand-made run records (no torch, no training)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.contract import RECORD_FORMAT_VERSION, RunSpec, write_json_atomic
from harness.matrix import CELL_ID_SCHEME
from harness.report import analyze, write_reports
from harness.report.exporters import render_csv, render_json
from harness.report.markdown import render_markdown
from harness.report.markdown_blocks import escape, fence
from harness.report.trajectories import divergence, epoch_batch, ulp_order
from harness.results.manifest import MANIFEST_FORMAT_VERSION

STEPS = 120
EPOCHS = [(0, 0), (1, 60)]  # (epoch, first_step): two epochs of 60 steps


def digest(losses: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(losses, dtype="<f4").tobytes()).hexdigest()


def base_losses(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (2.3 * np.exp(-np.arange(STEPS) / 40) + rng.random(STEPS) * 0.05).astype("<f4")[:, None]


def write_run(
    root: Path,
    cell: dict,
    repeat: int,
    losses: np.ndarray | None,
    *,
    final: str = "w",
    status: str = "ok",
    error: dict | None = None,
    acc: float = 0.9,
    provenance: dict | None = None,
    val_loss: float | None = None,
) -> None:
    run_dir = root / cell["dir"] / f"repeat-{repeat}"
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = RunSpec(**cell["settings"], repeat=repeat, cell_id=cell["id"], cell_name=cell["name"])
    if losses is not None:
        np.save(run_dir / "losses.npy", losses)
    traj = digest(losses) if losses is not None else None
    write_json_atomic(
        run_dir / "run.json",
        {
            "format_version": RECORD_FORMAT_VERSION,
            "status": status,
            "error": error,
            "spec": spec.to_dict(),
            "steps": 0 if losses is None else len(losses),
            "ranks": 1,
            "steps_per_epoch": [60, 60],
            "digests": {
                "trajectory": traj,
                "init_weights": "i",
                "final_weights": final,
                "epochs": [],
                "split": "s",
            },
            "epochs": [
                {
                    "epoch": e,
                    "steps": 60,
                    "first_step": f,
                    "val_acc": acc,
                    "train_seconds": 2.0 + e,
                    "val_seconds": 0.5,
                    **({"val_loss": val_loss} if val_loss is not None else {}),
                }
                for e, f in EPOCHS
            ],
            "timing": {"wall_seconds": 6.0},
            **({"provenance": provenance} if provenance is not None else {}),
        },
    )


def make_cell(name: str, **settings) -> dict:
    full = {"image": "local", "placement": "before_model", **settings}
    cid = hashlib.sha256(name.encode()).hexdigest()[:12]
    return {"id": cid, "name": name, "dir": f"cells/{name}--{cid}", "settings": full}


def make_results(root: Path, cells: list[dict], repeats: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        root / "manifest.json",
        {
            "format_version": MANIFEST_FORMAT_VERSION,
            "cell_id_scheme": CELL_ID_SCHEME,
            "name": "hand-made",
            "repeats": repeats,
            "cells": cells,
        },
    )


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """Four cells: identical; diverging at step 75; final weights only; one failed run."""
    same = make_cell("same", placement="before_model")
    diverge = make_cell("diverge", placement="none")
    weights = make_cell("weights", placement="before_trainer")
    failed = make_cell("failed", placement="process_start")
    make_results(tmp_path, [same, diverge, weights, failed], repeats=3)
    base = base_losses()
    for k in range(3):
        write_run(tmp_path, same, k, base)
        changed = base.copy()
        if k == 2:
            changed[75, 0] = np.nextafter(changed[75, 0], np.float32(10))  # one ULP
            changed[90, 0] += np.float32(0.25)
        write_run(tmp_path, diverge, k, changed, acc=0.9 + 0.01 * k)
        write_run(tmp_path, weights, k, base, final=f"w{k}")
    write_run(tmp_path, failed, 0, base)
    write_run(
        tmp_path,
        failed,
        1,
        None,
        status="failed",
        error={
            "type": "timeout",
            "message": "timed out after 5 s",
            "log_tail": "line | with <b>html</b>\n``` fence",
        },
    )
    return tmp_path


def by_name(report) -> dict:
    return {c.name: c for c in report.cells}


def test_identical_repeats_reproduce(results: Path):
    cell = by_name(analyze(results))["same"]
    assert (cell.verdict, cell.reproducible, cell.unknown_because) == ("reproduces", True, None)
    assert cell.detail == "reproduces bit for bit"
    assert cell.distinct_trajectories == 1
    assert cell.first_divergence is None
    assert cell.init_equal is True and cell.final_equal is True
    assert cell.seconds_per_epoch == pytest.approx(3.0)  # (2.5 + 3.5) / 2


def test_divergence_at_a_known_step(results: Path):
    cell = by_name(analyze(results))["diverge"]
    assert cell.reproducible is False
    assert cell.distinct_trajectories == 2
    d = cell.first_divergence
    assert (d.epoch, d.batch, d.step, d.repeat) == (1, 15, 75, 2)
    assert d.max_abs_delta == pytest.approx(0.25, rel=1e-3)
    assert d.max_ulps > 1
    assert cell.val_acc_mean == pytest.approx(0.91)
    assert cell.val_acc_sd == pytest.approx(0.01)


def test_final_weights_only(results: Path):
    cell = by_name(analyze(results))["weights"]
    assert cell.distinct_trajectories == 1
    assert cell.first_divergence is None
    assert cell.final_equal is False
    assert cell.reproducible is False
    # issue 10: `verdict` is now one of three words; the words that were in it are `detail`
    assert cell.verdict == "diverges"
    assert "final weights differ" in cell.detail


def test_failed_run_is_listed_with_its_log(results: Path):
    report = analyze(results)
    cell = by_name(report)["failed"]
    # issue 10: a cell with a failed and a missing repeat has no verdict (it was "False": the
    # report said it does not reproduce, more than its one ok run showed)
    assert cell.reproducible is None and cell.verdict == "unknown" and cell.ok_runs == 1
    assert cell.unknown_because == "1 of 3 repeats failed; 1 of 3 repeats missing"
    kinds = {(f.cell, f.repeat): f for f in report.failures}
    assert kinds[("failed", 1)].type == "timeout"
    assert kinds[("failed", 2)].type == "missing"


def test_summary_says_which_axis_breaks_it(results: Path):
    text = analyze(results).summaries["local"]
    # issue 10: the failed cell has no verdict and is not counted (it was "1 of 4")
    assert "1 of 3 cells reproduce bit for bit" in text
    assert "placement=before_model always does" in text
    assert "placement=process_start" not in text  # the failed cell's setting
    assert "1 cell(s) have no verdict" in text


def test_ulp_distance_uses_the_int32_ordering():
    a = np.array([1.0, -0.0, 0.0, -1e-45], dtype="<f4")
    b = np.array([np.nextafter(np.float32(1), np.float32(2)), 0.0, 1e-45, 1e-45], dtype="<f4")
    ulps = np.abs(ulp_order(a.view("<i4")) - ulp_order(b.view("<i4")))
    assert ulps.tolist() == [1, 0, 1, 2]


def _f32(bits: int) -> np.float32:
    return np.array([bits], dtype="<u4").view("<f4")[0]


def test_divergence_counts_the_same_nan_bits_as_equal():
    """Two steps are equal when their float32 bits are: the same NaN is no divergence (as a
    value NaN != NaN), two NaNs with other payloads are one."""
    a = np.ones((5, 1), dtype="<f4")
    a[2, 0] = _f32(0x7FC00001)  # a quiet NaN with a payload
    assert divergence(a, a.copy(), 1, [(0, 0)]) is None

    other_nan = a.copy()
    other_nan[2, 0] = _f32(0x7FC00002)
    d = divergence(a, other_nan, 1, [(0, 0)])
    assert d is not None and (d.repeat, d.step, d.epoch, d.batch) == (1, 2, 0, 2)


def test_divergence_counts_signed_zeros_as_different():
    """+0.0 against -0.0 is a divergence: equal as values, not as bits."""
    plus, minus = np.ones((5, 1), dtype="<f4"), np.ones((5, 1), dtype="<f4")
    plus[3, 0], minus[3, 0] = np.float32(0.0), np.float32(-0.0)
    assert plus[3, 0] == minus[3, 0]  # the premise: equal as values, not as bits
    d = divergence(plus, minus, 2, [(0, 0)])
    assert d is not None
    assert (d.repeat, d.step, d.epoch, d.batch, d.shape_differs) == (2, 3, 0, 3, False)
    assert (d.max_abs_delta, d.max_ulps) == (0.0, 0)  # no distance in value, yet not equal


def test_divergence_by_bits_counts_length():
    a = np.zeros((5, 1), dtype="<f4")
    assert divergence(a, a.copy(), 1, [(0, 0)]) is None
    short = divergence(a, a[:3].copy(), 1, [(0, 0)])
    assert (short.step, short.shape_differs) == (3, True)
    assert divergence(a, np.zeros((5, 2), dtype="<f4"), 1, [(0, 0)]).shape_differs


def test_a_signed_zero_makes_the_cell_diverge_at_its_step(tmp_path: Path):
    """End to end: two repeats whose losses differ only in the sign of a zero at step 10."""
    cell = make_cell("zero", placement="none")
    make_results(tmp_path, [cell], repeats=2)
    plus, minus = base_losses(), base_losses()
    plus[10, 0], minus[10, 0] = np.float32(0.0), np.float32(-0.0)
    write_run(tmp_path, cell, 0, plus)
    write_run(tmp_path, cell, 1, minus)
    (judged,) = analyze(tmp_path).cells
    assert (judged.verdict, judged.reproducible, judged.distinct_trajectories) == (
        "diverges",
        False,
        2,
    )
    d = judged.first_divergence
    assert (d.repeat, d.step, d.epoch, d.batch) == (1, 10, 0, 10)


def test_the_first_divergence_is_the_earliest_over_all_repeats(tmp_path: Path):
    """Four repeats; repeats 1, 2 and 3 leave repeat 0 at steps 90, 30 and 70: the reported
    first divergence is repeat 2's step 30 (neither the last found nor the latest), with the
    largest |Δloss| over all of them."""
    cell = make_cell("multi", placement="none")
    make_results(tmp_path, [cell], repeats=4)
    base = base_losses()
    write_run(tmp_path, cell, 0, base)
    for k, (step, delta) in {1: (90, 0.5), 2: (30, 0.125), 3: (70, 0.25)}.items():
        changed = base.copy()
        changed[step, 0] += np.float32(delta)
        write_run(tmp_path, cell, k, changed)
    report = analyze(tmp_path)
    (judged,) = report.cells
    assert judged.distinct_trajectories == 4
    assert [(d.repeat, d.step) for d in judged.divergences] == [(1, 90), (2, 30), (3, 70)]
    first = judged.first_divergence
    assert (first.repeat, first.step, first.epoch, first.batch) == (2, 30, 0, 30)
    assert first.max_abs_delta == pytest.approx(0.5, rel=1e-3)
    assert judged.detail == (
        "4 distinct trajectories; first divergence at epoch 0, batch 30 (step 30)"
    )
    data = json.loads(render_json(report))["cells"][0]["first_divergence"]
    assert (data["repeat"], data["step"], data["epoch"], data["batch"]) == (2, 30, 0, 30)
    (row,) = csv.DictReader(io.StringIO(render_csv(report).decode()))
    assert (row["divergence_epoch"], row["divergence_batch"], row["divergence_step"]) == (
        "0",
        "30",
        "30",
    )
    (md_row,) = _markdown_table(render_markdown(report).decode(), "## Cells")
    assert md_row["divergence (epoch / batch / step)"] == "0 / 30 / 30"


def test_epoch_of_a_step_at_the_epoch_boundaries():
    assert epoch_batch(0, EPOCHS) == (0, 0)
    assert epoch_batch(59, EPOCHS) == (0, 59)
    assert epoch_batch(60, EPOCHS) == (1, 0)
    assert epoch_batch(119, EPOCHS) == (1, 59)
    assert epoch_batch(5, []) == (None, None)  # no epochs recorded: no epoch to name
    assert epoch_batch(5, [(1, 10)]) == (None, None)  # before the first recorded epoch


@pytest.mark.parametrize("source", ["epochs", "steps_per_epoch"])
def test_divergence_at_the_epoch_boundaries_is_rendered_with_its_epoch(tmp_path: Path, source: str):
    """Steps 0 (the first of epoch 0), 59 (its last) and 60 (the first of epoch 1), in the
    Markdown cells table's "epoch / batch / step" column and in the verdict's words; the
    epochs' first steps read from run.json's epoch summaries, or, in a record without them,
    counted from its ``steps_per_epoch``."""
    steps = {"at0": 0, "at59": 59, "at60": 60}
    cells = {name: make_cell(name, placement="none", seed=step) for name, step in steps.items()}
    make_results(tmp_path, list(cells.values()), repeats=2)
    base = base_losses()
    for name, step in steps.items():
        changed = base.copy()
        changed[step, 0] = np.nextafter(changed[step, 0], np.float32(10))
        write_run(tmp_path, cells[name], 0, base)
        write_run(tmp_path, cells[name], 1, changed)
    if source == "steps_per_epoch":
        for path in tmp_path.glob("cells/*/repeat-*/run.json"):
            record = json.loads(path.read_text())
            record["epochs"] = []
            write_json_atomic(path, record)
    report = analyze(tmp_path)
    assert {c.runs[0].epoch_starts == [(0, 0), (1, 60)] for c in report.cells} == {True}
    rows = _markdown_table(render_markdown(report).decode(), "## Cells")
    shown = {r["cell"]: r["divergence (epoch / batch / step)"] for r in rows}
    assert shown == {"at0": "0 / 0 / 0", "at59": "0 / 59 / 59", "at60": "1 / 0 / 60"}
    detail = {c.name: c.detail for c in report.cells}
    assert detail["at0"].endswith("first divergence at epoch 0, batch 0 (step 0)")
    assert detail["at59"].endswith("first divergence at epoch 0, batch 59 (step 59)")
    assert detail["at60"].endswith("first divergence at epoch 1, batch 0 (step 60)")


def test_markdown_escapes_user_text_and_links_plots(results: Path):
    write_reports(results, ["md", "json", "csv"])
    md = (results / "report.md").read_text()
    assert "<b>" not in md.split("<details>")[0]
    assert "line | with <b>html</b>" in md  # inside a fenced block, verbatim
    assert "````text" in md  # the fence is longer than the ``` inside the log
    assert "(plots/diverge--" in md
    plot = next((results / "plots").glob("diverge--*.png"))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((results / "plots").glob("same--*.png"))
    assert escape("a|b <i>[x](y)") == "a\\|b &lt;i&gt;\\[x\\]\\(y\\)"
    assert fence("``` x").startswith("````")


def test_json_and_csv_carry_the_same_numbers(results: Path):
    report = analyze(results)
    data = json.loads(render_json(report))
    rows = list(csv.DictReader(io.StringIO(render_csv(report).decode())))
    assert [c["name"] for c in data["cells"]] == [r["name"] for r in rows]
    for cell, row in zip(data["cells"], rows, strict=True):
        for key in (
            "id",
            "name",
            "settings",
            "repeats",
            "reproducible",
            "distinct_trajectories",
            "first_divergence",
        ):
            assert key in cell
        assert str(cell["distinct_trajectories"]) == row["distinct_trajectories"]
        d = cell["first_divergence"]
        assert (str(d["step"]) if d else "") == row["divergence_step"]


def test_report_runs_without_torch(results: Path):
    code = (
        "import sys, builtins\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning'):\n"
        "        raise ImportError('torch is not allowed on the host side')\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "from harness.cli import main\n"
        f"rc = main(['report', {str(results)!r}])\n"
        "assert 'torch' not in sys.modules\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert (results / "report.md").exists()


def test_plot_bound_is_said_in_the_report_and_can_be_lifted(tmp_path: Path):
    cells = [make_cell(f"diverge{i}", placement="none", seed=i) for i in range(3)]
    make_results(tmp_path, cells, repeats=2)
    base = base_losses()
    for cell in cells:
        write_run(tmp_path, cell, 0, base)
        write_run(tmp_path, cell, 1, base + np.float32(0.5))
    write_reports(tmp_path, ["md"], max_plots=2)
    # the cells' plots (``<name>--<id>.png``); the image's grid (grid-local.png) is not counted
    assert len(list((tmp_path / "plots").glob("*--*.png"))) == 2
    md = (tmp_path / "report.md").read_text()
    assert "1 cells that do not reproduce have no plot" in md and "--max-plots 0" in md
    write_reports(tmp_path, ["md"], max_plots=0)
    assert len(list((tmp_path / "plots").glob("*--*.png"))) == 3
    assert "have no plot" not in (tmp_path / "report.md").read_text()


def test_across_images_and_gpu_counts_and_the_cost_of_determinism(tmp_path: Path):
    a = make_cell("img-a", image="repo/a:1")
    b = make_cell("img-b", image="repo/b:1")  # same settings as a, other image, same bits
    c = make_cell("img-c", image="repo/c:1")  # same settings again, different bits
    two = make_cell("img-a-x2", image="repo/a:1", devices=2)  # a with 2 GPUs
    nondet = make_cell(
        "img-a-nondet",
        image="repo/a:1",
        cudnn_deterministic=False,
        cudnn_benchmark=True,
        deterministic_algorithms="off",
    )
    make_results(tmp_path, [a, b, c, two, nondet], repeats=1)
    base = base_losses()
    for cell in (a, b, nondet):
        write_run(tmp_path, cell, 0, base)
    shifted = base.copy()
    shifted[7, 0] += np.float32(0.125)
    write_run(tmp_path, c, 0, shifted)
    write_run(tmp_path, two, 0, base + np.float32(1))
    report = analyze(tmp_path)

    across_images = [x for x in report.comparisons if x.axis == "image"]
    assert len(across_images) == 1
    assert sorted(name for _, name in across_images[0].cells) == ["img-a", "img-b", "img-c"]
    assert across_images[0].equal is False and across_images[0].divergence.step == 7
    across_gpus = [x for x in report.comparisons if x.axis == "devices"]
    assert [sorted(n for _, n in x.cells) for x in across_gpus] == [["img-a", "img-a-x2"]]
    assert across_gpus[0].equal is False

    costs = {x.cell: x for x in report.costs}
    assert set(costs) == {"img-a"} and costs["img-a"].twin == "img-a-nondet"
    assert costs["img-a"].ratio == pytest.approx(1.0)
    write_reports(tmp_path, ["md"])
    md = (tmp_path / "report.md").read_text()
    assert "img-a-nondet" in md.split("## Cost of determinism")[1]


def _markdown_table(md: str, heading: str) -> list[dict[str, str]]:
    """The rows of the first table after ``heading``, keyed by the header's columns."""
    lines = md.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split(" | ")])
    header, _separator, *body = table
    return [dict(zip(header, row, strict=True)) for row in body]


def test_allow_tf32_is_a_column_of_the_markdown_table_and_the_csv(tmp_path: Path):
    on = make_cell("tf32-on", allow_tf32=True)
    off = make_cell("tf32-off", allow_tf32=False)
    make_results(tmp_path, [on, off], repeats=2)
    for cell in (on, off):
        for k in range(2):
            write_run(tmp_path, cell, k, base_losses())
    write_reports(tmp_path, ["md", "csv"], plots=False)

    rows = _markdown_table((tmp_path / "report.md").read_text(), "## Cells")
    assert "allow_tf32" in rows[0]
    assert {r["cell"]: r["allow_tf32"] for r in rows} == {"tf32-on": "True", "tf32-off": "False"}
    with open(tmp_path / "report.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert "allow_tf32" in (reader.fieldnames or [])
        assert {r["name"]: r["allow_tf32"] for r in reader} == {
            "tf32-on": "True",
            "tf32-off": "False",
        }
