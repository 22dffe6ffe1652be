"""A diagnosis's Markdown (diagnosis.md, and the report's Diagnoses section) from strings a
tampered results folder chose (issue 28, item 17): a ``|`` cannot shift the table's cells, a
``*`` cannot add bold text ("inputs equal"), and the code spans the sentences hold stay code.
Rendered with cmark-gfm, GitHub's renderer (tests/gfm.py)."""

from __future__ import annotations

import json
from pathlib import Path

from gfm import render, tables
from test_report import base_losses, make_cell, make_results, write_run

from harness.diagnose.words import inline, markdown
from harness.report import analyze
from harness.report.markdown import render_markdown

HEADER = ["step", "phase", "operation", "module", "inputs", "output", "inputs equal"]
EVIL_OP = {
    "step": 0,
    "phase": "backward | yes | **inputs equal**",
    "op": "aten.mm|default` **x**",
    "module": "model.3 | * | `y`",
    "inputs": [{"shape": [10, 32], "dtype": "float32|*b*"}],
    "outputs": [{"shape": [10, 64], "dtype": "float32"}],
    "inputs_equal": False,
    "max_abs_delta": 1.5e-9,
    "max_ulps": 3,
}
EVIL_SENTENCES = [
    "Its inputs were **not** equal | x | y | _z_ ~~w~~ [l](https://evil.example)",
    "The first operation is `aten.mm.default` and `a|b **c**`.",
    "line\n| step | phase |\n|---|---|\n| **inputs equal** | yes |",
]


def _check(md: str) -> str:
    html = render(md)
    for tag in ("<strong>", "<em>", "<del>", "<a href", "<img"):
        assert tag not in html, (tag, md)
    found = tables(html)
    assert len(found) == 1, md  # the sentences made no table of their own
    head, row = found[0]
    assert head[: len(HEADER)] == HEADER and len(head) == 9
    assert len(row) == 9, row  # no cell shifted
    assert row[1] == EVIL_OP["phase"]
    assert row[2] == "aten.mm|default' **x**"  # the backtick could not close the span
    assert row[3] == "model.3 | * | 'y'"
    assert row[6] == "no"
    return html


def test_the_diagnosis_md_keeps_its_cells_and_adds_no_markup():
    md = markdown("Diagnosis: *a* | b", EVIL_SENTENCES, EVIL_OP, "diagnosis-x")
    html = _check(md)
    assert "<h3>Diagnosis: *a* | b</h3>" in html
    assert "<code>aten.mm.default</code>" in html and "<code>a|b **c**</code>" in html
    assert "Its inputs were **not** equal | x | y | _z_ ~~w~~" in html


def test_the_reports_diagnoses_section_keeps_its_cells_and_adds_no_markup(tmp_path: Path):
    a, b = make_cell("one", threads=1), make_cell("two", threads=2)
    make_results(tmp_path, [a, b], repeats=1)
    for cell in (a, b):
        write_run(tmp_path, cell, 0, base_losses())
    folder = tmp_path / "diagnoses" / f"{a['id']}-0--{b['id']}-0"
    folder.mkdir(parents=True)
    data = {
        "title": "Diagnosis **bold**",
        "runs": [{"cell_id": a["id"]}, {"cell_id": b["id"]}],
        "sentences": EVIL_SENTENCES,
        "finding": {"kind": "operation", "op": EVIL_OP},
    }
    (folder / "diagnosis.json").write_text(json.dumps(data))
    md = render_markdown(analyze(tmp_path)).decode()
    section = md[md.index("## Diagnoses") :]
    section = section[: section.index("\nFiles: ")]
    _check(section)


def test_code_spans_stay_code_and_the_text_around_them_keeps_its_spaces():
    assert inline("a `x` b") == "a `x` b"
    assert inline("`p|q` and | r") == "`p|q` and \\| r"
    assert inline("unclosed ` *x*") == "unclosed \\` \\*x\\*"
    assert inline("`\x1b[31mred`") == "`red`"


def test_each_cell_and_each_string_in_detail():
    """The exact Markdown of the inert forms (mutation testing of words.py asks for them)."""
    from harness.diagnose.words import _plain, _span

    assert inline("x & y <b> \t z") == "x &amp; y &lt;b&gt; z"
    assert inline("see https://e.x/y") == "see https&#58;/&#47;e.x/y"
    assert inline("::error::x").startswith("\u200b")
    assert _plain("a|b *c* _d_ [e](f) #g +h !i ~j {k} \\l") == (
        "a\\|b \\*c\\* \\_d\\_ \\[e\\]\\(f\\) \\#g \\+h \\!i \\~j \\{k\\} \\\\l"
    )
    assert _span("") == "`-`" and _span("  a\n b  ") == "`a b`" and _span("a`b") == "`a'b`"
    assert _span("a|b") == "`a|b`" and _span("a|b", in_table=True) == "`a\\|b`"
    md = markdown("t", ["s"], {**EVIL_OP, "max_abs_delta": None, "max_ulps": None}, "x")
    row = tables(render(md))[0][1]
    assert row[0] == "0" and row[4] == "[10, 32] float32|*b*" and row[5] == "[10, 64] float32"
    assert (row[7], row[8]) == ("", "")
    md = markdown("t", [], {**EVIL_OP, "inputs_equal": None, "inputs": []}, "x")
    assert tables(render(md))[0][1][4:7] == ["none", "[10, 64] float32", "not logged"]
    full = tables(render(markdown("t", [], {**EVIL_OP, "inputs_equal": True}, "x")))[0][1]
    assert full[6:] == ["yes", "1.5e-09", "3"]
    assert markdown("t", [], None, "a<b").startswith('<a id="a&lt;b"></a>\n### t\n')
    assert "|" not in markdown("t", ["a"], None, "x")
