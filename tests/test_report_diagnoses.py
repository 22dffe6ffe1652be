"""The report's Diagnoses section, from diagnosis.json files anything could have written: each
compared cell's row links to it, its text is inert, and what is not a diagnosis is left out."""

from __future__ import annotations

import json
from pathlib import Path

from gfm import render
from test_report import base_losses, make_cell, make_results, write_run

from harness.report import analyze
from harness.report.markdown import render_markdown


def _diagnosis(root: Path, name: str, cells: list[str], **changes) -> None:
    folder = root / "diagnoses" / name
    folder.mkdir(parents=True)
    data = {
        "title": "Diagnosis: a and b",
        "runs": [{"cell_id": c} for c in cells],
        "sentences": ["The first operation whose output bits differ is `aten.mm.default`."],
        "finding": {
            "kind": "operation",
            "op": {"step": 0, "phase": "backward", "op": "aten.mm.default", "module": "model.3",
                   "inputs": [{"shape": [10, 32], "dtype": "float32"}],
                   "outputs": [{"shape": [10, 64], "dtype": "float32"}],
                   "inputs_equal": True, "max_abs_delta": 1.5e-9, "max_ulps": 3},
        },
        **changes,
    }  # fmt: skip
    (folder / "diagnosis.json").write_text(json.dumps(data))


def _results(tmp_path: Path) -> tuple[dict, dict]:
    a, b = make_cell("one", threads=1), make_cell("two", threads=2)
    make_results(tmp_path, [a, b], repeats=1)
    for cell in (a, b):
        write_run(tmp_path, cell, 0, base_losses())
    return a, b


def test_a_diagnosis_is_a_section_linked_from_both_cells(tmp_path: Path):
    a, b = _results(tmp_path)
    name = f"{a['id']}-0--{b['id']}-0"
    _diagnosis(tmp_path, name, [a["id"], b["id"]])
    report = analyze(tmp_path)
    assert [d.name for d in report.diagnoses] == [name]
    md = render_markdown(report).decode()
    assert md.count(f"([diagnosis](#diagnosis-{name}))") == 2
    html = render(md)
    assert f'<a id="diagnosis-{name}"></a>' in html
    assert "<code>aten.mm.default</code>" in html
    assert "<td>backward</td>" in html and "<td>yes</td>" in html


def test_diagnosis_text_is_inert_and_bad_files_are_left_out(tmp_path: Path):
    a, b = _results(tmp_path)
    _diagnosis(
        tmp_path,
        f"{a['id']}-0--{b['id']}-1",
        [a["id"], b["id"]],
        title="<script>alert(1)</script> http://evil.example",
        sentences=["[click](https://evil.example) <img src=x>"],
    )
    _diagnosis(tmp_path, "not-a-diagnosis-name", [a["id"]])
    broken = tmp_path / "diagnoses" / f"{a['id']}-0--{b['id']}-2"
    broken.mkdir()
    (broken / "diagnosis.json").write_text("{not json")
    report = analyze(tmp_path)
    assert len(report.diagnoses) == 1
    html = render(render_markdown(report).decode())
    assert "<script>" not in html and "<img" not in html
    assert 'href="https://evil' not in html and 'href="http://evil' not in html


def test_the_repeats_compared_by_default_skip_a_failed_one(tmp_path: Path):
    """Repeat 0 against the first other repeat that finished and differs from it."""
    from harness.diagnose.run_pair import pick_runs

    cell = make_cell("odd")
    make_results(tmp_path, [cell], repeats=3)
    write_run(tmp_path, cell, 0, base_losses())
    write_run(tmp_path, cell, 1, None, status="failed", error={"type": "x", "message": "y"})
    write_run(tmp_path, cell, 2, base_losses(seed=1))
    a, b = pick_runs(tmp_path, cell="odd")
    assert (a.repeat, b.repeat) == (0, 2)
