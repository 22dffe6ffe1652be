"""The control cells: one per image that must not reproduce (``control: true``, ``harness run
--control``: the image's first cell with ``placement: none``, harness/matrix/cells.py).

Why: a cell reproduces when its repeats are bit-identical; that is only evidence if the harness
would have seen them differ. The control sets the seed nowhere, so its repeats must differ. When
it diverges, the harness sees a difference on that image. When it reproduces, it does not (a
build function that seeds torch itself, a run that reads no random numbers, ...): no
``reproduces`` verdict on that image says more than the control did, so each one is withheld
(made ``unknown``), and so is the image's recipe.
"""

from __future__ import annotations

from harness.report.answer_data import ControlResult
from harness.report.report_data import DIVERGES, REPRODUCES, UNKNOWN, CellReport


def withheld_because(image: str) -> str:
    """Why a cell on ``image`` has no verdict when the image's control reproduced."""
    return f"the control reproduced: the harness could not see a difference on {image}"


def _image(cell: CellReport) -> str:
    return str(cell.settings.get("image", "local"))


def _result(image: str, control: CellReport) -> ControlResult:
    """What one control cell shows, before any verdict is withheld."""
    if control.verdict == DIVERGES:
        first = control.first_divergence
        where = (
            f" (first at step {first.step})"
            if first is not None
            else " (its final weights differ)"
            if control.final_equal is False
            else ""
        )
        sentence = (
            f"On {image}, the control cell {control.name} diverges, as it must{where}: the "
            "harness sees a difference there."
        )
        return ControlResult(
            image=image, cell=control.name, verdict=str(DIVERGES), seen=True, sentence=sentence
        )
    if control.verdict == REPRODUCES:
        sentence = (
            f"On {image}, the control cell {control.name} reproduces, but it must not: the "
            "harness could not see a difference there, so no cell on it is said to reproduce."
        )
        return ControlResult(
            image=image, cell=control.name, verdict=str(REPRODUCES), seen=False, sentence=sentence
        )
    sentence = (
        f"On {image}, the control cell {control.name} has no verdict "
        f"({control.unknown_because}): whether the harness sees a difference there could not be "
        "checked."
    )
    return ControlResult(
        image=image, cell=control.name, verdict=str(control.verdict), seen=None, sentence=sentence
    )


def _withhold(cell: CellReport, reason: str) -> None:
    """Take a ``reproduces`` verdict back: ``unknown``, because of the control."""
    cell.verdict = UNKNOWN
    cell.reproducible = None
    cell.unknown_because = reason
    cell.detail = f"no verdict: {reason} (its repeats are bit-identical)"


def apply_controls(cells: list[CellReport]) -> tuple[list[ControlResult], dict[str, str]]:
    """Judge the control cells and withhold what a reproducing one makes unknowable.

    Returns one ``ControlResult`` per control cell (in cell order; ``verdict`` is the
    control's own, before any is withheld) and the images whose control reproduced, each with
    the reason: there every ``reproduces`` cell, the control included, becomes ``unknown``
    (``cells`` are changed in place) and no recipe is given. Call it once, after the verdicts:
    a second call finds the withheld controls without a verdict."""
    results = [_result(_image(c), c) for c in cells if c.control]
    withheld = {r.image: withheld_because(r.image) for r in results if r.seen is False}
    for cell in cells:
        reason = withheld.get(_image(cell))
        if reason is not None and cell.verdict == REPRODUCES:
            _withhold(cell, reason)
    return results, withheld
