"""A user's own LightningModule as the workload (``entry``), and ``harness.lightning.ReproRecorder``
outside the harness.

The slow tests train a tiny user project (tests/resources/own_workload: a small conv net on
data from a fixed generator, no MNIST) through the real workload process, ``python -m
harness.workload --spec S --out O --code-dir C``, 8 steps a run, the runs of a group made once
per module, two at a time; and a plain Lightning script with ``ReproRecorder`` (no harness
run). The fast ones check the pure logic: what a build function may return, how an entry
fails to load, the settings it receives, the flags read back, the loss capture's refusals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from harness.contract import LOSSES_FILE, RECORD_FILE, TENSORBOARD_DIR, WEIGHTS_FILE, RunSpec
from harness.contract.record import USER_WORKLOAD_ERRORS, Determinism
from harness.results.run_reader import load_record, load_weight_hashes, verified_losses

REPO = Path(__file__).resolve().parent.parent
CODE = REPO / "tests" / "resources" / "own_workload"
STEPS = 8


def _env() -> dict[str, str]:
    """This checkout's harness first (the subprocess must run the code under test)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _harness_run(spec: dict[str, Any], out: Path, code_dir: Path | None = CODE) -> int:
    """One real repeat: spec.json written from a RunSpec, ``python -m harness.workload``."""
    out.mkdir(parents=True)
    settings = {"max_steps_per_epoch": STEPS, "threads": 1, **spec}
    (out / "spec.json").write_text(json.dumps(RunSpec(**settings).to_dict()))
    argv = [sys.executable, "-m", "harness.workload", "--spec", str(out / "spec.json")]
    argv += ["--out", str(out)]
    if code_dir is not None:
        argv += ["--code-dir", str(code_dir)]
    result = subprocess.run(
        argv, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600, check=False
    )
    (out / "output.txt").write_text(result.stdout + result.stderr)
    return result.returncode


