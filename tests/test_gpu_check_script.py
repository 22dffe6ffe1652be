"""scripts/gpu-check.sh, tested where there is no GPU: its CPU dry mode, for real.

The dry mode runs the same code paths as on a GPU (``harness run --executor local`` then
``harness report``, the host-sync runs at two step counts, the capture benchmark, the summary)
with ``accelerator: cpu`` and a small matrix of both models; the GPU's own matrix,
examples/gpu-check.yaml, is checked for its shape without running it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.matrix import load_matrix

REPO = Path(__file__).resolve().parent.parent

#: both models, one reproducing and one diverging cell, 2 repeats of 20 steps
DRY_MATRIX = """\
name: gpu-check-dry
run: {repeats: 2, epochs: 1, max_steps_per_epoch: 20, seed: 201014, threads: 1, timeout_s: 600}
axes:
  image: [local]
  accelerator: [gpu]
  devices: [1]
  model: [mlp, cnn]
  placement: [none, before_model]
  deterministic_algorithms: [warn]
exclude:
  - {model: mlp, placement: none}
  - {model: cnn, placement: before_model}
"""


@pytest.fixture(scope="module")
def dry(tmp_path_factory, mnist_dir) -> tuple[subprocess.CompletedProcess, Path]:
    """One dry run of the whole script, shared by the tests that read what it wrote."""
    root = tmp_path_factory.mktemp("gpu-check")
    matrix = root / "dry.yaml"
    matrix.write_text(DRY_MATRIX)
    out = root / "out"
    env = dict(os.environ)
    env.update(
        HARNESS_GPU_PYTHON=sys.executable,
        HARNESS_MNIST_DIR=str(mnist_dir),
        HARNESS_GPU_CHECK_ACCELERATOR="cpu",
        HARNESS_GPU_CHECK_MATRIX=str(matrix),
        HARNESS_GPU_CHECK_MODELS="mlp",  # the sync count and the benchmark: one model is enough
        HARNESS_GPU_CHECK_SYNC_STEPS="5,10",
        HARNESS_GPU_CHECK_BENCH="10,1",
    )
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu-check.sh"), str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return proc, out


@pytest.mark.slow
def test_the_dry_mode_passes_and_writes_every_section(dry):
    proc, out = dry
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "gpu-check.json").read_text())
    assert list(results) == ["facts", "matrix", "host_syncs", "capture"]  # no GPU probe on a CPU
    summary = (out / "summary.md").read_text()
    for section in (
        "## Machine",
        "## Cells",
        "## Ops that `warn` named",
        "## Per-step time, with and without loss capture",
        "## Host syncs",
        "## Checks",
    ):
        assert section in summary, section
    assert "CPU dry mode" in summary and "1 of 2 cells reproduce" in summary
    assert json.loads((out / "matrix.yaml").read_text())["axes"]["accelerator"] == ["cpu"]


@pytest.mark.slow
def test_the_report_shows_both_models_one_reproducing_one_diverging_at_step_0(dry):
    _, out = dry
    report = json.loads((out / "results" / "report.json").read_text())
    cells = {c["settings"]["model"]: c for c in report["cells"]}
    assert set(cells) == {"mlp", "cnn"}
    assert cells["mlp"]["verdict"] == "reproduces" and cells["mlp"]["settings"]["placement"] == (
        "before_model"
    )
    assert cells["cnn"]["verdict"] == "diverges"
    assert cells["cnn"]["first_divergence"]["step"] == 0
    rows = json.loads((out / "gpu-check.json").read_text())["matrix"]["cells"]
    assert {r["model"]: r["nondeterministic_ops"] for r in rows} == {"mlp": [], "cnn": []}
    assert all(r["errors"] == [] for r in rows)  # every run's record was found and read


@pytest.mark.slow
def test_the_sync_count_is_null_with_its_reason_on_the_cpu(dry):
    _, out = dry
    syncs = json.loads((out / "gpu-check.json").read_text())["host_syncs"]
    rows = syncs["models"]["mlp"]
    assert [r["steps"] for r in rows] == [5, 10]
    assert all(r["status"] == "ok" and r["count"] is None for r in rows)
    assert all("no CUDA" in r["reason"] and "training" in r["scope"] for r in rows)
    assert syncs["constant"] == {"mlp": None}
    capture = json.loads((out / "capture.json").read_text())["models"]["mlp"]
    assert capture["capture_s_per_epoch"] > 0 and capture["plain_s_per_epoch"] > 0
    assert capture["same_loss_bits"] is True  # the plain loop trains the workload's bits


def test_the_gpu_matrix_crosses_the_cudnn_axes_for_cnn_only():
    loaded = load_matrix(REPO / "examples" / "gpu-check.yaml")
    cells = [c.settings for c in loaded.cells]
    assert len(cells) == 16 and loaded.model.run.repeats == 2
    assert {c["accelerator"] for c in cells} == {"gpu"} and {c["devices"] for c in cells} == {1}
    flags = {(c["model"], c["cudnn_deterministic"], c["cudnn_benchmark"]) for c in cells}
    assert {f for f in flags if f[0] == "mlp"} == {("mlp", True, False)}
    assert len({f for f in flags if f[0] == "cnn"}) == 4
    placements = {c["placement"] for c in cells if c["model"] == "cnn"}
    assert placements == {"none", "process_start", "before_model", "before_trainer"}
    algs = {c["deterministic_algorithms"] for c in cells}
    assert algs == {"off", "on", "warn"}


def test_the_dry_mode_swaps_the_accelerator_everywhere(monkeypatch):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "scripts"))
    monkeypatch.setattr(gpu_check, "ACCELERATOR", "cpu")
    monkeypatch.setattr(gpu_check, "STEPS", "7")
    text = gpu_check.check_matrix_file((REPO / "examples" / "gpu-check.yaml").read_text())
    data = yaml.safe_load(text)
    assert data["axes"]["accelerator"] == ["cpu"] and data["run"]["max_steps_per_epoch"] == 7
    assert {e["accelerator"] for e in data["include"]} == {"cpu"}
