"""``harness submit slurm``: decide what to submit into a folder, show it, or submit it.

A resubmission into the same folder submits only the shards with runs still missing or failed
(each resumes as ``harness run`` does), and a merge job after them; it waits for nothing and
refuses while a job of the folder is still queued or running, so two tasks never write one
shard folder.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.contract import write_bytes_atomic
from harness.errors import HarnessError, StoreError
from harness.executors import choose_executor
from harness.matrix import LoadedMatrix
from harness.matrix.models import SlurmBlock
from harness.results import layout
from harness.results.out_folder import SUBMIT_OUT, check_out_folder
from harness.run.shard import plan_shards
from harness.slurm import client, submission
from harness.slurm.batch_scripts import (
    ArrayGroup,
    SlurmRequest,
    array_argv,
    array_groups,
    array_script,
    merge_argv,
    merge_script,
)


@dataclass
class Prepared:
    """What one submission sends: scripts by path, and the sbatch lines in order."""

    root: Path
    matrix: LoadedMatrix
    record: submission.Submission
    request: SlurmRequest
    total: int
    groups: list[ArrayGroup]
    scripts: dict[Path, str] = field(default_factory=dict)
    complete: list[int] = field(default_factory=list)  # shards with every run done

    def array_commands(self) -> list[tuple[ArrayGroup, list[str]]]:
        return [(g, array_argv(self.root, g)) for g in self.groups]

    def merge_command(self, after: list[str]) -> list[str]:
        return merge_argv(self.root, after)


def resolve_request(
    matrix: LoadedMatrix, overrides: dict[str, Any], data_dir: Path | None
) -> SlurmRequest:
    """The matrix's ``slurm:`` section, then each command-line option that was given."""
    block = matrix.model.slurm or SlurmBlock()
    given = {k: v for k, v in overrides.items() if v is not None and v != []}
    try:
        merged = SlurmBlock.model_validate({**block.model_dump(), **given})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(map(str, first["loc"]))
        field = str(first["loc"][0])
        option = "--sbatch-option" if field == "sbatch" else f"--{field.replace('_', '-')}"
        raise HarnessError(
            f"{option} (slurm.{key}) {first.get('input')!r}: {first['msg']}",
            "see docs/slurm.md for what each option takes",
        ) from None
    folder = matrix.path.resolve().parent
    data: Path | None = None
    if data_dir is not None:
        data = data_dir
    elif merged.data_dir is not None:
        data = folder / merged.data_dir
    elif os.environ.get("HARNESS_MNIST_DIR"):
        data = Path(os.environ["HARNESS_MNIST_DIR"])
    request = SlurmRequest(
        python=merged.python or sys.executable,
        executor=merged.executor,
        partition=merged.partition,
        account=merged.account,
        qos=merged.qos,
        time=merged.time,
        gpu_type=merged.gpu_type,
        cpus_per_task=merged.cpus_per_task,
        sbatch=tuple(merged.sbatch),
        data_dir=str(data.absolute()) if data is not None else None,
    )
    request.check()
    return request


def check_folder(root: Path) -> submission.Submission | None:
    """A new or empty folder (None), or one this command wrote (its record)."""
    record = submission.read(root)
    if record is None:
        check_out_folder(root, SUBMIT_OUT)
    return record


def prepare(
    matrix: LoadedMatrix, root: Path, shards: int | None, request: SlurmRequest
) -> Prepared:
    root = root.absolute()
    old = check_folder(root)
    if old is not None and old.matrix_digest != matrix.digest:
        raise StoreError(
            f"{root} was submitted for another matrix ({old.matrix_name}, {old.matrix}, digest "
            f"{old.matrix_digest[:12]}; this one is {matrix.model.name}, {matrix.digest[:12]})",
            "give a new --out folder for this matrix",
        )
    wanted = shards if shards is not None else (old.shards if old is not None else 1)
    planned = plan_shards(matrix, wanted)  # the split `harness plan --shards` shows
    total = len(planned)
    if old is not None and old.shards != total:
        raise StoreError(
            f"{root} was submitted in {old.shards} shards; --shards {wanted} makes {total}",
            f"submit again with --shards {old.shards} (the shards keep their runs), or give a "
            "new --out folder",
        )
    progress = submission.progress(root, matrix, total)
    todo = [p.index for p in progress if not p.complete]
    images = {c.settings["image"] for c in matrix.cells}
    executor = choose_executor(request.executor, images or {"local"})
    groups = array_groups(matrix, [planned[i - 1] for i in todo], request, executor)
    record = old or submission.Submission(
        matrix=str(matrix.path.absolute()),
        matrix_name=matrix.model.name,
        matrix_digest=matrix.digest,
        shards=total,
        executor=request.executor,
        python=request.python,
        data_dir=request.data_dir,
    )
    # a resubmission runs with the options given now (a new partition, a longer time)
    record.executor, record.python, record.data_dir = (
        request.executor,
        request.python,
        request.data_dir,
    )
    record.matrix = str(matrix.path.absolute())
    record.options = {
        k: v for k, v in vars(request).items() if k not in ("python", "executor", "data_dir")
    }
    record.options["sbatch"] = list(request.sbatch)
    prepared = Prepared(
        root=root,
        matrix=matrix,
        record=record,
        request=request,
        total=total,
        groups=groups,
        complete=[p.index for p in progress if p.complete],
    )
    for group in groups:
        path = layout.array_script(root, group.number)
        prepared.scripts[path] = array_script(request, group, matrix.model.name, total, root)
    prepared.scripts[layout.merge_script(root)] = merge_script(request, matrix.model.name, root)
    return prepared


def live_jobs(record: submission.Submission) -> list[client.JobState]:
    return [j for j in client.queue(record.job_ids()) if j.live]


def submit(prepared: Prepared) -> submission.Submitted:
    """Write the record and the scripts, then ``sbatch`` the arrays and the merge job. A
    failure part way cancels what was submitted, and the record keeps no job of it."""
    record = prepared.record
    client.require("sbatch")
    # squeue first, before anything is written: it tells whether Slurm answers at all, and
    # whether a job of an earlier submission still runs
    running = live_jobs(record)
    if running:
        ids = sorted({j.job.split("_", 1)[0] for j in running})
        raise HarnessError(
            f"{prepared.root} still has {len(running)} job(s) queued or running "
            f"({', '.join(f'{j.job} {j.state}' for j in running[:5])}): a second "
            "submission would write into the same shard folders",
            f"wait for them (harness status {prepared.root}), or cancel them: scancel "
            + " ".join(ids),
        )
    submission.write(prepared.root, record)
    for path, text in prepared.scripts.items():
        write_bytes_atomic(path, text.encode("utf-8"))
    arrays: list[submission.ArrayJob] = []
    try:
        for group, argv in prepared.array_commands():
            job = client.sbatch(argv)
            arrays.append(submission.ArrayJob(job, list(group.shards)))
        merge_job = client.sbatch(prepared.merge_command([a.job for a in arrays]))
    except BaseException:
        try:
            client.cancel(a.job for a in arrays)
        except client.SlurmError:
            pass
        raise
    done = submission.Submitted(at=submission.now(), arrays=arrays, merge=merge_job)
    record.submitted.append(done)
    submission.write(prepared.root, record)
    return done
