"""The shape of the library a reader of the tree sees (issue 30): packages for the layers, few
modules at the top, names that say what each file holds and are not repeated, and modules and
functions small enough to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "harness"

#: What lies at the top of the package: what is public, or shared by the host and the workload.
TOP_LEVEL = {
    "__init__.py",
    "doctor.py",  # `harness doctor`'s checks, also run by `harness run`
    "errors.py",
    "exit_codes.py",
    "lightning.py",  # ReproRecorder: public
    "mnist.py",  # the host and the workload image both read MNIST
    "subprocesses.py",  # one way to run a tool, for executors, Slurm and the slots alike
    "text.py",  # terminal-safe text for every command
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(p for p in LIBRARY.rglob("*.py") if "__pycache__" not in p.parts)


def test_only_shared_and_public_modules_lie_at_the_top() -> None:
    assert {p.name for p in LIBRARY.glob("*.py")} == TOP_LEVEL


def test_every_module_name_is_said_once() -> None:
    """A basename names one thing: ``record.py`` twice would make a reader open both. The
    command line's one module per verb (``cli/merge.py`` beside ``results/merge.py``) aside."""
    seen: dict[str, list[str]] = {}
    for path in _modules():
        if path.name in ("__init__.py", "__main__.py") or path.parent.name == "cli":
            continue
        seen.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}


def test_no_module_is_longer_than_a_sitting() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def _is_command(node: ast.FunctionDef) -> bool:
    """A typer command: its signature declares the options (typer.Option/Argument)."""
    return "typer." in ast.unparse(node.args)


def function_lengths(source: str) -> dict[str, int]:
    """Each function's lines; a typer command's without its signature (the options)."""
    lengths = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = node.body[0].lineno if _is_command(node) else node.lineno
            lengths[f"{node.name}:{node.lineno}"] = node.end_lineno - start + 1
    return lengths


def test_no_function_is_longer_than_a_screen() -> None:
    long = {
        f"{p.relative_to(ROOT)}:{name}": n
        for p in _modules()
        for name, n in function_lengths(p.read_text()).items()
        if n > MAX_FUNCTION_LINES
    }
    assert long == {}


def test_a_command_s_options_do_not_count_but_its_body_does() -> None:
    options = "\n".join(f"    o{i}: int = typer.Option(0)," for i in range(80))
    body = "\n".join(f"    x{i} = {i}" for i in range(10))
    command = f"def command(\n{options}\n) -> None:\n{body}\n"
    assert function_lengths(command) == {"command:1": 10}
    plain = f"def helper(\n{options.replace('typer.Option(0)', '0')}\n) -> None:\n{body}\n"
    assert function_lengths(plain) == {"helper:1": 92}


def test_no_source_file_is_ignored_by_git() -> None:
    """A new module in a folder that an ignore pattern matches (``results/`` once matched
    harness/results/) would work here and be missing from every clone."""
    import shutil
    import subprocess

    git = shutil.which("git")
    assert git is not None and (ROOT / ".git").exists(), "the tests run in a git checkout"
    ignored = subprocess.run(  # argv list
        [git, "ls-files", "--others", "--ignored", "--exclude-standard", "--", "harness", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    sources = [p for p in ignored if p.endswith((".py", ".md", ".yaml", ".json", ".npy", ".csv"))]
    assert sources == []
