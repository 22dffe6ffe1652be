"""The answer in the terminal (harness/report/terminal.py): what ``harness run`` and ``harness
report`` print at the end, per image the summary sentence and the verdict grid, then a legend.

Pure tests pin the plain rendering on hand-made cells (alignment, the legend, the no-cell mark,
the ASCII fallback, text from records made inert, rich drawing it as text, never markup); the
fake executor checks the CLI's stdout order in-process; one slow test trains the quick
placement matrix for real and reads what ``harness run`` and ``harness report`` print.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from test_report_summaries import cell

from harness.cli import main
from harness.executors.fake import FakeExecutor
from harness.matrix import load_matrix
from harness.report.grid import Grid
from harness.report.report_data import CellReport, Report
from harness.report.terminal import grid_lines, print_summary, render_plain
from harness.run.matrix_runner import RunConfig, run_matrix

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "placement-quick.yaml"
IMAGE = "repo/a:1"  # test_report_summaries.cell's image


class AsciiStream(io.StringIO):
    """A stream in an ASCII locale: what it cannot encode it cannot write."""

    encoding = "ascii"

    def write(self, text: str) -> int:
        text.encode("ascii")  # UnicodeEncodeError, as a real ASCII stream raises
        return super().write(text)


def report_of(cells: list[CellReport], summaries: dict[str, str] | None = None) -> Report:
    return Report(
        name="t",
        root=Path("/nowhere"),
        cells=cells,
        summaries=summaries or {},
        comparisons=[],
        costs=[],
        failures=[],
    )


def placements(**verdicts: str) -> list[CellReport]:
    return [cell(p, v, placement=p) for p, v in verdicts.items()]


def printed(report: Report, mode: str | None, stream: io.StringIO | None = None) -> str:
    out = stream or io.StringIO()
    print_summary(report, mode, out, "/r/report.md")
    return out.getvalue()


# --- plain ---------------------------------------------------------------------------------


def test_plain_grid_stacks_column_axes_and_centres_each_mark_under_its_column():
    """Column headers one axis per line, led by the axis's short name right-aligned over the
    row labels; the row axis names the labels; each mark centred under its column's values;
    ``·`` where the matrix has no cell."""
    grid = Grid(
        IMAGE,
        ("placement",),
        ("cudnn_deterministic", "deterministic_algorithms"),
        [("none",), ("before_model",)],
        [(True, "off"), (True, "warn"), (False, "warn")],
        {
            (0, 0): cell("a", "diverges"),
            (0, 1): cell("b", "diverges"),
            (1, 0): cell("c"),
            (1, 2): cell("d", "unknown"),
        },
        {},
    )
    assert grid_lines(grid) == [
        "         det  true  true  false",
        "         alg  off   warn  warn",
        "placement",
        "none           ✗     ✗      ·",
        "before_model   ✓     ·      ?",
    ]
    assert grid_lines(grid, ascii_only=True)[3:] == [
        "none           X     X      .",
        "before_model   o     .      ?",
    ]


def test_plain_summary_of_one_axis_sentence_then_grid_then_legend():
    """Placement down the side, one ``verdict`` column on the row header's line; the sentence
    wrapped to the width; the legend names only the marks that occur; the report's path last."""
    sentence = "On repo/a:1, 1 of 3 cells reproduce bit for bit. " + "More words here. " * 8
    report = report_of(
        placements(none="diverges", before_trainer="diverges", before_model="reproduces"),
        {IMAGE: sentence.strip()},
    )
    lines = render_plain(report, width=60, report_path="/r/report.md")
    blank = lines.index("")
    assert all(len(line) <= 60 for line in lines[:blank]) and blank > 1
    assert " ".join(lines[:blank]) == sentence.strip()
    assert lines[blank + 1 :] == [
        "placement       verdict",
        "none               ✗",
        "before_trainer     ✗",
        "before_model       ✓",
        "",
        "✓ reproduces  ✗ diverges",
        "report: /r/report.md",
    ]


