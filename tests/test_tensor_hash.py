"""The tensor hash every hash the harness records goes through (weights.npy, a replay's batches,
training state and operations' inputs and outputs; issue 28, items 1 and 15): position counts
and independent changes do not cancel, for every dtype the harness hashes; the tensor code is
the hash the module's docstring defines (a plain-Python reference over the tensor's bytes); a
parameter whose words are a copy is read afresh after an in-place update.

``torch.hash_tensor``, the older kind, XORed the words: the same one-ULP change in two places, a
swap of two rows, and ``zeros(8)`` against ``ones(8)`` all left it unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import pytest
import torch

from harness.workload import weights
from harness.workload.replay_tensors import hash_text
from harness.workload.weights import Hasher, WeightRecorder, hash_into, tensor_hash, tensor_hashes

MASK = (1 << 64) - 1


def reference(tensor: torch.Tensor) -> int:
    """The hash by its definition, from the tensor's bytes in plain Python: 64-bit words where
    the size allows, else element-size words (signed, as an int64 widens them; bytes unsigned);
    word w at index i: ``z = w ^ (i + 1) * GOLDEN``, then xor-shift 32, times C1, xor-shift 32,
    times C2, xor-shift 32; the sum modulo 2**64."""
    raw = tensor.detach().contiguous().reshape(-1)
    if raw.is_complex():
        raw = torch.view_as_real(raw).reshape(-1)
    data = raw.view(torch.uint8).numpy().tobytes()
    size = raw.element_size()
    if len(data) % 8 == 0:
        width, signed = 8, False
    else:
        width, signed = size, size > 1
    words = [
        int.from_bytes(data[k : k + width], sys.byteorder, signed=signed) & MASK
        for k in range(0, len(data), width)
    ]
    total = 0
    for i, w in enumerate(words):
        z = (w ^ (i + 1) * weights.GOLDEN) & MASK
        z ^= z >> 32
        z = z * weights.C1 & MASK
        z ^= z >> 32
        z = z * weights.C2 & MASK
        z ^= z >> 32
        total = (total + z) & MASK
    return total


def bits(value: torch.Tensor) -> int:
    return int(value) & MASK


def through_hasher(t: torch.Tensor) -> int:
    """As WeightRecorder hashes: a Hasher made once, written into a buffer row's item."""
    row = torch.zeros(1, dtype=Hasher.dtype)
    Hasher([t]).into(row.unbind(0))
    return bits(row[0])


def through_replay(t: torch.Tensor) -> int:
    """As a replay writes an operation's input or output hash."""
    text = hash_text(t)
    assert text is not None
    return int(text, 16)


#: every way the harness turns a tensor into a hash
HASHES: dict[str, Callable[[torch.Tensor], int]] = {
    "tensor_hash": lambda t: bits(tensor_hash(t)),
    "tensor_hashes": lambda t: bits(tensor_hashes([torch.ones(3), t])[1]),
    "Hasher": through_hasher,
    "replay": through_replay,
}


def ulp(t: torch.Tensor, index: tuple[int, ...]) -> None:
    """One ULP (or one, for an integer) more at ``index``, in place: the element's bits + 1."""
    element = t[index]
    if t.is_floating_point():
        ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
        element.view(ints).add_(1)
    else:
        element.add_(1)