def _run_all(root: Path, specs: dict[str, dict[str, Any]]) -> dict[str, tuple[int, Path]]:
    """Every run of a group, two processes at a time: name -> (exit code, run folder)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            name: pool.submit(_harness_run, spec, root / name) for name, spec in specs.items()
        }
        return {name: (f.result(), root / name) for name, f in futures.items()}


def _record(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / RECORD_FILE).read_text())


def _bits(run_dir: Path) -> np.ndarray:
    return np.load(run_dir / LOSSES_FILE).view(np.uint32)


# ---------------------------------------------------------------- trajectories of a user's entry

TRAJECTORY_RUNS: dict[str, dict[str, Any]] = {
    "model_a": {"placement": "before_model", "entry": "tinyconv:build", "params": {"width": 3}},
    "model_b": {
        "placement": "before_model", "entry": "tinyconv:build", "params": {"width": 3}, "repeat": 1
    },
    "none_a": {"placement": "none", "entry": "tinyconv:build"},
    "none_b": {"placement": "none", "entry": "tinyconv:build", "repeat": 1},
    # the (module, train, val) form, and a param that changes the network's parameters
    "blocks2": {"placement": "before_model", "entry": "tinyconv:build_loaders",
                "params": {"width": 3, "blocks": 2}},
}  # fmt: skip


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory) -> dict[str, Path]:
    done = _run_all(tmp_path_factory.mktemp("own"), TRAJECTORY_RUNS)
    for name, (code, out) in done.items():
        assert code == 0, f"{name}: exit {code}\n{(out / 'output.txt').read_text()[-3000:]}"
    return {name: out for name, (_, out) in done.items()}


@pytest.mark.slow
def test_before_model_reproduces_a_user_workload_bit_for_bit(trajectories):
    """The harness seeds before calling the user's function: the same initial weights, losses
    and per-step weight hashes in two processes (a seed set after the build would not)."""
    a, b = trajectories["model_a"], trajectories["model_b"]
    ra, rb = load_record(a), load_record(b)
    assert ra.ok and rb.ok and ra.steps == rb.steps == STEPS and ra.ranks == 1
    assert ra.digests.init_weights == rb.digests.init_weights
    assert np.array_equal(_bits(a), _bits(b))
    assert np.array_equal(load_weight_hashes(a, ra), load_weight_hashes(b, rb))
    assert np.isfinite(verified_losses(a, ra)).all()
    assert ra.spec["entry"] == "tinyconv:build" and ra.spec["params"] == {"width": 3}
    assert ra.digests.split is None  # only the built-in has a split to digest
    assert (a / TENSORBOARD_DIR).is_dir() and (a / WEIGHTS_FILE).is_file()


@pytest.mark.slow
def test_none_never_seeds_a_user_workload(trajectories):
    """``none``: two processes differ from the first step (weights drawn unseeded)."""
    a, b = trajectories["none_a"], trajectories["none_b"]
    assert _record(a)["digests"]["init_weights"] != _record(b)["digests"]["init_weights"]
    assert _bits(a)[0, 0] != _bits(b)[0, 0]


@pytest.mark.slow
def test_params_reach_the_build_function(trajectories):
    """``params: {blocks: 2}`` gives a second convolution: its parameters are columns of
    weights.npy; the default (one block) has none. Also the (module, train, val) return form."""
    one = _record(trajectories["model_a"])["weights"]["parameters"]
    two = _record(trajectories["blocks2"])["weights"]["parameters"]
    assert "features.2.weight" not in one
    assert "features.2.weight" in two and len(two) == len(one) + 2
    assert np.load(trajectories["blocks2"] / WEIGHTS_FILE).shape == (STEPS, len(two))


# ---------------------------------------------------------------- each clear error, for real

#: name -> (spec, what the message must say)
ERROR_RUNS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "import": (
        {"entry": "convnet:build"},
        ("'convnet:build'", "ModuleNotFoundError: No module named 'convnet'", "workload.path"),
    ),
    "requirement": (
        {"entry": "needs_pkg:build"},
        ("No module named 'tinyconv_helpers_not_installed'", "workload.requirements"),
    ),
    "wrong_return": (
        {"entry": "broken:wrong_return"},
        ("'broken:wrong_return'", "returned a dict", "(module, datamodule)"),
    ),
    "no_loss": (
        {"entry": "broken:no_loss"},
        ("NoLoss.training_step", "return the loss tensor, or a dict with a 'loss' key"),
    ),
    "two_optimizers_automatic": (
        {"entry": "broken:two_optimizers_automatic"},
        ("Lightning refused TwoOptimizersAutomatic", "multiple optimizers"),
    ),
    "flags": (
        {"entry": "broken:sets_benchmark"},
        ("your workload set torch.backends.cudnn.benchmark to True", "cudnn_benchmark",
         "remove that line"),
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def errors(tmp_path_factory) -> dict[str, tuple[int, Path]]:
    specs = {name: spec for name, (spec, _) in ERROR_RUNS.items()}
    return _run_all(tmp_path_factory.mktemp("own-errors"), specs)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ERROR_RUNS))
def test_a_user_workload_mistake_is_a_clear_failed_record(errors, name):
    """Each mistake fails the run (exit 1) with a record whose error type the host knows as
    the user's (USER_WORKLOAD_ERRORS) and whose message names the problem and the fix."""
    code, out = errors[name]
    record = load_record(out)
    assert code == 1, (out / "output.txt").read_text()[-3000:]
    assert record.status == "failed" and record.error is not None
    assert record.error.type in USER_WORKLOAD_ERRORS
    for words in ERROR_RUNS[name][1]:
        assert words in record.error.message, record.error.message


@pytest.mark.slow
def test_flags_changed_by_the_module_fail_the_run_and_keep_its_losses(errors):
    """Read back after fit: the run trained, so its losses, weights and flags are kept."""
    _, out = errors["flags"]
    record = load_record(out)
    assert record.error is not None and record.error.type == "DeterminismFlagsChanged"
    assert record.steps == STEPS and np.isfinite(verified_losses(out, record)).all()
    assert load_weight_hashes(out, record) is not None
    assert record.provenance.determinism is not None
    assert record.provenance.determinism.cudnn_benchmark is True


# ---------------------------------------------------------------- ReproRecorder, no harness run


