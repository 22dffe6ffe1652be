"""Pure pieces of the workload, on hand-made inputs."""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict

import numpy as np
import torch

from harness.contract import RunSpec
from harness.contract.trajectory_hash import trajectory_sha256
from harness.workload.__main__ import numerics_env
from harness.workload.recorder import LossRecorder, weights_digest
from harness.workload.seeding import nondeterministic_op, nondeterministic_ops, seed_all

TORCH_ALERT = (
    "adaptive_avg_pool2d_backward_cuda does not have a deterministic implementation, but you set "
    "'torch.use_deterministic_algorithms(True, warn_only=True)'. You can file an issue at "
    "https://github.com/pytorch/pytorch/issues to help us prioritize adding deterministic support "
    "for this operation."
)


def test_nondeterministic_op_names_from_warnings():
    assert nondeterministic_op(TORCH_ALERT) == "adaptive_avg_pool2d_backward_cuda"
    assert nondeterministic_op("something else entirely") is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn(TORCH_ALERT, UserWarning, stacklevel=1)
        warnings.warn(TORCH_ALERT.replace("adaptive_avg", "index_add"), UserWarning, stacklevel=1)
        warnings.warn(TORCH_ALERT, UserWarning, stacklevel=1)
        warnings.warn("unrelated", UserWarning, stacklevel=1)
    assert nondeterministic_ops(caught) == [
        "adaptive_avg_pool2d_backward_cuda",
        "index_add_pool2d_backward_cuda",
    ]


def test_trajectory_sha256_is_over_little_endian_float32():
    losses = np.array([[1.5, 2.0], [0.25, 3.0]], dtype=">f4")
    expected = hashlib.sha256(losses.astype("<f4").tobytes()).hexdigest()
    assert trajectory_sha256(losses) == expected
    assert trajectory_sha256(losses[:1]) != expected


def test_weights_digest_covers_names_dtypes_shapes_and_bytes():
    w = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    base = weights_digest(OrderedDict(a=w))
    manual = hashlib.sha256(b"a\0" + b"torch.float32" + b"(2, 3)" + w.numpy().tobytes()).hexdigest()
    assert base == manual
    assert weights_digest(OrderedDict(b=w)) != base
    assert weights_digest(OrderedDict(a=w.reshape(3, 2))) != base
    assert weights_digest(OrderedDict(a=w.double())) != base
    assert weights_digest(OrderedDict(a=w.t().contiguous().t())) == base  # layout-independent


def test_loss_recorder_rows_are_steps_by_ranks():
    recorder = LossRecorder()
    recorder.start_epoch(3, torch.device("cpu"))
    for step, value in enumerate([0.5, 0.25, 0.125]):
        recorder.record(step, torch.tensor(value))
    rows = recorder.end_epoch(torch.stack([recorder.buffer, recorder.buffer * 2]))
    assert rows.shape == (3, 2) and rows.dtype == np.dtype("<f4")
    assert rows[:, 1].tolist() == [1.0, 0.5, 0.25]
    recorder.start_epoch(4, torch.device("cpu"))
    recorder.record(0, torch.tensor(9.0))
    assert recorder.losses(ranks=2).shape == (3, 2)  # a 1-rank partial tail cannot join 2 ranks
    assert recorder.steps == 3


def test_seed_all_seeds_torch_numpy_random():
    import random

    seed_all(7)
    first = (torch.rand(2).tolist(), np.random.rand(), random.random())
    seed_all(7)
    assert (torch.rand(2).tolist(), np.random.rand(), random.random()) == first


def test_seed_all_leaves_cudnn_flags_alone():
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    try:
        seed_all(201014)
        assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (False, True)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def test_numerics_env():
    env = numerics_env(RunSpec(threads=3, pythonhashseed=5), {"PATH": "/bin"})
    assert env["PYTHONHASHSEED"] == "5" and env["OMP_NUM_THREADS"] == "3"
    assert "CUBLAS_WORKSPACE_CONFIG" not in env
    on = numerics_env(RunSpec(deterministic_algorithms="on"), {})
    assert on["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    # the user's own environment never overrides the spec's numerics
    forced = numerics_env(RunSpec(threads=2), {"OMP_NUM_THREADS": "8"})
    assert forced["OMP_NUM_THREADS"] == "2"
