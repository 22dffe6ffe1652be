"""What a person sees while a matrix runs: rich (TTY), plain lines (CI logs), or nothing.

The runner reports events; the display derives cells done, runs in flight with their epoch
(read from each run's log as it streams: the workload prints ``epoch N/M done: ...``) and an ETA.

Every event's text (labels, a failed run's message: a workload's own error text) goes through
``harness.text.terminal_safe`` before any display draws it: no control characters or escape
sequences, one line per event, and no line can start a GitHub workflow command (``::error::``).
Rich draws it as plain text, never as markup.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from harness.contract.record import EPOCH_LINE
from harness.results.run_reader import tail_bytes
from harness.results.untrusted_run_folder import live_log
from harness.text import terminal_safe


def last_epoch(run_dir: Path) -> tuple[int, int] | None:
    """The last finished epoch (n, total) printed in a run's live log (``live_log``: the host's
    capture of a container run, else ``run.log``), or None. Only a regular file is read: a
    link or FIFO planted as ``run.log`` is never followed nor waited on."""
    try:
        found = EPOCH_LINE.findall(tail_bytes(live_log(run_dir), 8192))
    except OSError:
        return None
    return (int(found[-1][0]), int(found[-1][1])) if found else None


@dataclass
class _Flight:
    label: str
    run_dir: Path
    started: float
    epoch: tuple[int, int] | None = None


@dataclass
class ProgressState:
    total_runs: int = 0
    done_runs: int = 0
    failed_runs: int = 0
    skipped_runs: int = 0
    cells_total: int = 0
    cell_left: dict[str, int] = field(default_factory=dict)
    flights: dict[str, _Flight] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    run_seconds: list[float] = field(default_factory=list)

    @property
    def cells_done(self) -> int:
        return sum(1 for left in self.cell_left.values() if left == 0)

    def eta_seconds(self) -> float | None:
        todo = self.total_runs - self.done_runs - self.skipped_runs
        if not self.run_seconds or todo <= 0:
            return None if todo > 0 else 0.0
        started_here = self.done_runs
        elapsed = time.monotonic() - self.started
        return elapsed / started_here * todo


class Progress:
    """Base display: keeps the state; subclasses draw it."""

    def __init__(self) -> None:
        self.state = ProgressState()
        self._last_poll = 0.0

    def start(self, cells: dict[str, int], skipped_per_cell: dict[str, int]) -> None:
        s = self.state
        s.cells_total = len(cells)
        s.total_runs = sum(cells.values())
        s.skipped_runs = sum(skipped_per_cell.values())
        s.cell_left = {c: n - skipped_per_cell.get(c, 0) for c, n in cells.items()}
        s.started = time.monotonic()
        self.draw_start()

    def run_started(self, key: str, cell: str, label: str, run_dir: Path) -> None:
        label = terminal_safe(label)
        self.state.flights[key] = _Flight(label, run_dir, time.monotonic())
        self._event(f"start  {label}")

    def run_finished(
        self, key: str, cell: str, label: str, status: str, seconds: float, message: str = ""
    ) -> None:
        s = self.state
        s.flights.pop(key, None)
        s.done_runs += 1
        s.failed_runs += status != "ok"
        s.run_seconds.append(seconds)
        s.cell_left[cell] = max(0, s.cell_left.get(cell, 1) - 1)
        detail = f" ({message})" if message and status != "ok" else ""
        self._event(f"{status:<6} {label} in {seconds:.1f} s{detail}")

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last_poll < 0.5:
            return
        self._last_poll = now
        for flight in list(self.state.flights.values()):
            epoch = last_epoch(flight.run_dir)
            if epoch is not None and epoch != flight.epoch:
                flight.epoch = epoch
                self._event(f"epoch  {flight.label}: {epoch[0]}/{epoch[1]} done")
        self.draw_tick()

    def _event(self, text: str) -> None:
        """Every event reaches a display through here: one safe line."""
        self.draw_event(terminal_safe(text))

    def close(self) -> None:
        pass

    def draw_start(self) -> None:
        pass

    def draw_event(self, text: str) -> None:
        pass

    def draw_tick(self) -> None:
        pass

    def summary(self) -> str:
        s = self.state
        return (
            f"cells {s.cells_done}/{s.cells_total}, runs {s.done_runs + s.skipped_runs}/"
            f"{s.total_runs} ({s.skipped_runs} already done, {s.failed_runs} failed)"
        )


class QuietProgress(Progress):
    """No output: for scripts that read the report."""


class PlainProgress(Progress):
    """One line per event, for CI logs."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stderr

    def _line(self, text: str) -> None:
        self.stream.write(terminal_safe(text) + "\n")
        self.stream.flush()

    def draw_start(self) -> None:
        s = self.state
        self._line(
            f"harness: {s.cells_total} cells, {s.total_runs} runs, {s.skipped_runs} already done"
        )

    def draw_event(self, text: str) -> None:
        s = self.state
        eta = s.eta_seconds()
        eta_text = f", ETA {_fmt(eta)}" if eta else ""
        self._line(
            f"[{s.done_runs + s.skipped_runs}/{s.total_runs} runs, cells "
            f"{s.cells_done}/{s.cells_total}{eta_text}] {text}"
        )

    def close(self) -> None:
        self._line("harness: " + self.summary())


class RichProgress(Progress):
    """A live panel: a bar over runs with the ETA, cells done, and a row per run in flight."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream or sys.stderr)
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)

    def _render(self):  # a rich renderable
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        s = self.state
        done = s.done_runs + s.skipped_runs
        eta = s.eta_seconds()
        head = Table.grid(padding=(0, 1))
        head.add_row(
            ProgressBar(total=max(1, s.total_runs), completed=done, width=30),
            f"runs {done}/{s.total_runs}",
            f"cells {s.cells_done}/{s.cells_total}",
            f"failed {s.failed_runs}",
            f"ETA {_fmt(eta)}" if eta is not None else "ETA -",
        )
        flights = Table(box=None, show_header=bool(s.flights), padding=(0, 1))
        flights.add_column("in flight")
        flights.add_column("epoch")
        flights.add_column("time", justify="right")
        now = time.monotonic()
        for f in s.flights.values():
            epoch = f"{f.epoch[0]}/{f.epoch[1]}" if f.epoch else "-"
            flights.add_row(Text(f.label), epoch, _fmt(now - f.started))
        return Group(head, flights)

    def draw_start(self) -> None:
        self.live.start()
        self.live.update(self._render())

    def draw_event(self, text: str) -> None:
        from rich.text import Text

        if text.startswith(("failed", "timeout", "aborte")):
            # soft_wrap: rich inserts no line breaks, so no wrapped line can start with "::"
            self.console.print(Text(terminal_safe(text)), soft_wrap=True)
        self.live.update(self._render())

    def draw_tick(self) -> None:
        self.live.update(self._render())

    def close(self) -> None:
        self.live.update(self._render())
        self.live.stop()
        self.console.print("harness: " + self.summary())


def make_progress(mode: str | None, stream: TextIO | None = None) -> Progress:
    """``None`` picks rich on a terminal, plain otherwise."""
    out = stream or sys.stderr
    if mode is None:
        mode = "rich" if out.isatty() else "plain"
    if mode == "rich":
        return RichProgress(out)
    if mode == "plain":
        return PlainProgress(out)
    return QuietProgress()


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
