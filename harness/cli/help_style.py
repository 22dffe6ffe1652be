"""How ``--help`` reads: plain placeholders, no ``<bool>`` on flags, docstrings reflowed.

typer 0.29 writes a required argument as ``{matrix}`` in the usage line and gives every option a
type column, flags included (``--help <bool>``); and a command's docstring keeps its source line
breaks in the commands panel, so rich's box shows sentences cut where the source was wrapped.
``apply()`` changes those two display methods (each only if typer still has it) and
``help_text`` turns a docstring into paragraphs of one line each, which rich wraps to the width.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from typer import core


def help_text(function: Callable[..., Any]) -> str:
    """The docstring as paragraphs of one line each (blank lines kept between paragraphs)."""
    doc = inspect.getdoc(function) or ""
    return "\n\n".join(" ".join(p.split()) for p in doc.split("\n\n") if p.strip())


def _usage_name(self: Any) -> str:
    """``MATRIX`` for a required argument, ``[MATRIX]`` for an optional one (click's style)."""
    name = self.display_name_raw.upper()
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


def _option_type(self: Any, ctx: Any) -> str | None:
    """No type for a flag (it takes no value); typer's own for the rest (``<path>``)."""
    if getattr(self, "is_flag", False) or getattr(self, "is_bool_flag", False):
        return None
    shown: str | None = _TYPER_OPTION_TYPE(self, ctx)  # apply() sets this only when typer has it
    return shown


_TYPER_OPTION_TYPE: Any = getattr(core.TyperOption, "display_type_rich", None)


def apply() -> None:
    """Patch typer's display of usage names and flag types; a no-op where typer lacks them."""
    if hasattr(core.TyperArgument, "_usage_display_name"):
        core.TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign]
    if _TYPER_OPTION_TYPE is not None:
        core.TyperOption.display_type_rich = _option_type  # type: ignore[method-assign]
