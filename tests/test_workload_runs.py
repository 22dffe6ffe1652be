"""Real repeats on real MNIST, each in a fresh process: the issue's must-shows.

Each needed run is made once per module and shared by the tests that read it: those of one
thread in one process up front, two side by side; the others lazily, by name, one at a time.
All at 1 thread unless a test is about threads. One test trains in this process instead: the
manual against the automatic optimization loop, both through the workload's own model. The
reference for the default cell's bits is not a digest one machine recorded but a plain PyTorch
loop (tests/plain_mnist.py) run here, beside the workload (docs/testing.md, "Facts of one
machine").
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from harness.contract import (
    LOSSES_FILE,
    NUMERIC_ENV_VARS,
    RECORD_FILE,
    TENSORBOARD_DIR,
    WEIGHTS_FILE,
)
from harness.contract.record import Libraries
from harness.report.trajectories import differing_parameters, first_weight_divergence
from harness.results.run_reader import load_record, load_weight_hashes

pytestmark = pytest.mark.slow

FULL_EPOCH = 1719
SHORT = 200
#: The DDP runs' environment: a device order and a cuBLAS workspace that the run must override
#: with its spec's (each rank reports the workspace from its own environment, no effect on a CPU:
#: provenance.determinism_ranks)
DDP_ENV = {"CUDA_DEVICE_ORDER": "FASTEST_FIRST", "CUBLAS_WORKSPACE_CONFIG": ":999:9"}
DDP = {"placement": "before_model", "devices": 2, "max_steps_per_epoch": 100}

#: name -> (spec settings, extra environment for the process)
RUNS: dict[str, tuple[dict, dict]] = {
    "model_a": ({"placement": "before_model"}, {}),
    "model_b": ({"placement": "before_model"}, {"PYTHONHASHSEED": "123"}),
    "none_a": ({"placement": "none", "max_steps_per_epoch": SHORT}, {}),
    "none_b": ({"placement": "none", "max_steps_per_epoch": SHORT}, {}),
    "trainer_a": ({"placement": "before_trainer", "max_steps_per_epoch": SHORT}, {}),
    "trainer_b": ({"placement": "before_trainer", "max_steps_per_epoch": SHORT}, {}),
    "ddp_a": ({**DDP, "cublas_workspace": ":16:8"}, DDP_ENV),
    "ddp_b": ({**DDP, "cublas_workspace": ":16:8"}, DDP_ENV),
    "process_start": ({"placement": "process_start", "max_steps_per_epoch": SHORT}, {}),
    "threads2": ({"placement": "before_model", "threads": 2, "max_steps_per_epoch": SHORT}, {}),
}


#: the runs of one thread in one process: made two at a time, as two slots of ``harness run``
#: would (each process is mostly its seconds of importing torch); the others one at a time
ONE_CORE = [n for n, (s, _) in RUNS.items() if s.get("threads", 1) == s.get("devices", 1) == 1]


class Runs:
    def __init__(self, workload, root: Path, mnist_dir: Path) -> None:
        self.workload, self.root, self.mnist_dir = workload, root, mnist_dir
        self.done: dict[str, Path] = {}

    def make(self, name: str) -> Path:
        settings, env = RUNS[name]
        spec = {"repeat": int(name.endswith("_b"))}
        spec.update(settings)
        out = self.root / name
        result = self.workload(spec, out, env=env, data_dir=self.mnist_dir)
        assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
        return out

    def __call__(self, name: str) -> Path:
        if name not in self.done:
            self.done[name] = self.make(name)
        return self.done[name]


@pytest.fixture(scope="module")
def runs(workload, tmp_path_factory, mnist_dir) -> Runs:
    made = Runs(workload, tmp_path_factory.mktemp("runs"), mnist_dir)
    with ThreadPoolExecutor(max_workers=2) as pool:
        made.done.update(zip(ONE_CORE, pool.map(made.make, ONE_CORE), strict=True))
    return made


def _losses(run_dir: Path) -> np.ndarray:
    return np.load(run_dir / LOSSES_FILE)


def _json(run_dir: Path) -> dict:
    return json.loads((run_dir / RECORD_FILE).read_text())


#: the MLP's parameters, in named_parameters() order: the columns of weights.npy
MLP_PARAMETERS = ["model.1.weight", "model.1.bias", "model.3.weight", "model.3.bias"]


def _weights(run_dir: Path) -> np.ndarray:
    """weights.npy, checked against its record (shape, dtype, parameter names)."""
    record = load_record(run_dir)
    assert record.weights is not None and record.weights.parameters == MLP_PARAMETERS
    hashes = load_weight_hashes(run_dir, record)
    assert hashes is not None and hashes.shape == (record.steps, 4)
    return hashes


def _first_difference(a: np.ndarray, b: np.ndarray) -> int | None:
    n = min(len(a), len(b))
    diff = np.nonzero((a[:n].view(np.uint32) != b[:n].view(np.uint32)).any(axis=1))[0]
    return int(diff[0]) if len(diff) else None


#: The plain PyTorch loop the built-in workload's default cell must match bit for bit
PLAIN_LOOP = Path(__file__).with_name("plain_mnist.py")
#: What a workload process of 1 thread starts with (``run_environment``, harness/contract/spec.py)
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


@pytest.fixture(scope="module")
def plain(tmp_path_factory, mnist_dir) -> tuple[np.ndarray, dict[str, str]]:
    """tests/plain_mnist.py's full epoch on this machine, in a fresh process started as a
    workload's is (whatever this process's torch threads are): its losses and digests."""
    out = tmp_path_factory.mktemp("plain")
    proc = subprocess.run(
        [sys.executable, str(PLAIN_LOOP), "--data-dir", str(mnist_dir), "--out", str(out)],
        env={**os.environ, **ONE_THREAD_ENV},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"the plain loop failed:\n{proc.stdout}\n{proc.stderr}"
    return np.load(out / "losses.npy"), json.loads((out / "digests.json").read_text())


def test_the_built_in_trajectory_is_the_plain_pytorch_loops(runs, plain):
    """The default cell (``before_model``, 1 thread, a full epoch) gives, bit for bit, the
    losses of the same training written as a plain PyTorch loop (tests/plain_mnist.py: no
    Lightning, no harness code), both run on this machine: whatever this CPU's kernels compute,
    the harness adds nothing to it and loses nothing of it (issue 27: a digest pinned on one
    CPU fails on another). The init, the split and the final weights are the loop's too."""
    record = load_record(runs("model_a"))
    assert (record.spec["entry"], record.spec["params"]) == (None, {})
    expected, digests = plain
    assert expected.dtype == np.dtype("<f4") and expected.shape == (FULL_EPOCH, 1)
    assert np.isfinite(expected).all()
    where = f"torch {record.provenance.torch} on {record.provenance.cpu_model}"
    assert record.digests.init_weights == digests["init_weights"], where
    assert record.digests.split == digests["split"], where
    losses = _losses(runs("model_a"))
    first = _first_difference(losses, expected)
    assert first is None, f"the losses first differ from the plain loop's at step {first}, {where}"
    assert np.array_equal(losses.view(np.uint32), expected.view(np.uint32)), where
    # the trajectory digest as the harness defines it (docs/run-record.md), of the loop's losses
    digest = hashlib.sha256(np.ascontiguousarray(expected, dtype="<f4").tobytes()).hexdigest()
    assert record.digests.trajectory == digest, where
    assert record.digests.final_weights == digests["final_weights"], where


