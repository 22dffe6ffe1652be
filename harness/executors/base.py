"""The one small interface every executor implements: run one repeat in one slot.

An executor turns a ``RunSpec`` into a finished run folder and a ``RunOutcome``. It never raises
for a run that fails: a failure is an outcome. It raises ``ExecutorError`` only when it cannot
run anything at all (no daemon, no image), before the matrix starts.
"""

from __future__ import annotations

import enum
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.contract import RunSpec


class RunStatus(str, enum.Enum):
    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    ABORTED = "aborted"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Slot:
    """The resources one run holds: the CPU cores it is pinned to and the GPU ids it sees."""

    cpus: tuple[int, ...]
    gpus: tuple[int, ...] = ()


@dataclass
class RunOutcome:
    status: RunStatus
    seconds: float
    exit_code: int | None = None
    message: str = ""
    log_tail: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.OK


@dataclass(frozen=True)
class ExecutorOptions:
    """What every executor is constructed with (one object, not a growing kwargs list).

    ``run_label`` names the matrix run (containers carry it as a label so a sweep finds them);
    ``data_dir`` is the host's MNIST folder (mounted read-only into containers); ``python`` is
    the interpreter that has the workload installed, for the local executor.
    """

    run_label: str
    data_dir: Path | None = None
    python: str = "python3"
    extra: dict[str, str] = field(default_factory=dict)


class Executor(ABC):
    """Starts runs; ``cleanup`` must leave no process or container behind."""

    name: str = "base"

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options

    def prepare(self, specs: Sequence[RunSpec]) -> dict[str, dict[str, str | None]]:
        """Check (and build) what the runs need before the first one starts.

        Returns, per image name, the provenance the executor adds to each spec
        (``image_digest``, ``image_id``). Raises ExecutorError when nothing can run.
        """
        return {}

    @abstractmethod
    def run(
        self,
        spec: RunSpec,
        slot: Slot,
        run_dir: Path,
        *,
        timeout_s: float,
        cancel: threading.Event,
    ) -> RunOutcome:
        """Run one repeat; the spec is already written to ``run_dir/spec.json``."""

    def cleanup(self) -> None:  # noqa: B027 - optional hook: most executors reap as they go
        """Stop everything this executor started and has not yet reaped."""
