"""Reading a matrix file: YAML, validation with file:line messages, the checks on the whole.

Every problem is a MatrixError that names the file, the line and the fix.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.contract.settings import BUILTIN_ONLY
from harness.errors import MatrixError
from harness.matrix.cells import (
    Cell,
    LoadedMatrix,
    canonical_json,
    expand,
    make_cells,
    with_controls,
)
from harness.matrix.models import Matrix
from harness.matrix.validation_messages import validation_error, where
from harness.matrix.yaml_reader import read_yaml


def load_matrix(
    path: str | Path,
    *,
    code_dir: Path | None = None,
    check_code_dir: bool = True,
    control: bool = False,
) -> LoadedMatrix:
    """Read, validate and expand a matrix file; every problem is a MatrixError with file:line.

    ``code_dir``, ``check_code_dir`` and ``control``: as ``parse_matrix`` takes them."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MatrixError(
            f"{path}: cannot read the matrix file ({exc.strerror})",
            "give the path of a matrix YAML file, e.g. examples/placement-quick.yaml",
        ) from exc
    return parse_matrix(
        text, path, code_dir=code_dir, check_code_dir=check_code_dir, control=control
    )


def parse_matrix(
    text: str,
    path: Path,
    *,
    code_dir: Path | None = None,
    check_code_dir: bool = True,
    control: bool = False,
) -> LoadedMatrix:
    """Validate and expand a matrix given as text; ``path`` names it in messages.

    ``workload.path`` is resolved against the folder of ``path`` (the matrix file) unless
    ``code_dir`` says where it is: the absolute folder a results folder's manifest recorded
    (its ``matrix.yaml`` is a copy, whose own folder is not the user's). With
    ``check_code_dir`` (the default) it must be an existing folder.

    ``control`` (``harness run --control``) reads the file as if it said ``control: true``,
    and the loaded text says so: the copy a results folder keeps makes the same cells when
    resume, merge or diagnose read it again.
    """
    root, data = read_yaml(text, path)
    if not isinstance(data, dict):
        raise MatrixError(
            f"{path}:1: the matrix must be a mapping with name, run and axes",
            "start from examples/placement-quick.yaml",
        )
    _check_duplicate_keys(root, path)
    try:
        model = Matrix.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, root, path, data) from exc
    if control and not model.control:
        text = control_text(text, root, path)
        model = model.model_copy(update={"control": True})
    _check_product(model, root, path)
    combos = expand(model)
    _check_builtin_only(model, combos, root, path)
    _check_size(model, len(combos), root, path)
    try:
        cells = make_cells(model, combos)
    except ValidationError as exc:  # a combination the parts allowed but the whole does not
        raise MatrixError(
            f"{where(path, root, ('axes',))}: a cell's settings are invalid: "
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
            "see docs/matrix.md for each key's type",
        ) from exc
    _check_duplicates(model, cells, combos, root, path)
    _check_workload(model, cells, root, path)
    cells = with_controls(model, cells)
    _check_size(model, len(cells), root, path, " (with the control cells)")
    found = _code_dir(model, root, path, code_dir, check_code_dir)
    return LoadedMatrix(path, text, model, cells, code_dir=found)


def control_text(text: str, root: yaml.Node | None, path: Path) -> str:
    """``text`` saying ``control: true``: its ``control:`` value replaced, or the key put
    before the first one (indented as it is). Checked by reading it again; a file it cannot be
    written into is a MatrixError saying to write the key in the file."""
    if not isinstance(root, yaml.MappingNode) or not root.value:
        raise MatrixError(f"{path}:1: the matrix must be a mapping", "start from an example")
    value = next((v for k, v in root.value if k.value == "control"), None)
    if value is not None:
        new = text[: value.start_mark.index] + "true" + text[value.end_mark.index :]
    else:
        first = root.value[0][0].start_mark
        after = ", " if root.flow_style else "\n" + " " * first.column
        new = text[: first.index] + "control: true" + after + text[first.index :]
    try:
        data = read_yaml(new, path)[1]
        Matrix.model_validate(data)
    except (MatrixError, ValidationError):
        data = None
    if not isinstance(data, dict) or data.get("control") is not True:
        raise MatrixError(
            f"{path}:1: --control could not be added to this file",
            "write control: true in the matrix file instead",
        )
    return new


def _check_size(model: Any, cells: int, root: yaml.Node | None, path: Path, what: str = "") -> None:
    """At least one cell, and no more runs than ``run.max_runs``: checked before the cells
    are built, which is the slow part (and again with the control cells, when they are
    added)."""
    if not cells:
        raise MatrixError(
            f"{path}:1: the matrix has no cells",
            "give at least one axis, or include entries, and check exclude",
        )
    total = cells * model.run.repeats
    if total > model.run.max_runs:
        raise MatrixError(
            f"{where(path, root, ('run', 'repeats'))}: the matrix has {cells} cells{what} x "
            f"{model.run.repeats} repeats = {total} runs, more than run.max_runs "
            f"({model.run.max_runs})",
            f"if you mean it, raise it: run: {{max_runs: {total}}}",
        )


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
                f"{where(path, root, loc)}: {name} is a setting of the built-in MNIST "
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
                f"{where(path, root, ('workload', key))}: workload.{key} is given but no cell "
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
            f"{where(path, root, ('workload', 'path'))}: workload.path {given!r} ({folder}) {what}",
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
            f"{where(path, root, ('axes',))}: the axes multiply to {combos} combinations "
            f"(x {model.run.repeats} repeats), far more than run.max_runs "
            f"({model.run.max_runs}) even before exclude",
            f"shorten the axes; if you mean it, raise it: run: {{max_runs: {bound}}}",
        )


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
                    f"{where(path, root, ('axes', name, i))}: axes.{name} lists {v!r} twice, "
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
                f"{where(path, root, loc)}: duplicate cell {cell.name} ({cell.id}): the same "
                f"settings as cell #{first[cell.id] + 1}",
                "remove the include entry, or change one of its values; settings equal to their "
                "default count as the same cell",
            )
        first[cell.id] = index
