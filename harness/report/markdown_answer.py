"""The answer in the Markdown report (harness/report/answer_data.py): a paragraph on the first
screen (what changes the bits, the recipe per image, the controls), then, folded right under
the first screen, the table of settings against the bits, each image's recipe as code, the
noise of diverging cells against the seeds', and the controls."""

from __future__ import annotations

from typing import Any

from harness.report.answer_data import Answer, CellNoise, Recipe, SettingEffect, Spread
from harness.report.answer_text import lead_lines
from harness.report.markdown_blocks import escape, fence, fold, num, table_lines
from harness.report.report_data import Report
from harness.report.summaries import label

#: A noise test's verdict in the table's words (report.json keeps the full sentence).
VERDICT_WORDS = {
    "noise_smaller": "smaller than a change of seed",
    "noise_larger": "**larger** than a change of seed",
    "same_spread": "not told apart from a change of seed",
    "not_enough_runs": "not enough runs",
    "no_seed_axis": "no seed axis",
    "no_spread": "no spread in this metric",
}


def answer_lead(report: Report) -> list[str]:
    """The first screen's paragraph (one, so that the screen stays short however many images
    and trainings the matrix has): what changes the bits, each recipe, each control; the
    details are folded right below."""
    lines = lead_lines(report.answer)
    if not lines:
        return []
    return [f"**The answer** (details folded below): {escape(' '.join(lines))}", ""]


def answer_section(report: Report) -> list[str]:
    """The answer's details, folded: empty where the report has nothing to say."""
    answer = report.answer
    if not (answer.bit_effects or answer.recipes or answer.noise or answer.controls):
        return []
    body = _bits_table(answer.bit_effects)
    body += _recipes(answer.recipes)
    body += _noise(answer)
    body += _controls(answer)
    return fold("The answer: what changes the bits, the recipe per image, the noise", body)


def _bits_table(effects: list[SettingEffect]) -> list[str]:
    out = [
        "### What changes the bits",
        "",
        "Over the pairs of cells that differ in one setting only, both reproducing on one "
        "machine: are their trajectories equal? Pairs that ran on different machines are "
        "counted apart (the machine, not the setting, may change the bits).",
        "",
    ]
    if not effects:
        return out + ["No setting varies between cells.", ""]
    body = [
        [
            escape(label(e.setting)),
            escape(e.sentence.removeprefix(f"{label(e.setting)}: ")),
            f"{e.changed} of {e.pairs}",
            num(e.first_step, "d"),
            escape(", ".join(f"{i.image}: {i.changed}/{i.pairs}" for i in e.by_image)) or "—",
            f"{e.other_machine_changed} of {e.other_machine_pairs}"
            if e.other_machine_pairs
            else "—",
        ]
        for e in effects
    ]
    header = ["setting", "answer", "changed pairs", "first step", "per image", "across machines"]
    return [*out, *table_lines(header, body), ""]


def _recipes(recipes: list[Recipe]) -> list[str]:
    out = ["### The recipe per image", ""]
    if not recipes:
        return out + ["No image has a cell with a verdict.", ""]
    for r in recipes:
        out += [escape(r.sentence), ""]
        if r.required:
            needs = "; ".join(
                f"{label(q.setting)}={_value(q.value)} ({' and '.join(q.broken_by)} "
                f"{'diverges' if len(q.broken_by) == 1 else 'diverge'} with it flipped alone)"
                for q in r.required
            )
            out += [f"Needed, as the matrix shows: {escape(needs)}.", ""]
        if r.code:
            out += [fence(r.code.rstrip("\n"), "python"), ""]
    return out


def _value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _spread(s: Spread | None, fmt: str) -> str:
    if s is None:
        return "—"
    std = f", std {s.std:{fmt}}" if s.std is not None else ""
    return f"{s.n} runs: {s.min:{fmt}} to {s.max:{fmt}}{std}"


def _noise(answer: Answer) -> list[str]:
    out = [
        "### Does the noise matter",
        "",
        f"For each cell whose repeats differ: the spread of its final validation loss and "
        f"accuracy over its repeats, beside the spread over seeds (the cells that differ from "
        f"it in `seed` alone, one run each). The test is the two-sided F-test of equal "
        f"variances at {answer.alpha:g}; it needs {answer.min_runs} runs on each side.",
        "",
    ]
    if not answer.noise:
        return out + ["No cell's repeats differ: there is no noise to weigh.", ""]
    body = [row for cell in answer.noise for row in _noise_rows(cell)]
    header = ["cell", "metric", "repeats", "seeds", "F", "p", "runs a side", "answer"]
    out += [*table_lines(header, body), ""]
    notes = [
        '"runs a side": how many runs on each side the observed ratio would need to be told '
        "apart at the level."
    ]
    if any(t.verdict == "no_seed_axis" for cell in answer.noise for t in cell.tests):
        notes.append(
            "Where there is no seed axis, give the matrix one (e.g. `seed: [1, 2, 3]`) to weigh "
            "the noise against a change of seed."
        )
    out += [" ".join(notes), ""]
    return out


def _noise_rows(cell: CellNoise) -> list[list[str]]:
    rows = []
    for t in cell.tests:
        fmt = ".4f" if t.metric == "val_acc" else ".6f"
        rows.append(
            [
                escape(cell.cell),
                escape(t.metric),
                escape(_spread(t.noise, fmt)),
                escape(_spread(t.seeds, fmt)),
                num(t.statistic, ".3g"),
                num(t.p_value, ".3g"),
                num(t.needed_runs, "d"),
                VERDICT_WORDS.get(t.verdict, escape(t.verdict)),
            ]
        )
    return rows


def _controls(answer: Answer) -> list[str]:
    out = ["### Controls", ""]
    if not answer.controls:
        return out + [
            "No control cell: `control: true` in the matrix, or `harness run --control`, adds "
            "one per image that must diverge, so that a `reproduces` shows the harness could "
            "see a difference there.",
            "",
        ]
    return out + [f"- {escape(c.sentence)}" for c in answer.controls] + [""]