def base(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """Rows 0 and 1 differ (so swapping them changes the tensor); the elements at [0, 0] and
    [2, 0] are equal and sit at the same place of their 64-bit words (so the same change at both
    is the same change of each word: it cancels in an XOR); values small enough for +1."""
    gen = torch.Generator().manual_seed(0)
    if dtype.is_floating_point:
        t = torch.randn(shape, generator=gen).to(dtype)
    else:
        t = torch.randint(0, 9 if dtype == torch.int64 else 200, shape, generator=gen).to(dtype)
    t[:, 0] = torch.arange(shape[0]).to(dtype)
    t[2, 0] = t[0, 0]
    return t


#: dtype and shape: images and activations (float32), float64, labels (int64, one per row),
#: raw images (uint8), half and bfloat16; odd sizes whose bytes are not a multiple of 8
CASES = [
    (torch.float32, (4, 6)),
    (torch.float32, (5, 3)),
    (torch.float64, (4, 3)),
    (torch.int64, (8, 1)),
    (torch.int64, (5, 1)),
    (torch.uint8, (4, 8)),
    (torch.uint8, (5, 3)),
    (torch.float16, (4, 4)),
    (torch.float16, (5, 3)),
    (torch.bfloat16, (4, 4)),
    (torch.bfloat16, (3, 3)),
]


@pytest.mark.parametrize("dtype,shape", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("how", list(HASHES))
def test_two_one_ulp_changes_and_a_swap_of_two_rows_change_every_hash(dtype, shape, how):
    hashed = HASHES[how]
    original = base(dtype, shape)
    before = hashed(original)
    twice = original.clone()
    ulp(twice, (0, 0))
    ulp(twice, (2, 0))  # the same change in two places: cancels in an XOR of words
    swapped = original[[1, 0, *range(2, shape[0])]]  # two rows swapped: an XOR is order-blind
    assert not torch.equal(twice, original) and not torch.equal(swapped, original)
    assert hashed(twice) != before
    assert hashed(swapped) != before
    assert [before, hashed(twice), hashed(swapped)] == [
        reference(t) for t in (original, twice, swapped)
    ]


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.int64, torch.uint8, torch.float16, torch.bfloat16]
)
@pytest.mark.parametrize("how", list(HASHES))
def test_zeros_and_ones_hash_apart(dtype, how):
    hashed = HASHES[how]
    for n in (8, 16, 5):
        zeros, ones = torch.zeros(n, dtype=dtype), torch.ones(n, dtype=dtype)
        assert hashed(zeros) != hashed(ones)
        assert (hashed(zeros), hashed(ones)) == (reference(zeros), reference(ones))
    # position counts across lengths too: zeros(8) and zeros(16) are not alike
    assert hashed(torch.zeros(8, dtype=dtype)) != hashed(torch.zeros(16, dtype=dtype))


@pytest.mark.parametrize("how", list(HASHES))
def test_two_sign_flips_change_every_hash(how):
    """Two flipped top bits of 64-bit words (two float64 sign flips, two odd float32s' signs)
    cancel in a sum of the words times odd weights (the older ``weighted_sum``: 2**63 times an
    even number); they change this hash."""
    hashed = HASHES[how]
    for t in (torch.randn(6, dtype=torch.float64), torch.randn(8)):
        flipped = t.clone()
        flipped[1] = -flipped[1]
        flipped[5] = -flipped[5]
        assert hashed(flipped) != hashed(t)
        assert hashed(flipped) == reference(flipped)


def test_the_tensor_code_is_the_defined_hash_on_other_layouts():
    """Not contiguous, a slice at an odd float32 offset, complex, bool, 0-d, empty: the hash of
    the contents, as the reference reads them."""
    x = torch.arange(10, dtype=torch.float32)
    cases = [
        torch.randn(10, 6).t(),
        x[1:9],
        x[2:10],
        torch.randn(3, dtype=torch.complex64),
        torch.tensor([True, False, True]),
        torch.tensor(3.0),
        torch.zeros(3, 0),
    ]
    for t in cases:
        for how, hashed in HASHES.items():
            assert hashed(t) == reference(t), how
    assert bits(tensor_hash(x[1:9])) == bits(tensor_hash(x[1:9].clone()))
    assert bits(tensor_hash(x[1:9])) != bits(tensor_hash(x[2:10]))
    assert bits(tensor_hash(torch.zeros(3, 0))) == 0


def test_many_tensors_in_small_passes_hash_as_one_each(monkeypatch):
    """A Hasher mixes its tensors together in passes; passes split at ``PASS_WORDS`` (and a
    tensor bigger than that gets one of its own) give the same hashes as one tensor at a time."""
    tensors = [torch.randn(n) for n in (7, 64, 3, 200, 1, 33)]
    expected = [reference(t) for t in tensors]
    monkeypatch.setattr(weights, "PASS_WORDS", 40)
    out = torch.zeros(len(tensors), dtype=torch.int64)
    hasher = Hasher(tensors)
    assert len(hasher.passes) > 2
    hasher.into(out.unbind(0))
    assert [bits(v) for v in out] == expected
    hash_into(tensors, out)
    assert [bits(v) for v in out] == expected


def test_a_parameter_whose_words_are_a_copy_is_read_afresh_after_an_in_place_update():
    """Item 15: a contiguous parameter that starts mid-word (a slice of a flat buffer) is hashed
    from a copy of its words; a real optimizer step updates it in place, and the Hasher made
    before the step (as WeightRecorder makes one per epoch) hashes it as it is after the step."""
    flat = torch.zeros(9)
    sliced = torch.nn.Parameter(flat[1:9])
    assert sliced.is_contiguous() and sliced.data_ptr() % 8 != 0
    aligned = torch.nn.Parameter(torch.zeros(8))
    transposed = torch.nn.Parameter(torch.zeros(4, 2).t())  # not contiguous: a copy too
    params = [sliced, aligned, transposed]
    hasher = Hasher(params)
    out = torch.zeros(len(params), dtype=torch.int64)
    hasher.into(out.unbind(0))
    before = [bits(v) for v in out]
    optimizer = torch.optim.SGD(params, lr=0.5)
    loss = sum(((p - torch.arange(p.numel()).view(p.shape)) ** 2).sum() for p in params)
    loss.backward()
    optimizer.step()
    assert sliced.data_ptr() == flat.data_ptr() + 4  # updated in place
    hasher.into(out.unbind(0))
    after = [bits(v) for v in out]
    assert after == [reference(p) for p in params]
    assert all(a != b for a, b in zip(after, before, strict=True))


