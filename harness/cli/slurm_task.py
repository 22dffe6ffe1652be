"""Where the batch scripts of ``harness submit slurm`` start: one shard's ``harness run``, or the
merge, in the job's own process, with the command line's ``main`` handed to harness.slurm.task
(the library below never imports the command line)."""

from __future__ import annotations

from harness.cli.main import main as harness_main
from harness.slurm import task


def main(kind: str, root: str) -> int:
    """``kind`` is ``shard`` or ``merge``; ``root`` the submission's results folder."""
    return task.main(kind, root, harness_main)
