"""``harness compare BASELINE CURRENT``: what changed in reproducibility, and is it a regression.

Cells are matched by cell id (the same settings have the same id in any matrix). Regressions,
which make the command exit EXIT_REGRESSION:

- a cell that reproduced in the baseline no longer does (a repeat differs, failed or is
  missing, or its verdict is unknown);
- a cell that reproduced has a different trajectory digest on the same image (the same image
  digest; for ``local``, the same torch build): the same code made other bits.

The gate also refuses to pass (EXIT_NOT_COMPARABLE, with the reason in the output) when it
cannot judge the current results as given, so that it never passes by accident:

- no cell is in both sets (another seed, another matrix, a changed default);
- cells of the baseline are missing from the current results (unless ``allow_removed``);
- the two sets come from different matrices, by ``matrix_digest`` (unless
  ``allow_changed_matrix``); a set that records no matrix digest counts as different.

Reported but not regressions: a trajectory that changed with the image (expected when torch or
CUDA changes), a cell that now reproduces, changed final weights, cells whose baseline had no
verdict, new cells, and the refusals a flag accepted.

The machine is checked before a setting or the code is blamed (docs/results.md, "Machines"):
a cell whose runs ran on another machine than the baseline's (``provenance.machine``
fingerprints) says so in a "machine changed" row, naming what differs; a trajectory that
changed on the same image but another machine is "trajectory changed on another machine", not
a regression (CPU and GPU kernels differ between machines), and makes the gate exit
EXIT_MACHINE_CHANGED, so that CI neither passes it nor calls it a regression of the code.
Where either side recorded no machine (a baseline of format 1, records from before machines
were recorded), the rules above apply as they did, and the output says that the machines could
not be compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.contract.machine import Machine, differences
from harness.exit_codes import (
    EXIT_MACHINE_CHANGED,
    EXIT_NOT_COMPARABLE,
    EXIT_OK,
    EXIT_REGRESSION,
)
from harness.gates.baseline import CellDigests, ResultSet

__all__ = [
    "EXIT_MACHINE_CHANGED",
    "EXIT_NOT_COMPARABLE",
    "EXIT_REGRESSION",
    "CellChange",
    "CompareResult",
    "MachineChange",
    "Refusal",
    "compare",
    "compare_cell",
]


@dataclass
class CellChange:
    cell_id: str
    name: str
    what: str
    baseline: str
    current: str
    regression: bool
    #: a trajectory that changed where the machine did too: neither passed nor blamed on code
    machine_changed: bool = False


@dataclass
class Refusal:
    """Why the gate cannot pass as given: ``what`` is ``no_common_cell``, ``removed_cells`` or
    ``changed_matrix``; ``accepted_by`` names the flag that accepts it (None: nothing does);
    ``accepted`` says whether that flag was given (then it is reported, not a failure)."""

    what: str
    reason: str
    accepted_by: str | None = None
    accepted: bool = False


@dataclass
class CompareResult:
    baseline: str
    current: str
    compared: int
    changes: list[CellChange] = field(default_factory=list)
    new_cells: list[tuple[str, str]] = field(default_factory=list)  # (id, name)
    removed_cells: list[tuple[str, str]] = field(default_factory=list)
    baseline_matrix_digest: str | None = None
    current_matrix_digest: str | None = None
    checks: list[Refusal] = field(default_factory=list)
    #: which side recorded no machine for the compared cells (None: both did, or neither)
    machines_unknown: str | None = None

    @property
    def regressions(self) -> list[CellChange]:
        return [c for c in self.changes if c.regression]

    @property
    def machine_changes(self) -> list[CellChange]:
        """Trajectories that changed on another machine (not regressions; the gate fails)."""
        return [c for c in self.changes if c.machine_changed]

    @property
    def refusals(self) -> list[Refusal]:
        """What keeps the gate from passing besides regressions (flags not given)."""
        return [r for r in self.checks if not r.accepted]

    @property
    def exit_code(self) -> int:
        if self.regressions:
            return EXIT_REGRESSION
        if self.machine_changes:
            return EXIT_MACHINE_CHANGED
        if self.refusals:
            return EXIT_NOT_COMPARABLE
        return EXIT_OK


def cells_text(n: int) -> str:
    return f"{n} cell{'s' if n != 1 else ''}"


def _short(digest: str | None) -> str:
    return "—" if not digest else digest[:12]


def _verdict(cell: CellDigests) -> str:
    return {True: "reproduces", False: "does not reproduce", None: "unknown"}[cell.reproducible]


def _trajectories(cell: CellDigests) -> str:
    distinct = list(dict.fromkeys(t for t in cell.trajectories))
    return ", ".join(_short(t) for t in distinct) or "—"


def _image(cell: CellDigests) -> str:
    """The image as told: a digest shortened like the others (``sha256:`` and 12 hex digits);
    without one (``local``), the torch build in full, which is what tells two apart."""
    return cell.image_digest[:19] if cell.image_digest else cell.image_identity


@dataclass
class MachineChange:
    """The machines a cell ran on in the baseline and now (fingerprints, with their CPU
    capability where known), and what differs between them in words."""

    baseline: str
    current: str
    words: list[str]


def machine_change(
    base: CellDigests,
    cur: CellDigests,
    base_machines: dict[str, Machine] | None = None,
    cur_machines: dict[str, Machine] | None = None,
) -> MachineChange | None:
    """How the machines of a cell's runs changed since the baseline; None when they did not,
    or when either side recorded none (nothing to tell either way)."""
    was, now = base.machine_set, cur.machine_set
    if not was or not now or was == now:
        return None

    def listed(keys: set[str], facts: dict[str, Machine]) -> str:
        return ", ".join(
            f"{key} (CPU capability {facts[key].cpu_capability or 'unknown'})"
            if key in facts
            else key
            for key in sorted(keys)
        )

    base_facts, cur_facts = base_machines or {}, cur_machines or {}
    a, b = base_facts.get(sorted(was)[0]), cur_facts.get(sorted(now)[0])
    words = differences(a, b) if a is not None and b is not None else []
    return MachineChange(listed(was, base_facts), listed(now, cur_facts), words)


def compare_cell(
    cid: str,
    base: CellDigests,
    cur: CellDigests,
    machines: tuple[dict[str, Machine], dict[str, Machine]] | None = None,
) -> list[CellChange]:
    """What changed in one cell; ``machines`` are the two sets' machine facts (fingerprint ->
    machine), which name what differs between machines that changed."""
    moved = machine_change(base, cur, *(machines or ({}, {})))
    same_image = base.image_identity == cur.image_identity
    rows = _verdict_changes(base, cur, moved, same_image)
    if not same_image:
        rows.append(("image changed", _image(base), _image(cur), False, False))
    if moved:
        what = "machine changed" + (f": {'; '.join(moved.words)}" if moved.words else "")
        rows.append((what, moved.baseline, moved.current, False, False))
    return [CellChange(cid, cur.name, *row) for row in rows]


#: (what, baseline, current, regression, machine_changed): a CellChange without its cell.
_Row = tuple[str, str, str, bool, bool]


def _verdict_changes(
    base: CellDigests, cur: CellDigests, moved: MachineChange | None, same_image: bool
) -> list[_Row]:
    """What changed in the cell's verdict and trajectory (at most one row)."""
    # the first finished repeat's: a baseline without a verdict may have lost its first repeat
    base_traj = next((t for t in base.trajectories if t is not None), None)
    cur_trajs = {t for t in cur.trajectories if t is not None}
    if base.reproducible is True:
        if cur.reproducible is not True or not cur_trajs:
            what = "no longer reproduces" + (" (on another machine)" if moved else "")
            now = f"{_verdict(cur)}: {_trajectories(cur)}"
            return [(what, f"reproduces ({_short(base_traj)})", now, True, False)]
        if cur_trajs != {base_traj} and same_image and moved:
            what = "trajectory changed on another machine (see machine changed)"
            return [(what, _short(base_traj), _trajectories(cur), False, True)]
        if cur_trajs != {base_traj}:
            what = (
                "trajectory changed on the same image"
                if same_image
                else "trajectory changed with the image"
            )
            return [(what, _short(base_traj), _trajectories(cur), same_image, False)]
        if base.final_weights != cur.final_weights:
            was, now = _short(base.final_weights), _short(cur.final_weights)
            return [("final weights changed", was, now, False, False)]
    elif base.reproducible is False and cur.reproducible is True:
        now = f"reproduces ({_trajectories(cur)})"
        return [("now reproduces", _verdict(base), now, False, False)]
    elif base.reproducible is None and base_traj and cur_trajs and cur_trajs != {base_traj}:
        what = "trajectory changed (the baseline had one repeat: no verdict to keep)"
        return [(what, _short(base_traj), _trajectories(cur), False, False)]
    return []


