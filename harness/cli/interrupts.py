"""Ctrl-C and SIGTERM for the commands that start runs (``run``, ``diagnose``): they ask the
runs to stop instead of killing the harness, so its containers are stopped and removed and the
command exits 130 (``EXIT_INTERRUPTED``), as docs/faults.md fault 4 says."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from threading import Event


@contextmanager
def cancel_on_signals(cancel: Event) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set ``cancel`` (the executors stop their runs when it
    is set); the previous handlers come back after."""

    def handler(signum: int, frame: object) -> None:
        cancel.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
