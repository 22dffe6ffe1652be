"""The start-up sweep: remove the containers that a harness which is gone left in this results
folder (one killed with SIGKILL could not remove its own).

Called under the folder's lock, before ``prepare`` (``DockerExecutor.sweep``). A container is
swept when it is labelled with this results folder and this host, and is not this invocation's.
Its owner is either no longer running, or alive but not holding this folder's lock (which this
harness holds), so it cannot be running the matrix here: its pid was reused, or it is a process
that ran here and could not remove its containers (the engine did not answer). Containers of
other folders, and of other hosts (whose pids cannot be asked), are never touched. An engine
that cannot be reached has nothing to sweep.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import ExecutorError
from harness.executors.docker_containers import remove
from harness.executors.docker_kwargs import (
    LABEL_INVOCATION,
    LABEL_OUT,
    LABEL_OWNER_HOST,
    LABEL_OWNER_PID,
    Owner,
)

log = logging.getLogger(__name__)


def sweep_folder(client: Callable[[], Any], out: Path, me: Owner) -> list[str]:
    """Remove what other, gone harnesses left for ``out`` on this host; one notice per owner
    swept (printed as ``harness: <notice>``). ``client``: reaches the engine (it may raise
    ExecutorError where there is none)."""
    import docker
    import requests

    try:
        found = client().containers.list(all=True, filters={"label": f"{LABEL_OUT}={out}"})
    except ExecutorError as exc:  # no engine: nothing of this folder can run there
        log.debug("sweep: %s", exc.message)
        return []
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
        log.warning("sweep: cannot list containers: %s", exc)
        return []
    swept: Counter[tuple[str, bool]] = Counter()
    for container in found:
        labels = container.labels or {}
        if labels.get(LABEL_OUT) != str(out) or labels.get(LABEL_INVOCATION) == me.invocation:
            continue
        if labels.get(LABEL_OWNER_HOST) != me.host:
            log.info(
                "sweep: container %s belongs to host %s",
                container.short_id,
                labels.get(LABEL_OWNER_HOST),
            )
            continue
        pid = labels.get(LABEL_OWNER_PID, "")
        log.info("sweep: removing container %s of harness pid %s", container.short_id, pid)
        remove(container)
        swept[(pid, pid_alive(pid))] += 1
    return [sweep_notice(n, pid, alive) for (pid, alive), n in sorted(swept.items())]


def pid_alive(pid: str) -> bool:
    """Whether a process with this pid runs on this host (one that is not ours counts); a
    label that is no positive pid names no process."""
    if not re.fullmatch(r"[0-9]{1,10}", pid) or int(pid) == 0:
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: asks, sends nothing
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def sweep_notice(count: int, pid: str, alive: bool) -> str:
    """The line the start-up sweep prints per owner (after ``harness: ``)."""
    containers = "container" if count == 1 else "containers"
    pid = pid if re.fullmatch(r"[0-9]{1,10}", pid) else "(unknown)"  # a label, shown on stderr
    why = (
        "alive, but not the harness that holds this results folder"
        if alive
        else "no longer running"
    )
    return f"removed {count} {containers} left by harness pid {pid} ({why}) for this results folder"
