"""A module written with ``import lightning.pytorch as pl`` (Lightning's own docs' spelling), not
``pytorch_lightning``: trained by the Trainer of its own package, in the matrix (locally and in
a container) and with ``ReproRecorder``, with the verdicts of its ``pytorch_lightning`` twin.

tests/resources/own_workload/tinyconv_lightning.py is tinyconv.py with the other import; both
matrices run 8 steps a run. The fast tests check the twin callback class and what
``check_built`` accepts and refuses from the ``lightning`` package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import BASE_IMAGE
from fault_tools import Harness

from harness.contract import LOSSES_FILE

ROOT = Path(__file__).resolve().parents[1]
CODE = ROOT / "tests" / "resources" / "own_workload"

MATRIX = """\
name: {name}
workload: {{entry: "{module}:build", path: {path}, params: {{width: 3}}}}
run: {{repeats: 2, epochs: 1, max_steps_per_epoch: 8, threads: 1, timeout_s: 600}}
axes:
  placement: [none, before_model]
{image}"""


def _matrix(tmp: Path, module: str, image: str | None = None) -> Path:
    path = tmp / f"{module}.yaml"
    axis = f"  image: [{image}]\n" if image else ""
    name = module.replace("_", "-")
    path.write_text(MATRIX.format(name=name, module=module, path=CODE, image=axis))
    return path


def _verdicts(out: Path) -> dict[str, dict[str, Any]]:
    """report.json's cells by placement: what the report says, and the runs' trajectories
    (of the seeded cell only: an unseeded run's are its own)."""
    cells = json.loads((out / "report.json").read_text())["cells"]
    return {
        c["settings"]["placement"]: {
            "reproducible": c["reproducible"],
            "divergence": (c["first_divergence"] or {}).get("step"),
            "trajectories": sorted({r["trajectory"] for r in c["runs"]})
            if c["settings"]["placement"] != "none"
            else None,
        }
        for c in cells
    }


def _run(matrix: Path, out: Path, executor: str) -> dict[str, dict[str, Any]]:
    run = Harness(matrix, out, "--executor", executor, report=True)
    assert run.finish(timeout=900) == 0, run.text[-3000:]
    return _verdicts(out)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("packages")
    return {
        module: _run(_matrix(tmp, module), tmp / module, "local")
        for module in ("tinyconv", "tinyconv_lightning")
    }


@pytest.mark.slow
def test_a_lightning_pytorch_module_gets_its_pytorch_lightning_twin_s_verdicts(local):
    twin, lightning = local["tinyconv"], local["tinyconv_lightning"]
    assert lightning["before_model"]["reproducible"] is True
    assert len(lightning["before_model"]["trajectories"]) == 1
    assert lightning["none"]["reproducible"] is False
    # the same code under the other package's name: the same verdicts, the same loss bits
    assert lightning == twin


@pytest.mark.slow
@pytest.mark.docker
def test_in_a_container_a_lightning_pytorch_module_gets_the_local_verdicts(local, tmp_path, client):
    matrix = _matrix(tmp_path, "tinyconv_lightning", image=BASE_IMAGE)
    assert _run(matrix, tmp_path / "results", "docker") == local["tinyconv_lightning"]


def _script(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(CODE), str(ROOT), env.get("PYTHONPATH")) if p
    )
    argv = [sys.executable, str(CODE / "plain_script.py"), str(out), "--seed", "11", *args]
    return subprocess.run(
        argv, cwd=CODE, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.slow
def test_repro_recorder_records_a_lightning_pytorch_trainer_as_its_twin(tmp_path):
    """The plain script with lightning.pytorch's Trainer (ReproRecorder in its callbacks) and
    with pytorch_lightning's: records with the same losses, and ``harness report`` over the
    lightning runs says they reproduce."""
    runs = {"lightning/a": ("--lightning",), "lightning/b": ("--lightning",), "twin": ()}
    for name, args in runs.items():
        done = _script(tmp_path / name, *args)
        assert done.returncode == 0, done.stderr[-3000:]
    bits = {name: np.load(tmp_path / name / LOSSES_FILE).view(np.uint32) for name in runs}
    assert bits["twin"].shape == (8, 1)
    assert np.array_equal(bits["lightning/a"], bits["twin"])
    report = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(tmp_path / "lightning")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert report.returncode == 0, report.stdout + report.stderr
    cell = json.loads((tmp_path / "lightning" / "report.json").read_text())["cells"][0]
    assert (cell["reproducible"], cell["repeats"]) == (True, 2)


# ---------------------------------------------------------------- the pure logic


def test_a_harness_callback_s_twin_is_a_lightning_pytorch_callback():
    from lightning.pytorch import Callback as LightningCallback
    from lightning.pytorch.utilities.model_helpers import is_overridden
    from pytorch_lightning import Callback as PLCallback

    from harness.workload.packages import for_package
    from harness.workload.syncs import HostSyncCounter

    counter = HostSyncCounter([], lambda: 0)
    assert for_package(counter, "pytorch_lightning") is counter
    assert not isinstance(counter, LightningCallback)
    hook = type(counter).on_train_epoch_start
    assert for_package(counter, "lightning") is counter
    assert isinstance(counter, LightningCallback | PLCallback | HostSyncCounter)
    assert isinstance(counter, LightningCallback) and isinstance(counter, HostSyncCounter)
    assert type(counter).on_train_epoch_start is hook  # its own hooks kept
    # the hooks it does not override are lightning.pytorch's: not taken for a stateful callback
    assert not is_overridden("state_dict", counter, parent=LightningCallback)
    assert is_overridden("on_train_end", counter, parent=LightningCallback)


def test_repro_recorder_is_a_lightning_pytorch_callback_once_it_is_imported():
    import lightning.pytorch  # noqa: F401 - what a script written with it has done
    from lightning.pytorch import Callback as LightningCallback
    from pytorch_lightning import Callback as PLCallback

    from harness.lightning import ReproRecorder

    recorder = ReproRecorder("unused", name="n", seed=3)
    assert isinstance(recorder, LightningCallback) and isinstance(recorder, PLCallback)
    assert isinstance(recorder, ReproRecorder) and recorder.seed == 3
    with pytest.raises(TypeError, match="seed must be an int"):
        ReproRecorder("unused", seed="3")  # type: ignore[arg-type]


def test_check_built_takes_lightning_pytorch_classes_and_refuses_a_mix():
    import lightning.pytorch as L
    import pytorch_lightning
    import torch

    from harness.workload.entry import WorkloadError, check_built

    class Net(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

    module, data = Net(), L.LightningDataModule()
    assert check_built((module, data), "m:f").fit_kwargs() == {"datamodule": data}
    assert check_built((module, [1]), "m:f").train == [1]
    with pytest.raises(WorkloadError, match="defines no train_dataloader"):
        check_built(module, "m:f")
    with pytest.raises(WorkloadError, match="both from pytorch_lightning or both from light"):
        check_built((module, pytorch_lightning.LightningDataModule()), "m:f")


def test_the_harness_imports_lightning_only_for_a_module_from_it():
    """A run of the built-in (or of a pytorch_lightning module) pays nothing for ``lightning``:
    the workload's modules and ReproRecorder load without it."""
    probe = (
        "import sys, harness.workload.training, harness.workload.__main__, harness.lightning; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'lightning'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
