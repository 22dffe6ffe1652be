"""``harness status`` says why a shard has no job (issue 28, item 18): after a refused
``sbatch`` it said "not submitted (every run was done)" with 0 of 2 runs done. The words on
their logic, then a real refusal by a real Slurm (a partition it does not have)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.slurm.status import unsubmitted
from harness.slurm.submission import ShardProgress

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "placement-quick.yaml"


def test_a_shard_without_a_job_is_said_for_what_it_is():
    done, missing = ShardProgress(1, 2, 2, 0), ShardProgress(1, 2, 0, 0)
    assert unsubmitted(done, True) == "not submitted (every run was done)"
    assert unsubmitted(done, False) == "not submitted (every run was done)"
    never = unsubmitted(missing, False)
    assert "every run was done" not in never
    assert never.startswith("not submitted: no submission into this folder went through")
    assert "sbatch refused or failed" in never and "harness submit slurm" in never
    later = unsubmitted(missing, True)
    assert "every run was done" not in later and "went through" not in later
    assert "done at the last submission; some are missing now" in later


@pytest.mark.slow
@pytest.mark.slurm
def test_status_after_a_refused_sbatch_says_nothing_was_submitted(slurm_cluster, tmp_path):
    out = tmp_path / "sub"

    def harness(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "harness.cli", *args],
            env={**slurm_cluster, "HARNESS_MNIST_DIR": os.environ.get("HARNESS_MNIST_DIR", "")},
            capture_output=True, text=True, timeout=300, cwd=ROOT,
        )  # fmt: skip

    refused = harness("submit", "slurm", str(QUICK), "--shards", "2", "--out", str(out),
                      "--partition", "no_such_partition")  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    status = harness("status", str(out))
    assert status.returncode == 0, status.stderr
    assert "every run was done" not in status.stdout
    said = "runs done; not submitted: no submission into this folder went through"
    assert status.stdout.count(said) == 2, status.stdout  # both shards, 0 runs done
    assert "0 of 6 runs done" in status.stdout and "submitted 0 times" in status.stdout
