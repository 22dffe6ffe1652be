"""What the local executor starts in place of a run, to become it: the run dies with the harness.

Run as ``python -m harness.workload.child_launcher PARENT_PID WORKLOAD_ARGV...`` by
``harness.executors.local``: it asks the kernel to SIGKILL it when its parent dies
(``PR_SET_PDEATHSIG``, kept across ``exec``), checks that the parent is still the harness that
started it (one that died before the request would leave it orphaned), then execs the workload.
Standard library only, and nothing of harness imported: it runs in the workload's interpreter.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

#: prctl's option that sets the signal the kernel sends when the parent dies
PR_SET_PDEATHSIG = 1
#: the exit code when the harness died before the request took effect (as if SIGKILLed)
EXIT_ORPHANED = 137


def main(argv: list[str]) -> int:
    """``argv``: the expected parent pid, then the workload's argv (its program first)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(argv[0]):
        return EXIT_ORPHANED
    os.execv(argv[1], argv[1:])
    return 127  # not reached: execv replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
