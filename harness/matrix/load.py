"""Reading a matrix file: YAML, validation with file:line messages, the checks on the whole.

Every problem is a MatrixError that names the file, the line and the fix.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import reprlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.contract.settings import BUILTIN_ONLY, BY_NAME
from harness.errors import MatrixError
from harness.matrix.cells import Cell, LoadedMatrix, canonical_json, expand, make_cells
from harness.matrix.models import Axes, Matrix, Patch, RunBlock, SlurmBlock, WorkloadBlock


def load_matrix(
    path: str | Path, *, code_dir: Path | None = None, check_code_dir: bool = True
) -> LoadedMatrix:
    """Read, validate and expand a matrix file; every problem is a MatrixError with file:line.

    ``code_dir`` and ``check_code_dir``: as ``parse_matrix`` takes them."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MatrixError(
            f"{path}: cannot read the matrix file ({exc.strerror})",
            "give the path of a matrix YAML file, e.g. examples/placement-quick.yaml",
        ) from exc
    return parse_matrix(text, path, code_dir=code_dir, check_code_dir=check_code_dir)


class _Refused(Exception):
    """Something the matrix loader will not read, at a line (becomes a MatrixError)."""

    def __init__(self, line: int, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.line, self.problem, self.fix = line, problem, fix


ANCHOR_FIX = (
    "write the values out in full where the alias is used: a matrix file has no anchors (&name) "
    "or aliases (*name), so a few lines of YAML can never expand into billions of values"
)


class _Loader(yaml.SafeLoader):
    """The safe loader, without anchors and aliases (docs/matrix.md, "Validation").

    Ten levels of ten aliases make 10^10 values out of eleven lines, and every later walk
    over the data (validation, duplicate keys) would take minutes; a matrix has no use for
    them, so the first anchor or alias is refused at its line, before anything is built.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            kind = "alias" if isinstance(event, yaml.AliasEvent) else "anchor"
            sign = "*" if kind == "alias" else "&"
            raise _Refused(
                event.start_mark.line + 1,
                f"YAML {kind} {sign}{event.anchor}: anchors and aliases are not allowed",
                ANCHOR_FIX,
            )
        return super().compose_node(parent, index)

    def construct_yaml_int(self, node: Any) -> Any:
        try:
            return super().construct_yaml_int(node)
        except ValueError as exc:  # more digits than Python converts (sys.int_info)
            raise _Refused(
                node.start_mark.line + 1,
                f"the number {reprlib.repr(node.value)} is too long to read",
                "see docs/matrix.md for each key's range",
            ) from exc


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _read_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """The composed node tree (for line numbers) and the data built from that same tree."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    finally:
        loader.dispose()


def parse_matrix(
    text: str, path: Path, *, code_dir: Path | None = None, check_code_dir: bool = True
) -> LoadedMatrix:
    """Validate and expand a matrix given as text; ``path`` names it in messages.

    ``workload.path`` is resolved against the folder of ``path`` (the matrix file) unless
    ``code_dir`` says where it is: the absolute folder a results folder's manifest recorded
    (its ``matrix.yaml`` is a copy, whose own folder is not the user's). With
    ``check_code_dir`` (the default) it must be an existing folder.
    """
    try:
        root, data = _read_yaml(text)
    except _Refused as exc:
        raise MatrixError(f"{path}:{exc.line}: {exc.problem}", exc.fix) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            line = mark.line + 1
        else:  # a ReaderError (a control character, bad UTF-8) gives a position, not a mark
            line = text.count("\n", 0, getattr(exc, "position", 0) or 0) + 1
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
        raise MatrixError(
            f"{path}:{line}: YAML syntax error: {problem}",
            "check the indentation and quoting on that line",
        ) from exc
    except RecursionError as exc:
        raise MatrixError(
            f"{path}:1: the YAML is nested too deeply to read",
            "a matrix is a few levels deep: name, run, axes, include, exclude",
        ) from exc
    if not isinstance(data, dict):
        raise MatrixError(
            f"{path}:1: the matrix must be a mapping with name, run and axes",
            "start from examples/placement-quick.yaml",
        )
    _check_duplicate_keys(root, path)
    try:
        model = Matrix.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, root, path, data) from exc
    _check_product(model, root, path)
    combos = expand(model)
    _check_builtin_only(model, combos, root, path)
    if not combos:
        raise MatrixError(
            f"{path}:1: the matrix has no cells",
            "give at least one axis, or include entries, and check exclude",
        )
    total = len(combos) * model.run.repeats
    if total > model.run.max_runs:  # before the cells are built: that is the slow part
        raise MatrixError(
            f"{_where(path, root, ('run', 'repeats'))}: the matrix has {len(combos)} cells x "
            f"{model.run.repeats} repeats = {total} runs, more than run.max_runs "
            f"({model.run.max_runs})",
            f"if you mean it, raise it: run: {{max_runs: {total}}}",
        )
    try:
        cells = make_cells(model, combos)
    except ValidationError as exc:  # a combination the parts allowed but the whole does not
        raise MatrixError(
            f"{_where(path, root, ('axes',))}: a cell's settings are invalid: "
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
            "see docs/matrix.md for each key's type",
        ) from exc
    _check_duplicates(model, cells, combos, root, path)
    _check_workload(model, cells, root, path)
    found = _code_dir(model, root, path, code_dir, check_code_dir)
    return LoadedMatrix(path, text, model, cells, code_dir=found)


