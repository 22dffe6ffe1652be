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
#: ``harness merge``: two successful copies of one run hold different results; both are kept
#: (one under ``conflicts/``) and the merged folder and its report are written.
EXIT_CONFLICT = 1
#: Bad input: a matrix file, a flag, a results folder, a run that cannot fit this host, or a
#: stop the user must act on (disk full, no Docker engine, a failure of the user's own training:
#: ``harness run`` then starts no further run); the message says what to do.
EXIT_BAD_INPUT = 2
#: ``harness compare``: the gate cannot judge the current results as given: no cell is in both
#: sets, baseline cells are missing from the current results (``--allow-removed`` accepts it),
#: or the two sets come from different matrices (``--allow-changed-matrix``). The output says
#: which. A regression found among the compared cells takes precedence (EXIT_REGRESSION).
EXIT_NOT_COMPARABLE = 3
#: ``harness compare``: a trajectory changed on the same image where the machine changed too
#: (another CPU or GPU, or another code path: ``provenance.machine``): not a regression of the
#: code, and no pass either. A regression takes precedence; this, over a refusal.
EXIT_MACHINE_CHANGED = 4
#: Interrupted by Ctrl-C or SIGTERM (128 + SIGINT); finished results are kept.
EXIT_INTERRUPTED = 130
