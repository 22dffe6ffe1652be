"""SIGTERM and SIGINT end a run with a failed record, never without one.

Python's default SIGTERM kills the process outright; Lightning, during ``fit``, turns SIGTERM
into ``SIGTERMException`` and Ctrl-C into ``sys.exit(1)``: both ``SystemExit``, which is not an
``Exception``. The workload installs its own handlers as it starts: SIGTERM raises
``Terminated`` (a BaseException, so no ``except Exception`` in between swallows it), SIGINT
notes that it came and raises KeyboardInterrupt as Python's own handler does. The runner keeps
Lightning's ``_SignalConnector`` from registering its SIGTERM handler (it broadcasts inside the
handler, which hangs under DDP); were it registered, it would keep ours at the end of its chain.
``classify`` turns what reached the runner into the run's error.

Standard library only: ``__main__`` installs the handlers before torch is imported.
"""

from __future__ import annotations

import contextlib
import signal
import traceback
from collections.abc import Iterator
from types import FrameType

from harness.contract.record import STOPPED_BY_SIGNAL, RunError

#: The record's error types for a run stopped by a signal (other helpers' tests use them).
TERMINATED, INTERRUPTED = STOPPED_BY_SIGNAL


class Terminated(BaseException):
    """Raised by the workload's SIGTERM handler."""

    def __init__(self) -> None:
        super().__init__("terminated by SIGTERM")


class _Received:
    sigint = False


received = _Received()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    received.sigint = True
    raise KeyboardInterrupt


def install() -> None:
    """SIGTERM raises Terminated; SIGINT raises KeyboardInterrupt even when the process was
    started with SIGINT ignored (a harness started in the background by a script)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, _on_sigint)


def classify(exc: BaseException) -> RunError:
    """The run's error for whatever ended it (an exception, a signal, an exit)."""
    trace = "".join(traceback.format_exception(exc))
    if isinstance(exc, Terminated) or type(exc).__name__ == "SIGTERMException":
        return RunError(TERMINATED, "terminated by SIGTERM", trace)
    if isinstance(exc, KeyboardInterrupt) or (isinstance(exc, SystemExit) and received.sigint):
        # Lightning answers Ctrl-C with sys.exit(1) after its graceful shutdown
        return RunError(INTERRUPTED, "interrupted by SIGINT (Ctrl-C)", trace)
    if isinstance(exc, SystemExit):
        return RunError("SystemExit", f"the training code exited with code {exc.code}", trace)
    return RunError(type(exc).__name__, str(exc), trace)


@contextlib.contextmanager
def deferred() -> Iterator[list[int]]:
    """While the record is written: SIGTERM and SIGINT are noted (in the list it yields), not
    raised, so that they cannot cut the writing short; the caller decides what they mean. (Only
    Python-level handlers: blocking a signal masks only the thread that asks, and torch, gloo
    and Lightning run threads of their own.)"""
    arrived: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        arrived.append(signum)

    old = {sig: signal.signal(sig, note) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield arrived
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