def _check_builtin_only(
    model: Any, combos: list[dict[str, Any]], root: yaml.Node | None, path: Path
) -> None:
    """A cell with an ``entry`` runs the user's build function, which never reads the built-in
    experiment's settings (``hidden_size``, ``model`` ...): cells that differ only there would
    train identically, so such a setting is refused where it reaches one."""
    axes = model.axes.model_dump(exclude_unset=True)
    includes = [i.model_dump(exclude_unset=True) for i in model.include]
    for combo in combos:
        if combo.get("entry", model.workload.entry) is None:
            continue
        for name in sorted(BUILTIN_ONLY & combo.keys()):
            loc: tuple[Any, ...] = ("axes", name)
            if axes.get(name) is None:
                j = next((j for j, e in enumerate(includes) if name in e), 0)
                loc = ("include", j, name)
            raise MatrixError(
                f"{_where(path, root, loc)}: {name} is a setting of the built-in MNIST "
                f"experiment only; a cell with an entry ({combo.get('entry', model.workload.entry)}"
                ") runs your build function, which never reads it",
                f"give your own knobs in params, e.g. axes: {{params: [{{{name}: 16}}, "
                f"{{{name}: 32}}]}} (your function reads settings.params[{name!r}]); "
                "or remove the entry to run the built-in experiment",
            )


def _check_workload(model: Any, cells: list[Cell], root: yaml.Node | None, path: Path) -> None:
    """``workload.path`` and ``requirements`` serve a build function: without one (no
    ``entry`` in ``workload:``, an axis or an include entry) they would be silently ignored."""
    if any(c.settings.get("entry") is not None for c in cells):
        return
    for key in ("path", "requirements"):
        if getattr(model.workload, key):
            raise MatrixError(
                f"{_where(path, root, ('workload', key))}: workload.{key} is given but no cell "
                "runs your own training (no entry), so it would be ignored",
                "add entry: package.module:function to workload: (your build function), "
                f"or remove workload.{key}",
            )


def _code_dir(
    model: Any, root: yaml.Node | None, path: Path, code_dir: Path | None, check: bool
) -> Path | None:
    """The absolute folder of ``workload.path`` (None without one); see ``parse_matrix``."""
    given = model.workload.path
    if given is None:
        return None
    folder = Path(code_dir) if code_dir is not None else Path(path).parent / given
    folder = Path(os.path.abspath(folder))  # no resolve(): a link the user named stays named
    if check and not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise MatrixError(
            f"{_where(path, root, ('workload', 'path'))}: workload.path {given!r} ({folder}) "
            f"{what}",
            "give the folder that holds your code (the package your entry names), relative to "
            "the matrix file",
        )
    return folder


#: The axes may multiply to this many times run.max_runs before exclude is applied; beyond it
#: the matrix is refused before it is expanded (expanding 10^10 combinations never ends).
PRODUCT_SLACK = 10


def _check_product(model: Any, root: yaml.Node | None, path: Path) -> None:
    axes = [v for v in model.axes.model_dump(exclude_unset=True).values() if v is not None]
    combos = math.prod(len(v) for v in axes) if axes else 0
    bound = (combos + len(model.include)) * model.run.repeats
    if bound > PRODUCT_SLACK * model.run.max_runs:
        raise MatrixError(
            f"{_where(path, root, ('axes',))}: the axes multiply to {combos} combinations "
            f"(x {model.run.repeats} repeats), far more than run.max_runs "
            f"({model.run.max_runs}) even before exclude",
            f"shorten the axes; if you mean it, raise it: run: {{max_runs: {bound}}}",
        )


