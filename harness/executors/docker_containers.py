"""Acting on one container the Docker executor started: follow its logs into the host's capped
capture (outside the run folder; harness/run_folder.py), kill it, remove it. Each tolerates a
container (or an engine) that is already gone."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from harness.run_folder import LOG_CAP_BYTES, TailLog

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
