"""A deterministic stand-in executor for unit tests of scheduling, resume and failure handling.

It writes a well-formed run record computed from the spec alone (no torch), sleeps a chosen
time or holds each run until a test lets it go (``hold``), and records which slots were in use at
once. A scheduling test holds the runs and waits until the expected number is in flight
(``wait_for_running``): concurrency is proven by events, never by racing a clock. It never
replaces the real executors in the end-to-end tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harness.contract import LOG_FILE, LOSSES_FILE, RunSpec
from harness.contract.record import (
    Digests,
    EpochSummary,
    Provenance,
    RunError,
    RunRecord,
    Timing,
    failed_record,
    write_record,
)
from harness.contract.trajectory_hash import trajectory_sha256
from harness.executors.base import (
    Executor,
    ExecutorOptions,
    RunIdentity,
    RunJob,
    RunOutcome,
    RunStatus,
    Slot,
)


class FakeExecutor(Executor):
    """``seconds``: sleep per run; ``hold``: each run first waits until this event is set (or
    its cancel event, or its timeout), so a test controls how long runs overlap;
    ``fail_placement``: runs of that placement exit non-zero; ``diverge_placement``: repeats of
    that placement differ from step 10 on; ``identity``: what ``prepare`` says would run every
    image now, and what each record's provenance then holds (None: nothing, and resume compares
    nothing but the spec); ``workload_error_placement``: runs of that placement fail as the
    user's training does (a record of the workload's with ``error.type`` WorkloadError). A run
    of a build function records the user's code digest of ``options`` as a real one does."""

    name = "fake"

    def __init__(
        self,
        options: ExecutorOptions | None = None,
        *,
        seconds: float = 0.05,
        hold: threading.Event | None = None,
        fail_placement: str | None = None,
        diverge_placement: str | None = None,
        identity: RunIdentity | None = None,
        workload_error_placement: str | None = None,
    ) -> None:
        super().__init__(options or ExecutorOptions(run_label="fake"))
        self.workload_error_placement = workload_error_placement
        self.seconds = seconds
        self.hold = hold
        self.fail_placement = fail_placement
        self.diverge_placement = diverge_placement
        self.identity = identity
        self._lock = threading.Condition()  # notified whenever a run starts
        self.running: list[Slot] = []
        self.max_concurrency = 0
        self.overlaps: list[tuple[Slot, Slot]] = []
        self.calls: list[tuple[str, int]] = []

    def wait_for_running(self, count: int, timeout: float) -> list[Slot]:
        """Block until ``count`` runs are in flight at once; their slots then. Raises
        TimeoutError when that many never are within ``timeout`` seconds."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.running) >= count, timeout):
                raise TimeoutError(
                    f"{len(self.running)} runs in flight after {timeout} s, never {count} "
                    f"(at most {self.max_concurrency} at once)"
                )
            return list(self.running)

    def prepare(self, specs: Sequence[RunSpec]) -> dict[str, RunIdentity]:
        if self.identity is None:
            return {}
        return {image: self.identity for image in {s.image for s in specs}}

    def execute(self, job: RunJob) -> RunOutcome:
        spec, slot, run_dir = job.spec, job.slot, job.run_dir
        timeout_s, cancel = job.timeout_s, job.cancel
        with self._lock:
            for other in self.running:
                if set(other.cpus) & set(slot.cpus) or set(other.gpus) & set(slot.gpus):
                    self.overlaps.append((other, slot))
            self.running.append(slot)
            self.max_concurrency = max(self.max_concurrency, len(self.running))
            self.calls.append((spec.cell_id, spec.repeat))
            self._lock.notify_all()
        start = time.monotonic()
        try:
            (run_dir / LOG_FILE).write_text(f"epoch 1/{spec.epochs} done: fake\n")
            held = self._held(cancel, timeout_s)
            if held is RunStatus.ABORTED:
                return RunOutcome(RunStatus.ABORTED, time.monotonic() - start, None, "cancelled")
            if held is RunStatus.TIMEOUT:
                return RunOutcome(RunStatus.TIMEOUT, timeout_s, None, "timed out")
            if cancel.wait(min(self.seconds, timeout_s)):
                return RunOutcome(RunStatus.ABORTED, time.monotonic() - start, None, "cancelled")
            if self.seconds > timeout_s:
                return RunOutcome(RunStatus.TIMEOUT, timeout_s, None, "timed out")
            if spec.placement == self.fail_placement:
                (run_dir / LOG_FILE).write_text("Traceback: boom\nRuntimeError: fake failure\n")
                return RunOutcome(RunStatus.FAILED, time.monotonic() - start, 1, "exit code 1")
            if spec.placement == self.workload_error_placement:
                error = RunError("WorkloadError", f"fake: {spec.entry} returned no loss")
                write_record(run_dir, failed_record(spec.to_dict(), error, written_by="workload"))
                return RunOutcome(RunStatus.FAILED, time.monotonic() - start, 1, "exit code 1")
            identity = self.identity
            code = self.user_code(spec)
            if code is not None:  # as the real executors pass it to the workload
                identity = dataclasses.replace(identity or RunIdentity(), user_code_digest=code[1])
            write_fake_record(
                spec,
                run_dir,
                diverge=spec.placement == self.diverge_placement,
                identity=identity,
            )
            return RunOutcome(RunStatus.OK, time.monotonic() - start, 0)
        finally:
            with self._lock:
                self.running.remove(slot)

    def _held(self, cancel: threading.Event, timeout_s: float) -> RunStatus | None:
        """Wait for ``hold``: None once it is set, else ABORTED (cancelled) or TIMEOUT."""
        if self.hold is None:
            return None
        deadline = time.monotonic() + timeout_s
        while not self.hold.wait(0.01):  # both events, without a thread per run
            if cancel.is_set():
                return RunStatus.ABORTED
            if time.monotonic() >= deadline:
                return RunStatus.TIMEOUT
        return None


def write_fake_record(
    spec: RunSpec,
    run_dir: Path,
    *,
    diverge: bool = False,
    steps: int = 50,
    identity: RunIdentity | None = None,
) -> None:
    """A run record in the documented format with a trajectory derived from the spec; its
    provenance holds ``identity``'s compared fields."""
    rng = np.random.default_rng(spec.seed)
    losses = (2.3 * np.exp(-np.arange(steps) / 20) + rng.random(steps) * 0.01).astype("<f4")
    if diverge and spec.repeat > 0:
        losses[10:] += np.float32(1e-3 * spec.repeat)
    losses = losses.reshape(steps, 1)
    np.save(run_dir / LOSSES_FILE, losses)
    traj = trajectory_sha256(losses)
    final = hashlib.sha256(b"final" + traj.encode()).hexdigest()
    record = RunRecord(
        status="ok",
        spec=spec.to_dict(),
        steps=steps,
        ranks=1,
        steps_per_epoch=[steps],
        digests=Digests(
            trajectory=traj,
            init_weights="init",
            final_weights=final,
            epochs=[traj],
            split="split",
        ),
        epochs=[
            EpochSummary(
                epoch=0,
                steps=steps,
                first_step=0,
                val_loss=0.5,
                val_acc=0.9,
                train_seconds=1.0,
                val_seconds=0.1,
                steps_per_second=steps / 1.0,
            )
        ],
        timing=Timing(wall_seconds=1.2, setup_seconds=0.1),
        provenance=Provenance(
            **{name: getattr(identity, name) for name in RunIdentity.COMPARED} if identity else {}
        ),
        files={"losses": LOSSES_FILE},
        written_by="test",
    )
    write_record(run_dir, record)