def test_the_legend_says_what_the_no_cell_mark_and_unknown_mean_when_they_occur():
    """13 seeds x 2 cuDNN settings, one pair excluded: the grid puts the seeds across (13 rows
    would be too tall) and the excluded pair is ``·``, which the legend then explains."""
    cells = [
        cell(f"s{s}-{d}", "unknown" if s == 3 else "reproduces", seed=s, cudnn_deterministic=d)
        for s in range(13)
        for d in (True, False)
        if (s, d) != (12, False)
    ]
    text = printed(report_of(cells), "plain")
    legend = text.splitlines()[-2]
    assert legend == (
        "✓ reproduces  ? unknown (a run failed, is missing or corrupt)  · no such cell"
    )
    det_false = next(line for line in text.splitlines() if line.startswith("false"))
    assert det_false.split()[1:] == ["✓"] * 3 + ["?"] + ["✓"] * 8 + ["·"]


def test_an_ascii_stream_gets_ascii_marks_and_never_an_encoding_error():
    """An ASCII locale: the marks become o X ? . and what else it cannot encode becomes ?,
    in both modes; the end of a long run does not crash on a UnicodeEncodeError."""
    report = report_of(
        placements(none="diverges", before_trainer="unknown", before_model="reproduces"),
        {IMAGE: "On repo/a:1, |Δloss| × 2 · ok."},
    )
    plain = printed(report, "plain", AsciiStream())
    assert plain.splitlines()[2:6] == [
        "placement       verdict",
        "none               X",
        "before_trainer     ?",
        "before_model       o",
    ]
    assert "On repo/a:1, |?loss| ? 2 / ok." in plain
    assert "o reproduces  X diverges  ? unknown" in plain
    rich = printed(report, "rich", AsciiStream())
    assert "o reproduces" in rich and "|?loss|" in rich
    assert "✓" not in printed(report, "plain", AsciiStream())


HOSTILE_IMAGE = "repo/a\x1b]0;owned\x07:1\x1b[2J"


@pytest.mark.parametrize("mode", ["plain", "rich"])
def test_text_from_records_prints_no_escape_sequence_and_no_workflow_command(mode: str):
    """An image name, a sentence and a setting value carrying escape sequences print none, and
    no line (the sentence's wrap included) can start a GitHub workflow command."""
    cells = placements(none="diverges", before_model="reproduces")
    cells.append(cell("x", placement="\x1b[31m::error::red"))
    for c in cells:
        c.settings["image"] = HOSTILE_IMAGE
    sentence = "On the image, words " + "padding " * 6 + "::error::boom \x1b[1mbold\x1b[0m"
    text = printed(report_of(cells, {HOSTILE_IMAGE: sentence}), mode)
    assert "\x1b" not in text and "\x07" not in text
    assert "::error::boom bold" in text and "::error::red" in text  # the text stays, inert
    assert not any(line.lstrip().startswith("::") for line in text.splitlines())


def test_rich_draws_record_text_as_text_never_markup():
    """A value like ``[bold]x`` is a setting's value, shown as written."""
    cells = [cell("a", placement="[bold]x"), cell("b", "diverges", placement="[red]y")]
    text = printed(report_of(cells, {IMAGE: "On [i]repo[/i], see [link=x]here[/link]."}), "rich")
    assert "[bold]x" in text and "[red]y" in text
    assert "On [i]repo[/i], see [link=x]here[/link]." in text
    assert "✓ reproduces" in text and "✗ diverges" in text


def test_rich_keeps_headers_readable_when_the_grid_is_wide(monkeypatch: pytest.MonkeyPatch):
    """Headers ``det=true`` per line where they fit; where they do not, the values alone and
    the axes named in the title, never a header cut to ``de…``."""
    grid_cells = [
        cell(f"c{s}{d}{a}", seed=s, cudnn_deterministic=d, deterministic_algorithms=a)
        for s in range(7)
        for d in (True, False)
        for a in ("off", "warn")
    ]
    report = report_of(grid_cells)  # seeds down the side, det x alg across
    wide = printed(report, "rich")
    assert "det=false" in wide and "alg=warn" in wide and "…" not in wide
    monkeypatch.setenv("COLUMNS", "40")
    narrow = printed(report, "rich")
    assert "columns, top to bottom: det, alg" in narrow
    assert "false" in narrow and "warn" in narrow and "…" not in narrow


