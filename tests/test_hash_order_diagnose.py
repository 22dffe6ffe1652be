"""``harness diagnose`` of a user's classifier whose rows are put in another order in every run
(issue 28, item 1), end to end: real runs of the user's build function, real replays.

With ``torch.hash_tensor`` (an XOR of the words, blind to order) both replays' batches hashed
alike, and the diagnosis blamed a transpose whose inputs "were equal in both runs" while they
held the same rows in another order. With a hash in which position counts:

- ``collate``: the collate_fn shuffles the samples inside each batch with a generator no seed
  reaches; the diagnosis names the data (the first batch whose inputs differ);
- ``forward``: the model puts the batch's rows in another order inside ``forward`` (the data is
  the same); the diagnosis names the first operation whose outputs differ, and no operation
  whose inputs were that permutation is said to have had equal inputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

STEPS = 12
#: a user's project: an MLP classifier on fixed 8x8 images; ``params.where`` says where rows are
#: put in another order, by a generator seeded from os.urandom (so each run and replay differs)
CODE = '''\
import os

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def unseeded() -> torch.Generator:
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(7), "little"))


def make_data(count: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(7)
    labels = torch.randint(0, 2, (count,), generator=gen)
    images = torch.rand(count, 64, generator=gen)
    images[labels == 1, :32] += 0.5
    return TensorDataset(images, labels)


class ShuffleInside:
    """A collate_fn: the batch, its samples in an order of their own."""

    def __init__(self) -> None:
        self.gen = unseeded()

    def __call__(self, samples):
        x = torch.stack([s[0] for s in samples])
        y = torch.stack([s[1] for s in samples])
        order = torch.randperm(len(samples), generator=self.gen)
        return x[order], y[order]


class Net(pl.LightningModule):
    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.gen = unseeded()
        self.body = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, x):
        if self.where == "forward":
            x = x[torch.randperm(len(x), generator=self.gen)]
        return self.body(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.where == "forward":  # the same rows of labels, in the same new order
            state = self.gen.get_state()
            order = torch.randperm(len(x), generator=self.gen)
            self.gen.set_state(state)
            y = y[order]
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        collate = ShuffleInside() if self.where == "collate" else None
        return DataLoader(make_data(512), batch_size=32, shuffle=False, collate_fn=collate)


def build(settings):
    return Net(settings.params["where"])
'''
MATRIX = f"""\
name: order
run: {{repeats: 2, epochs: 1, max_steps_per_epoch: {STEPS}}}
workload: {{entry: "shuffled:build", path: code}}
axes:
  params: [{{where: collate}}, {{where: forward}}]
"""


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=dict(os.environ),
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("order")
    (root / "code").mkdir()
    (root / "code" / "shuffled.py").write_text(CODE)
    (root / "matrix.yaml").write_text(MATRIX)
    out = root / "results"
    proc = harness(
        "run", str(root / "matrix.yaml"), "--out", str(out), "--progress", "quiet", "--no-report"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def diagnose(out: Path, where: str) -> tuple[dict, dict, dict, str]:
    """diagnosis.json, both replays' replay.json and the printed diagnosis of the cell."""
    manifest = json.loads((out / "manifest.json").read_text())
    (cell,) = (c["id"] for c in manifest["cells"] if c["settings"]["params"]["where"] == where)
    proc = harness("diagnose", str(out), "--cell", cell, "--no-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("diagnosis: "))
    found = json.loads((Path.cwd() / line.removeprefix("diagnosis: ")).read_text())
    folder = out / "diagnoses" / found["name"]
    a, b = (json.loads((folder / w / "replay.json").read_text()) for w in ("a", "b"))
    assert a["hash"] == b["hash"] == "mix64_sum"
    return found, a, b, proc.stdout


def test_rows_shuffled_inside_each_batch_are_named_as_the_data(results: Path):
    found, a, b, said = diagnose(results, "collate")
    finding = found["finding"]
    assert finding["kind"] == "data", found["sentences"]
    # the same weights, the same samples in each batch, in another order: the inputs' hashes
    # differ from the first batch on (an XOR of the words hashed them alike)
    assert a["init"] == b["init"]
    assert a["batches"][0][0] != b["batches"][0][0]
    assert finding["batch"]["step"] == 0 and finding["batch"]["inputs"] is True
    assert "the two runs see different data" in said
    assert "batch 0 is the first whose inputs" in said
    assert "inputs were equal" not in said


def test_rows_reordered_inside_forward_name_the_operation_that_reordered_them(results: Path):
    found, a, b, said = diagnose(results, "forward")
    finding = found["finding"]
    assert finding["kind"] == "operation", found["sentences"]
    assert a["batches"] == b["batches"] and a["init"] == b["init"]
    op = finding["op"]
    step = str(op["step"])
    ops_a, ops_b = a["ops"][step], b["ops"][step]
    # the first logged operation whose outputs differ is the permutation itself, or the
    # indexing that applies it; never one after them, whose inputs hold the rows reordered
    first = ops_a[op["index"]]
    assert op["index"] == min(
        i
        for i, (x, y) in enumerate(zip(ops_a, ops_b, strict=False))
        if [o["hash"] for o in x["outputs"]] != [o["hash"] for o in y["outputs"]]
    )
    assert "randperm" in first["op"] or "index" in first["op"], first["op"]
    if op["inputs_equal"]:
        assert "randperm" in first["op"]  # no tensor input but its generator's state
    # every operation that consumed the reordered rows: its inputs differ, and say so
    reordered = [
        x
        for x, y in zip(ops_a, ops_b, strict=False)
        if x["op"] == y["op"] and "index" in x["op"] and x["outputs"] != y["outputs"]
    ]
    assert reordered, "no logged indexing applied the permutation"
    assert "inputs were equal" not in said
