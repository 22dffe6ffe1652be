"""A run record from your own Lightning training, outside the harness.

    from harness.lightning import ReproRecorder

    pl.seed_everything(1234)   # pl: pytorch_lightning or lightning.pytorch
    model = MyModule()
    recorder = ReproRecorder("runs/nightly-1", name="nightly", seed=1234)
    trainer = pl.Trainer(..., callbacks=[recorder])
    trainer.fit(model, datamodule)

writes into ``runs/nightly-1`` (a folder that holds no earlier record: one that does is
refused, ``FileExistsError``, before training starts) what a harness run writes
(docs/run-record.md): ``run.json`` (a normal run record, ``written_by: workload``),
``losses.npy`` (each step's loss as the training step returned it, [steps, ranks] float32),
``weights.npy`` (the parameters' hashes after every step) and ``tensorboard/``.
``harness report`` over a folder of such folders compares the runs
that share a ``name`` bit for bit (docs/workload.md, "Outside the harness").

The pieces are the harness's own: ``LossCapture`` and ``EpochRecorder`` (losses on the device,
copied once per epoch), ``WeightRecorder``, ``RankFlags``, the provenance and the record's
writer. The callback does not seed and does not set any flag: ``seed`` is the seed your script
set, recorded; the flags are read from torch as ``fit`` starts and recorded as the record's
``spec``. An exception in training writes a failed record with the losses so far. Under DDP
every rank records and gathers; rank 0 writes.

The callback never stops the training it watches: one row per optimizer step (gradient
accumulation and several optimizers included), a batch whose ``training_step`` gave no loss is
listed in ``skipped`` with a ``RecordWarning``, and when recording itself fails the training
goes on, with a warning, and the record is a failed one that says what could not be recorded.

Workload side: imports torch, Lightning, numpy, ``harness.contract`` and ``harness.workload``.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from harness.contract import LOSSES_FILE, RECORD_FILE, TENSORBOARD_DIR, WEIGHTS_FILE
from harness.contract.record import RunError, Timing, failed_record, write_record
from harness.workload import provenance, signals
from harness.workload.entry import algorithms_setting
from harness.workload.loss_capture import LossCapture, RecordWarning
from harness.workload.packages import twin_class
from harness.workload.record_builder import RunState, build_record, save_trajectory
from harness.workload.recorder import EpochRecorder, TensorBoard, weights_digest

__all__ = ["ReproRecorder", "external_spec"]


def external_spec(
    name: str, module: LightningModule, seed: int | None, flags: Any, threads: int
) -> dict[str, Any]:
    """The record's ``spec`` for a run outside the harness: what identifies it (``name`` groups
    repeats in the report), the module's class as ``entry``, the seed the script says it set,
    and the determinism flags and thread count torch had as ``fit`` started."""
    kind = type(module)
    identity = {
        "external": True,
        "cell_name": name,
        "cell_id": "",
        "entry": f"{kind.__module__}:{kind.__qualname__}",
        "params": {},
        "seed": seed,
        "repeat": 0,
    }
    return {**identity, **flags_in_force(flags, threads)}


def flags_in_force(flags: Any, threads: int) -> dict[str, Any]:
    """What torch ran with, under the names of the settings that set them in a matrix."""
    return {
        "cudnn_deterministic": bool(flags.cudnn_deterministic),
        "cudnn_benchmark": bool(flags.cudnn_benchmark),
        "deterministic_algorithms": algorithms_setting(flags),
        "threads": threads,
    }


#: What a finished run leaves in its folder (rank 0 writes them as training ends, so a run that
#: is starting, or another DDP rank of it, never finds them).
_RECORD_FILES = (RECORD_FILE, LOSSES_FILE, WEIGHTS_FILE)


def refuse_reuse(out: Path) -> None:
    """A folder that holds an earlier run's record is refused before training starts: writing
    into it would replace that record silently (and add a second TensorBoard event file)."""
    found = [name for name in _RECORD_FILES if (out / name).exists()]
    if found:
        raise FileExistsError(
            f"ReproRecorder: {out} already holds a run's record ({', '.join(found)}); give each "
            f"run a folder of its own (e.g. {out.parent / (out.name + '-2')}), or remove the "
            "old one first"
        )


class ReproRecorder(Callback):
    """Writes a harness run record of the ``Trainer`` it is given to (``out``: the folder).

    A ``pytorch_lightning.Callback``; once the script has imported ``lightning.pytorch``, also
    a ``lightning.pytorch.Callback`` (a twin class, harness/workload/packages.py), so either
    package's Trainer takes it."""

    def __new__(cls, *args: Any, **kwargs: Any) -> ReproRecorder:
        if "lightning.pytorch" in sys.modules and not any(
            k.__module__.split(".")[0] == "lightning" for k in cls.__mro__
        ):
            base: type = cls  # a plain type: mypy takes type[ReproRecorder] for unhashable
            cls = twin_class(base)
        return super().__new__(cls)

    def __init__(self, out: str | Path, name: str = "run", seed: int | None = None) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.out = Path(out)
        refuse_reuse(self.out)
        self.name = str(name)
        self.seed = seed
        self.state = RunState()
        self.capture = LossCapture(self.state.recorder, strict=False)
        #: why recording stopped (training goes on), for the record; None while it works
        self.broken: str | None = None
        self.epochs: EpochRecorder | None = None
        self.spec: dict[str, Any] = {}
        self.accelerator = "cpu"
        self.started_at: str | None = None
        self.t0 = time.perf_counter()
        self.written = False

    # ---------------------------------------------------------------- never into the training

    def _guarded(self, what: str, step: Callable[[], Any]) -> None:
        """Run a piece of recording; when it fails, warn, stop recording and keep training."""
        if self.broken is not None:
            return
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - the user's training must go on
            self.broken = f"recording stopped in {what}: {type(exc).__name__}: {exc}"
            warnings.warn(
                f"ReproRecorder: {self.broken}; training goes on, and {self.out} gets a failed "
                "record that says so",
                RecordWarning,
                stacklevel=2,
            )

    # ---------------------------------------------------------------- the run's start and end

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._guarded("on_fit_start", lambda: self._fit_start(trainer, pl_module))

    def _fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.t0 = time.perf_counter()
        self.started_at = datetime.now(timezone.utc).isoformat()
        self.state.world_size = trainer.world_size
        self.state.is_global_zero = trainer.is_global_zero
        self.accelerator = "gpu" if pl_module.device.type == "cuda" else "cpu"
        flags = provenance.determinism_in_force()
        self.spec = external_spec(self.name, pl_module, self.seed, flags, torch.get_num_threads())
        self.state.init_digest = weights_digest(pl_module.state_dict())
        if trainer.is_global_zero:
            self.out.mkdir(parents=True, exist_ok=True)
            self.state.tensorboard = TensorBoard(self.out / TENSORBOARD_DIR)
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 0
        self.epochs = EpochRecorder(self.state.recorder, self.state.tensorboard, max_epochs)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        def digests() -> None:
            self.state.determinism = provenance.determinism_in_force()
            self.state.final_digest = weights_digest(pl_module.state_dict())

        self._guarded("on_fit_end", digests)
        self._write()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if self.state.error is None:
            self.state.error = signals.classify(exception)
        self._write()

    def _write(self) -> None:
        """Rank 0 writes losses.npy, weights.npy and, last, run.json (once); a record that
        cannot be written whole is written as a failed one, and one that cannot be written at
        all is a warning: never an exception into the training."""
        if self.written:
            return
        self.written = True
        if self.broken is not None and self.state.error is None:
            self.state.error = RunError(type="NotRecorded", message=self.broken)
        try:
            self._write_record()
        except Exception as exc:  # noqa: BLE001 - the user's training must go on
            why = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"ReproRecorder: no record in {self.out}: {why}", RecordWarning, 2)
            if self.state.is_global_zero:
                self._write_failed(f"the record could not be written: {why}")

    def _write_failed(self, message: str) -> None:
        error = self.state.error or RunError(type="NotRecorded", message=message)
        try:
            write_record(self.out, failed_record(self.spec, error, written_by="workload"))
        except Exception as exc:  # noqa: BLE001 - said, and training goes on
            warnings.warn(f"ReproRecorder: {type(exc).__name__}: {exc}", RecordWarning, 2)

    def _write_record(self) -> None:
        if self.state.tensorboard is not None:
            self.state.tensorboard.close()
        if not self.state.is_global_zero or self.started_at is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        losses, weights = save_trajectory(self.out, self.state)
        timing = Timing(
            started_at=self.started_at,
            finished_at=datetime.now(timezone.utc).isoformat(),
            wall_seconds=time.perf_counter() - self.t0,
        )
        record = build_record(
            self.spec,
            self.state,
            losses,
            [],
            timing,
            weights,
            accelerator=self.accelerator,
            image=None,
        )
        write_record(self.out, record)

    # ---------------------------------------------------------------- the harness's callbacks

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        def start() -> None:
            self.state.weights.on_train_epoch_start(trainer, pl_module)
            if self.epochs is not None:
                self.epochs.on_train_epoch_start(trainer, pl_module)
            self.capture.on_train_epoch_start(trainer, pl_module)

        self._guarded("on_train_epoch_start", start)

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        def end() -> None:
            self.state.weights.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            self.capture.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

        self._guarded("on_train_batch_end", end)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.epochs is not None:
            epochs = self.epochs
            self._guarded(
                "on_validation_epoch_start",
                lambda: epochs.on_validation_epoch_start(trainer, pl_module),
            )

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.epochs is not None:
            epochs = self.epochs
            self._guarded(
                "on_validation_epoch_end",
                lambda: epochs.on_validation_epoch_end(trainer, pl_module),
            )

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        def end() -> None:
            self.capture.on_train_epoch_end(trainer, pl_module)
            self.state.weights.on_train_epoch_end(trainer, pl_module)
            if self.epochs is not None:
                self.epochs.on_train_epoch_end(trainer, pl_module)

        self._guarded("on_train_epoch_end", end)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._guarded(
            "on_train_end", lambda: self.state.rank_flags.on_train_end(trainer, pl_module)
        )
