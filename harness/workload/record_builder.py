"""What a run has produced so far (``RunState``) and the run record built from it: the full
``run.json`` with ``losses.npy`` and ``weights.npy``, or, when building that fails (a sticky
CUDA error, a full disk), a minimal failed one that names the first error. Used by the
harness's runs (harness/workload/training.py) and by ``ReproRecorder`` (harness/lightning.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from harness.contract import LOSSES_FILE, TENSORBOARD_DIR, WEIGHTS_FILE, RunSpec
from harness.contract.record import (
    Determinism,
    Digests,
    EpochSummary,
    HostSyncs,
    Provenance,
    RunError,
    RunRecord,
    Timing,
    WeightDigests,
    failed_record,
    read_rank_errors,
    with_rank_errors,
)
from harness.contract.trajectory_hash import trajectory_sha256
from harness.workload import provenance, signals
from harness.workload.recorder import LossRecorder, TensorBoard
from harness.workload.seeding import nondeterministic_ops
from harness.workload.weights import HASH_KIND, WeightRecorder

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """What the run has produced so far; a failed run's record carries whatever is here."""

    recorder: LossRecorder = field(default_factory=LossRecorder)
    #: the parameters' hashes after every step (``weights.npy``)
    weights: WeightRecorder = field(default_factory=WeightRecorder)
    world_size: int = 1
    is_global_zero: bool = True
    init_digest: str | None = None
    final_digest: str | None = None
    split_digest: str | None = None
    determinism: Determinism | None = None
    #: reads every rank's determinism flags as training ends (provenance.determinism_ranks)
    rank_flags: provenance.RankFlags = field(default_factory=provenance.RankFlags)
    setup_seconds: float | None = None
    error: RunError | None = None
    tensorboard: TensorBoard | None = None
    #: ``run.count_host_syncs``: the counter's result (None when not asked, or not reached)
    host_syncs: HostSyncs | None = None
    #: the seed the user's build function set torch's generator to (None: it did not)
    user_seed: int | None = None


def nonfinite_error(losses: np.ndarray, summaries: list[EpochSummary]) -> RunError | None:
    """A run whose loss became NaN or infinite has failed: its trajectory says nothing about
    reproducibility. The error names the first such step (global, and epoch / batch)."""
    bad = ~np.isfinite(losses).all(axis=1)
    if not bad.any():
        return None
    step = int(np.argmax(bad))
    where = next(
        (f" (epoch {s.epoch}, batch {step - s.first_step})" for s in summaries
         if s.first_step <= step < s.first_step + s.steps),
        "",
    )  # fmt: skip
    return RunError(
        type="NonFiniteLoss",
        message=f"the training loss is not finite (NaN or infinite) from step {step}{where}; "
        "training stopped at the end of that epoch. A smaller learning_rate may keep it finite",
    )


def build_record(
    spec: dict[str, Any],
    state: RunState,
    losses: np.ndarray,
    nondet: list[str],
    timing: Timing,
    weights: WeightDigests | None = None,
    *,
    accelerator: str,
    image: str | None,
) -> RunRecord:
    """The run.json object (docs/run-record.md); ``spec``: the record's ``spec`` (a RunSpec's
    dict, or harness.lightning's for a run outside the harness); ``weights``: what
    ``weights.npy`` holds, None where it was not written; ``accelerator``, ``image``: for the
    provenance."""
    epochs = state.recorder.epochs
    files = {"losses": LOSSES_FILE, "tensorboard": TENSORBOARD_DIR}
    if weights is not None:
        files["weights"] = WEIGHTS_FILE
    return RunRecord(
        status="failed" if state.error else "ok",
        error=state.error,
        spec=spec,
        steps=int(losses.shape[0]),
        ranks=int(losses.shape[1]),
        steps_per_epoch=[len(rows) for rows in epochs],
        digests=Digests(
            trajectory=trajectory_sha256(losses) if len(losses) else None,
            init_weights=state.init_digest,
            final_weights=state.final_digest,
            epochs=[trajectory_sha256(rows) for rows in epochs],
            split=state.split_digest,
        ),
        epochs=list(state.recorder.summaries),
        timing=timing,
        nondeterministic_ops=nondet,
        host_syncs=state.host_syncs,
        weights=weights,
        skipped=list(state.recorder.skipped),
        provenance=Provenance(
            **provenance.collect(
                accelerator, image, state.world_size, state.determinism, state.rank_flags
            ),
            user_seed=state.user_seed,
        ),
        files=files,
    )


