"""``harness status DIR``: where a submission stands, from Slurm and from the shards' runs.

Slurm's side comes from ``squeue`` (queued and running jobs), then ``sacct`` (finished ones,
where the cluster keeps accounting), then ``scontrol show job`` (finished lately). The runs'
side is read from the shard folders as resume would judge them, so it holds even when Slurm
has long forgotten the jobs, or cannot be reached.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError
from harness.matrix import load_matrix
from harness.results import layout
from harness.slurm import client, submission


@dataclass
class ShardStatus:
    progress: submission.ShardProgress
    job: str | None  # ``12_3``: the array task of its last submission; None: never submitted
    state: str | None = None  # Slurm's state; None: Slurm does not know it (any more)
    log: Path | None = None


@dataclass
class Status:
    root: Path
    record: submission.Submission
    shards: list[ShardStatus]
    merge_job: str | None
    merge_state: str | None
    report: Path | None
    slurm_problem: str | None = None  # why Slurm's side is missing
    notes: list[str] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return sum(s.progress.runs for s in self.shards)

    @property
    def done(self) -> int:
        return sum(s.progress.done for s in self.shards)

    @property
    def failed(self) -> int:
        return sum(s.progress.failed for s in self.shards)


def read_status(root: Path) -> Status:
    root = root.absolute()
    record = submission.read(root)
    if record is None:
        raise HarnessError(
            f"{root} has no {layout.SLURM_DIR}/{layout.SUBMISSION_FILE}: it is not a folder "
            "harness submit slurm wrote (harness status shows Slurm submissions only)",
            "give the --out folder of harness submit slurm; for a folder harness run writes, "
            "`harness report FOLDER` shows the cells and runs done so far",
        )
    matrix = load_matrix(Path(record.matrix))
    if matrix.digest != record.matrix_digest:
        raise HarnessError(
            f"{record.matrix} changed since it was submitted into {root}",
            "put it back as it was to see the shards' runs, or submit into a new --out folder",
        )
    last_job: dict[int, str] = {}
    for sub in record.submitted:
        for array in sub.arrays:
            for index in array.shards:
                last_job[index] = array.job
    shards = [
        ShardStatus(
            progress=p,
            job=f"{last_job[p.index]}_{p.index}" if p.index in last_job else None,
            log=_log(root, p.index, last_job.get(p.index)),
        )
        for p in submission.progress(root, matrix, record.shards)
    ]
    merge_job = record.last.merge if record.last else None
    status = Status(
        root=root,
        record=record,
        shards=shards,
        merge_job=merge_job,
        merge_state=None,
        report=_report(root),
    )
    asked = sorted(set(last_job.values()) | ({merge_job} if merge_job else set()))
    try:
        states = _slurm_states(asked)
    except client.SlurmError as exc:
        status.slurm_problem = exc.message
        return status
    for shard in shards:
        shard.state = states.get(shard.job or "")
    status.merge_state = states.get(merge_job or "")
    return status


def unsubmitted(progress: submission.ShardProgress, ever_submitted: bool) -> str:
    """Why a shard has no job, from what is known: its runs were all done when it was left
    out, or no ``sbatch`` of the folder ever went through (the record is written before the
    first one: a refused or failed ``sbatch`` leaves it without jobs), or its runs were done at
    the last submission and some are missing now."""
    if progress.complete:
        return "not submitted (every run was done)"
    if not ever_submitted:
        return (
            "not submitted: no submission into this folder went through (sbatch refused or "
            "failed, or one is under way); submit again: harness submit slurm"
        )
    return (
        "not submitted (its runs were done at the last submission; some are missing now): "
        "submit again: harness submit slurm"
    )


def _log(root: Path, index: int, job: str | None) -> Path | None:
    if job is None:
        return None
    path = layout.shard_log(root, index, job)
    return path if path.is_file() else None


def _report(root: Path) -> Path | None:
    path = layout.report_path(root, "md")
    return path if path.is_file() else None


def _slurm_states(ids: list[str]) -> dict[str, str]:
    """Job (``12``) or array task (``12_3``) -> its state, for the jobs ``ids``: each shard's
    last array and the last merge job."""
    if not ids:
        return {}
    states: dict[str, str] = {}
    finished = client.accounting(ids)
    if finished is None:  # no accounting: what the controller still remembers
        finished = [j for job in ids for j in client.recent(job)]
    for job in finished:
        states[job.job] = job.state
    for job in client.queue(ids):  # the live state wins
        states[job.job] = job.state + (f" ({job.reason})" if job.reason else "")
    return states


def age(path: Path) -> str:
    stamp = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")
