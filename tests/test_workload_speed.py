"""A cheaper step and a cheaper start for the built-in workload (issue 32), with the same bits.

The step: the run's recorders behind one callback record what the four callbacks recorded (both
trained here, side by side), the Trainer's profiler stays a pass-through, ``LitMNIST`` still
registers parameters and modules. The start: a run of the built-in imports neither torchmetrics
nor torchvision nor scipy (Lightning gets a stand-in torchmetrics), says when its first optimizer
step ended, and records torchvision's version as the package says it; a user's workload gets
the real torchmetrics; a Lightning that needs more of torchmetrics than the stand-in has is
imported with the real one. The bits of the default cell against a plain PyTorch loop:
tests/test_workload_runs.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.contract import RECORD_FILE

REPO = Path(__file__).resolve().parents[1]
FIRST_STEP = re.compile(r"first optimizer step at (\d+\.\d+) \(unix time\), (\d+\.\d+) s after")
#: What a run of the built-in must not import (harness/workload/torchmetrics_standin.py)
NOT_IMPORTED = ("torchmetrics", "torchvision", "scipy")


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _imported(importtime_stderr: str) -> set[str]:
    """The modules a ``PYTHONPROFILEIMPORTTIME`` process imported, from its stderr."""
    names = set()
    for line in importtime_stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3:
            names.add(parts[2].strip())
    return names


@pytest.mark.slow
def test_a_built_in_run_imports_no_torchmetrics_and_says_when_its_first_step_ended(
    workload, tmp_path, mnist_dir
):
    spec = {"placement": "before_model", "max_steps_per_epoch": 2}
    started = time.time()
    done = workload(
        spec, tmp_path / "run", env={"PYTHONPROFILEIMPORTTIME": "1"}, data_dir=mnist_dir
    )
    ended = time.time()
    assert done.returncode == 0, done.stderr[-3000:]
    imported = _imported(done.stderr)
    assert "pytorch_lightning" in imported and "torch" in imported, "importtime was not read"
    heavy = sorted(m for m in imported if m.split(".")[0] in NOT_IMPORTED)
    assert heavy == [], heavy[:10]
    found = FIRST_STEP.search(done.stderr)
    assert found is not None, done.stderr[-2000:]
    at, after_start = float(found.group(1)), float(found.group(2))
    assert started < at < ended and 0 < after_start < ended - started + 0.05
    record = json.loads((tmp_path / "run" / RECORD_FILE).read_text())
    assert record["error"] is None and record["steps"] == 2
    import torchvision

    assert record["provenance"]["torchvision"] == torchvision.__version__


USER_CODE = """
import pytorch_lightning as pl
import torch
from torchmetrics.functional import accuracy


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.layer(x)
        # a logged value is a torchmetrics Metric inside Lightning: the stand-in would refuse it
        self.log("acc", accuracy(logits.argmax(1), y, task="multiclass", num_classes=2))
        return torch.nn.functional.cross_entropy(logits, y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def build(settings):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    return Tiny(), data
"""


@pytest.mark.slow
def test_a_users_workload_gets_the_real_torchmetrics(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "tiny_metrics.py").write_text(USER_CODE)
    out = tmp_path / "run"
    out.mkdir()
    (out / "spec.json").write_text(json.dumps({"entry": "tiny_metrics:build", "threads": 1}))
    argv = [sys.executable, "-m", "harness.workload", "--spec", str(out / "spec.json")]
    argv += ["--out", str(out), "--code-dir", str(code)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    record = json.loads((out / RECORD_FILE).read_text())
    assert done.returncode == 0 and record["error"] is None, done.stderr[-3000:]
    assert record["steps"] == 4


def test_lightning_imports_with_the_stand_in_which_refuses_to_be_used():
    probe = (
        "import sys\n"
        "from harness.workload.torchmetrics_standin import (StandInError,\n"
        "    import_lightning_without_torchmetrics as go)\n"
        "assert go() is True and go() is False\n"
        "import pytorch_lightning, torchmetrics\n"
        "from pytorch_lightning.trainer.connectors.logger_connector.result import _ResultMetric\n"
        "assert issubclass(_ResultMetric, torchmetrics.Metric)\n"
        "assert not hasattr(torchmetrics, 'Accuracy')\n"
        "try:\n"
        "    torchmetrics.Metric()\n"
        "except StandInError as e:\n"
        "    print('refused:', e)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torchvision', 'scipy')))\n"
    )
    done = _python(probe)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("refused: torchmetrics is not imported in a run of the built-in")
    assert lines[1] == "[]"


def test_a_lightning_that_needs_more_of_torchmetrics_gets_the_real_one():
    """A stand-in without ``Metric`` (as a Lightning needing more of torchmetrics would find
    it): the half-done import is dropped and Lightning imports the real torchmetrics."""
    probe = (
        "import types\n"
        "from importlib import metadata\n"
        "from harness.workload.torchmetrics_standin import import_lightning_without_torchmetrics\n"
        "def lacking():\n"
        "    m = types.ModuleType('torchmetrics')\n"
        "    m.__version__ = metadata.version('torchmetrics')\n"
        "    return m\n"
        "assert import_lightning_without_torchmetrics(lacking) is False\n"
        "import pytorch_lightning, torchmetrics\n"
        "from pytorch_lightning.core.module import Metric\n"
        "assert Metric is torchmetrics.Metric and hasattr(torchmetrics, 'Accuracy')\n"
        "print('real', torchmetrics.__file__)\n"
    )
    done = _python(probe)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("real ") and "site-packages" in done.stdout


def test_torchvisions_version_is_read_without_importing_it():
    probe = (
        "import sys\n"
        "from harness.workload.provenance import torchvision_version\n"
        "sys.modules.pop('torchvision', None)\n"
        "found = torchvision_version()\n"
        "assert 'torchvision' not in sys.modules\n"
        "import torchvision\n"
        "print(found == torchvision.__version__, found)\n"
    )
    # with the stand-in, nothing imports torchvision before the call
    done = _python(
        "from harness.workload.torchmetrics_standin import import_lightning_without_torchmetrics\n"
        "import_lightning_without_torchmetrics()\n" + probe
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("True "), done.stdout


def test_the_process_start_is_read_from_proc():
    done = _python(
        "import time\n"
        "from harness.workload.run_callbacks import process_started_at\n"
        "print(repr(time.time() - process_started_at()))\n"
    )
    assert done.returncode == 0, done.stderr
    age = float(done.stdout.split()[-1])
    assert 0 <= age < 30  # the interpreter's start and one import: far less, even under load


def test_the_trainers_profiler_is_a_pass_through_with_a_ready_context():
    from pytorch_lightning.profilers import PassThroughProfiler

    from harness.contract import RunSpec
    from harness.workload.training import _build_trainer

    profiler = _build_trainer(RunSpec(), []).profiler
    assert isinstance(profiler, PassThroughProfiler) and type(profiler) is not PassThroughProfiler
    with profiler.profile("run_training_batch") as name:
        assert name == "run_training_batch"
    assert profiler.summary() == ""


def test_litmnist_still_registers_parameters_and_modules():
    from harness.workload.data import Mnist
    from harness.workload.networks import LitMNIST

    model = LitMNIST(Mnist(torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.int64)))
    model._current_fx_name = "training_step"
    assert model.__dict__["_current_fx_name"] == "training_step"
    model.extra = torch.nn.Parameter(torch.zeros(2))
    model.head = torch.nn.Linear(2, 2)
    assert "extra" in model._parameters and "head" in model._modules
    assert {n for n, _ in model.named_parameters()} >= {"extra", "head.weight", "model.1.weight"}


def _fit(mnist, recorders: bool) -> tuple[np.ndarray, np.ndarray]:
    """40 steps of the built-in with the run's recorders as one callback or as four."""
    from harness.contract import RunSpec
    from harness.workload import provenance
    from harness.workload.loss_capture import LossCapture
    from harness.workload.networks import LitMNIST
    from harness.workload.record_builder import RunState
    from harness.workload.recorder import EpochRecorder
    from harness.workload.run_callbacks import Recorders
    from harness.workload.seeding import seed_all
    from harness.workload.training import _build_trainer

    spec = RunSpec(max_steps_per_epoch=20, epochs=2)
    state = RunState()
    callbacks: list = [Recorders(state, None, spec.epochs)]
    if not recorders:
        epochs = EpochRecorder(state.recorder, None, spec.epochs)
        flags = provenance.RankFlags()
        callbacks = [state.weights, epochs, LossCapture(state.recorder), flags]
    seed_all(spec.seed)
    _build_trainer(spec, callbacks).fit(LitMNIST(mnist))
    return state.recorder.losses(1), state.weights.rows()


@pytest.mark.slow
def test_one_recorders_callback_records_what_the_four_callbacks_recorded(mnist_dir):
    from harness.workload.data import load_mnist
    from harness.workload.seeding import pin_threads

    pin_threads(1)
    mnist = load_mnist(mnist_dir)
    losses, weights = _fit(mnist, recorders=True)
    four_losses, four_weights = _fit(mnist, recorders=False)
    assert losses.shape == (40, 1) and weights.shape == (40, 4)
    assert np.array_equal(losses.view(np.uint32), four_losses.view(np.uint32))
    assert np.array_equal(weights, four_weights)