def save_trajectory(out: Path, state: RunState) -> tuple[np.ndarray, WeightDigests | None]:
    """Write ``losses.npy`` and ``weights.npy`` (rank 0); a loss that is not finite becomes the
    run's error, unless it already has one. Returns the losses and what weights.npy holds."""
    losses = state.recorder.losses(state.world_size)
    np.save(out / LOSSES_FILE, losses)
    weights = _save_weights(out, state, len(losses))
    if state.error is None:
        state.error = nonfinite_error(losses, state.recorder.summaries)
    return losses, weights


def _save_weights(out: Path, state: RunState, steps: int) -> WeightDigests | None:
    """Write ``weights.npy``, one row per step of ``losses.npy``: a partial epoch's rows that
    the losses leave out (a failed DDP run keeps only whole epochs) are left out too. None,
    and no file, where there is not a row for every step (or the rows cannot be read)."""
    try:
        rows = state.weights.rows()
    except Exception as exc:  # noqa: BLE001 - the losses decide whether the record is whole
        log.error("could not read the parameter hashes: %s: %s", type(exc).__name__, exc)
        return None
    if len(rows) < steps or not state.weights.names:
        return None
    np.save(out / WEIGHTS_FILE, np.ascontiguousarray(rows[:steps], dtype="<u8"))
    return WeightDigests(parameters=list(state.weights.names), hash=HASH_KIND)


def _full_record(
    spec: RunSpec, out: Path, state: RunState, caught: list[Any], t0: float, started_at: str
) -> RunRecord:
    losses, weights = save_trajectory(out, state)
    timing = timing_of(t0, started_at, state)
    return build_record(
        spec.to_dict(),
        state,
        losses,
        nondeterministic_ops(caught),
        timing,
        weights,
        accelerator=spec.accelerator,
        image=spec.image,
    )


def timing_of(t0: float, started_at: str, state: RunState) -> Timing:
    return Timing(
        started_at=started_at,
        finished_at=datetime.now(timezone.utc).isoformat(),
        wall_seconds=time.perf_counter() - t0,
        setup_seconds=state.setup_seconds,
    )


def minimal_record(spec: RunSpec, state: RunState, timing: Timing) -> RunRecord:
    """A failed record with what is known without touching torch (after a sticky CUDA error,
    every CUDA call fails): the error, the spec, the digests taken so far, the timing."""
    assert state.error is not None
    record = failed_record(
        spec.to_dict(), state.error, ranks=max(spec.devices, 1), written_by="workload"
    )
    record.timing = timing
    record.digests = Digests(init_weights=state.init_digest, split=state.split_digest)
    record.files = {}
    return record


def finished_record(
    spec: RunSpec, out: Path, state: RunState, caught: list[Any], t0: float, started_at: str
) -> RunRecord:
    """The full record; when building it fails (a sticky CUDA error in the losses' copy, a
    full disk for losses.npy), a minimal failed one that names the first error."""
    try:
        record = _full_record(spec, out, state, caught, t0, started_at)
    except Exception as exc:  # noqa: BLE001 - whatever it is, the run gets a record
        log.error("could not build the full run record: %s: %s", type(exc).__name__, exc)
        if state.error is None:
            state.error = signals.classify(exc)
        record = minimal_record(spec, state, timing_of(t0, started_at, state))
    if record.error is not None and spec.devices > 1:
        failures = read_rank_errors(out, spec.devices)
        record.error = with_rank_errors(record.error, failures, own_rank=0)
    return record