def test_before_model_reproduces_a_full_epoch_bit_for_bit(runs):
    a, b = load_record(runs("model_a")), load_record(runs("model_b"))
    assert a.steps == b.steps == FULL_EPOCH and a.steps_per_epoch == [FULL_EPOCH]
    assert a.digests.trajectory == b.digests.trajectory
    assert a.digests.init_weights == b.digests.init_weights
    assert a.digests.final_weights == b.digests.final_weights
    assert a.digests.split == b.digests.split
    assert np.array_equal(
        _losses(runs("model_a")).view(np.uint32), _losses(runs("model_b")).view(np.uint32)
    )
    assert a.epochs[0].val_acc == b.epochs[0].val_acc and a.epochs[0].val_acc > 0.8
    # the parameters' hashes after every step are equal too, and change at every step
    weights_a = _weights(runs("model_a"))
    assert np.array_equal(weights_a, _weights(runs("model_b")))
    assert (weights_a[1:] != weights_a[:-1]).all()


def test_none_differs_in_init_and_from_step_0(runs):
    a, b = load_record(runs("none_a")), load_record(runs("none_b"))
    assert a.digests.init_weights != b.digests.init_weights
    assert a.digests.split != b.digests.split
    assert _first_difference(_losses(runs("none_a")), _losses(runs("none_b"))) == 0
    assert a.provenance.initial_seed != b.provenance.initial_seed
    wa, wb = _weights(runs("none_a")), _weights(runs("none_b"))
    assert first_weight_divergence(wa, wb) == 0
    assert differing_parameters(wa[0], wb[0], MLP_PARAMETERS) == MLP_PARAMETERS