def test_the_recorder_rows_follow_a_sliced_parameter_through_a_real_fit(tmp_path):
    """weights.npy's rows from a real Lightning fit (WeightRecorder, three SGD steps) of a model
    whose weight is a slice of a flat buffer: each row is that step's weight's hash, as a
    callback after the recorder saw the weight."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    class Sliced(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.flat = torch.zeros(9)
            self.weight = torch.nn.Parameter(self.flat[1:9])

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            return ((self.weight - batch[0]) ** 2).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    seen: list[int] = []

    class Snapshot(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            seen.append(reference(module.weight))

    recorder = WeightRecorder()
    targets = TensorDataset(torch.arange(24, dtype=torch.float32).view(3, 8))
    trainer = pl.Trainer(
        max_epochs=1,
        callbacks=[recorder, Snapshot()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    module = Sliced()
    trainer.fit(module, DataLoader(targets, batch_size=None))
    assert module.weight.data_ptr() == module.flat.data_ptr() + 4  # updated in place
    rows = recorder.rows()
    assert rows.dtype == np.dtype("<u8") and rows.shape == (3, 1)
    assert [int(r) for r in rows[:, 0]] == seen
    assert len(set(seen)) == 3


def test_an_input_that_could_not_be_hashed_is_never_called_equal():
    """A sparse or quantized input has no hash in a replay's log (``hash_text`` gives None):
    the first differing operation's inputs are then not "equal in both runs"."""
    from test_diagnose_findings import ops, replay

    from harness.diagnose.findings import compare
    from harness.diagnose.words import sentences

    assert hash_text(torch.randn(3, 3).to_sparse()) is None
    first, second = ops(differ_at=1)
    for entry in (first[1], second[1]):
        entry["inputs"] = [dict(entry["inputs"][0], hash=None), entry["inputs"][1]]
    states = [["s0"] * 5, ["d"] * 5, ["d"] * 5]
    found = compare(replay(log_step=0, ops=first), replay(log_step=0, ops=second, states=states))
    assert found.kind == "operation" and found.op is not None
    assert found.op.inputs_equal is None and found.op.differing_inputs == []
    words = " ".join(sentences(found, None, {"before_model"}))
    assert "inputs were equal" not in words
    assert "some could not be hashed" in words
    # every input hashed and equal: the old words
    first, second = ops(differ_at=1)
    found = compare(replay(log_step=0, ops=first), replay(log_step=0, ops=second, states=states))
    assert found.op is not None and found.op.inputs_equal is True
    assert "Its inputs were equal in both runs" in " ".join(
        sentences(found, None, {"before_model"})
    )


def test_replays_of_two_hash_kinds_are_never_compared():
    """A replay hashed by another harness (an older image: ``hash_tensor``) is refused before
    its hashes are compared with ``mix64_sum``'s; records of two kinds are not compared either
    (the report's ``comparable_weights``, diagnose's ``recorded_weights_step``)."""
    from test_diagnose_findings import replay

    from harness.diagnose import same_hash
    from harness.errors import HarnessError

    same_hash(replay(hash=weights.HASH_KIND), replay("b", hash=weights.HASH_KIND))
    with pytest.raises(HarnessError, match="different hashes \\(mix64_sum and hash_tensor\\)"):
        same_hash(replay(hash="mix64_sum"), replay("b", hash="hash_tensor"))

    from pathlib import Path

    from harness.diagnose.run_pair import RecordedRun, recorded_weights_step

    rows = np.arange(12, dtype="<u8").reshape(6, 2)
    other = rows.copy()
    other[3:, 1] += np.uint64(1)

    def run(kind: str, hashes: np.ndarray) -> RecordedRun:
        losses = np.zeros((6, 1), dtype="<f4")
        names = ("w", "b")
        return RecordedRun(None, 0, Path("."), {}, losses, None, None, hashes, (kind, names))  # type: ignore[arg-type]

    assert recorded_weights_step(run("mix64_sum", rows), run("mix64_sum", other)) == 3
    assert recorded_weights_step(run("mix64_sum", rows), run("hash_tensor", other)) is None