@pytest.fixture(autouse=True)
def _rich_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the stream is no terminal rich takes its width from COLUMNS (else from whatever
    terminal runs pytest): pinned, so that the output is the same everywhere."""
    monkeypatch.setenv("COLUMNS", "80")


def test_quiet_prints_nothing_and_no_mode_follows_the_stream():
    report = report_of(placements(none="diverges", before_model="reproduces"))
    assert printed(report, "quiet") == ""
    # a StringIO is no terminal: plain, exactly as render_plain says
    expected = render_plain(report, report_path="/r/report.md")
    assert printed(report, None) == "\n".join(expected) + "\n"


# --- the CLI, with the fake executor -------------------------------------------------------


def test_run_summary_keeps_the_report_it_wrote(tmp_path: Path):
    """``RunSummary.report`` is the report of the folder: the grid reads the fake runs'
    verdicts (none failed: unknown; before_trainer's repeats differ; before_model agrees)."""
    config = RunConfig(matrix=load_matrix(QUICK), out=tmp_path / "r", progress="quiet")
    fake = FakeExecutor(seconds=0.01, fail_placement="none", diverge_placement="before_trainer")
    summary = run_matrix(config, fake)
    assert summary.report is not None
    lines = render_plain(summary.report)
    assert lines[lines.index("placement       verdict") + 1 :][:3] == [
        "none               ?",
        "before_trainer     ✗",
        "before_model       ✓",
    ]
    assert tmp_path / "r" / "report.md" in summary.reports
    no_report = RunConfig(
        matrix=load_matrix(QUICK), out=tmp_path / "n", progress="quiet", formats=()
    )
    assert run_matrix(no_report, FakeExecutor(seconds=0.01)).report is None


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    out = tmp_path / "r"
    rc = main(["run", str(QUICK), "--out", str(out), "--executor", "fake", *args])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out.splitlines()


def test_run_prints_the_summary_before_the_lines_scripts_read(tmp_path: Path, capsys):
    out = tmp_path / "r"
    lines = _run(tmp_path, capsys, "--progress", "plain")
    assert lines[0].startswith("On local, all 3 cells reproduce bit for bit.")
    assert "placement       verdict" in lines and "before_model       ✓" in lines
    assert lines[-2:] == [f"report: {out / 'report.md'}", f"results: {out}"]
    # the legend, then the answer's lines (the fake executor's runs: every cell the same bits)
    answer = lines[lines.index("✓ reproduces") + 1 : -2]
    assert answer[0].startswith("What changes the bits: ")
    assert answer[1].startswith("Recipe: On local, placement=")


@pytest.mark.parametrize(
    ("args", "tail"),
    [
        (["--progress", "quiet"], ["report: {md}", "results: {out}"]),
        (["--progress", "plain", "--no-report"], ["results: {out}"]),
    ],
)
def test_run_prints_no_summary_when_quiet_or_without_a_report(
    tmp_path: Path, capsys, args: list[str], tail: list[str]
):
    out = tmp_path / "r"
    lines = _run(tmp_path, capsys, *args)
    assert lines == [t.format(md=out / "report.md", out=out) for t in tail]


def test_report_prints_the_summary_then_the_paths(tmp_path: Path, capsys):
    out = tmp_path / "r"
    _run(tmp_path, capsys, "--no-report", "--progress", "quiet")
    assert main(["report", str(out), "--no-plots", "--progress", "plain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("On local, all 3 cells reproduce")
    assert lines[-3:] == [str(out / f"report.{fmt}") for fmt in ("md", "json", "csv")]
    assert lines.index("✓ reproduces") < lines.index(
        next(line for line in lines if line.startswith("Recipe: On local"))
    )
    assert main(["report", str(out), "--no-plots", "--progress", "quiet"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        str(out / f"report.{fmt}") for fmt in ("md", "json", "csv")
    ]
    assert main(["report", str(out), "--progress", "loud"]) == 2
