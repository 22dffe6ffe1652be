"""``analyze``: the report model of a results folder, from its run records alone (no torch).

The rooms it walks through: runs.py loads the folder's cells and run records, verdicts.py judges
each cell (trajectories.py finds where repeats diverge), summaries.py says what holds across
cells.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from harness.errors import HarnessError
from harness.report import summaries
from harness.report.diagnoses import load_diagnoses
from harness.report.model import CellReport, Report
from harness.report.runs import cell_runs, conflict_runs, folder_cells
from harness.report.verdicts import analyze_cell


def analyze(root: str | Path) -> Report:
    """Build the report model of a results folder."""
    root = Path(root)
    if not root.is_dir():
        raise HarnessError(
            f"{root}: no such results folder", "give the folder that `harness run` wrote"
        )
    folder = folder_cells(root)
    cells = [
        analyze_cell(c, cell_runs(root, c, folder.repeats), conflict_runs(root, c))
        for c in folder.cells
    ]
    by_image: dict[str, list[CellReport]] = defaultdict(list)
    for c in cells:
        by_image[str(c.settings.get("image"))].append(c)
    return Report(
        folder.name,
        root,
        cells,
        {image: summaries.describe_image(image, cs) for image, cs in by_image.items()},
        summaries.compare_across("image", cells) + summaries.compare_across("devices", cells),
        summaries.costs(cells),
        summaries.failures(cells),
        summaries.images(by_image),
        summaries.conflicts(cells),
        folder.mixed_code,
        diagnoses=load_diagnoses(root),
    )
