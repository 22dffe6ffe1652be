"""The ``model`` setting: the post's MLP and the PyTorch MNIST example's CNN, trained alike.

The CNN is there so that the cuDNN axes have convolutions to act on; on this CPU it shows what
matters here: its dropout draws from the seeded generator, so ``before_model`` still reproduces
bit for bit over 30 steps (each draws new dropout masks) and ``none`` diverges from the first
step, and a report over both models keeps them apart as cells with the model in the table.
"""

from __future__ import annotations

import json

import pytest
import torch
from fault_tools import Harness

from harness.workload.networks import cnn, mlp, network

#: every step draws both dropout masks: 30 steps of them show the seed reaching the dropout
CNN_STEPS = 30


def test_the_cnn_is_the_pytorch_mnist_example_network():
    net = cnn()
    # examples/mnist/main.py's Net: 320 + 18,496 + 1,179,776 + 1,290 parameters
    assert sum(p.numel() for p in net.parameters()) == 1_199_882
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 32, (3, 3)),
        (32, 64, (3, 3)),
    ]
    assert [m.p for m in net if isinstance(m, torch.nn.Dropout)] == [0.25, 0.5]
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_the_mlp_is_the_posts_network():
    net = mlp(64)
    assert [type(m).__name__ for m in net] == ["Flatten", "Linear", "ReLU", "Linear"]
    assert sum(p.numel() for p in net.parameters()) == 784 * 64 + 64 + 64 * 10 + 10


def test_the_same_seed_gives_the_same_initial_cnn_and_another_seed_does_not():
    def init(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return [p.detach().clone() for p in network("cnn").parameters()]

    assert all(torch.equal(a, b) for a, b in zip(init(1), init(1), strict=True))
    assert not torch.equal(init(1)[0], init(2)[0])


def test_an_unknown_model_is_refused():
    with pytest.raises(ValueError, match="mlp or cnn"):
        network("resnet")


MATRIX = f"""\
name: both-models
run: {{repeats: 2, epochs: 1, max_steps_per_epoch: 50, seed: 201014, threads: 1, timeout_s: 900}}
axes:
  image: [local]
  accelerator: [cpu]
  model: [mlp]
  placement: [before_model]
include:
  - {{model: cnn, placement: before_model, max_steps_per_epoch: {CNN_STEPS}}}
  - {{model: cnn, placement: none, max_steps_per_epoch: 5}}
exclude: []
"""


@pytest.fixture(scope="module")
def both_models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real run of a matrix with both models: (report.json, report.md, results folder)."""
    root = tmp_path_factory.mktemp("both-models")
    (root / "matrix.yaml").write_text(MATRIX)
    out = root / "results"
    run = Harness(root / "matrix.yaml", out, report=True)
    assert run.finish(timeout=900) == 0, run.text[-3000:]
    report = json.loads((out / "report.json").read_text())
    cells = {(c["settings"]["model"], c["settings"]["placement"]): c for c in report["cells"]}
    return {"cells": cells, "md": (out / "report.md").read_text(), "out": out}


@pytest.mark.slow
def test_a_seeded_cnn_reproduces_bit_for_bit_over_30_steps(both_models):
    cell = both_models["cells"][("cnn", "before_model")]
    assert cell["reproducible"] is True
    assert cell["distinct_trajectories"] == 1
    assert [r["steps"] for r in cell["runs"]] == [CNN_STEPS, CNN_STEPS]
    assert cell["final_equal"] is True


@pytest.mark.slow
def test_an_unseeded_cnn_diverges_at_step_0(both_models):
    cell = both_models["cells"][("cnn", "none")]
    assert cell["reproducible"] is False
    assert cell["first_divergence"]["step"] == 0


@pytest.mark.slow
def test_the_report_keeps_the_models_apart_with_the_model_in_the_table(both_models):
    cells = both_models["cells"]
    assert set(cells) == {("mlp", "before_model"), ("cnn", "before_model"), ("cnn", "none")}
    assert len({c["id"] for c in cells.values()}) == 3
    # the model is in the name where it varies
    assert "-cnn" in cells[("cnn", "before_model")]["name"]
    assert "-mlp" in cells[("mlp", "before_model")]["name"]
    header = next(line for line in both_models["md"].splitlines() if line.startswith("| verdict |"))
    assert "| model |" in header
    column = header.split(" | ").index("model")
    width = len(header.split(" | "))  # the cells table's rows (the answer's tables name cells too)
    rows = [line.split(" | ") for line in both_models["md"].splitlines() if "-cnn" in line]
    rows = [row for row in rows if len(row) == width]
    assert len(rows) == 2 and all(row[column] == "cnn" for row in rows)
