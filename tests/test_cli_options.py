"""The command line's shared options are declared once (harness/cli/options.py), typer refuses
their bad values with the registries' own words, and the library never imports the command
line (issue 30)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from harness.cli import main
from harness.cli.options import EXECUTOR_CHOICES, SLURM_EXECUTOR_CHOICES
from harness.executors import EXECUTORS
from harness.report.exporters import EXPORTERS, REPORT_FORMATS
from harness.report.terminal import MODES

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "harness"
QUICK = ROOT / "examples" / "placement-quick.yaml"
#: The parameters whose option only harness/cli/options.py declares.
SHARED = {"executor", "data_dir", "python", "progress", "out", "formats"}


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_no_module_outside_the_command_line_imports_it() -> None:
    """harness/cli/ sits on top: a library module that imports it reaches up a layer."""
    offenders = []
    for path in HARNESS.rglob("*.py"):
        if path.is_relative_to(HARNESS / "cli"):
            continue
        for name in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if name == "harness.cli" or name.startswith("harness.cli."):
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders, offenders


def _option_params(path: Path) -> list[str]:
    """The parameters of ``path``'s functions declared as ``Annotated[..., typer.Option(...)]``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.FunctionDef):
            continue
        for arg in node.args.args + node.args.kwonlyargs:
            note = arg.annotation
            if not (isinstance(note, ast.Subscript) and isinstance(note.slice, ast.Tuple)):
                continue
            for meta in note.slice.elts[1:]:
                if isinstance(meta, ast.Call) and ast.unparse(meta.func) == "typer.Option":
                    found.append(f"{path.name}:{node.name}:{arg.arg}")
    return found


def test_no_verb_declares_a_shared_option_itself() -> None:
    spelled = [
        p
        for path in (HARNESS / "cli").glob("*.py")
        if path.name != "options.py"
        for p in _option_params(path)
        if p.rsplit(":", 1)[1] in SHARED
    ]
    assert not spelled, spelled


def test_the_report_formats_are_spelled_only_in_the_exporters_registry() -> None:
    spellings = ('"md", "json", "csv"', "'md', 'json', 'csv'")
    places = [
        str(path.relative_to(ROOT))
        for path in HARNESS.rglob("*.py")
        if any(s in path.read_text(encoding="utf-8") for s in spellings)
    ]
    assert places == [], places
    assert REPORT_FORMATS == tuple(EXPORTERS) == ("md", "json", "csv")


def test_the_choices_come_from_the_registries() -> None:
    assert EXECUTOR_CHOICES == ("auto", *EXECUTORS)
    assert set(SLURM_EXECUTOR_CHOICES) == {"auto", "local", "docker"}


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["run", str(QUICK), "--executor", "dokcer"],
         "error: unknown executor 'dokcer'\n  hint: did you mean 'docker'? available: "),
        (["diagnose", "nowhere", "--executor", "dokcer"], "did you mean 'docker'?"),
        (["run", str(QUICK), "--progress", "fancy"],
         "Invalid value for --progress: choose rich, plain or quiet"),
        (["report", "nowhere", "--progress", "fancy"], "choose rich, plain or quiet"),
        (["report", "nowhere", "--format", "mdd"],
         "error: unknown report format 'mdd'\n  hint: did you mean 'md'? available: md, json, csv"),
        (["submit", "slurm", str(QUICK), "--out", "nowhere", "--executor", "fake", "--dry-run"],
         "--executor (slurm.executor) 'fake': Input should be 'auto', 'local' or 'docker'"),
    ],
)  # fmt: skip
def test_a_bad_choice_is_refused_with_exit_2_and_the_registry_words(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = [str(tmp_path / a) if a == "nowhere" else a for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert words in captured.err, captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "nowhere").exists()


def test_help_shows_the_choices(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line per option: the choices are not cut
    for verb, shown in (
        (["run"], ["<auto|local|docker>", f"<{'|'.join(MODES)}>"]),
        (["report"], [f"<{'|'.join(REPORT_FORMATS)}>"]),
        (["submit", "slurm"], ["<auto|local|docker>"]),
    ):
        assert main([*verb, "--help"]) == 0
        text = capsys.readouterr().out
        assert all(s in text for s in shown), (verb, text)
