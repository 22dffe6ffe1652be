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
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from harness.contract import TENSORBOARD_DIR, RunSpec
from harness.contract.record import (
    USER_WORKLOAD_ERRORS,
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
from harness.workload.record_builder import RunState, finished_record, minimal_record
from harness.workload.recorder import TensorBoard, weights_digest
from harness.workload.run_callbacks import Recorders, log_first_step, quiet_profiler_class
from harness.workload.seeding import apply_determinism, pin_threads, seed_all

log = logging.getLogger(__name__)


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
        profiler=quiet_profiler_class(package)(),
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
    recorders = Recorders(state, state.tensorboard, spec.epochs)
    callbacks, counter = _callbacks(spec, state, recorders, caught, probe)
    trainer = _build_trainer(
        spec,
        callbacks,
        distributed_sampler=spec.entry is not None,
        package=package_of(built.module, built.datamodule),
    )
    state.setup_seconds = time.perf_counter() - t0
    _fit(spec, trainer, built)
    log_first_step(recorders.first_step_at)
    state.host_syncs = counter.result if counter is not None else None
    _after_fit(spec, out, state, trainer, model, probe)


def _callbacks(
    spec: RunSpec, state: RunState, recorders: Recorders, caught: list[Any], probe: Any
) -> tuple[list[Any], Any]:
    """The run's callbacks, in the order they run (its recorders first, as one callback), and
    the host-sync counter (None when ``run.count_host_syncs`` is off)."""
    callbacks: list[Any] = [recorders]
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
    return callbacks, counter


def _after_fit(
    spec: RunSpec, out: Path, state: RunState, trainer: Any, model: Any, probe: Any
) -> None:
    """What the training ran with and ended at, read back into ``state``; the replay's files
    from the rank it follows."""
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
        record = finished_record(spec, out, state, caught, t0, started_at)
        if arrived and record.error is None:
            # stopped while the record was being written: the run did not end on its own
            stop = signals.Terminated() if signal.SIGTERM in arrived else KeyboardInterrupt()
            state.error = signals.classify(stop)
            record = minimal_record(spec, state, record.timing)
        write_record(out, record)
    return 1 if record.error else 0
