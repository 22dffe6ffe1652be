"""``harness compare BASELINE CURRENT``: what changed in reproducibility, and is it a regression.

Cells are matched by cell id (the same settings have the same id in any matrix). Regressions,
which make the command exit EXIT_REGRESSION:

- a cell that reproduced in the baseline no longer does (a repeat differs or failed);
- a cell that reproduced has a different trajectory digest on the same image (the same image
  digest; for ``local``, the same torch build): the same code made other bits.

Reported but not regressions: a trajectory that changed with the image (expected when torch or
CUDA changes), a cell that now reproduces, changed final weights, cells whose baseline had one
repeat (no verdict to keep), new cells and removed cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.baseline import CellDigests, ResultSet
from harness.exit_codes import EXIT_OK, EXIT_REGRESSION
from harness.report.markdown import escape, table_lines

#: The exit code of ``harness compare`` when reproducibility regressed (0: it did not).


@dataclass
class CellChange:
    cell_id: str
    name: str
    what: str
    baseline: str
    current: str
    regression: bool


@dataclass
class CompareResult:
    baseline: str
    current: str
    compared: int
    changes: list[CellChange] = field(default_factory=list)
    new_cells: list[tuple[str, str]] = field(default_factory=list)  # (id, name)
    removed_cells: list[tuple[str, str]] = field(default_factory=list)

    @property
    def regressions(self) -> list[CellChange]:
        return [c for c in self.changes if c.regression]

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSION if self.regressions else EXIT_OK


def _short(digest: str | None) -> str:
    return "—" if not digest else digest[:12]


def _verdict(cell: CellDigests) -> str:
    return {True: "reproduces", False: "does not reproduce", None: "no verdict"}[cell.reproducible]


def _trajectories(cell: CellDigests) -> str:
    distinct = list(dict.fromkeys(t for t in cell.trajectories))
    return ", ".join(_short(t) for t in distinct) or "—"


def compare_cell(cid: str, base: CellDigests, cur: CellDigests) -> list[CellChange]:
    out: list[CellChange] = []

    def add(what: str, baseline: str, current: str, regression: bool) -> None:
        out.append(CellChange(cid, cur.name, what, baseline, current, regression))

    same_image = base.image_identity == cur.image_identity
    base_traj = base.trajectories[0] if base.trajectories else None
    cur_trajs = {t for t in cur.trajectories if t is not None}
    if base.reproducible is True:
        if cur.reproducible is False or not cur_trajs:
            add(
                "no longer reproduces",
                f"reproduces ({_short(base_traj)})",
                f"{_verdict(cur)}: {_trajectories(cur)}",
                True,
            )
        elif cur_trajs != {base_traj}:
            what = (
                "trajectory changed on the same image"
                if same_image
                else "trajectory changed with the image"
            )
            add(what, _short(base_traj), _trajectories(cur), same_image)
        elif base.final_weights != cur.final_weights:
            add(
                "final weights changed",
                _short(base.final_weights),
                _short(cur.final_weights),
                False,
            )
    elif base.reproducible is False and cur.reproducible is True:
        add("now reproduces", _verdict(base), f"reproduces ({_trajectories(cur)})", False)
    elif base.reproducible is None and base_traj and cur_trajs and cur_trajs != {base_traj}:
        add(
            "trajectory changed (the baseline had one repeat: no verdict to keep)",
            _short(base_traj),
            _trajectories(cur),
            False,
        )
    if not same_image:
        add(
            "image changed",
            base.image_identity[:19],
            cur.image_identity[:19],
            False,
        )
    return out


def compare(baseline: ResultSet, current: ResultSet) -> CompareResult:
    both = [cid for cid in baseline.cells if cid in current.cells]
    result = CompareResult(baseline.source, current.source, len(both))
    for cid in both:
        result.changes += compare_cell(cid, baseline.cells[cid], current.cells[cid])
    result.new_cells = [
        (c, current.cells[c].name) for c in current.cells if c not in baseline.cells
    ]
    result.removed_cells = [
        (c, baseline.cells[c].name) for c in baseline.cells if c not in current.cells
    ]
    return result


def render_markdown(result: CompareResult) -> str:
    regressions = result.regressions
    others = [c for c in result.changes if not c.regression]
    head = (
        f"**{len(regressions)} regression{'s' if len(regressions) != 1 else ''}**"
        if regressions
        else "**No regression.**"
    )
    lines = [
        f"{head} Baseline `{escape(result.baseline)}`, current `{escape(result.current)}`: "
        f"{result.compared} cells in both, {len(result.new_cells)} new, "
        f"{len(result.removed_cells)} removed.",
        "",
    ]

    def table(changes: list[CellChange]) -> list[str]:
        header = ["cell", "id", "what changed", "baseline", "current"]
        body = [
            [escape(c.name), c.cell_id, escape(c.what), escape(c.baseline), escape(c.current)]
            for c in changes
        ]
        return table_lines(header, body) + [""]

    if regressions:
        lines += ["### Regressions", ""] + table(regressions)
    if others:
        lines += ["### Other changes (not regressions)", ""] + table(others)
    if not result.changes:
        lines += ["Every cell in both sets has the verdict and digests of the baseline.", ""]
    for title, cells in (
        ("New cells (not in the baseline)", result.new_cells),
        ("Removed cells (not in the current results)", result.removed_cells),
    ):
        if cells:
            lines += [f"### {title}", ""]
            lines += [f"- {escape(name)} (`{cid}`)" for cid, name in cells] + [""]
    return "\n".join(lines)
