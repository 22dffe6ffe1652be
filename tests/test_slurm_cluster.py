"""``harness submit slurm`` on a real one-node Slurm cluster (scripts/slurm-cluster.sh: Debian's
slurmctld, slurmd and munge, 2 CPUs, task/affinity) with real training on real MNIST: the
quick placement matrix as 2 array tasks against one unsharded ``harness run``; one task
cancelled and the matrix resubmitted; a Slurm that does not answer."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.matrix import load_matrix
from harness.results import layout
from harness.slurm import submission

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "placement-quick.yaml"
WAIT_S = 420


def harness(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if check:
        assert proc.returncode == 0, f"harness {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def queued(env: dict[str, str]) -> list[str]:
    proc = subprocess.run(
        ["squeue", "--me", "--noheader", "--array", "--format=%i|%T"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout.split()


def wait_for(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"waited {timeout:.0f} s for {what}")


def wait_until_done(env: dict[str, str], root: Path) -> submission.Submission:
    """Until no job of the folder's last submission is queued or running."""
    record = submission.read(root)
    assert record is not None and record.last is not None
    ids = {a.job for a in record.last.arrays} | {record.last.merge}
    wait_for(
        lambda: not any(line.split("|")[0].split("_")[0] in ids for line in queued(env)),
        f"the jobs {sorted(ids)} to end",
    )
    return record


def verdicts(root: Path) -> dict[str, tuple[str, Any]]:
    """Each cell's verdict and where its repeats first part (the size of the gap is left out:
    an unseeded cell's differs from one run to the next)."""
    report = json.loads((root / "report.json").read_text())
    where = ("repeat", "epoch", "batch", "step")
    return {
        c["id"]: (c["verdict"], c["first_divergence"] and [c["first_divergence"][k] for k in where])
        for c in report["cells"]
    }


def trajectories(root: Path) -> dict[tuple[str, int], str]:
    found = {}
    for dirname, repeat, run_dir in layout.run_dirs(root):
        record = json.loads((run_dir / "run.json").read_text())
        if record["status"] == "ok":
            found[(dirname, repeat)] = record["digests"]["trajectory"]
    return found


