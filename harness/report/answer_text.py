"""The answer in a few plain lines, one wording for the Markdown's first screen and the
terminal summary that ``harness run`` and ``harness report`` print."""

from __future__ import annotations

from harness.report.answer_data import Answer, SettingEffect
from harness.report.summaries import label


def lead_lines(answer: Answer) -> list[str]:
    """The answer in a few plain lines (the Markdown's first screen and the terminal)."""
    lines = []
    bits = bits_line(answer.bit_effects)
    if bits:
        lines.append(bits)
    lines += [f"Recipe: {r.sentence}" for r in answer.recipes if r.sentence]
    lines += [f"Control: {c.sentence}" for c in answer.controls if c.sentence]
    return lines


def bits_line(effects: list[SettingEffect]) -> str | None:
    """``What changes the bits: threads (2 of 2 pairs, first at step 0); never: model``."""
    if not effects:
        return None
    changed = [
        f"{label(e.setting)} ({e.changed} of {e.pairs} pairs"
        + (f", first at step {e.first_step}" if e.first_step is not None else "")
        + (", on some images only" if e.effect == "one_image" else "")
        + ")"
        for e in effects
        if e.changed
    ]
    never = [label(e.setting) for e in effects if e.effect == "never"]
    unjudged = [label(e.setting) for e in effects if e.effect == "no_pairs"]
    parts = ["; ".join(changed)] if changed else []
    if never:
        parts.append(f"never: {', '.join(never)}")
    if not changed and never:
        parts[0] = f"none of the settings ({', '.join(never)})"
    if unjudged:
        parts.append(f"no two reproducing cells to judge {', '.join(unjudged)} by")
    return "What changes the bits: " + "; ".join(parts) + "."
