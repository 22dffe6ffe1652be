"""PNG plots of |Δloss| per step between repeats (log y), one per cell that diverges.

Only runs the report verified are plotted (ok runs, and ok merge conflict copies), from the
losses it read then (``trajectories.losses_of``); a losses.npy that cannot be read when drawn
(``CorruptRun``: a run made by hand, without them) leaves the cell without a plot and a warning,
never a traceback.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from pathlib import Path

import numpy as np

from harness.contract.files import write_bytes_atomic
from harness.errors import StoreError
from harness.report.inert_text import clean
from harness.report.report_data import DIVERGES, OK, CellReport, Report
from harness.report.trajectories import losses_of
from harness.results import layout
from harness.results.run_reader import RecordError
from harness.results.safe_paths import real_dir

log = logging.getLogger(__name__)

MAX_POINTS = 800
#: Plots drawn per report by default: each takes ~0.1-0.2 s on a small CPU, so a report over a
#: large matrix would spend most of its time drawing; the rest are listed unplotted, and
#: ``harness report --max-plots 0`` draws them all.
MAX_PLOTS = 25


def _envelope(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Downsample to at most MAX_POINTS by keeping each bin's maximum (spikes stay visible)."""
    n = len(values)
    if n <= MAX_POINTS:
        return np.arange(n), values
    width = int(np.ceil(n / MAX_POINTS))
    pad = (-n) % width
    padded = np.concatenate([values, np.full(pad, np.nan)]).reshape(-1, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bins of equal steps are all NaN
        return np.arange(0, n, width), np.nanmax(padded, axis=1)


class _Canvas:
    """One Agg figure reused for every plot: creating figures dominates the cost."""

    def __init__(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=(7, 3), dpi=72)
        self.ax = self.fig.add_axes((0.1, 0.17, 0.87, 0.72))

    def draw(
        self, title: str, series: list[tuple[str, np.ndarray, np.ndarray]], path: Path
    ) -> None:
        ax = self.ax
        ax.clear()
        for label, x, y in series:
            ax.plot(x, y, linewidth=0.8, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("global step")
        ax.set_ylabel("|Δloss|")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        png = io.BytesIO()
        self.fig.savefig(png, format="png")
        write_bytes_atomic(path, png.getvalue())  # a link at the file's name is replaced


def file_stem(text: str, fallback: str) -> str:
    """``text`` as a file name in plots/: anything but letters, digits and ``._=+-`` replaced
    and leading dots dropped, so a name from a tampered manifest cannot leave plots/ or hide
    (``fallback`` where nothing is left)."""
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", text).lstrip(".") or fallback


def plot_name(cell: CellReport) -> str:
    """The plot's file name: ``<cell name>--<cell id>.png``, made safe by ``file_stem``."""
    return f"{file_stem(f'{cell.name}--{cell.id}', 'cell')}.png"


def plot_cell(cell: CellReport, out_dir: Path, canvas: _Canvas | None = None) -> str | None:
    ok = [r for r in [*cell.runs, *cell.conflict_copies] if r.status == OK]
    if cell.verdict != DIVERGES or len(ok) < 2 or cell.distinct_trajectories < 2:
        return None
    ref = losses_of(ok[0])
    series = []
    for run in ok[1:]:
        if run.trajectory == ok[0].trajectory:
            continue
        other = losses_of(run)
        n = min(len(ref), len(other))
        if ref.shape[1] != other.shape[1] or n == 0:
            continue
        delta = np.abs(ref[:n].astype(np.float64) - other[:n].astype(np.float64)).max(axis=1)
        delta[delta == 0] = np.nan  # log scale: equal steps leave a gap
        x, y = _envelope(delta)
        label = f"repeat {run.repeat}" + (" (conflict copy)" if run.copy else "")
        series.append((f"{label} vs {ok[0].repeat}", x, y))
    if not series:
        return None
    real_dir(out_dir.parent, out_dir, what="the report's plots")  # plots/ is never a link
    name = plot_name(cell)
    (canvas or _Canvas()).draw(clean(cell.name), series, out_dir / name)
    return f"{layout.PLOTS_DIR}/{name}"


def write_plots(report: Report, max_plots: int = MAX_PLOTS, out: Path | None = None) -> list[Path]:
    """Plot the cells that do not reproduce, the first ``max_plots`` of them (0: all), into
    ``out``/plots/ (default: the folder reported)."""
    dest = report.root if out is None else out
    written: list[Path] = []
    canvas: _Canvas | None = None
    for cell in report.cells:
        if cell.verdict != DIVERGES:
            continue
        if max_plots and len(written) >= max_plots:
            log.info("plot limit %d reached; no plot for %s", max_plots, cell.name)
            continue
        canvas = canvas or _Canvas()
        try:
            cell.plot = plot_cell(cell, layout.plots_dir(dest), canvas)
        except (OSError, ValueError, RecordError, StoreError) as exc:  # StoreError: a link
            log.warning("no plot for %s: %s", clean(cell.name), clean(exc))
            cell.plot = None
        if cell.plot:
            written.append(dest / cell.plot)
    return written
