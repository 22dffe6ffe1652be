"""One repeat, in the order the post's main.py implies, ending in a run record either way.

Order: pin threads, seed (``process_start``), set the determinism flags, load and verify MNIST
(a user's workload: import its entry), seed (``before_model``), create the model (a user's
workload: call its function) and digest its weights, seed (``before_trainer``), build the
Trainer, fit, read the determinism flags back (a flag the training changed fails the run with
``DeterminismFlagsChanged``). ``none`` never seeds. Under DDP Lightning starts every other rank as
``python -m harness.workload.__main__`` with the same arguments, so each rank seeds at the same
placement. Rank 0 writes ``losses.npy``, the event files and, last, ``run.json``.

Whatever ends the run (an exception, SIGTERM, Ctrl-C, a sticky CUDA error that makes the
record's own building fail), rank 0 writes a failed ``run.json``: a full one when it can, a
minimal one with what is known when that fails. Under DDP each rank that fails first writes
its error to ``rank-<r>.error.json``, since Lightning SIGKILLs rank 0 when another rank exits
with an error; rank 0's record, or else the host's, carries every rank's error.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from harness.contract import LOSSES_FILE, TENSORBOARD_DIR, WEIGHTS_FILE, RunSpec
from harness.contract.record import (
    USER_WORKLOAD_ERRORS,
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
    write_rank_error,
    write_record,
)
from harness.contract.spec import DEFAULT_DDP_TIMEOUT_S
from harness.workload import provenance, signals
from harness.workload.data import load_mnist, resolve_data_dir, split_digest
from harness.workload.entry import (
    Built,
    RunSettings,
    WorkloadError,
    build,
    check_flags,
    find_data_dir,
    load_entry,
)
from harness.workload.packages import Package, for_package, namespace, package_of, submodule
from harness.workload.recorder import (
    EpochRecorder,
    LossCapture,
    LossRecorder,
    TensorBoard,
    trajectory_digest,
    weights_digest,
)
from harness.workload.seeding import (
    apply_determinism,
    nondeterministic_ops,
    pin_threads,
    seed_all,
)
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


def _rank_from_env() -> int:
    """The global rank before the Trainer exists (Lightning sets these in its children)."""
    return int(os.environ.get("NODE_RANK", "0")) + int(os.environ.get("LOCAL_RANK", "0"))


def _seed_if(spec: RunSpec, placement: str) -> None:
    if spec.placement == placement:
        seed_all(spec.seed)


def ddp_timeout(spec: RunSpec) -> timedelta:
    """How long a DDP collective waits for the other ranks (``run.ddp_timeout_s``)."""
    seconds = spec.ddp_timeout_s if spec.ddp_timeout_s is not None else DEFAULT_DDP_TIMEOUT_S
    return timedelta(seconds=float(seconds))


def _build_trainer(
    spec: RunSpec,
    callbacks: list[Any],
    distributed_sampler: bool = False,
    package: Package = "pytorch_lightning",
):
    """The Trainer of every run, from ``package`` (the one the module's class comes from).
    ``distributed_sampler``: Lightning shards the data across DDP ranks (its default, which a
    user's own dataloaders expect); the built-in shards its own."""
    Trainer = namespace(package).Trainer
    DDPStrategy = submodule(package, "strategies").DDPStrategy
    callbacks = [for_package(callback, package) for callback in callbacks]

    strategy: Any = "auto"
    if spec.devices > 1:
        backend = "nccl" if spec.accelerator == "gpu" else "gloo"
        strategy = DDPStrategy(process_group_backend=backend, timeout=ddp_timeout(spec))
    trainer = Trainer(
        max_steps=spec.diagnose["steps"] if spec.diagnose else -1,
        accelerator=spec.accelerator,
        devices=spec.devices,
        strategy=strategy,
        max_epochs=spec.epochs,
        limit_train_batches=spec.max_steps_per_epoch or 1.0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=distributed_sampler,
        callbacks=callbacks,
    )
    # Lightning's SIGTERM handler runs a DDP broadcast inside the signal handler, which hangs
    # (until the DDP timeout) when another rank waits in a different collective; the workload's
    # own handler (harness/workload/signals.py) raises Terminated at once instead. (A private
    # attribute of Lightning 2.x: without it, its handler chain still ends in ours.)
    connector = getattr(trainer, "_signal_connector", None)
    if connector is not None:
        connector.register_signal_handlers = lambda: None
    return trainer


def _builtin(spec: RunSpec, cli_data_dir: str | None) -> Built:
    """The post's experiment: load and verify MNIST, seed (``before_model``), the model."""
    from harness.workload.networks import LitMNIST

    mnist = load_mnist(resolve_data_dir(cli_data_dir), train=True)
    _seed_if(spec, "before_model")
    model = LitMNIST(
        mnist,
        hidden_size=spec.hidden_size,
        learning_rate=spec.learning_rate,
        batch_size=spec.batch_size,
        model=spec.model,
    )
    return Built(model)


def _user(spec: RunSpec, cli_data_dir: str | None, code_dir: Path | None, state: RunState) -> Built:
    """The user's workload: import the entry (a failure names the fix), seed
    (``before_model``), call it with the run's settings and check what it returned. A build
    function that seeds torch itself (``torch.initial_seed()`` changed across the call) makes
    the placement moot: ``state.user_seed`` records the seed it set."""
    import torch

    assert spec.entry is not None
    function = load_entry(spec.entry, code_dir)
    settings = RunSettings.of(spec, find_data_dir(cli_data_dir), code_dir)
    _seed_if(spec, "before_model")
    before = torch.initial_seed()
    built = build(spec.entry, function, settings)
    after = torch.initial_seed()
    state.user_seed = after if after != before else None
    return built


def raised_by_lightning(exc: BaseException) -> bool:
    """Whether Lightning's own code raised ``exc`` (its innermost frame is in
    pytorch_lightning, lightning_fabric or lightning), not torch, the harness or the user's code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return str(module).split(".")[0] in ("pytorch_lightning", "lightning_fabric", "lightning")


def _fit(spec: RunSpec, trainer: Any, built: Built) -> None:
    """``trainer.fit``; with a user's entry, Lightning's refusal of the module's own
    configuration (a MisconfigurationException, or an error Lightning itself raised, as for two
    optimizers under automatic optimization) is the workload's fault: a WorkloadError."""
    package = package_of(built.module, built.datamodule)
    MisconfigurationException = submodule(package, "utilities.exceptions").MisconfigurationException

    if spec.entry is None:
        trainer.fit(built.module)
        return
    try:
        trainer.fit(built.module, **built.fit_kwargs())
    except (MisconfigurationException, RuntimeError, ValueError, TypeError) as exc:
        if not isinstance(exc, MisconfigurationException) and not raised_by_lightning(exc):
            raise
        raise WorkloadError(
            f"Lightning refused {type(built.module).__qualname__} (from {spec.entry!r}): {exc}"
        ) from exc


def _train(
    spec: RunSpec,
    out: Path,
    cli_data_dir: str | None,
    state: RunState,
    t0: float,
    caught: list[Any],
    code_dir: Path | None = None,
):
    # Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1; Adam.step() then asks NVML for
    # the device count on every step (dlopen + init, uncached until CUDA is initialised), which
    # costs more than the step itself on a CPU run. No fork is used here, so drop it.
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    pin_threads(spec.threads)
    _seed_if(spec, "process_start")
    apply_determinism(spec)
    if spec.entry is None:
        built = _builtin(spec, cli_data_dir)
    else:
        built = _user(spec, cli_data_dir, code_dir, state)
    model = built.module
    state.init_digest = weights_digest(model.state_dict())
    probe = None
    if spec.diagnose is not None:
        from harness.workload.replay import ReplayOptions, ReplayProbe

        probe = ReplayProbe(ReplayOptions.of(spec.diagnose), model)

    _seed_if(spec, "before_trainer")
    if state.is_global_zero:
        state.tensorboard = TensorBoard(out / TENSORBOARD_DIR)
    callbacks: list[Any] = [
        state.weights,
        EpochRecorder(state.recorder, state.tensorboard, spec.epochs),
        LossCapture(state.recorder),
        state.rank_flags,
    ]
    if spec.test_fault is not None:
        from harness.workload.faults import FaultSwitch

        callbacks.append(FaultSwitch(spec.test_fault, state.recorder))
    counter = None
    if spec.count_host_syncs:
        from harness.workload.syncs import HostSyncCounter

        counter = HostSyncCounter(caught, lambda: state.recorder.steps)
        callbacks.append(counter)
    if probe is not None:
        callbacks.append(probe)
    trainer = _build_trainer(
        spec,
        callbacks,
        distributed_sampler=spec.entry is not None,
        package=package_of(built.module, built.datamodule),
    )
    state.setup_seconds = time.perf_counter() - t0
    _fit(spec, trainer, built)
    state.host_syncs = counter.result if counter is not None else None
    # Read back from torch, not from the spec: what training ran with (the Trainer could have
    # changed a flag; it does not, as the workload passes it neither deterministic= nor benchmark=)
    state.determinism = provenance.determinism_in_force()
    state.world_size = trainer.world_size
    state.is_global_zero = trainer.is_global_zero
    state.final_digest = weights_digest(model.state_dict())
    if hasattr(model, "train_indices") and hasattr(model, "val_indices"):  # the built-in's
        state.split_digest = split_digest(model.train_indices, model.val_indices)
    if probe is not None and trainer.global_rank == probe.options.rank:
        probe.write(out, model)
    # A flag changed by the training's own code (build, the module, its callbacks): the run
    # did not test the cell's settings; it fails, keeping what it recorded.
    check_flags(spec, state.determinism)


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
            trajectory=trajectory_digest(losses) if len(losses) else None,
            init_weights=state.init_digest,
            final_weights=state.final_digest,
            epochs=[trajectory_digest(rows) for rows in epochs],
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


def _note_failure(spec: RunSpec, out: Path, state: RunState, exc: BaseException) -> None:
    """The run's error; under DDP first of all written to this rank's error file, before
    anything that could hang or be killed."""
    error = signals.classify(exc)
    state.error = error
    if spec.devices > 1:
        try:
            write_rank_error(out, _rank_from_env(), error, time.time())
        except OSError as problem:
            log.error("could not write this rank's error file: %s", problem)
    log.error("run failed: %s: %s", error.type, error.message)
    if error.type in USER_WORKLOAD_ERRORS and error.traceback:
        # where WorkloadFailure's hint points (run.log): the user's own frames included
        log.error("the traceback of your code's error:\n%s", error.traceback.rstrip())


def _full_record(
    spec: RunSpec, out: Path, state: RunState, caught: list[Any], t0: float, started_at: str
) -> RunRecord:
    losses, weights = save_trajectory(out, state)
    timing = _timing(t0, started_at, state)
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


def _timing(t0: float, started_at: str, state: RunState) -> Timing:
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


def _record(
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
        record = minimal_record(spec, state, _timing(t0, started_at, state))
    if record.error is not None and spec.devices > 1:
        failures = read_rank_errors(out, spec.devices)
        record.error = with_rank_errors(record.error, failures, own_rank=0)
    return record


def run(
    spec: RunSpec, out: Path, cli_data_dir: str | None = None, code_dir: Path | None = None
) -> int:
    """Train one repeat and write its record; returns the process exit code. ``code_dir``:
    the user's code folder (``--code-dir``), already on ``sys.path``."""
    t0 = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat()
    state = RunState(world_size=spec.devices, is_global_zero=_rank_from_env() == 0)
    caught: list[Any] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                _train(spec, out, cli_data_dir, state, t0, caught, code_dir)
            finally:
                if state.tensorboard is not None:
                    state.tensorboard.close()
    except BaseException as exc:  # noqa: BLE001 - SIGTERM and Ctrl-C end a run too
        _note_failure(spec, out, state, exc)
    for warning in caught:
        log.debug("warning: %s", warning.message)
    if not state.is_global_zero:
        return 1 if state.error else 0

    with signals.deferred() as arrived:
        record = _record(spec, out, state, caught, t0, started_at)
        if arrived and record.error is None:
            # stopped while the record was being written: the run did not end on its own
            stop = signals.Terminated() if signal.SIGTERM in arrived else KeyboardInterrupt()
            state.error = signals.classify(stop)
            record = minimal_record(spec, state, record.timing)
        write_record(out, record)
    return 1 if record.error else 0
