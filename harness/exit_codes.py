"""Every exit code the ``harness`` command returns, in one place.

The workload's own process exit codes (``python -m harness.workload``) belong to the workload
side and live in ``harness/workload/__main__.py``: the workload imports no host module.
"""

from __future__ import annotations

#: Every run succeeded (runs already done count); compare: no regression.
EXIT_OK = 0
#: ``harness run``: some runs failed or timed out (the report lists them).
EXIT_RUNS_FAILED = 1
#: ``harness compare``: reproducibility regressed against the baseline.
EXIT_REGRESSION = 1
#: Bad input: a matrix file, a flag, a results folder, a run that cannot fit this host, or a
#: stop the user must act on (disk full, no Docker engine); the message says what to do.
EXIT_BAD_INPUT = 2
#: Interrupted by Ctrl-C or SIGTERM (128 + SIGINT); finished results are kept.
EXIT_INTERRUPTED = 130