def _node_at(root: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """The deepest YAML node on the path ``loc`` (pydantic's error location); a key's own node
    when the path ends at a mapping key, so an unknown key points at its own line."""
    node = root
    for depth, part in enumerate(loc):
        last = depth == len(loc) - 1
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == part), None)
            if pair is None:
                return node
            node = pair[0] if last else pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _where(path: Path, root: yaml.Node | None, loc: tuple[Any, ...]) -> str:
    node = _node_at(root, loc)
    line = node.start_mark.line + 1 if node is not None else 1
    return f"{path}:{line}"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    if not loc:
        return list(Matrix.model_fields)
    top = loc[0]
    if top == "run":
        return list(RunBlock.model_fields)
    if top == "axes":
        return list(Axes.model_fields)
    if top == "workload":
        return list(WorkloadBlock.model_fields)
    if top == "slurm":
        return list(SlurmBlock.model_fields)
    return list(Patch.model_fields)


def _choices(field: str) -> str | None:
    setting = BY_NAME.get(field)
    if setting is None or setting.choices is None or setting.kind == "bool":
        return None
    return ", ".join(repr(v) for v in setting.choices)


#: Words users write for a value under another name (``accelerator: cuda``).
VALUE_ALIASES = {"accelerator": {"cuda": "gpu", "gpus": "gpu", "mps": "gpu", "host": "cpu"}}


def _near_choice(field: str, given: Any) -> Any:
    """The choice of ``field`` a wrong value most likely meant (``before-model`` ->
    ``before_model``, ``cuda`` -> ``gpu``), or None."""
    setting = BY_NAME.get(field)
    if setting is None or setting.choices is None or not isinstance(given, str):
        return None
    word = given.strip().lower().replace("-", "_").replace(" ", "_")
    alias = VALUE_ALIASES.get(field, {}).get(word)
    if alias is not None:
        return alias
    texts = {str(c): c for c in setting.choices}
    close = difflib.get_close_matches(word, list(texts), n=1, cutoff=0.75)
    return texts[close[0]] if close else None


def _has_entry(data: dict[str, Any]) -> bool:
    """Whether the (unvalidated) matrix names a build function in ``workload.entry``."""
    workload = data.get("workload")
    return isinstance(workload, dict) and workload.get("entry") is not None


def _patterned(field: str) -> str:
    """What a setting with a ``pattern`` takes, in words ("" for any other field); a value
    that starts with ``:`` must be quoted in a YAML flow list (``[":4096:8"]``)."""
    setting = BY_NAME.get(field)
    if setting is None or setting.pattern is None:
        return ""
    return setting.describe().replace("`", "") + ' (quote them: [":4096:8"])'


