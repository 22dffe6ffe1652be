"""Slurm's own commands, called with argument lists, and what their failures mean to a user.

Why the commands and not Slurm's REST API: ``sbatch`` and ``squeue`` are on every login node
and need no token; ``slurmrestd`` is optional on a site. Every call has a timeout, and a
Slurm that cannot be reached is one ``SlurmUnavailable`` naming what is missing, never a
traceback.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.subprocesses import ToolNotFound, ToolTimedOut, find_tool, run_tool

#: Seconds one Slurm command may take before the controller counts as unreachable.
TIMEOUT_S = 60

#: What a Slurm command prints when its controller does not answer (Slurm 20 to 24).
_UNREACHABLE = (
    "unable to contact slurm controller",
    "connection refused",
    "zero bytes were transmitted",
    "unable to establish controller machine",
    "could not establish a configuration source",
    "slurm_load_jobs error: socket timed out",
    "socket timed out on send/recv",
)
_AUTH = ("munge", "auth", "credential")


class SlurmError(HarnessError):
    """A Slurm command refused the request (its own words are in the message)."""


class SlurmUnavailable(SlurmError):
    """No Slurm to talk to: its commands are not installed, or its controller does not answer."""


def _where() -> str:
    conf = os.environ.get("SLURM_CONF")
    return f"SLURM_CONF={conf}" if conf else "Slurm's default configuration"


def require(command: str) -> str:
    """The path of a Slurm command; ``SlurmUnavailable`` naming it when it is not installed."""
    try:
        return find_tool(command, why="this machine has no Slurm client commands")
    except ToolNotFound as exc:
        raise SlurmUnavailable(
            exc.message,
            "run harness submit slurm on a login node of your cluster (or install Slurm's "
            "client: Debian's slurm-client); --dry-run shows the scripts without Slurm",
        ) from None


def call(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run one Slurm command; its absence, a controller that does not answer or a failed
    munge authentication become ``SlurmUnavailable``, any other refusal ``SlurmError``."""
    exe = require(argv[0])
    try:
        proc = run_tool([exe, *argv[1:]], timeout_s=TIMEOUT_S)
    except ToolTimedOut as exc:
        raise SlurmUnavailable(
            f"{argv[0]} did not answer within {TIMEOUT_S} s ({_where()})",
            "check that the Slurm controller is up: scontrol ping",
        ) from exc
    if proc.returncode == 0:
        return proc
    said = " ".join((proc.stderr or proc.stdout or "").split())[:500]
    lowered = said.lower()
    if any(words in lowered for words in _UNREACHABLE):
        raise SlurmUnavailable(
            f"Slurm's controller did not answer {argv[0]} ({_where()}): {said}",
            "check that slurmctld is running and reachable from here: scontrol ping",
        )
    if any(words in lowered for words in _AUTH):
        raise SlurmUnavailable(
            f"Slurm could not authenticate {argv[0]} ({_where()}): {said}",
            "check that munged is running on this machine: munge -n | unmunge",
        )
    hint = None
    if "time limit" in lowered:
        hint = "set a limit the partition allows: slurm.time in the matrix, or --time"
    elif "partition" in lowered:
        hint = "name a partition that exists and that you may use: sinfo -s lists them"
    raise SlurmError(f"{argv[0]} refused the request (exit {proc.returncode}): {said}", hint)


def sbatch(argv: list[str]) -> str:
    """Submit; the job id (``sbatch --parsable`` prints ``ID`` or ``ID;CLUSTER``)."""
    proc = call(argv)
    job = proc.stdout.strip().split(";", 1)[0]
    if not job.isdigit():
        raise SlurmError(f"sbatch answered {proc.stdout.strip()!r}, not a job id")
    return job


def cancel(job_ids: Iterable[str]) -> None:
    ids = list(job_ids)
    if ids:
        call(["scancel", *ids])


@dataclass(frozen=True)
class JobState:
    """One job or array task as Slurm reports it: ``job`` is ``12`` or ``12_3``."""

    job: str
    state: str
    reason: str = ""
    exit_code: str = ""

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


#: States of a job that has not ended: a resubmission must wait for (or cancel) it.
LIVE_STATES = frozenset(
    {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}
    | {"STOPPED", "SIGNALING", "STAGE_OUT", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
)


def _in(job: str, ids: set[str]) -> bool:
    return job.split("_", 1)[0] in ids


def queue(job_ids: Iterable[str]) -> list[JobState]:
    """The jobs among ``job_ids`` (array tasks one by one) that Slurm still queues or runs.

    Asked as ``squeue --me`` and filtered here: ``squeue --jobs`` fails outright when one id
    is no longer known."""
    ids = set(job_ids)
    proc = call(["squeue", "--me", "--noheader", "--array", "--format=%i|%T|%r"])
    found = []
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and _in(parts[0], ids):
            found.append(JobState(parts[0], parts[1], "" if parts[2] == "None" else parts[2]))
    return found


def accounting(job_ids: Iterable[str]) -> list[JobState] | None:
    """Every job among ``job_ids``, finished ones included, from ``sacct``; None when the
    cluster keeps no accounting (no slurmdbd: sacct says so)."""
    ids = sorted(set(job_ids))
    if not ids:
        return []
    try:
        proc = call(
            [
                "sacct",
                "--noheader",
                "--parsable2",
                "--allocations",
                f"--jobs={','.join(ids)}",
                "--format=JobID,State,ExitCode",
            ]
        )
    except SlurmError as exc:
        if "accounting storage is disabled" in exc.message.lower():
            return None
        raise
    found = []
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and _in(parts[0], set(ids)):
            # "CANCELLED by 0" -> CANCELLED
            found.append(JobState(parts[0], parts[1].split(" ", 1)[0], exit_code=parts[2]))
    return found


def recent(job_id: str) -> list[JobState]:
    """A job that ended lately, from ``scontrol show job`` (the controller forgets it after
    MinJobAge, 300 s by default); [] when it is forgotten."""
    try:
        proc = call(["scontrol", "--oneliner", "show", "job", job_id])
    except SlurmUnavailable:
        raise
    except SlurmError as exc:
        if "invalid job id" in exc.message.lower():
            return []
        raise
    found = []
    for line in proc.stdout.splitlines():
        fields = dict(
            item.split("=", 1) for item in line.split() if "=" in item and not item.startswith("=")
        )
        if "JobState" not in fields:
            continue
        task = fields.get("ArrayTaskId")
        job = f"{fields.get('ArrayJobId')}_{task}" if task and task != "N/A" else job_id
        found.append(JobState(job, fields["JobState"], exit_code=fields.get("ExitCode", "")))
    return found