def files_of(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: its SHA-256 and its modification time (ns)."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def finished_runs(shard: Path) -> list[Path]:
    return [
        run_dir
        for _, _, run_dir in layout.run_dirs(shard)
        if (run_dir / "run.json").is_file()
        and json.loads((run_dir / "run.json").read_text())["status"] == "ok"
    ]


@pytest.fixture(scope="module")
def whole(tmp_path_factory, mnist_dir, slurm_cluster) -> Path:
    """The quick placement matrix run once, unsharded, with no Slurm job beside it."""
    assert queued(slurm_cluster) == [], "the test cluster is busy"
    out = tmp_path_factory.mktemp("whole") / "results"
    harness(
        slurm_cluster, "run", str(QUICK), "--out", str(out), "--progress", "quiet",
        "--data-dir", str(mnist_dir),
    )  # fmt: skip
    return out


def check_same_answer(merged: Path, whole: Path) -> None:
    """The verdict and first divergence of every cell are the unsharded run's, and so is the
    trajectory of every run the settings fix (the cells that reproduce)."""
    assert verdicts(merged) == verdicts(whole)
    assert sorted(v for v, _ in verdicts(merged).values()) == ["diverges", "diverges", "reproduces"]
    got, want = trajectories(merged), trajectories(whole)
    assert sorted(got) == sorted(want) and len(got) == 6
    fixed = [key for key in want if "before_model" in key[0]]
    assert len(fixed) == 2
    assert {k: got[k] for k in fixed} == {k: want[k] for k in fixed}


def test_two_array_tasks_give_the_unsharded_verdicts_and_trajectories(
    tmp_path: Path, whole: Path, mnist_dir: Path, slurm_cluster
):
    root = tmp_path / "sub"
    proc = harness(
        slurm_cluster, "submit", "slurm", str(QUICK), "--shards", "2", "--out", str(root),
        "--data-dir", str(mnist_dir),
    )  # fmt: skip
    assert "array job" in proc.stdout and "shards 1-2" in proc.stdout, proc.stdout
    record = wait_until_done(slurm_cluster, root)
    assert [a.shards for a in record.last.arrays] == [[1, 2]]
    check_same_answer(root, whole)
    for index in (1, 2):  # each task ran its own shard, into its own folder
        shard = layout.shard_results_dir(root, index)
        manifest = json.loads((shard / layout.MANIFEST_FILE).read_text())
        assert manifest["shard"] == {"index": index, "total": 2}
    status = harness(slurm_cluster, "status", str(root)).stdout
    assert "6 of 6 runs done" in status
    assert f"report: {root / 'report.md'}" in status


def test_a_cancelled_task_is_resubmitted_alone_and_the_finished_runs_stay(
    tmp_path: Path, whole: Path, mnist_dir: Path, slurm_cluster
):
    """``scancel`` of shard 1 (4 runs) once it has finished one; the merge job runs anyway
    (afterany). Resubmitting runs shard 1 alone, its finished runs and all of shard 2 are left
    byte for byte and time for time as they were, and the answer is the unsharded one."""
    root = tmp_path / "sub"
    data = ["--data-dir", str(mnist_dir)]
    harness(
        slurm_cluster, "submit", "slurm", str(QUICK), "--shards", "2", "--out", str(root), *data
    )
    record = submission.read(root)
    array = record.last.arrays[0].job
    twice = harness(slurm_cluster, "submit", "slurm", str(QUICK), "--out", str(root), check=False)
    assert twice.returncode == 2, twice.stderr
    assert "job(s) queued or running" in twice.stderr
    assert f"scancel {array} {record.last.merge}" in twice.stderr
    shard_1 = layout.shard_results_dir(root, 1)
    wait_for(lambda: shard_1.is_dir() and len(finished_runs(shard_1)) >= 1, "a run of shard 1")
    subprocess.run(["scancel", f"{array}_1"], env=slurm_cluster, check=True, timeout=60)
    wait_until_done(slurm_cluster, root)

    matrix = load_matrix(QUICK)
    progress = {p.index: p for p in submission.progress(root, matrix, 2)}
    assert progress[2].complete and not progress[1].complete, progress
    status = harness(slurm_cluster, "status", str(root)).stdout
    assert f"job {array}_1: CANCELLED" in status, status
    assert f"{progress[1].done}/4 runs done" in status, status
    kept = {
        str(run_dir): files_of(run_dir)
        for index in (1, 2)
        for run_dir in finished_runs(layout.shard_results_dir(root, index))
    }
    assert len(kept) == progress[1].done + 2

    again = harness(slurm_cluster, "submit", "slurm", str(QUICK), "--out", str(root), *data)
    assert "not submitted: 2" in again.stdout, again.stdout
    record = wait_until_done(slurm_cluster, root)
    assert [a.shards for a in record.last.arrays] == [[1]]
    assert all(p.complete for p in submission.progress(root, matrix, 2))
    assert {run_dir: files_of(Path(run_dir)) for run_dir in kept} == kept
    check_same_answer(root, whole)


def test_a_slurm_that_does_not_answer_is_a_clear_error(tmp_path: Path, slurm_cluster):
    """A controller on a port where nothing listens: submit exits 2 naming it, writes nothing;
    status still shows the runs and says what is missing."""
    conf = Path(slurm_cluster["SLURM_CONF"]).read_text()
    dead = tmp_path / "slurm.conf"
    # port 9 (discard): nothing listens; a short MessageTimeout makes Slurm give up in a second
    dead.write_text(
        conf.replace(
            "ClusterName=harness", "ClusterName=harness\nSlurmctldPort=9\nMessageTimeout=2"
        )
    )
    env = {**slurm_cluster, "SLURM_CONF": str(dead)}
    root = tmp_path / "sub"
    proc = harness(env, "submit", "slurm", str(QUICK), "--out", str(root), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Slurm's controller did not answer squeue" in proc.stderr, proc.stderr
    assert "hint: check that slurmctld is running" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not root.exists()

    matrix = load_matrix(QUICK)
    record = submission.Submission(
        matrix=str(QUICK),
        matrix_name=matrix.model.name,
        matrix_digest=matrix.digest,
        shards=2,
        executor="local",
        python=sys.executable,
        data_dir=None,
        submitted=[
            submission.Submitted("2026-01-01T00:00:00Z", [submission.ArrayJob("7", [1, 2])], "8")
        ],
    )
    submission.write(root, record)
    status = harness(env, "status", str(root))
    assert "0 of 6 runs done" in status.stdout
    assert "job 7_1: unknown (Slurm not reachable)" in status.stdout
    assert "Slurm's side is missing: Slurm's controller did not answer" in status.stderr
    assert "Traceback" not in status.stderr
