"""The one small interface every executor implements: run one repeat in one slot.

An executor turns a ``RunSpec`` into a finished run folder and a ``RunOutcome``. It never raises
for a run that fails: a failure is an outcome. It raises ``ExecutorError`` only when it cannot
run anything at all (no daemon, no image), before the matrix starts.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness.contract import ErrorType, RunSpec


class RunStatus(str, enum.Enum):
    """How one run that was started ended (a run already done is not started: resume skips it)."""

    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    ABORTED = "aborted"


@dataclass(frozen=True)
class Slot:
    """The resources one run holds: the CPU cores it is pinned to and the GPU ids it sees."""

    cpus: tuple[int, ...]
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class RunJob:
    """One repeat to run, as ``Executor.run`` was asked: the spec (already written to
    ``run_dir/spec.json``), its slot and run folder, its time limit, and the event that asks it
    to stop (Ctrl-C, a shard's end)."""

    spec: RunSpec
    slot: Slot
    run_dir: Path
    timeout_s: float
    cancel: threading.Event


@dataclass
class RunOutcome:
    """What an executor saw of one run. ``error_type`` names a failure the executor recognised
    (killed from outside, out of memory, engine gone); the runner records it in ``run.json``."""

    status: RunStatus
    seconds: float
    exit_code: int | None = None
    message: str = ""
    log_tail: str = ""
    error_type: ErrorType | None = None

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.OK


#: Memory per container when the matrix sets no ``run.memory_limit`` (docker-style size; swap
#: counted in it). A CPU run of the default cell peaks at about 1.1 GiB in its container, a
#: 2-rank gloo DDP run at about 1.4 GiB (page cache included); 8g leaves room for CUDA's host
#: memory and bigger settings. ``run.memory_limit: null`` means no limit.
DEFAULT_MEMORY_LIMIT = "8g"


@dataclass(frozen=True)
class ExecutorOptions:
    """What every executor is constructed with (one object, not a growing kwargs list).

    ``run_label`` names the matrix run (containers carry it as a label); ``data_dir`` is the
    host's MNIST folder (mounted read-only into containers); ``python`` is the interpreter that
    has the workload installed, for the local executor (None: HARNESS_WORKLOAD_PYTHON, else the
    harness's own); ``memory_limit`` caps each container's memory (the matrix's
    ``run.memory_limit``, e.g. ``4g``; None: no limit); ``out`` is the resolved results folder
    the runs write into (``run_matrix`` sets it through ``Executor.bind_results``): containers
    carry it as a label, so that the next harness on that folder sweeps the ones left behind.
    ``code_dir`` is the user's code folder (the matrix's ``workload.path``, absolute; None:
    none) until ``run_matrix`` replaces it with its snapshot in the results folder (``use_code``),
    and ``code_digest`` the snapshot's digest (``harness.contract.code.user_code_digest``), given
    to the runs of a build function (``Executor.user_code``); ``requirements`` the matrix's
    ``workload.requirements``.
    """

    run_label: str = "harness"
    data_dir: Path | None = None
    python: str | None = None
    memory_limit: str | None = DEFAULT_MEMORY_LIMIT
    out: Path | None = None
    code_dir: Path | None = None
    code_digest: str | None = None
    #: the matrix's ``workload.requirements``: installed into the workload image (docker),
    #: checked in the interpreter (local)
    requirements: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunIdentity:
    """What a finished run must have been made by to be reused now, beside its spec.

    Each field that is not None is compared with the run record's ``provenance`` field of the
    same name; None is not compared. The local executor knows ``workload_digest``, ``python``
    and ``torch`` (it asks its interpreter); a container knows ``image_id`` (the built workload
    image, whose tag already names the code digest). ``base_digest`` (the base image's digest)
    is shown, never compared: the image id covers it. ``user_code_digest``: the runs of a build
    function (``entry``) also compare the digest of the user's code folder (``identity_for``).
    """

    workload_digest: str | None = None
    python: str | None = None
    torch: str | None = None
    image_id: str | None = None
    base_digest: str | None = None
    #: the digest of the user's code folder, for a run of a build function (``entry``)
    user_code_digest: str | None = None

    #: the fields resume compares, in the order a mismatch is reported
    COMPARED: ClassVar[tuple[str, ...]] = (
        "workload_digest",
        "python",
        "torch",
        "image_id",
        "user_code_digest",
    )

    def differences(self, provenance: object) -> list[tuple[str, str | None, str]]:
        """(field, recorded, expected) of each compared field where the record differs."""
        found = []
        for name in self.COMPARED:
            expected = getattr(self, name)
            recorded = getattr(provenance, name, None)
            if expected is not None and recorded != expected:
                found.append((name, recorded, expected))
        return found


class Executor(ABC):
    """Starts runs; ``cleanup`` must leave no process or container behind."""

    name: str = "base"

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options

    def prepare(self, specs: Sequence[RunSpec]) -> dict[str, RunIdentity]:
        """Check (and build) what the runs need before the first one starts.

        Returns, per image name of the specs, the identity of what would run them now: resume
        reuses a finished run only when its record matches it (an image left out has nothing
        to compare, as with the fake executor). Raises ExecutorError when nothing can run.
        """
        return {}

    def user_code(self, spec: RunSpec) -> tuple[Path, str] | None:
        """The user's code folder and its digest for a run of a build function (``entry``);
        None for the built-in MNIST experiment or a matrix without ``workload.path``: those
        runs get no ``--code-dir``, and a change to the folder does not rerun them."""
        if spec.entry is None or self.options.code_dir is None:
            return None
        return self.options.code_dir, self.options.code_digest or ""

    def identity_for(self, spec: RunSpec, prepared: dict[str, RunIdentity]) -> RunIdentity | None:
        """What a finished run of ``spec`` must have been made by to be reused: ``prepare``'s
        identity of its image, with the user's code digest for a run of a build function."""
        identity = prepared.get(spec.image)
        code = self.user_code(spec)
        if code is None:
            return identity
        return dataclasses.replace(identity or RunIdentity(), user_code_digest=code[1])

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
        return self.execute(RunJob(spec, slot, Path(run_dir), timeout_s, cancel))

    @abstractmethod
    def execute(self, job: RunJob) -> RunOutcome:
        """What ``run`` does in each executor: one repeat, to its outcome (never raises for a
        run that fails)."""

    def bind_results(self, out: Path) -> None:
        """Learn the (resolved) results folder the runs write into, before ``sweep`` and
        ``prepare``: ``run_matrix`` calls it once it has resolved ``--out``."""
        self.options = dataclasses.replace(self.options, out=Path(out))

    def use_code(self, folder: Path | None, digest: str | None) -> None:
        """Run the build function's runs from ``folder`` (the snapshot of the user's code that
        ``run_matrix`` made in the results folder, or the one ``harness diagnose`` checked),
        recording ``digest``; called before ``prepare``."""
        code_dir = Path(folder) if folder is not None else None
        self.options = dataclasses.replace(self.options, code_dir=code_dir, code_digest=digest)

    def sweep(self) -> list[str]:
        """Stop and remove what a harness that is gone left running for this results folder;
        called under the folder's lock before ``prepare``. Returns one notice per owner swept
        (printed as ``harness: <notice>``). Processes of the local executor die with their
        harness (PR_SET_PDEATHSIG): nothing to sweep."""
        return []

    def cleanup(self) -> None:  # noqa: B027 - optional hook: most executors reap as they go
        """Stop everything this executor started and has not yet reaped."""
