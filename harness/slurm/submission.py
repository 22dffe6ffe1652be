"""The submission folder's record (``<out>/slurm/submission.json``) and its shards' progress.

Why a record: the jobs on the nodes, a resubmission and ``harness status`` must agree on the
matrix, the shard count and the jobs without asking the user again. It is written before the
first ``sbatch`` and after every submission, atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from harness.contract import write_json_atomic
from harness.contract.files import read_regular
from harness.errors import StoreError
from harness.matrix import LoadedMatrix
from harness.results import layout
from harness.results.run_reader import RecordError, load_record
from harness.results.safe_paths import real_dir
from harness.results.store import ResultsDir
from harness.run.shard import ShardSpec, cells_of_shard

SUBMISSION_FORMAT = 1


@dataclass
class ArrayJob:
    """One ``sbatch --array``: its job id and the shards (task ids) it runs."""

    job: str
    shards: list[int]


@dataclass
class Submitted:
    """One ``harness submit slurm``: when, its arrays and its merge job."""

    at: str
    arrays: list[ArrayJob]
    merge: str


@dataclass
class Submission:
    """What every job of the folder runs: the matrix (by path and digest), the shard count,
    the executor and where the nodes find the data and the harness."""

    matrix: str
    matrix_name: str
    matrix_digest: str
    shards: int
    executor: str
    python: str
    data_dir: str | None
    options: dict[str, Any] = field(default_factory=dict)
    submitted: list[Submitted] = field(default_factory=list)
    format: int = SUBMISSION_FORMAT

    def job_ids(self) -> list[str]:
        """Every job of every submission, arrays and merges."""
        return [a.job for s in self.submitted for a in s.arrays] + [s.merge for s in self.submitted]

    @property
    def last(self) -> Submitted | None:
        return self.submitted[-1] if self.submitted else None


_ADAPTER = TypeAdapter(Submission)


def read(root: Path) -> Submission | None:
    """The folder's submission record; None when it has none. A damaged one is a StoreError."""
    path = layout.submission_path(root)
    if not os.path.lexists(path):
        return None
    try:  # a regular file only: a FIFO would hang the reader, a link lead it elsewhere
        data = json.loads(read_regular(path).decode("utf-8"))
        submission = _ADAPTER.validate_python(data)
    except (OSError, ValueError, ValidationError) as exc:
        raise StoreError(
            f"{path} cannot be read as harness submit slurm's record: {str(exc)[:300]}",
            "submit into a new --out folder (the shards' results under slurm/shards/ are kept)",
        ) from exc
    if submission.format != SUBMISSION_FORMAT:
        raise StoreError(
            f"{path} has format {submission.format}; this harness writes {SUBMISSION_FORMAT}",
            "use the harness that submitted it, or a new --out folder",
        )
    return submission


def write(root: Path, submission: Submission) -> None:
    real_dir(root, layout.slurm_logs_dir(root), what="the Slurm jobs' logs")  # never a link
    write_json_atomic(layout.submission_path(root), asdict(submission))


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- what the shards hold


@dataclass(frozen=True)
class ShardProgress:
    """Runs of one shard: ``done`` may be reused as they are, ``failed`` ran and failed."""

    index: int
    runs: int
    done: int
    failed: int

    @property
    def complete(self) -> bool:
        return self.done == self.runs


def progress(root: Path, matrix: LoadedMatrix, total: int) -> list[ShardProgress]:
    """Each shard's runs as resume would judge them (``ResultsDir.check_run``)."""
    found = []
    for index in range(1, total + 1):
        store = ResultsDir(layout.shard_results_dir(root, index))
        cells = cells_of_shard(matrix, ShardSpec(index, total))
        done = failed = runs = 0
        for cell in cells:
            for k in range(matrix.model.run.repeats):
                runs += 1
                run_dir = store.run_dir(cell, k)
                if store.check_run(run_dir, cell.spec(k)).action == "reuse":
                    done += 1
                elif _failed(run_dir):
                    failed += 1
        found.append(ShardProgress(index, runs, done, failed))
    return found


def _failed(run_dir: Path) -> bool:
    try:
        return not load_record(run_dir).ok
    except RecordError:
        return False
