"""A matrix file's problems in words: the line of a key, and pydantic's validation errors
turned into ``file:line: what`` with a ``fix:`` each (docs/matrix.md, "Validation")."""

from __future__ import annotations

import difflib
import re
import reprlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.contract.settings import BUILTIN_ONLY, BY_NAME
from harness.errors import MatrixError
from harness.matrix.models import Axes, Matrix, Patch, RunBlock, SlurmBlock, WorkloadBlock


def node_at(root: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
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


def where(path: Path, root: yaml.Node | None, loc: tuple[Any, ...]) -> str:
    node = node_at(root, loc)
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


def validation_error(
    exc: ValidationError, root: yaml.Node | None, path: Path, data: dict[str, Any]
) -> MatrixError:
    """Every problem pydantic found, as ``file:line: what`` and ``fix:``, in line order."""
    problems = []
    for err in exc.errors():
        loc = _user_loc(tuple(err["loc"]), err["type"])
        problems.append(_problem(dict(err), loc, where(path, root, loc), data))
    problems.sort(key=lambda p: _line_of(p[0]))
    message = "invalid matrix:\n" + "\n".join(
        f"  {line}\n    fix: {hint}" for line, hint in problems
    )
    return MatrixError(
        message, "docs/matrix.md lists every key; `harness schema` prints the schema"
    )


def _user_loc(raw: tuple[Any, ...], kind: str) -> tuple[Any, ...]:
    """pydantic's error location without its own type tags (``list[...]``), never dropping
    the user's key (an unknown key's name may hold anything)."""
    keep_last = kind == "extra_forbidden" and bool(raw)
    inner = raw[:-1] if keep_last else raw
    loc = tuple(p for p in inner if not (isinstance(p, str) and "[" in p))
    return loc + (raw[-1:] if keep_last else ())


def _problem(
    err: dict[str, Any], loc: tuple[Any, ...], at: str, data: dict[str, Any]
) -> tuple[str, str]:
    """One error as (``file:line: what``, the fix)."""
    kind = err["type"]
    dotted = ".".join(str(p) for p in loc)
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if kind == "extra_forbidden":
        return _unknown_key(loc, at, data)
    if kind == "too_short":
        return (
            f"{at}: {dotted} is empty",
            f"give {field} at least one value, e.g. {field}: [...], or remove it",
        )
    if kind == "missing":
        return f"{at}: {dotted} is missing", f"add {field}: ... (see docs/matrix.md)"
    got = reprlib.repr(err.get("input"))
    if kind == "string_pattern_mismatch" and field == "image":
        line = f"{at}: {dotted}: not a Docker image reference (got {got})"
    elif kind == "string_pattern_mismatch" and _patterned(field):
        line = f"{at}: {dotted}: not a value {field} takes (got {got})"
    else:
        line = f"{at}: {dotted}: {err['msg']} (got {got})"
    return line, _value_hint(kind, field, err.get("input"))


def _unknown_key(loc: tuple[Any, ...], at: str, data: dict[str, Any]) -> tuple[str, str]:
    """An unknown key: what is allowed there, the key it most likely meant; a knob of the
    user's build function belongs in ``params``."""
    allowed = _allowed_keys(loc[:-1])
    own = _has_entry(data) and loc[:1] in (("axes",), ("include",), ("exclude",))
    if own:  # the user's build function never reads the built-in's settings
        allowed = [k for k in allowed if k not in BUILTIN_ONLY]
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    parent = ".".join(map(str, loc[:-1])) or "the top level"
    hint = (f"did you mean {close[0]!r}? " if close else "") + f"allowed here: {', '.join(allowed)}"
    if own and not close:
        hint += f"; your build function's own knobs go in params, e.g. params: [{{{loc[-1]}: ...}}]"
    return f"{at}: unknown key {loc[-1]!r} in {parent}", hint


def _value_hint(kind: str, field: str, given: Any) -> str:
    """The fix for a value ``field`` does not take: the values it does, in words."""
    patterned = _patterned(field)
    choices = _choices(field)
    if kind == "string_pattern_mismatch" and field == "image":
        return (
            "image takes local or a reference like nvcr.io/nvidia/pytorch:24.01-py3 "
            "(lowercase path, optional :tag and @sha256:digest)"
        )
    if patterned:
        return f"{field} takes {patterned}"
    if choices:
        hint = f"{field} takes one of {choices}"
        near = _near_choice(field, given)
        if near is not None:
            hint = f"did you mean {near!r}? " + hint
        if isinstance(given, bool):
            hint += '; YAML reads bare off/on/yes/no as booleans, so quote them: "off"'
        return hint
    if "bool" in kind:
        return f"{field} takes true or false"
    if kind in RANGE_ERRORS and _takes(field):
        return f"{field} takes {_takes(field)}"
    if "int" in kind:
        return f"{field} takes a whole number, without quotes"
    return "see docs/matrix.md for each key's type"


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
