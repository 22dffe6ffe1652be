"""The reproducibility report: ``analyze`` a results folder, then render md/json/csv + plots.

Modules, in the order the data flows:

- runs.py: the folder's cells (manifest, through harness/results/layout.py), each run record checked
  against its losses.npy (ok, failed, missing or corrupt), and merge conflict copies;
- trajectories.py: losses.npy compared bit for bit: first divergence, |Δloss|, ULPs;
- verdicts.py: one cell's verdict from its runs: reproduces, diverges or unknown;
- summaries.py: across cells: per-image summary (cells with a verdict only), across images and
  GPU counts, cost of determinism, failed runs, merge conflicts, images;
- analyze.py: ``analyze``, the above put together into model.py's ``Report``;
- records.py: the same for a folder of the user's own runs (ReproRecorder's records, no
  manifest): one cell per group of runs of one name, and what its runs differ in;
- grid.py: each image's verdict grid, the pivot the Markdown, the terminal and the heatmap
  draw;
- flatten.py (one row per cell), markdown.py, exporters.py (md/json/csv), plots.py,
  heatmap.py (the grid as a PNG), terminal.py (the sentence and grid per image that run and
  report print), github.py (the Actions job summary): renderers of a ``Report``; text.py
  makes text from run records inert (escaped, validated, no control characters) before
  markdown.py shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.errors import HarnessError
from harness.report.analyze import analyze
from harness.report.exporters import REPORT_FORMATS as FORMATS
from harness.report.report_data import Report

__all__ = ["FORMATS", "Report", "analyze", "make_reports", "write_reports"]


def write_reports(
    root: str | Path, formats: Sequence[str], *, plots: bool = True, max_plots: int | None = None
) -> list[Path]:
    """Write report.<fmt> (and plots/ for md) into the results folder; returns the paths.

    ``max_plots`` bounds the plots drawn (None: the default bound, 0: no bound).
    """
    return make_reports(root, formats, plots=plots, max_plots=max_plots)[1]


def make_reports(
    root: str | Path,
    formats: Sequence[str],
    *,
    plots: bool = True,
    max_plots: int | None = None,
    out: str | Path | None = None,
) -> tuple[Report, list[Path]]:
    """``write_reports``, also returning the report it wrote, for the terminal summary.

    ``out``: the folder the report files and plots/ go to (created; default: ``root``)."""
    from harness.contract import write_bytes_atomic
    from harness.report.exporters import EXPORTERS, check_format

    for fmt in formats:
        check_format(fmt)
    report = analyze(root)
    dest = report.root if out is None else _out_dir(Path(out))
    written: list[Path] = []
    if plots and "md" in formats:
        from harness.report.heatmap import write_grid_plots
        from harness.report.plots import MAX_PLOTS, write_plots

        written += write_plots(report, MAX_PLOTS if max_plots is None else max_plots, dest)
        written += write_grid_plots(report, dest)  # one per image, not counted in max_plots
    for fmt in dict.fromkeys(formats):
        filename, render = EXPORTERS[fmt]
        path = dest / filename
        write_bytes_atomic(path, render(report))
        written.append(path)
    return report, written


def _out_dir(out: Path) -> Path:
    """``--out``: made where missing (after the report was built: bad input writes nothing)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(
            f"{out}: cannot write the report there ({exc.strerror or exc})",
            "give --out a folder that is missing or a folder you can write to",
        ) from exc
    return out
