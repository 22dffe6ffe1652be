"""The building blocks of the Markdown report, each inert whatever text it is given
(harness/report/inert_text.py): escaped table text, code fences no content can close, digests
shown only when they match their patterns, GFM tables, and ``<details>`` folds."""

from __future__ import annotations

import html
import re
from typing import Any

from harness.report import inert_text as inert

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def escape(text: Any) -> str:
    """Safe inside a table cell: no pipes, HTML, links, autolinks, control characters or line
    breaks survive as markup, and the text never starts a workflow command."""
    s = inert.strip_controls(str(text))
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _SPECIAL.sub(r"\\\1", s)
    s = " ".join(s.split())
    return inert.defuse_commands(inert.neutralise_links(s))


def fence(text: str, lang: str = "text") -> str:
    """A code block of ``text`` (control characters stripped) whose fence is longer than any
    backtick run inside it, so nothing in it can close it; no line of it starts a workflow
    command. ``lang``: the info string (a fixed word of the report's, never from a record)."""
    text = inert.defuse_commands(inert.strip_controls(text, multiline=True))
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{text}\n{ticks}"


def code(value: str | None, kind: str = "digest") -> str:
    """A digest (``kind`` "digest") or image id ("id") as inline code when it matches its
    pattern, ``(invalid)`` when it does not, — when there is none."""
    checked = inert.image_digest(value) if kind == "digest" else inert.image_id(value)
    if checked is None:
        return "—"
    return inert.INVALID if checked == inert.INVALID else f"`{checked}`"


def yes_no(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "**no**")


def num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def table_lines(header: list[str], body: list[list[str]]) -> list[str]:
    """A GFM table; the cells must already be escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return lines


#: A cells table of more rows than this, and any other long table, is folded.
OPEN_ROWS = 12


def fold(summary: str, body: list[str], *, open_: bool = False) -> list[str]:
    """``body`` (Markdown) under a ``<details>`` whose ``summary`` is plain text (HTML-escaped
    here: a summary line is raw HTML, where Markdown escapes would show)."""
    tag = "<details open>" if open_ else "<details>"
    return [f"{tag}<summary>{html_text(summary)}</summary>", "", *body, "", "</details>", ""]


def html_text(text: Any) -> str:
    """One line of text, inert in raw HTML: no tags, no controls, no autolinks."""
    s = " ".join(inert.strip_controls(str(text)).split())
    s = html.escape(s, quote=False).replace("[", "&#91;").replace("]", "&#93;")
    return inert.neutralise_links(s)
