"""Helpers shared by the fault tests (tests/test_faults_*.py): start a real ``harness run``,
watch its output, find its workload processes, snapshot finished results.

Each fault test checks the same four things, so the checks live here once:
finished results intact (bytes before == bytes after), nothing left behind (processes via
/proc, containers via their ``harness.run`` label), a message that says what happened and what
to do, and a resume that completes the rest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness.results.run_reader import RecordError, load_record

ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "ROOT",
    "Harness",
    "cpus_allowed",
    "finished_files",
    "no_processes_left",
    "processes_of",
    "records",
    "resume_completes",
    "workload_pid",
    "wait_for_text",
    "write_matrix",
]


def write_matrix(
    path: Path,
    name: str,
    *,
    repeats: int = 1,
    steps: int | None = 30,
    epochs: int = 1,
    timeout_s: float = 600,
    image: str | list[str] | None = None,
    run_extra: str = "",
    tail: str = "",
) -> Path:
    """A tiny real matrix: one ``before_model`` cell per image (plus whatever ``tail`` adds)."""
    steps_yaml = "null" if steps is None else str(steps)
    images = [image] if isinstance(image, str) else image or []
    axes = f"  image: [{', '.join(repr(i) for i in images)}]\n" if images else ""
    path.write_text(
        f"name: {name}\n"
        f"run: {{repeats: {repeats}, epochs: {epochs}, max_steps_per_epoch: {steps_yaml}, "
        f"threads: 1, timeout_s: {timeout_s}{run_extra}}}\n"
        "axes:\n"
        f"{axes}"
        "  placement: [before_model]\n"
        f"{tail}"
    )
    return path


class Harness:
    """``harness run`` in its own session, its output collected line by line in a thread."""

    def __init__(
        self,
        matrix: Path,
        out: Path,
        *args: str,
        cpus: str | None = None,
        env: dict[str, str] | None = None,
        report: bool = False,
    ) -> None:
        argv = [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(matrix),
            "--out",
            str(out),
            "--progress",
            "plain",
            *([] if report else ["--no-report"]),
            *args,
        ]
        if cpus is not None:  # one core: the runs go one after another
            argv = ["taskset", "-c", cpus, *argv]
        self.out = out
        self.lines: list[str] = []
        self.proc = subprocess.Popen(  # argv list, no shell
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float = 300, count: int = 1) -> str:
        """Block until the ``count``-th line containing ``needle`` is printed (lines printed
        before the call count too); fail if the harness exits first."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            if exited:
                self._reader.join(timeout=5)  # every line it printed
            found = [ln for ln in list(self.lines) if needle in ln]
            if len(found) >= count:
                return found[count - 1]
            if exited:
                raise AssertionError(
                    f"harness exited after {len(found)} of {count} {needle!r} lines:\n"
                    f"{self.text[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(found)} of {count} {needle!r} lines within {timeout} s:\n"
                    f"{self.text[-3000:]}"
                )
            time.sleep(0.05)

    def finish(self, timeout: float = 600) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._reader.join(timeout=10)
        return code

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """Last resort in a ``finally``: SIGINT first (the harness removes its containers),
        then SIGKILL to the whole session, so no test leaves a process behind."""
        if self.proc.poll() is not None:
            return  # finished and reaped: its pid may belong to someone else by now
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the leader is alive: its session is ours
            self.proc.wait(timeout=30)


def workload_pid(run_dir: Path, timeout: float = 120) -> int:
    """The pid of the workload process training into ``run_dir`` (found through /proc)."""
    needle = f"--out\0{run_dir}".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"harness.workload" in cmdline and needle in cmdline:
                return int(entry.name)
        time.sleep(0.05)
    raise AssertionError(f"no workload process for {run_dir} within {timeout} s")


