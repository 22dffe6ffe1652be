"""Check a matrix's ``entry`` once, before any run: ``python -m harness.workload.entry_check
ENTRY [CODE_DIR]`` finds the module and the function in the runs' own interpreter.

It reads the module's source first (a SyntaxError, a missing or misspelt function: told in a
fraction of a second, without importing torch); only where the source cannot tell (``import *``,
a module ``__getattr__``, a compiled module) it imports the module. An error the import itself
raises (a missing package, a bad import line) is then the first run's: it stops the matrix.

Why: a typo in the entry, or a SyntaxError in the user's module, would otherwise fail every
cell's first run after seconds of start-up, and arrive last, under a grid of unknown cells.
Exit 0 and nothing printed: the entry loads. Exit 3: the one line on stdout is the user's
error, with their file and line (SyntaxError, or the frame of their code an import raised in)
or, for a missing function, a "did you mean" over the module's functions.
"""

from __future__ import annotations

import ast
import difflib
import importlib.machinery
import inspect
import sys
import traceback
from pathlib import Path
from types import ModuleType

#: the exit code of an entry that does not load (anything else: the check itself failed)
EXIT_ENTRY_BROKEN = 3


def user_location(exc: BaseException, code_dir: Path | None) -> str | None:
    """``file:line`` of the user's code where ``exc`` arose: a SyntaxError's own place, else
    the innermost traceback frame in ``code_dir`` (any frame outside the harness and the
    libraries when no folder is given); None when none is known."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    found = None
    root = code_dir.resolve() if code_dir is not None else None
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if root is not None and root not in path.resolve().parents:
            continue
        if root is None and ("site-packages" in frame.filename or frame.filename.startswith("<")):
            continue
        found = f"{frame.filename}:{frame.lineno}"
    return found


def did_you_mean(module: ModuleType, name: str) -> str:
    """`` (did you mean `build`?)`` over the module's functions; the functions it has when no
    name is close; "" when it has none."""
    return suggest(name, [n for n, v in vars(module).items() if inspect.isfunction(v)])


def suggest(name: str, functions: list[str]) -> str:
    """`` (did you mean `build`?)`` over ``functions`` (private ones left out)."""
    functions = sorted(f for f in functions if not f.startswith("_"))
    close = difflib.get_close_matches(name, functions, n=3, cutoff=0.6)
    if close:
        return " (did you mean " + " or ".join(f"`{c}`" for c in close) + "?)"
    if functions:
        return " (its functions: " + ", ".join(f"`{f}`" for f in functions[:10]) + ")"
    return ""


def module_file(
    module_name: str, code_dir: Path | None, *, only_code_dir: bool = False
) -> Path | None:
    """The source file ``module_name`` would be imported from (``code_dir`` first, then
    ``sys.path`` unless ``only_code_dir``), found without importing anything; None when not a
    plain ``.py`` found."""
    path = [str(code_dir)] if code_dir is not None else []
    if not only_code_dir:
        path += sys.path
    spec = None
    for part in module_name.split("."):
        spec = importlib.machinery.PathFinder.find_spec(part, path)
        if spec is None:
            return None
        path = list(spec.submodule_search_locations or [])
    origin = spec.origin if spec is not None else None
    return Path(origin) if origin and origin.endswith(".py") else None


def _top_level(body: list[ast.stmt]) -> tuple[set[str], list[str], bool]:
    """The names a module's top level binds, its functions, and whether it can bind names the
    source does not show (``import *``, a module ``__getattr__``, ``globals()``)."""
    names: set[str] = set()
    functions: list[str] = []
    dynamic = False
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
            functions.append(node.name)
            dynamic = dynamic or node.name == "__getattr__"
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                dynamic = dynamic or alias.name == "*"
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
            inner = [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
            for handler in getattr(node, "handlers", []):
                inner += handler.body
            more, funcs, dyn = _top_level(inner)
            names |= more
            functions += funcs
            dynamic = dynamic or dyn
        else:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    names.add(sub.id)
                if isinstance(sub, ast.Name) and sub.id in ("globals", "setattr"):
                    dynamic = True
    return names, functions, dynamic


def static_check(entry: str, code_dir: Path | None) -> tuple[bool, str | None]:
    """Check ``entry`` from its module's source, importing nothing (fast: no torch): (True, None)
    when the function is there, (True, the error) for a SyntaxError or a missing name, (False,
    None) when the source cannot tell (then ``check`` imports it)."""
    module_name, _, attr = entry.partition(":")
    if not module_name or not attr or not attr.isidentifier():
        return False, None
    try:
        path = module_file(module_name, code_dir)
        if path is None:
            return False, None
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        return True, (
            f"{exc.filename}:{exc.lineno}: cannot import the workload entry {entry!r}: "
            f"SyntaxError: {exc.msg}"
        )
    except (OSError, ImportError, ValueError):
        return False, None
    names, functions, dynamic = _top_level(tree.body)
    if attr in names:
        return True, None
    if dynamic:
        return False, None
    return True, missing_function(entry, path, functions)


def missing_function(entry: str, path: Path, functions: list[str]) -> str:
    """The one line that says ``entry``'s function is not in its module's source ``path``."""
    module_name, _, attr = entry.partition(":")
    return (
        f"workload entry {entry!r}: module `{module_name}` ({path}) has no attribute "
        f"`{attr}`{suggest(attr, functions)}; define `def {attr}(settings): ...` there, or fix "
        "the name after the colon"
    )


def container_check(entry: str, code_dir: Path) -> str | None:
    """The host's check of a container cell's ``entry``, from the source in ``code_dir`` alone:
    a missing or misspelt function, told before any container starts. The container's Python
    may be newer than the host's, so a module the host cannot parse, one found elsewhere (an
    installed requirement) or one whose names the source cannot show is left to the first run
    (None), as is an entry that loads."""
    module_name, _, attr = entry.partition(":")
    if not module_name or not attr or not attr.isidentifier():
        return None
    try:
        path = module_file(module_name, code_dir, only_code_dir=True)
        if path is None:
            return None
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, ImportError, SyntaxError, ValueError):
        return None
    names, functions, dynamic = _top_level(tree.body)
    if attr in names or dynamic:
        return None
    return missing_function(entry, path, functions)


def check(entry: str, code_dir: Path | None) -> str | None:
    """None when ``entry`` loads; else the user's error in one line, located."""
    from harness.workload.entry import WorkloadError, load_entry

    try:
        load_entry(entry, code_dir)
    except WorkloadError as exc:
        cause = exc.__cause__
        where = user_location(cause, code_dir) if cause is not None else None
        message = str(exc).replace(" (the traceback is in run.log)", "")
        return f"{where}: {message}" if where else message
    return None


def main(argv: list[str]) -> int:
    entry = argv[0]
    code_dir = Path(argv[1]) if len(argv) > 1 and argv[1] else None
    if code_dir is not None:
        sys.path.insert(0, str(code_dir))
    decided, problem = static_check(entry, code_dir)
    if not decided:
        problem = check(entry, code_dir)
    if problem is None:
        return 0
    print(problem, flush=True)
    return EXIT_ENTRY_BROKEN


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