def compare(
    baseline: ResultSet,
    current: ResultSet,
    *,
    allow_removed: bool = False,
    allow_changed_matrix: bool = False,
) -> CompareResult:
    both = [cid for cid in baseline.cells if cid in current.cells]
    result = CompareResult(
        baseline.source,
        current.source,
        len(both),
        baseline_matrix_digest=baseline.matrix_digest,
        current_matrix_digest=current.matrix_digest,
    )
    machines = (baseline.machines, current.machines)
    for cid in both:
        result.changes += compare_cell(cid, baseline.cells[cid], current.cells[cid], machines)
    known = [any(s.cells[c].machine_set for c in both) for s in (baseline, current)]
    if known == [False, True]:
        result.machines_unknown = "baseline"
    elif known == [True, False]:
        result.machines_unknown = "current results"
    result.new_cells = [
        (c, current.cells[c].name) for c in current.cells if c not in baseline.cells
    ]
    result.removed_cells = [
        (c, baseline.cells[c].name) for c in baseline.cells if c not in current.cells
    ]
    result.checks = _checks(baseline, current, result, allow_removed, allow_changed_matrix)
    return result


def _checks(
    baseline: ResultSet,
    current: ResultSet,
    result: CompareResult,
    allow_removed: bool,
    allow_changed_matrix: bool,
) -> list[Refusal]:
    checks: list[Refusal] = []
    if result.compared == 0:
        checks.append(
            Refusal(
                "no_common_cell",
                f"no cell was compared: the baseline's {cells_text(len(baseline.cells))} and the "
                f"current results' {cells_text(len(current.cells))} share no cell id (another "
                "seed, another matrix, or a changed default gives other cell ids)",
            )
        )
    if result.removed_cells:
        n = len(result.removed_cells)
        checks.append(
            Refusal(
                "removed_cells",
                f"{n} cell{'s' if n != 1 else ''} of the baseline "
                f"{'are' if n != 1 else 'is'} missing from the current results",
                "--allow-removed",
                allow_removed,
            )
        )
    digests = (baseline.matrix_digest, current.matrix_digest)
    if None in digests or digests[0] != digests[1]:
        checks.append(
            Refusal(
                "changed_matrix",
                "the two sets come from different matrices: matrix digest "
                f"{_short(digests[0]) if digests[0] else 'not recorded'} "
                f"({baseline.matrix or 'unnamed'}) in the baseline, "
                f"{_short(digests[1]) if digests[1] else 'not recorded'} "
                f"({current.matrix or 'unnamed'}) in the current results",
                "--allow-changed-matrix",
                allow_changed_matrix,
            )
        )
    return checks
