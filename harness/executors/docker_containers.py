"""Acting on one container the Docker executor started: follow its logs into the host's capped
capture (outside the run folder; harness/results/untrusted_run_folder.py), stop it (SIGINT,
SIGTERM, SIGKILL, as a
local run), kill it, remove it. Each tolerates a container (or an engine) that is already gone."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from harness.executors.local import GRACE_S
from harness.results.untrusted_run_folder import LOG_CAP_BYTES, TailLog

log = logging.getLogger(__name__)


class LogFollower(threading.Thread):
    """Writes the container's stdout and stderr to ``path`` as they arrive: a host-only file
    outside the container's mount (``run_folder.capture_path``), capped at ``cap`` bytes with
    the tail kept (``TailLog``). The container cannot plant anything there."""

    def __init__(self, container: Any, path: Path, cap: int = LOG_CAP_BYTES) -> None:
        super().__init__(name=f"logs-{container.short_id}", daemon=True)
        self.container = container
        self.path = path
        self.cap = cap

    def run(self) -> None:
        try:
            with TailLog(self.path, self.cap) as handle:
                for chunk in self.container.logs(stream=True, follow=True):
                    handle.write(chunk)
        except Exception as exc:  # a lost log line must not fail the run
            log.debug("log stream of %s ended: %s", self.container.short_id, exc)


def kill(container: Any) -> None:
    import docker
    import requests

    try:
        container.kill()
    except (docker.errors.APIError, requests.exceptions.ConnectionError) as exc:  # gone
        log.debug("kill %s: %s", container.short_id, exc)


#: The stop escalation, as the local executor's: each signal, then up to GRACE_S to exit.
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGKILL")


def stop(container: Any, grace_s: float = GRACE_S) -> str | None:
    """SIGINT, then SIGTERM, then SIGKILL, waiting up to ``grace_s`` after each for the
    container to exit (Ctrl-C, SIGTERM to harness, a timeout): the workload gets the chance to
    write its record, as a local run does. Returns the last signal sent, or None when the
    container was not running. Never hangs on an engine that is gone: the first call that
    cannot reach it ends the escalation (the container, if any, is the next sweep's)."""
    import docker
    import requests

    sent = None
    for sig in STOP_SIGNALS:
        try:
            container.kill(signal=sig)
        except docker.errors.NotFound:
            return sent  # removed already
        except requests.exceptions.ConnectionError as exc:
            log.warning("cannot stop container %s: engine unreachable: %s", container.short_id, exc)
            return sent
        except docker.errors.APIError as exc:  # "is not running": it exited meanwhile
            log.debug("kill -s %s %s: %s", sig, container.short_id, exc)
            return sent
        sent = sig
        if _exits_within(container, grace_s):
            return sent
    return sent


def _exits_within(container: Any, wait_s: float) -> bool:
    """Whether the container exits within ``wait_s`` (or is gone, or its engine is)."""
    import docker
    import requests

    deadline = time.monotonic() + wait_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            container.wait(timeout=max(0.05, min(0.5, remaining)))
            return True
        except docker.errors.NotFound:
            return True
        # docker SDK 7.x raises requests' ConnectionError, not ReadTimeout, on a wait timeout;
        # the next poll (or the next signal) tells a slow container from a gone engine.
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            if not _answers(container):
                return True  # gone with its engine: nothing more to wait for
        except docker.errors.APIError as exc:
            log.debug("wait %s: %s", container.short_id, exc)
            return True


def _answers(container: Any) -> bool:
    try:
        return bool(container.client.ping())
    except Exception:  # any failure to answer means the engine is gone
        return False


def remove(container: Any) -> None:
    import docker
    import requests

    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except requests.exceptions.ConnectionError as exc:
        # The engine is gone; the next `harness run` of this matrix removes it by its label.
        log.warning("could not remove container %s: %s", container.short_id, exc)
    except docker.errors.APIError as exc:
        if "already in progress" not in str(exc):
            log.warning("could not remove container %s: %s", container.short_id, exc)
