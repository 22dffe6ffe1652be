"""What a ``harness submit slurm`` job runs on its node: one shard, or the merge.

A shard task is ``harness run MATRIX --shard I/N --out <out>/slurm/shards/shard-I``, I being
the array task id; it resumes like any ``harness run``, and Slurm's SIGTERM (``scancel``, the
time limit) stops it as Ctrl-C would, finished runs kept. The merge task is ``harness merge``
of the shards there are, with the report, into a staging folder that then replaces the merged
results in ``<out>``: a merge that fails halfway leaves the previous merged results in place.
Only what a merge writes is replaced (``MERGED_NAMES``), under ``<out>``'s results lock.

Both run a ``harness`` command in this process, through the ``RunHarness`` they are handed: the
batch scripts start at ``harness.cli.slurm_task``, which hands them the command line's ``main``,
so the library never imports the command line (harness/cli/), which sits above it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from harness.errors import HarnessError, StoreError, print_error
from harness.executors import choose_executor
from harness.exit_codes import EXIT_BAD_INPUT, EXIT_CONFLICT, EXIT_OK
from harness.matrix import load_matrix
from harness.results import layout
from harness.results.safe_paths import real_dir, remove_tree
from harness.run.shard import ShardSpec, cells_of_shard
from harness.slurm import submission
from harness.slurm.batch_scripts import shown


def gpu_option(executor: str, environ: dict[str, str]) -> list[str]:
    """``--gpus`` for ``harness run`` from what Slurm gave the job.

    Local processes see the GPUs through ``CUDA_VISIBLE_DEVICES``, which Slurm sets and
    ``harness run`` reads by itself: nothing to pass. Containers are given GPUs by the host's
    ids, which Slurm puts in ``SLURM_JOB_GPUS`` (``CUDA_VISIBLE_DEVICES`` may be renumbered
    from 0 inside the job's cgroup)."""
    if executor == "docker":
        ids = environ.get("SLURM_JOB_GPUS") or environ.get("SLURM_STEP_GPUS")
        if ids:
            return ["--gpus", ids]
    return []


def shard_argv(root: Path, record: submission.Submission, index: int, executor: str) -> list[str]:
    """The ``harness run`` of shard ``index``."""
    argv = [
        "run",
        record.matrix,
        "--shard",
        f"{index}/{record.shards}",
        "--out",
        str(layout.shard_results_dir(root, index)),
        "--progress",
        "plain",
        "--executor",
        record.executor,
    ]
    if record.data_dir:
        argv += ["--data-dir", record.data_dir]
    if executor == "local":
        argv += ["--python", record.python]
    return argv + gpu_option(executor, dict(os.environ))


#: ``harness ARGS`` run in this process: its exit code.
RunHarness = Callable[[list[str]], int]


def run_shard(root: Path, run_harness: RunHarness) -> int:
    record = _record(root)
    task = os.environ.get("SLURM_ARRAY_TASK_ID", "")
    if not task.isdigit() or not 1 <= int(task) <= record.shards:
        raise HarnessError(
            f"SLURM_ARRAY_TASK_ID is {task!r}, not a shard of 1 to {record.shards}",
            "this script runs as a task of the array harness submit slurm submitted",
        )
    index = int(task)
    matrix = load_matrix(Path(record.matrix))
    if matrix.digest != record.matrix_digest:
        raise HarnessError(
            f"{record.matrix} changed since it was submitted into {root} (matrix digest "
            f"{record.matrix_digest[:12]} -> {matrix.digest[:12]}): this task runs nothing",
            "put the matrix back as it was, or submit the new one into a new --out folder",
        )
    cells = cells_of_shard(matrix, ShardSpec(index, record.shards))
    executor = choose_executor(record.executor, {c.settings["image"] for c in cells} or {"local"})
    real_dir(root, layout.shard_results_dir(root, index), what="the shard's results")  # no link
    argv = shard_argv(root, record, index, executor)
    print(f"harness submit slurm: shard {index}/{record.shards}: harness {shown(argv)}", flush=True)
    return run_harness(argv)


def run_merge(root: Path, run_harness: RunHarness) -> int:
    """Merge the shards into a staging folder, then put its results in place of the previous
    merged ones, all under the folder's results lock (the one ``harness run`` and ``harness
    diagnose`` take): while another harness holds it, the merge is refused, naming its pid."""
    from harness.results.store import ResultsDir

    record = _record(root)
    shards = [layout.shard_results_dir(root, i) for i in range(1, record.shards + 1)]
    present = [s for s in shards if (s / layout.MANIFEST_FILE).is_file()]
    if not present:
        raise HarnessError(
            f"no shard of {root} has results yet: nothing to merge",
            "see the shards' logs in " + str(layout.slurm_logs_dir(root)),
        )
    store = ResultsDir(root)
    try:
        store.lock()
    except StoreError as exc:
        raise StoreError(
            f"{exc.message}: the merge job replaces nothing while another harness writes there",
            "when it has finished, run the merge again: sbatch "
            + shown([str(layout.merge_script(root))]),
        ) from exc
    try:
        return _merge_locked(root, present, run_harness)
    finally:
        store.unlock()


def _merge_locked(root: Path, present: list[Path], run_harness: RunHarness) -> int:
    tag = os.environ.get("SLURM_JOB_ID") or str(os.getpid())
    staging = layout.merge_staging_dir(root, tag)
    remove_tree(root, staging, what="the merge's staging folder")
    argv = ["merge", *map(str, present), "--out", str(staging)]
    print(f"harness submit slurm: merge: harness {shown(argv)}", flush=True)
    code = run_harness(argv)
    if code not in (EXIT_OK, EXIT_CONFLICT) or not (staging / layout.MANIFEST_FILE).is_file():
        remove_tree(root, staging, what="the merge's staging folder")
        return code if code != EXIT_OK else EXIT_BAD_INPUT
    replace_merged(root, staging, layout.merge_replaced_dir(root, tag))
    print(f"harness submit slurm: merged results in {root}", flush=True)
    return code


#: What a merge writes, so what a new merge replaces in ``<out>``: nothing else there
#: (``slurm/``, ``diagnoses/``, the results lock, a user's own files) is moved or deleted.
MERGED_NAMES = (
    layout.MANIFEST_FILE,
    layout.MATRIX_FILE,
    layout.CELLS_DIR,
    layout.CONFLICTS_DIR,
    *layout.REPORT_FILES.values(),
    layout.PLOTS_DIR,
)


def replace_merged(root: Path, staging: Path, replaced: Path) -> None:
    """Move the merged results of ``staging`` into ``root``, the previous ones out of it.

    Only ``MERGED_NAMES`` are replaced: the previous merge's output (derived, rebuilt from the
    shards) goes to ``replaced`` first, then is deleted; the caller holds the results lock. No
    link is followed: an entry is renamed itself, and the folders used are checked
    (``safe_paths``)."""
    remove_tree(root, replaced, what="the previous merged results")
    real_dir(root, replaced, what="the previous merged results")
    for name in MERGED_NAMES:
        if os.path.lexists(root / name):
            os.rename(root / name, replaced / name)
    for name in MERGED_NAMES:
        if os.path.lexists(staging / name):
            os.rename(staging / name, root / name)
    remove_tree(root, staging, what="the merge's staging folder")
    remove_tree(root, replaced, what="the previous merged results")


def _record(root: Path) -> submission.Submission:
    record = submission.read(root)
    if record is None:
        raise HarnessError(
            f"{layout.submission_path(root)} is missing: {root} is not a folder harness submit "
            "slurm wrote",
            "submit the matrix again with harness submit slurm",
        )
    return record


def main(kind: str, root: str, run_harness: RunHarness) -> int:
    """What a batch script runs (through harness.cli.slurm_task): ``kind`` is ``shard`` or
    ``merge``."""
    folder = Path(root)
    try:
        if kind == "shard":
            return run_shard(folder, run_harness)
        return run_merge(folder, run_harness)
    except HarnessError as exc:
        return print_error(exc)