def _script(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join((str(CODE), env["PYTHONPATH"]))
    argv = [sys.executable, str(CODE / "plain_script.py"), str(out), *args]
    return subprocess.run(
        argv, cwd=CODE, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    root = tmp_path_factory.mktemp("plain")
    runs = {
        "seeded_a": ("--seed", "11"),
        "seeded_b": ("--seed", "11"),
        "unseeded": ("--fail-at", "3"),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_script, root / name, *a) for name, a in runs.items()}
        return {name: (f.result(), root / name) for name, f in futures.items()}


@pytest.mark.slow
def test_repro_recorder_writes_records_that_compare_bit_for_bit(plain):
    """A plain Lightning script seeded twice: two normal run records (validated as the host
    validates any) with equal losses.npy, weights.npy and the spec common16 defines."""
    (ra, a), (rb, b) = plain["seeded_a"], plain["seeded_b"]
    assert ra.returncode == 0 and rb.returncode == 0, ra.stderr[-3000:] + rb.stderr[-3000:]
    first, second = load_record(a), load_record(b)
    assert first.ok and first.written_by == "workload" and first.steps == STEPS
    assert np.array_equal(_bits(a), _bits(b))
    assert np.array_equal(load_weight_hashes(a, first), load_weight_hashes(b, second))
    assert first.digests.trajectory == second.digests.trajectory is not None
    assert first.spec == {
        "external": True,
        "cell_name": "plain",
        "cell_id": "",
        "entry": "__main__:MaybeFails",
        "params": {},
        "seed": 11,
        "repeat": 0,
        "cudnn_deterministic": False,
        "cudnn_benchmark": False,
        "deterministic_algorithms": "off",
        "threads": 1,
    }
    assert first.provenance.determinism is not None and first.provenance.torch
    assert (a / TENSORBOARD_DIR).is_dir()


@pytest.mark.slow
def test_repro_recorder_records_a_failure_with_the_losses_so_far(plain):
    """Unseeded, raising at step 3: a failed record with the error, the three steps it made,
    and a trajectory that differs from the seeded runs' at step 0."""
    result, out = plain["unseeded"]
    assert result.returncode != 0 and "planned failure" in result.stderr
    record = load_record(out)
    assert record.status == "failed" and record.error is not None
    assert (
        record.error.type == "RuntimeError" and "planned failure at step 3" in record.error.message
    )
    assert record.steps == 3 and record.spec["seed"] is None
    assert _bits(out)[0, 0] != _bits(plain["seeded_a"][1])[0, 0]


# ---------------------------------------------------------------- the pure logic


def _module_class():
    import torch
    from pytorch_lightning import LightningModule

    class WithData(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def train_dataloader(self):
            return [torch.zeros(1, 2)]

    class WithoutData(LightningModule):
        pass

    return WithData, WithoutData


def test_what_a_build_function_may_return():
    from pytorch_lightning import LightningDataModule

    from harness.workload.entry import WorkloadError, check_built

    with_data, without_data = _module_class()
    module, loader, data = with_data(), [1, 2], LightningDataModule()
    assert check_built(module, "m:f").fit_kwargs() == {}
    assert check_built((module, data), "m:f").fit_kwargs() == {"datamodule": data}
    assert check_built((module, loader), "m:f").fit_kwargs() == {
        "train_dataloaders": loader,
        "val_dataloaders": None,
    }
    built = check_built([module, loader, (3,)], "m:f")
    assert built.train is loader and built.val == (3,)
    refused = {
        "a dict": {"model": module},
        "a tuple of (a list, ": (loader, module),
        "a str)": (module, "data.csv"),
        "None": None,
        "a tuple of (": (module, loader, loader, loader),
    }
    for words, value in refused.items():
        with pytest.raises(WorkloadError, match="must return a LightningModule") as caught:
            check_built(value, "m:f")
        assert words in str(caught.value) and "'m:f' returned" in str(caught.value)
    with pytest.raises(WorkloadError, match="defines no train_dataloader"):
        check_built(without_data(), "m:f")


def test_an_entry_that_cannot_be_loaded_names_the_fix(tmp_path, monkeypatch):
    from harness.workload.entry import WorkloadError, load_entry

    (tmp_path / "own_entry_attr.py").write_text("build = 3\ndef other(settings):\n    pass\n")
    (tmp_path / "own_entry_raises.py").write_text("1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cases = {
        "own_entry_missing:build": ("No module named 'own_entry_missing'", "workload.path"),
        "own_entry_attr:nope": ("has no attribute `nope`", "def nope(settings)"),
        "own_entry_attr:build": ("`own_entry_attr.build` is a int, not a function",),
        "own_entry_raises:build": ("raised ZeroDivisionError: division by zero",),
        "no_colon": ("is not `package.module:function`",),
    }
    for entry, words in cases.items():
        with pytest.raises(WorkloadError) as caught:
            load_entry(entry, tmp_path)
        for word in words:
            assert word in str(caught.value), str(caught.value)
    assert load_entry("own_entry_attr:other", tmp_path).__name__ == "other"


def test_run_settings_are_read_only_and_complete():
    from harness.contract.settings import NAMES
    from harness.workload.entry import RunSettings

    spec = RunSpec(params={"width": 8}, seed=5, placement="none", repeat=2, cell_name="c")
    settings = RunSettings.of(spec, None, Path("/code"))
    assert (settings.seed, settings.placement, settings.repeat) == (5, "none", 2)
    assert settings.data_dir is None and settings.code_dir == Path("/code")
    assert set(settings.settings) == set(NAMES) and settings.params == {"width": 8}
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.params["width"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        settings.settings["params"]["width"] = 1  # type: ignore[index]
    assert spec.params == {"width": 8}


def _flags(**changes: Any) -> Determinism:
    base = Determinism(
        cudnn_deterministic=True,
        cudnn_benchmark=False,
        deterministic_algorithms=False,
        deterministic_algorithms_warn_only=False,
        matmul_allow_tf32=False,
        cudnn_allow_tf32=False,
    )
    return dataclasses.replace(base, **changes)


def test_flags_read_back_are_compared_with_the_cell():
    from harness.workload.entry import (
        DeterminismFlagsChanged,
        WorkloadError,
        changed_flags,
        check_flags,
    )

    assert issubclass(DeterminismFlagsChanged, WorkloadError)
    assert USER_WORKLOAD_ERRORS == (WorkloadError.__name__, DeterminismFlagsChanged.__name__)
    spec = RunSpec()
    check_flags(spec, _flags())  # as asked: nothing raised
    check_flags(
        RunSpec(deterministic_algorithms="warn"),
        _flags(deterministic_algorithms=True, deterministic_algorithms_warn_only=True),
    )
    changed = _flags(cudnn_benchmark=True, deterministic_algorithms=True, cudnn_allow_tf32=True)
    assert [c.setting for c in changed_flags(spec, changed)] == [
        "cudnn_benchmark",
        "deterministic_algorithms",
        "allow_tf32",
    ]
    with pytest.raises(DeterminismFlagsChanged) as caught:
        check_flags(spec, changed)
    message = str(caught.value)
    assert "your workload set torch.backends.cudnn.benchmark to True" in message
    assert "torch.use_deterministic_algorithms to 'on'" in message
    assert "torch.backends.cudnn.allow_tf32 to True" in message
    assert "remove those lines" in message


def _batches(capture, module, outputs_and_steps, epoch: int = 0) -> None:
    """Feed a capture batch ends: (what the step returned, trainer.global_step after it)."""
    from types import SimpleNamespace

    for batch_idx, (outputs, step) in enumerate(outputs_and_steps):
        trainer = SimpleNamespace(current_epoch=epoch, global_step=step, optimizers=[object()])
        capture.on_train_batch_end(trainer, module, outputs, None, batch_idx)


def test_loss_capture_refuses_what_it_cannot_record():
    """In a harness run (strict): a batch with no loss is skipped (listed, no row); a loss the
    record cannot hold, and an epoch with no loss at all, are WorkloadErrors naming the fix."""
    import torch

    from harness.workload.entry import WorkloadError
    from harness.workload.loss_capture import RETURN_THE_LOSS, LossCapture
    from harness.workload.recorder import LossRecorder

    with_data, _ = _module_class()
    module = with_data()
    recorder = LossRecorder()
    recorder.start_epoch(4, torch.device("cpu"))
    capture = LossCapture(recorder)
    capture.on_train_epoch_start(SimpleNamespace(global_step=0), module)  # type: ignore[arg-type]
    _batches(
        capture, module, [({"loss": torch.tensor(0.5)}, 1), ({}, 2), (torch.tensor([0.25]), 3)]
    )
    assert recorder.buffer.tolist() == [0.5, 0.25] and recorder.skipped == [1]
    for outputs, words in (
        ({"acc": 1}, "a dict without a 'loss' key (keys: acc)"),
        ({"loss": torch.ones(2)}, "a loss of shape (2,), not one number"),
        ("0.5", "returned a str (epoch 0, batch 0)"),
    ):
        with pytest.raises(WorkloadError) as caught:
            _batches(capture, module, [(outputs, 4)])
        assert words in str(caught.value) and RETURN_THE_LOSS in str(caught.value)
    empty = LossCapture(LossRecorder())
    empty.recorder.start_epoch(2, torch.device("cpu"))
    empty.on_train_epoch_start(SimpleNamespace(global_step=0), module)  # type: ignore[arg-type]
    _batches(empty, module, [(None, 1), ({}, 2)], epoch=3)
    with pytest.raises(WorkloadError, match="no loss in any of the 2 batches of epoch 3"):
        empty.on_train_epoch_end(SimpleNamespace(current_epoch=3), module)  # type: ignore[arg-type]


def test_a_row_is_an_optimizer_step():
    """Rows follow ``trainer.global_step``: accumulation sums a step's losses (as Lightning
    hands them over) into one row; two optimizers stepping in one batch make one row; a step
    with no loss makes none; losses no step followed make the epoch's last row. Not strict
    (ReproRecorder): what cannot be recorded is skipped with one warning per kind."""
    import torch

    from harness.workload.loss_capture import LossCapture, RecordWarning
    from harness.workload.recorder import LossRecorder

    with_data, _ = _module_class()
    module = with_data()
    recorder = LossRecorder()
    recorder.start_epoch(8, torch.device("cpu"))
    capture = LossCapture(recorder, strict=False)
    capture.on_train_epoch_start(SimpleNamespace(global_step=0), module)  # type: ignore[arg-type]
    half = torch.tensor(0.25), torch.tensor(0.5)
    with pytest.warns(RecordWarning) as warned:
        _batches(capture, module, [
            (half[0], 0), (half[1], 1),  # accumulation: one row, 0.75
            (torch.tensor(2.0), 3),  # two optimizers stepped: one row
            (None, 4),  # Lightning skipped the batch (and stepped): no row
            ({}, 4), (torch.ones(3), 4), ({"acc": 1}, 4),  # no loss, nothing to record
            (torch.tensor(-0.0), 5),  # one loss keeps its bits
            (torch.tensor(1.5), 5),  # no step followed it
        ])  # fmt: skip
    assert len(warned) == 3  # no loss; a loss of shape (3,); a dict without a 'loss' key
    assert "global batch 3" in str(warned[0].message)
    assert "listed in run.json's 'skipped'" in str(warned[0].message)
    assert recorder.skipped == [3, 4, 5, 6]
    assert recorder.buffer.tolist() == [0.75, 2.0, -0.0]
    assert str(recorder.buffer[2].item()) == "-0.0"
    assert recorder.close() and recorder.buffer.tolist() == [0.75, 2.0, -0.0, 1.5]
    assert not recorder.close()
    capture.on_train_epoch_end(SimpleNamespace(current_epoch=0), module)  # type: ignore[arg-type]


def test_weight_rows_follow_the_same_steps_as_the_losses():
    """WeightRecorder hashes at the batches that end a row, whichever runs first: its rows are
    the capture's, and each holds the weights after that row's optimizer step."""
    import torch

    from harness.workload.loss_capture import LossCapture
    from harness.workload.recorder import LossRecorder
    from harness.workload.weights import WeightRecorder, tensor_hashes

    with_data, _ = _module_class()
    module = with_data()
    losses, weights = LossRecorder(), WeightRecorder()
    losses.start_epoch(8, torch.device("cpu"))
    capture = LossCapture(losses, strict=False)
    start = SimpleNamespace(global_step=0, num_training_batches=8)
    weights.on_train_epoch_start(start, module)  # type: ignore[arg-type]
    capture.on_train_epoch_start(start, module)  # type: ignore[arg-type]
    expected = []
    plan = [(0.5, 0), (0.5, 1), (None, 2), (0.5, 2), (0.5, 3), (0.5, 3)]  # (loss, global_step)
    for batch_idx, (loss, step) in enumerate(plan):
        trainer = SimpleNamespace(current_epoch=0, global_step=step, optimizers=[object()])
        with torch.no_grad():
            module.layer.weight.add_(1.0)
        outputs = None if loss is None else torch.tensor(loss)
        weights.on_train_batch_end(trainer, module, outputs, None, batch_idx)  # type: ignore[arg-type]
        with pytest.warns(UserWarning) if loss is None else contextlib.nullcontext():
            capture.on_train_batch_end(trainer, module, outputs, None, batch_idx)  # type: ignore[arg-type]
        if batch_idx in (1, 4):  # a step after a loss
            expected.append(tensor_hashes(list(module.parameters())).numpy().view("<u8"))
    weights.on_train_epoch_end(start, module)  # type: ignore[arg-type]  # batch 5: the last row
    expected.append(tensor_hashes(list(module.parameters())).numpy().view("<u8"))
    assert losses.close() and len(losses.buffer) == 3
    assert np.array_equal(weights.rows(), np.stack(expected))


def test_an_epoch_of_unknown_length_grows_the_buffers(monkeypatch):
    """``num_training_batches`` is infinite for data without ``len``: the loss and weight
    buffers start small and double on the device, keeping every row."""
    import torch

    from harness.workload import recorder as recorder_module
    from harness.workload.recorder import LossRecorder
    from harness.workload.weights import WeightRecorder

    monkeypatch.setattr(recorder_module, "UNKNOWN_EPOCH_STEPS", 2)
    losses = LossRecorder()
    losses.start_epoch(float("inf"), torch.device("cpu"))
    weights = WeightRecorder()
    with_data, _ = _module_class()
    module = with_data()
    trainer = SimpleNamespace(num_training_batches=float("inf"), global_step=0, optimizers=[1])
    weights.on_train_epoch_start(trainer, module)  # type: ignore[arg-type]
    hashes = []
    for step in range(7):
        with torch.no_grad():
            module.layer.weight.add_(1.0)
        loss = torch.tensor(float(step))
        losses.add(loss)
        assert losses.close()
        trainer.global_step = step + 1
        weights.on_train_batch_end(trainer, module, loss, None, step)  # type: ignore[arg-type]
        hashes.append(weights.rows()[-1].copy())
    assert losses.buffer.tolist() == [float(s) for s in range(7)]
    weights.on_train_epoch_end(trainer, module)  # type: ignore[arg-type]
    rows = weights.rows()
    assert rows.shape == (7, 2) and len({r[0] for r in rows}) == 7
    assert np.array_equal(rows, np.stack(hashes))


@pytest.mark.slow
def test_data_without_len_is_recorded_whole(monkeypatch):
    """A real fit on data that has no ``len`` (``num_training_batches`` is infinite): the
    capture's buffers double on the device (from 2 rows) and keep every step's loss, the same
    bits the module computed, and a weight-hash row per step."""
    import torch

    from harness.workload import recorder as recorder_module
    from harness.workload.loss_capture import LossCapture
    from harness.workload.recorder import EpochRecorder, LossRecorder
    from harness.workload.training import _build_trainer
    from harness.workload.weights import WeightRecorder

    with_data, _ = _module_class()

    class Seen(with_data):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[torch.Tensor] = []

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch).pow(2).mean()
            self.seen.append(loss.detach().clone())
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class NoLen:
        def __iter__(self):
            gen = torch.Generator().manual_seed(0)
            return iter([torch.randn(4, 2, generator=gen) for _ in range(11)])

    monkeypatch.setattr(recorder_module, "UNKNOWN_EPOCH_STEPS", 2)
    losses, weights, module = LossRecorder(), WeightRecorder(), Seen()
    callbacks = [weights, EpochRecorder(losses, None, 1), LossCapture(losses)]
    _build_trainer(RunSpec(), callbacks).fit(module, train_dataloaders=NoLen())
    assert losses.losses(1).shape == (11, 1) and weights.rows().shape == (11, 2)
    assert np.array_equal(losses.losses(1)[:, 0], torch.stack(module.seen).numpy())


def test_an_error_lightning_raised_is_told_from_others():
    """Lightning's refusal of a user's module (raised in its own code) becomes a WorkloadError;
    an error from torch or the user's code keeps its type (runner._fit)."""
    from harness.workload.training import raised_by_lightning

    def caught(module_name: str) -> BaseException:
        namespace: dict[str, Any] = {"__name__": module_name}
        exec("def fail():\n    raise RuntimeError('no')\n", namespace)
        try:
            namespace["fail"]()
        except RuntimeError as exc:
            return exc
        raise AssertionError("not raised")

    assert raised_by_lightning(caught("pytorch_lightning.core.optimizer"))
    assert raised_by_lightning(caught("lightning_fabric.utilities"))
    assert raised_by_lightning(caught("lightning.pytorch.core.optimizer"))
    assert not raised_by_lightning(caught("tinyconv"))
    assert not raised_by_lightning(caught("torch.nn.modules.module"))
    assert not raised_by_lightning(RuntimeError("never raised"))
