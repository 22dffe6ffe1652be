"""The merge job of ``harness submit slurm`` on a real Slurm cluster (scripts/slurm-cluster.sh):
submitted with ``sbatch`` while another process holds the folder's results lock, it fails
naming that pid and replaces nothing; submitted again once the lock is free, it merges and keeps
``diagnoses/``. The shards are real results folders made by the fake executor (the merge does not
look at how runs were made), so the test costs seconds, not a training."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.executors.fake import FakeExecutor
from harness.matrix import load_matrix
from harness.results import layout
from harness.run.matrix_runner import RunConfig, run_matrix
from harness.run.shard import ShardSpec
from harness.slurm import submission
from harness.slurm.batch_scripts import SlurmRequest, merge_argv, merge_script

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "placement-quick.yaml"


def submit_merge(env: dict[str, str], root: Path) -> tuple[str, Path]:
    """``sbatch`` the merge script, wait for the job to end; its id and its log."""
    proc = subprocess.run(
        merge_argv(root, []), env=env, capture_output=True, text=True, timeout=60, check=True
    )
    job = proc.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        queued = subprocess.run(
            ["squeue", "--noheader", "--jobs", job, "--format=%i"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if job not in queued.stdout:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"merge job {job} did not end within 240 s")
    log = layout.slurm_logs_dir(root) / f"merge-job{job}.out"
    for _ in range(40):  # the log is written by slurmd as the job ends
        if log.is_file():
            break
        time.sleep(0.25)
    return job, log


def test_a_merge_job_refuses_a_held_results_lock_and_keeps_the_diagnoses(
    tmp_path: Path, slurm_cluster: dict[str, str]
):
    quick = load_matrix(QUICK)
    root = tmp_path / "sub"
    for index in (1, 2):
        config = RunConfig(matrix=quick, out=layout.shard_results_dir(root, index),
                           progress="quiet", formats=(), shard=ShardSpec(index, 2))  # fmt: skip
        run_matrix(config, FakeExecutor(seconds=0.0))
    submission.write(
        root,
        submission.Submission(
            matrix=str(QUICK), matrix_name=quick.model.name, matrix_digest=quick.digest,
            shards=2, executor="auto", python=sys.executable, data_dir=None,
        ),
    )  # fmt: skip
    script = layout.merge_script(root)
    script.write_text(merge_script(SlurmRequest(python=sys.executable), quick.model.name, root))
    script.chmod(0o755)
    diagnosis = root / "diagnoses" / "a-0--a-1" / "diagnosis.json"
    diagnosis.parent.mkdir(parents=True)
    diagnosis.write_text("{}")

    holder = subprocess.Popen(  # argv list; a harness that holds the results lock
        [sys.executable, "-c", "import sys, time\n"
         "from harness.results.store import ResultsDir\n"
         "held = ResultsDir(sys.argv[1]); held.lock(); print('locked', flush=True)\n"
         "time.sleep(300)", str(root)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        _, log = submit_merge(slurm_cluster, root)
        text = log.read_text()
        assert f"in use by harness pid {holder.pid}" in text, text
        assert "Traceback" not in text, text
        assert not (root / layout.MANIFEST_FILE).exists()  # nothing replaced
        assert (root / layout.LOCK_FILE).read_text() == str(holder.pid)  # not moved away
    finally:
        holder.kill()
        holder.wait()
    _, log = submit_merge(slurm_cluster, root)
    text = log.read_text()
    assert f"merged results in {root}" in text, text
    assert (root / layout.MANIFEST_FILE).is_file() and (root / "report.md").is_file()
    assert diagnosis.read_text() == "{}"