def cpus_allowed(pid: int, at_most: int | None = None, timeout: float = 60) -> set[int]:
    """The cores the kernel lets ``pid`` run on (``Cpus_allowed_list`` of /proc/<pid>/status).
    With ``at_most``, first wait (a generous deadline) for the set to shrink to that many cores,
    as it does once the harness pins the process; the set is returned either way."""
    deadline = time.monotonic() + timeout
    while True:
        status = Path(f"/proc/{pid}/status").read_text()  # gone: OSError, the test fails
        listed = next(ln for ln in status.splitlines() if ln.startswith("Cpus_allowed_list:"))
        cores: set[int] = set()
        for part in listed.split(":", 1)[1].strip().split(","):
            first, _, last = part.partition("-")
            cores.update(range(int(first), int(last or first) + 1))
        if at_most is None or len(cores) <= at_most or time.monotonic() > deadline:
            return cores
        time.sleep(0.05)


def wait_for_text(path: Path, needle: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if needle in path.read_text(errors="replace"):
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{needle!r} never appeared in {path}")


def processes_of(out: Path, session: int) -> list[int]:
    """Live processes that belong to the run: in its session or naming its results folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, sid = fields[0], int(fields[3])
        if state != "Z" and (sid == session or str(out).encode() in cmdline):
            found.append(int(entry.name))
    return found


def no_processes_left(out: Path, session: int, wait_s: float = 60) -> list[int]:
    """Processes of that harness session or naming ``out``, once they had ``wait_s`` to go
    (a condition polled with a generous deadline: it returns as soon as none is left)."""
    deadline = time.monotonic() + wait_s
    while processes_of(out, session) and time.monotonic() < deadline:
        time.sleep(0.2)
    return processes_of(out, session)


def records(out: Path) -> dict[str, object]:
    """``repeat-<k>`` of the (single) cell -> its run record, or the RecordError."""
    found: dict[str, object] = {}
    for run_dir in sorted(out.glob("cells/*/repeat-*")):
        try:
            found[run_dir.name] = load_record(run_dir)
        except RecordError as exc:
            found[run_dir.name] = exc
    return found


def finished_files(out: Path) -> dict[str, bytes]:
    """Every file of every run with an ok record (run.json, losses.npy, events, log, spec)."""
    files: dict[str, bytes] = {}
    for run_dir in sorted(out.glob("cells/*/repeat-*")):
        try:
            if not load_record(run_dir).ok:
                continue
        except RecordError:
            continue
        for path in sorted(run_dir.rglob("*")):
            if path.is_file():
                files[str(path.relative_to(out))] = path.read_bytes()
    return files


def resume_completes(run: Harness, out: Path, kept: dict[str, bytes], already_done: int) -> str:
    """The resume half of every fault test: the same command finishes the rest (exit 0), skips
    the ``already_done`` finished runs, keeps their bytes, and leaves every run ok. Returns the
    resumed run's output for the test's own checks."""
    try:
        assert run.finish(timeout=600) == 0, run.text[-3000:]
    finally:
        run.kill()
    assert f"{already_done} already done" in run.text
    assert {k: v for k, v in finished_files(out).items() if k in kept} == kept
    assert all(r.ok for r in records(out).values())
    return run.text


def nudge_losses(run_dir: Path, step: int = 0, ulps: int = 1) -> tuple[str, str]:
    """Move one step's losses (every rank) by ``ulps`` float32 ULPs and rewrite the record's
    trajectory digest to match, so that the record still verifies (the report and resume check
    losses.npy against it); returns the (old, new) trajectory digests."""
    import json

    import numpy as np

    from harness.contract.trajectory_hash import trajectory_sha256
    from harness.results.run_reader import verified_losses

    losses = np.load(run_dir / "losses.npy")
    for _ in range(ulps):
        losses[step] = np.nextafter(losses[step], np.float32(np.inf), dtype=np.float32)
    np.save(run_dir / "losses.npy", losses)
    path = run_dir / "run.json"
    record = json.loads(path.read_text())
    old, new = record["digests"]["trajectory"], trajectory_sha256(losses)
    record["digests"]["trajectory"] = new
    record["digests"]["epochs"] = [new if d == old else d for d in record["digests"]["epochs"]]
    path.write_text(json.dumps(record))
    verified_losses(run_dir, load_record(run_dir))  # still a sound record
    return old, new
