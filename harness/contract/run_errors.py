"""Why a run failed: the record's ``error``, each DDP rank's, and the rank error files.

A failing DDP rank writes its error to a file of the run folder before it exits; rank 0 or the
host reads those back (``read_rank_errors``) and names every rank in the record's error
(``with_rank_errors``). harness/contract/record.py re-exports every name of this module.
Standard library only (the workload side imports it inside the container).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.contract.files import open_regular, write_json_atomic

#: pydantic reads this on each dataclass of the record: a key the format does not define is an
#: error.
STRICT_FIELDS = {"extra": "forbid"}


class ErrorType(str, enum.Enum):
    """Why the host says a run failed (the workload records its exception's class name)."""

    FAILED = "failed"
    TIMEOUT = "timeout"
    KILLED = "killed"
    OOM = "oom"
    DOCKER_UNREACHABLE = "docker_unreachable"
    #: the container left a symbolic link, FIFO, socket or device in its run folder
    UNSAFE_RUN_FOLDER = "unsafe_run_folder"


@dataclass
class RankError:
    """One DDP rank's error, as that rank wrote it before it exited (``rank-<r>.error.json``),
    or, for a rank that wrote none, what the host saw of the whole run."""

    __pydantic_config__ = STRICT_FIELDS

    rank: int
    type: str
    message: str


@dataclass
class RunError:
    """Why a run failed; ``log_tail`` is filled by the host from the run's log. ``ranks``: each
    rank's error, for a DDP run where at least one rank wrote one (absent in older records)."""

    __pydantic_config__ = STRICT_FIELDS

    type: str
    message: str
    traceback: str | None = None
    log_tail: str | None = None
    ranks: list[RankError] | None = None


#: ``error.type`` of a run that failed through the user's own training (its build function,
#: its module, its training step; harness.workload.entry.WorkloadError and its subclass
#: DeterminismFlagsChanged): ``harness run`` starts no further run, prints the message without
#: a traceback and exits 2 (every cell would fail the same way until the user fixes it).
USER_WORKLOAD_ERRORS = ("WorkloadError", "DeterminismFlagsChanged")


# ---------------------------------------------------------------- each rank's error

#: A DDP rank that fails writes its error here (in the run folder) before it exits, so that
#: rank 0 or the host can name it even when Lightning then SIGKILLs rank 0.
RANK_ERROR_FILE = "rank-{rank}.error.json"
#: What is read of a rank's error file (it comes from the workload: untrusted on the host).
RANK_ERROR_MAX_BYTES = 256 * 1024
RANK_MESSAGE_MAX_CHARS = 4000


#: The error types of a workload stopped by a signal (harness/workload/signals.py).
STOPPED_BY_SIGNAL = ("Terminated", "Interrupted")


@dataclass
class RankFailure:
    """A rank's error file: its error and when (``time.time()``) the rank caught it."""

    rank: int
    error: RunError
    at: float


def write_rank_error(run_dir: Path, rank: int, error: RunError, at: float) -> None:
    """Write ``rank-<rank>.error.json`` atomically: the first thing a failing rank does."""
    data = {
        "rank": rank,
        "type": error.type,
        "message": error.message,
        "traceback": error.traceback,
        "time": at,
    }
    write_json_atomic(Path(run_dir) / RANK_ERROR_FILE.format(rank=rank), data)


def _read_regular(path: Path, limit: int) -> bytes | None:
    """A regular file's first ``limit`` bytes, never through a link (``open_regular``); None
    for anything else, or a file that cannot be read."""
    try:
        with open_regular(path) as handle:
            return handle.read(limit)
    except OSError:
        return None


def _text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def read_rank_errors(run_dir: Path, ranks: int) -> list[RankFailure]:
    """The error files of ranks ``0 .. ranks-1`` found in ``run_dir``, by rank. A file that is
    not a regular file, too big, or not of the format written above is left out."""
    found = []
    for rank in range(max(int(ranks), 1)):
        raw = _read_regular(Path(run_dir) / RANK_ERROR_FILE.format(rank=rank), RANK_ERROR_MAX_BYTES)
        try:
            data = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if not isinstance(data, dict) or data.get("rank") != rank:
            continue
        kind = _text(data.get("type"), 200)
        message = _text(data.get("message"), RANK_MESSAGE_MAX_CHARS)
        at = data.get("time")
        if kind is None or message is None or isinstance(at, bool):
            continue
        error = RunError(kind, message, _text(data.get("traceback"), RANK_ERROR_MAX_BYTES))
        found.append(RankFailure(rank, error, float(at) if isinstance(at, int | float) else 0.0))
    return found


def with_rank_errors(
    error: RunError,
    failures: list[RankFailure],
    *,
    own_rank: int | None = None,
    first_is_the_error: bool = True,
) -> RunError:
    """``error`` with every rank's error in ``ranks``.

    ``error`` is the writer's own view: rank 0's exception, or what the host saw of the run;
    ``own_rank`` is the rank it is the view of (listed for that rank when the rank wrote no
    file). With ``first_is_the_error``, the error of the rank that failed first becomes the
    run's error (type, message prefixed ``rank <r>:`` for r > 0, traceback): the exception that
    made Lightning kill rank 0 is what the record, the progress line and the report name, not
    the kill; a rank stopped by SIGTERM or SIGINT (the harness stopping the run) never is.
    Without failures, ``error`` is returned unchanged.
    """
    if not failures:
        return error
    entries = {f.rank: RankError(f.rank, f.error.type, f.error.message) for f in failures}
    for old in error.ranks or []:
        entries.setdefault(old.rank, old)
    if own_rank is not None:
        entries.setdefault(own_rank, RankError(own_rank, error.type, error.message))
    merged = dataclasses.replace(error, ranks=[entries[r] for r in sorted(entries)])
    # a rank stopped by a signal (the harness stopping the run) did not fail on its own
    own_failures = [f for f in failures if f.error.type not in STOPPED_BY_SIGNAL]
    if not first_is_the_error or not own_failures:
        return merged
    first = min(own_failures, key=lambda f: (f.at, f.rank))
    prefix = f"rank {first.rank}: " if first.rank != 0 else ""
    return dataclasses.replace(
        merged,
        type=first.error.type,
        message=prefix + first.error.message,
        traceback=first.error.traceback,
    )
