"""The executors: what turns one run's spec into a process or a container.

- ``base``: the interface every executor implements (``Executor``, ``ExecutorOptions``,
  ``RunJob``, ``RunOutcome``, ``RunStatus``, ``Slot``, ``RunIdentity``);
- ``local``: one child process per run on this machine; ``local_probes``: what it asks the
  runs' interpreter before any run;
- ``docker``: one container per run, built from ``docker_kwargs`` (what a container is created
  with), ``docker_outcome`` (waiting and what its end means), ``docker_containers`` (logs,
  kill, remove), ``docker_host_folders`` (the host folders its user reads and writes) and
  ``docker_sweep`` (what a harness that is gone left); ``images`` builds its workload images and
  ``gpu_probe_host`` probes their GPUs;
- ``fake``: a deterministic stand-in for the tests of scheduling, resume and failures.

This module is the registry: names map to lazy ``module:attr`` entries, so ``plan`` and
``schema`` never import docker, and an unknown name says which ones exist.
"""

from __future__ import annotations

import difflib
import importlib

from harness.errors import ExecutorError
from harness.executors.base import (
    Executor,
    ExecutorOptions,
    RunIdentity,
    RunOutcome,
    RunStatus,
    Slot,
)

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorOptions",
    "RunIdentity",
    "RunOutcome",
    "RunStatus",
    "Slot",
    "get_executor_class",
    "choose_executor",
]

EXECUTORS: dict[str, str] = {
    "local": "harness.executors.local:LocalExecutor",
    "docker": "harness.executors.docker:DockerExecutor",
    "fake": "harness.executors.fake:FakeExecutor",
}


def get_executor_class(name: str) -> type[Executor]:
    """Load one executor class by its registry name."""
    entry = EXECUTORS.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, EXECUTORS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ExecutorError(
            f"unknown executor {name!r}", f"{hint}available: {', '.join(sorted(EXECUTORS))}"
        )
    module_name, attr = entry.split(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ExecutorError(
            f"executor {name!r} cannot be loaded: {exc}",
            "install the package with its dependencies (pip install -e .)",
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        raise ExecutorError(f"{entry} is not an Executor", "fix the registry entry")
    return cls


def choose_executor(choice: str, images: set[str]) -> str:
    """``auto``: ``local`` when every image is ``local``, else ``docker``.

    One harness run uses one executor; the Docker executor runs ``local``-image specs as local
    processes, so a matrix that mixes ``local`` with container images goes to it.
    """
    if choice != "auto":
        get_executor_class(choice)  # validates the name early
        return choice
    return "docker" if images - {"local"} else "local"
