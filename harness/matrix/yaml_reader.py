"""Reading a matrix file's YAML: the node tree (for line numbers) and the data, safely.

No anchors or aliases, no number too long to convert: each is refused at its line, and every
problem is a MatrixError that names the file, the line and the fix.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml

from harness.errors import MatrixError


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


def _compose(text: str) -> tuple[yaml.Node | None, Any]:
    """The composed node tree (for line numbers) and the data built from that same tree."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    finally:
        loader.dispose()


def read_yaml(text: str, path: Path) -> tuple[yaml.Node | None, Any]:
    """The node tree and the data of ``text``; a MatrixError at the line of what is wrong."""
    try:
        return _compose(text)
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