def test_before_trainer_same_split_different_init(runs):
    """Seeding after the model exists fixes the split (drawn in setup()) but not the weights.

    The model's weights come from the unseeded generator, so they differ per process and the
    trajectories differ from step 0; random_split runs after the seed, so both repeats train on
    the same 55,000 images in the same order, and Adam has no randomness of its own
    (docs/workload.md).
    """
    a, b = load_record(runs("trainer_a")), load_record(runs("trainer_b"))
    assert a.digests.split == b.digests.split
    assert a.digests.init_weights != b.digests.init_weights
    assert a.digests.final_weights != b.digests.final_weights
    assert _first_difference(_losses(runs("trainer_a")), _losses(runs("trainer_b"))) == 0
    # It is the split random_split draws straight after the seed: nothing between the seed and
    # setup() draws from the generator. A before_model run draws its split after the model's
    # init has consumed the generator, so its split is a different (also fixed) one.
    import torch
    from torch.utils.data import random_split

    from harness.workload.data import split_digest

    torch.manual_seed(201014)
    train, val = random_split(range(60000), [55000, 5000])
    assert a.digests.split == split_digest(train.indices, val.indices)
    assert a.digests.split != load_record(runs("model_a")).digests.split


def test_ddp_two_processes_record_every_rank_and_reproduce(runs):
    a, b = load_record(runs("ddp_a")), load_record(runs("ddp_b"))
    assert a.ranks == b.ranks == 2 and a.steps == 100
    assert a.provenance.world_size == 2
    la, lb = _losses(runs("ddp_a")), _losses(runs("ddp_b"))
    assert la.shape == (100, 2) and np.isfinite(la).all()
    assert not np.array_equal(la[:, 0], la[:, 1]), "the ranks see different shards"
    assert np.array_equal(la.view(np.uint32), lb.view(np.uint32))
    assert a.digests.trajectory == b.digests.trajectory
    assert a.digests.final_weights == b.digests.final_weights
    assert np.array_equal(_weights(runs("ddp_a")), _weights(runs("ddp_b")))  # rank 0's, [100, 4]


def test_process_start_gives_the_before_model_bits(runs):
    """Nothing draws from the generator between process start and the model's creation."""
    start, model = load_record(runs("process_start")), load_record(runs("model_a"))
    assert start.digests.init_weights == model.digests.init_weights
    assert start.digests.split == model.digests.split
    short = _losses(runs("process_start"))
    assert short.shape == (SHORT, 1)
    assert np.array_equal(short.view(np.uint32), _losses(runs("model_a"))[:SHORT].view(np.uint32))


def test_threads_are_recorded_and_any_difference_shows_in_the_weights_first(runs):
    """The thread count is recorded. Whether it changes the bits depends on the machine's
    kernels (docs/testing.md, "Facts of one machine"): on the AVX-512 and AVX2 paths of these
    machines the reductions split across threads differently, and the losses first differed at
    steps from 1 to 74 depending on the path; with MKL_CBWR=COMPATIBLE they did not differ at
    all. The init is identical, so where the losses differ the thread count is the cause; the
    weights are updated from the gradients of that loss, so they differ after its step at the
    latest (here they differed after step 0 on every path where the losses differed)."""
    one, two = load_record(runs("model_a")), load_record(runs("threads2"))
    assert one.provenance.threads == 1 and two.provenance.threads == 2
    assert one.provenance.env["OMP_NUM_THREADS"] == "1"
    assert two.provenance.env["OMP_NUM_THREADS"] == "2"
    assert one.digests.init_weights == two.digests.init_weights
    first = _first_difference(_losses(runs("model_a")), _losses(runs("threads2")))
    weights = first_weight_divergence(_weights(runs("model_a")), _weights(runs("threads2")))
    if first is not None:
        assert weights is not None and weights <= first