def _validation_error(
    exc: ValidationError, root: yaml.Node | None, path: Path, data: dict[str, Any]
) -> MatrixError:
    lines = []
    hints = []
    for err in exc.errors():
        raw = tuple(err["loc"])
        kind = err["type"]
        # Drop pydantic's own type tags (``list[...]``) from the path, never the user's key.
        keep_last = kind == "extra_forbidden" and bool(raw)
        inner = raw[:-1] if keep_last else raw
        loc = tuple(p for p in inner if not (isinstance(p, str) and "[" in p))
        loc += raw[-1:] if keep_last else ()
        dotted = ".".join(str(p) for p in loc)
        where = _where(path, root, loc)
        field = next((p for p in reversed(loc) if isinstance(p, str)), "")
        if kind == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            own = _has_entry(data) and loc[:1] in (("axes",), ("include",), ("exclude",))
            if own:  # the user's build function never reads the built-in's settings
                allowed = [k for k in allowed if k not in BUILTIN_ONLY]
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            parent = ".".join(map(str, loc[:-1])) or "the top level"
            lines.append(f"{where}: unknown key {loc[-1]!r} in {parent}")
            hints.append(
                (f"did you mean {close[0]!r}? " if close else "")
                + f"allowed here: {', '.join(allowed)}"
                + (
                    f"; your build function's own knobs go in params, e.g. params: "
                    f"[{{{loc[-1]}: ...}}]"
                    if own and not close
                    else ""
                )
            )
        elif kind == "too_short":
            lines.append(f"{where}: {dotted} is empty")
            hints.append(f"give {field} at least one value, e.g. {field}: [...], or remove it")
        elif kind == "missing":
            lines.append(f"{where}: {dotted} is missing")
            hints.append(f"add {field}: ... (see docs/matrix.md)")
        else:
            got = reprlib.repr(err.get("input"))
            patterned = _patterned(field)
            if kind == "string_pattern_mismatch" and field == "image":
                lines.append(f"{where}: {dotted}: not a Docker image reference (got {got})")
            elif kind == "string_pattern_mismatch" and patterned:
                lines.append(f"{where}: {dotted}: not a value {field} takes (got {got})")
            else:
                lines.append(f"{where}: {dotted}: {err['msg']} (got {got})")
            choices = _choices(field)
            if kind == "string_pattern_mismatch" and field == "image":
                hints.append(
                    "image takes local or a reference like nvcr.io/nvidia/pytorch:24.01-py3 "
                    "(lowercase path, optional :tag and @sha256:digest)"
                )
            elif patterned:
                hints.append(f"{field} takes {patterned}")
            elif choices:
                hint = f"{field} takes one of {choices}"
                near = _near_choice(field, err.get("input"))
                if near is not None:
                    hint = f"did you mean {near!r}? " + hint
                if isinstance(err.get("input"), bool):
                    hint += '; YAML reads bare off/on/yes/no as booleans, so quote them: "off"'
                hints.append(hint)
            elif "bool" in kind:
                hints.append(f"{field} takes true or false")
            elif kind in RANGE_ERRORS and _takes(field):
                hints.append(f"{field} takes {_takes(field)}")
            elif "int" in kind:
                hints.append(f"{field} takes a whole number, without quotes")
            else:
                hints.append("see docs/matrix.md for each key's type")
    problems = sorted(zip(lines, hints, strict=True), key=lambda p: _line_of(p[0]))
    message = "invalid matrix:\n" + "\n".join(
        f"  {line}\n    fix: {hint}" for line, hint in problems
    )
    return MatrixError(
        message, "docs/matrix.md lists every key; `harness schema` prints the schema"
    )


#: pydantic's error types for a number out of its range, or not finite, or not a number.
RANGE_ERRORS = frozenset(
    {
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "finite_number",
        "float_type",
        "float_parsing",
    }
)

#: What the ``run:`` options that are not settings take, in words.
RUN_OPTION_RANGES = {
    "repeats": "a whole number of at least 1",
    "max_runs": "a whole number of at least 1",
    "timeout_s": "a positive finite number of seconds",
}


def _takes(field: str) -> str:
    """The values a number field takes, in words ("" when it is not a number field)."""
    setting = BY_NAME.get(field)
    if setting is not None and setting.kind in ("int", "float"):
        text = setting.describe().replace("`", "")
        return text.replace("an integer", "a whole number").replace("integer", "whole number")
    return RUN_OPTION_RANGES.get(field, "")


def _line_of(text: str) -> int:
    match = re.match(r"^.*?:(\d+):", text)
    return int(match.group(1)) if match else 0


def _check_duplicate_keys(root: yaml.Node | None, path: Path) -> None:
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if key.value in seen:
                    raise MatrixError(
                        f"{path}:{key.start_mark.line + 1}: key {key.value!r} appears twice",
                        "keep one of them; YAML would silently use the last",
                    )
                seen.add(key.value)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _check_duplicates(
    model: Any,
    cells: list[Cell],
    combos: list[dict[str, Any]],
    root: yaml.Node | None,
    path: Path,
) -> None:
    axes = model.axes.model_dump(exclude_unset=True)
    for name, values in axes.items():
        seen: set[str] = set()  # a set: a 10,000-value axis must not take minutes
        for i, v in enumerate(values or []):
            if canonical_json(v) in seen:
                raise MatrixError(
                    f"{_where(path, root, ('axes', name, i))}: axes.{name} lists {v!r} twice, "
                    "which makes duplicate cells",
                    f"list each value of {name} once",
                )
            seen.add(canonical_json(v))
    first: dict[str, int] = {}
    for index, cell in enumerate(cells):
        if cell.id in first:
            loc: tuple[Any, ...] = ("include",)
            includes = [i.model_dump(exclude_unset=True) for i in model.include]
            for j, entry in enumerate(includes):
                if entry == combos[index]:
                    loc = ("include", j)
            raise MatrixError(
                f"{_where(path, root, loc)}: duplicate cell {cell.name} ({cell.id}): the same "
                f"settings as cell #{first[cell.id] + 1}",
                "remove the include entry, or change one of its values; settings equal to their "
                "default count as the same cell",
            )
        first[cell.id] = index
