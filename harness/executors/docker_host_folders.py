"""The host's folders that a run's container reads or writes, and its user (never root: a root
harness runs containers as ``UNPRIVILEGED_UID``): before any run, MNIST and the user's code must
be readable by that user; before each run, the run folder itself is handed to it; after it, the
host takes the run folder back, so a container cannot lock the host out of its own checks.
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
from pathlib import Path

from harness.errors import ExecutorError
from harness.executors.docker_kwargs import UNPRIVILEGED_UID, container_user

log = logging.getLogger(__name__)


def writable_for(run_dir: Path, user: str) -> None:
    """Give the run folder itself (not what it holds, never through a link) to the container's
    ``uid:gid`` when it is not the harness's own: a root harness runs containers as
    UNPRIVILEGED_UID, which must write its results there."""
    uid, gid = (int(part) for part in user.split(":"))
    if (uid, gid) != (os.getuid(), os.getgid()):
        os.chown(run_dir, uid, gid, follow_symlinks=False)


def reclaim(run_dir: Path) -> None:
    """Take the run folder back from the container that has ended: the harness's own owner and
    mode 0o755, so a container that ran ``chmod 000 /out`` cannot lock the host out of its
    checks, its log and the failure record. The folder itself only; it is the mount point, which
    the container cannot replace with a link."""
    try:
        if os.stat(run_dir, follow_symlinks=False).st_uid != os.getuid():
            os.chown(run_dir, os.getuid(), os.getgid(), follow_symlinks=False)
        os.chmod(run_dir, 0o755)
    except OSError as exc:  # the checks that follow report what they cannot read
        log.warning("cannot take back %s: %s", run_dir, exc)


def check_readable_by_others(data_dir: Path) -> None:
    """A root harness runs containers as UNPRIVILEGED_UID, which reads MNIST at /data only if
    its files are readable by others: say so before any run, not as every run's failure."""
    if container_user(os.getuid(), os.getgid()) == (os.getuid(), os.getgid()):
        return  # the containers run as this user, who reads the folder already
    unreadable = [
        path.name
        for path in sorted(data_dir.iterdir())
        if path.is_file() and not path.stat().st_mode & stat.S_IROTH
    ]
    if not data_dir.stat().st_mode & stat.S_IXOTH or unreadable:
        what = ", ".join(unreadable[:4]) or "the folder itself"
        raise ExecutorError(
            f"MNIST in {data_dir} is not readable by the containers' user "
            f"{UNPRIVILEGED_UID} (harness runs as root, its containers never do): {what}",
            hint=f"chmod -R a+rX {shlex.quote(str(data_dir))}",
        )


def check_code_readable_by_others(code_dir: Path) -> None:
    """As ``check_readable_by_others``, for the user's code folder mounted at /opt/harness-user
    (every folder and file below it): a run that cannot import its code fails every run the
    same way, so it is said once, before any."""
    if container_user(os.getuid(), os.getgid()) == (os.getuid(), os.getgid()):
        return
    unreadable = []
    for folder, _dirs, files in os.walk(code_dir):
        here = Path(folder)
        if not here.stat().st_mode & stat.S_IROTH or not here.stat().st_mode & stat.S_IXOTH:
            unreadable.append(here)
        unreadable += [
            here / name
            for name in files
            if (here / name).is_file() and not (here / name).stat().st_mode & stat.S_IROTH
        ]
    if unreadable:
        shown = ", ".join(str(p.relative_to(code_dir)) for p in unreadable[:4])
        raise ExecutorError(
            f"your code in {code_dir} (workload.path) is not readable by the containers' user "
            f"{UNPRIVILEGED_UID} (harness runs as root, its containers never do): {shown}",
            hint=f"chmod -R a+rX {shlex.quote(str(code_dir))}",
        )