def test_records_validate_and_files_match_their_digests(runs):
    for name in ("model_a", "ddp_a", "none_a"):
        run_dir = runs(name)
        record = load_record(run_dir)
        losses = _losses(run_dir)
        assert record.status == "ok" and record.error is None
        assert losses.dtype == np.dtype("<f4") and losses.shape == (record.steps, record.ranks)
        assert record.digests.trajectory == hashlib.sha256(losses.tobytes()).hexdigest()
        bounds = np.cumsum([0] + record.steps_per_epoch)
        assert record.digests.epochs == [
            hashlib.sha256(losses[s:e].tobytes()).hexdigest()
            for s, e in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        assert [e.first_step for e in record.epochs] == list(bounds[:-1])
        epoch = record.epochs[0]
        assert epoch.train_seconds > 0 and epoch.val_seconds > 0 and epoch.steps_per_second > 0
        assert 0 < epoch.val_loss < 3 and 0 < epoch.val_acc <= 1
        prov = record.provenance
        assert prov.torch and prov.lightning and prov.torchvision and prov.python
        assert prov.workload_digest and len(prov.workload_digest) == 64
        assert record.files == {
            "losses": LOSSES_FILE,
            "tensorboard": TENSORBOARD_DIR,
            "weights": WEIGHTS_FILE,
        }
        assert record.weights.hash == "mix64_sum"  # not an older kind (docs/run-record.md)
        assert _weights(run_dir).dtype == np.dtype("<u8")  # rank 0's rows, one per step
        assert record.spec["placement"] == RUNS[name][0]["placement"]


#: The provenance fields that are null only with a reason (docs/run-record.md, "unavailable")
LIBRARY_FIELDS = list(Libraries.__dataclass_fields__)
GPU_FIELDS = ("sm_count", "uuid", "pci_bus_id")


def _null_without_reason(prov: dict) -> list[str]:
    """The GPU-provenance fields of a record's raw provenance that are null (or, for ``gpus``,
    empty) without a reason in ``unavailable``."""
    why = prov["unavailable"]
    paths = [f"libraries.{f}" for f in LIBRARY_FIELDS if prov["libraries"][f] is None]
    paths += [f"gpus[{g['index']}].{f}" for g in prov["gpus"] for f in GPU_FIELDS if g[f] is None]
    paths += ["gpus"] if not prov["gpus"] else []
    paths += ["determinism_ranks"] if prov["determinism_ranks"] is None else []
    return [path for path in paths if not why.get(path)]


def test_gpu_provenance_is_recorded_or_null_with_a_reason(runs):
    """A real CPU run on one rank and on two: every GPU-provenance field is there, null only
    with the reason; each rank's flags read back; the device order and the new variables."""
    for name, ranks in (("none_a", 1), ("ddp_a", 2)):
        raw = _json(runs(name))["provenance"]
        assert set(raw["libraries"]) == set(LIBRARY_FIELDS)
        assert _null_without_reason(raw) == []
        assert raw["gpus"] == [] and "no CUDA device visible" in raw["unavailable"]["gpus"]
        assert set(NUMERIC_ENV_VARS) <= set(raw["env"])
        assert raw["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        cublas = raw["libraries"]["cublas"]
        if cublas is not None:  # a CUDA build of torch maps cuBLAS at import, even here
            assert cublas.split(".")[0] == raw["cuda"].split(".")[0]
        record = load_record(runs(name))
        flags = record.provenance.determinism_ranks
        assert flags is not None and len(flags) == record.ranks == ranks
        assert flags[0] == record.provenance.determinism
    # each rank reports its own environment: the spec's workspace reached rank 1 (not the one
    # exported to the process), and the device order given to the process was overridden
    ddp = load_record(runs("ddp_a")).provenance
    assert [f.cublas_workspace_config for f in ddp.determinism_ranks or []] == [":16:8"] * 2
    assert (
        load_record(runs("none_a")).provenance.determinism_ranks[0].cublas_workspace_config is None
    )


def test_pythonhashseed_comes_from_the_spec(runs):
    # model_b was started with PYTHONHASHSEED=123 in its environment; the spec says 0.
    assert load_record(runs("model_b")).provenance.env["PYTHONHASHSEED"] == "0"


def test_tensorboard_events_hold_the_trajectory(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = runs("ddp_a")
    events = EventAccumulator(str(run_dir / TENSORBOARD_DIR))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/loss_rank1", "val/loss", "val/acc"} <= tags
    losses = _losses(run_dir)
    train = events.Scalars("train/loss")
    assert [e.step for e in train] == list(range(len(losses)))
    assert np.array_equal(np.array([e.value for e in train], dtype="<f4"), losses[:, 0])
    rank1 = np.array([e.value for e in events.Scalars("train/loss_rank1")], dtype="<f4")
    assert np.array_equal(rank1, losses[:, 1])
    assert events.Scalars("val/acc")[0].value == pytest.approx(
        _json(run_dir)["epochs"][0]["val_acc"]
    )


def test_progress_line_is_printed(workload, tmp_path, mnist_dir):
    spec = {"max_steps_per_epoch": 20, "epochs": 2, "deterministic_algorithms": "warn"}
    result = workload(spec, tmp_path, data_dir=mnist_dir)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2 done", "epoch 2/2 done"]
    assert "20 steps" in lines[0] and "val_acc" in lines[0]
    record = load_record(tmp_path)
    assert record.steps == 40 and record.steps_per_epoch == [20, 20]
    assert [e.first_step for e in record.epochs] == [0, 20]
    # warn mode: CUBLAS_WORKSPACE_CONFIG is set before torch starts; this CPU model hits no
    # nondeterministic op, so the list is empty (the parser is tested in test_workload_units).
    assert record.provenance.env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert record.nondeterministic_ops == []


def _train_in_this_process(
    mnist, automatic: bool
) -> tuple[np.ndarray, str, str, np.ndarray, np.ndarray]:
    """A ``before_model`` repeat of SHORT steps run here, through the workload's own model and
    Trainer, with the workload's manual optimization or with Lightning's automatic loop.

    Returns the losses [steps, 1], the initial and final weight digests, the WeightRecorder's
    rows and the hashes of the final parameters (uint64).
    """
    import torch.nn.functional as F

    from harness.contract import RunSpec
    from harness.workload.loss_capture import LossCapture
    from harness.workload.networks import LitMNIST
    from harness.workload.recorder import EpochRecorder, LossRecorder, weights_digest
    from harness.workload.seeding import seed_all
    from harness.workload.training import _build_trainer
    from harness.workload.weights import WeightRecorder, tensor_hashes

    class AutomaticLitMNIST(LitMNIST):
        """The workload's model with Lightning's automatic optimization: training_step returns
        the loss; Lightning does zero_grad, backward and step (through its closure)."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.automatic_optimization = True

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.nll_loss(self(x), y)

    spec = RunSpec(placement="before_model", max_steps_per_epoch=SHORT)
    recorder = LossRecorder()
    seed_all(spec.seed)
    model = (AutomaticLitMNIST if automatic else LitMNIST)(
        mnist,
        hidden_size=spec.hidden_size,
        learning_rate=spec.learning_rate,
        batch_size=spec.batch_size,
    )
    assert model.automatic_optimization is automatic
    init = weights_digest(model.state_dict())
    weights = WeightRecorder()
    callbacks = [weights, EpochRecorder(recorder, None, spec.epochs), LossCapture(recorder)]
    _build_trainer(spec, callbacks).fit(model)
    final = tensor_hashes(list(model.parameters())).numpy().view("<u8")
    return recorder.losses(1), init, weights_digest(model.state_dict()), weights.rows(), final


def test_manual_optimization_gives_the_automatic_loops_bits(runs, mnist_dir):
    """docs/workload.md: the workload's manual zero_grad / manual_backward / step per batch
    gives the bits of Lightning's automatic loop. Both run here, on the same thread count as
    the workload's runs; the manual one must also equal a real workload run (process_start,
    which has the before_model bits), so the comparison is of the workload's own path."""
    import torch

    from harness.workload.data import load_mnist

    mnist = load_mnist(mnist_dir, train=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workload runs (spec threads: 1)
    try:
        manual, manual_init, manual_final, rows, last = _train_in_this_process(mnist, False)
        auto, auto_init, auto_final, auto_rows, _ = _train_in_this_process(mnist, True)
    finally:
        torch.set_num_threads(threads)
    assert manual.shape == auto.shape == (SHORT, 1) and np.isfinite(manual).all()
    assert manual_init == auto_init
    assert np.array_equal(manual.view(np.uint32), auto.view(np.uint32))
    assert manual_final == auto_final
    workload_run = _losses(runs("process_start"))
    assert np.array_equal(manual.view(np.uint32), workload_run.view(np.uint32))
    # the recorder's last row hashes the parameters after the last step; every row is the
    # workload run's, and the automatic loop's (on_train_batch_end follows its step too)
    assert rows.shape == (SHORT, 4) and np.array_equal(rows[-1], last)
    assert np.array_equal(rows, _weights(runs("process_start")))
    assert np.array_equal(rows, auto_rows)
