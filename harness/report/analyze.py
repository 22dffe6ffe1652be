"""``analyze``: the report model of a results folder, from its run records alone (no torch).

The rooms it walks through: folder_runs.py loads the folder's cells and run records (each file
read once, by harness/results/run_reader.py), verdicts.py judges each cell (trajectories.py
finds where repeats diverge), controls.py withholds ``reproduces`` where a control cell could not
be told apart, summaries.py says what holds across cells, and the answer follows
(answer_data.py: bit_effects.py, recipe.py, noise.py). A folder without a
manifest or cells/ is a folder of the user's own runs (own_runs.py: ReproRecorder's records,
one group per name, through the same rooms).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from harness.errors import HarnessError
from harness.report import summaries
from harness.report.answer_data import Answer
from harness.report.bit_effects import what_changes_bits
from harness.report.controls import apply_controls
from harness.report.diagnoses import load_diagnoses
from harness.report.folder_runs import cell_runs, conflict_runs, folder_cells
from harness.report.noise import noise
from harness.report.own_runs import analyze_own_runs, own_runs, refuse_own_runs_in
from harness.report.recipe import recipes
from harness.report.report_data import CellReport, Report
from harness.report.verdicts import analyze_cell
from harness.results import layout


def analyze(root: str | Path) -> Report:
    """Build the report model of a results folder, or of a folder of own runs (no manifest,
    no cells/: subfolders that ReproRecorder wrote)."""
    root = Path(root)
    if not root.is_dir():
        raise HarnessError(
            f"{root}: no such results folder", "give the folder that `harness run` wrote"
        )
    if not (root / layout.MANIFEST_FILE).exists() and not layout.cells_root(root).is_dir():
        return analyze_own_runs(root, own_runs(root))
    refuse_own_runs_in(root)
    folder = folder_cells(root)
    cells = [
        analyze_cell(c, cell_runs(root, c, folder.repeats), conflict_runs(root, c))
        for c in folder.cells
    ]
    controls, withheld = apply_controls(cells)  # before any summary counts a verdict
    by_image: dict[str, list[CellReport]] = defaultdict(list)
    for c in cells:
        by_image[str(c.settings.get("image"))].append(c)
    return Report(
        name=folder.name,
        root=root,
        cells=cells,
        summaries={image: summaries.describe_image(image, cs) for image, cs in by_image.items()},
        comparisons=summaries.compare_across("image", cells)
        + summaries.compare_across("devices", cells),
        costs=summaries.costs(cells),
        failures=summaries.failures(cells),
        images=summaries.images(by_image),
        conflicts=summaries.conflicts(cells),
        mixed_code=folder.mixed_code,
        diagnoses=load_diagnoses(root),
        machines=summaries.machines(cells),
        answer=Answer(
            bit_effects=what_changes_bits(cells),
            recipes=recipes(cells, withheld=withheld),
            noise=noise(cells),
            controls=controls,
        ),
    )
