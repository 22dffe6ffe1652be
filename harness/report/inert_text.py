"""Text taken from run records, logs, manifests and provenance, made inert before the report
shows it.

Anything can write a run record, so nothing in one is trusted to be what it says:

- control characters are stripped (``harness.text.strip_controls``: whole ANSI escape
  sequences, C0 and C1 controls, the bidirectional controls that reorder what a reader sees);
- GitHub-flavoured autolinks are neutralised: the ``:`` of ``scheme://``, ``mailto:`` and
  ``xmpp:``, the ``.`` of ``www.``, the second ``/`` of a protocol-relative ``//host`` (which
  markdown-it's linkify makes a link) and every ``@`` become HTML character references, which
  render as the same characters but are no longer text an autolinker matches;
- a line of Markdown never starts a GitHub workflow command (``::name::`` or ``##[name]``):
  such a line gets a zero-width space in front (``harness.text.defuse_commands`` puts a
  visible ``> `` there, which would start a quote in Markdown), should the text ever be
  printed to a job's log;
- digests and image ids are checked against their patterns; anything else is not shown.
"""

from __future__ import annotations

import re

from harness.text import strip_controls, terminal_safe

__all__ = ["strip_controls"]

#: GFM autolinks (and markdown-it's linkify): ``scheme://``, ``mailto:``, ``xmpp:``, ``www.``,
#: e-mail addresses.
_SCHEME_COLON = re.compile(r"(?<=[A-Za-z0-9]):(?=/)")
_MAIL_SCHEME = re.compile(r"(?i)\b(mailto|xmpp):")
_WWW = re.compile(r"(?i)\b(www)\.")
#: GitHub Actions workflow commands start a line with ``::`` (or the older ``##[``).
_COMMAND = re.compile(r"^(\s*)(::|##\[)", re.M)
ZERO_WIDTH_SPACE = "\u200b"

#: ``sha256:<64 hex>``, optionally after an image name (``name@sha256:<64 hex>``, a registry's
#: RepoDigests entry: an optional registry host[:port], then lower-case path components).
_SHA256 = r"sha256:[0-9a-f]{64}"
_COMPONENT = r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*"
_NAME = rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
IMAGE_DIGEST = re.compile(rf"(?:{_NAME}@)?{_SHA256}")
IMAGE_ID = re.compile(_SHA256)
INVALID = "(invalid)"


def neutralise_links(text: str) -> str:
    """Markdown source that shows ``text`` without any autolink in it (character references for
    the characters an autolinker keys on). ``text`` must not be inside a code span or block."""
    text = _SCHEME_COLON.sub("&#58;", text)
    text = _MAIL_SCHEME.sub(r"\1&#58;", text)
    text = _WWW.sub(r"\1&#46;", text)
    return text.replace("//", "/&#47;").replace("@", "&#64;")


def defuse_commands(text: str) -> str:
    """Markdown ``text`` with a zero-width space before every line that would start a workflow
    command."""
    return _COMMAND.sub(lambda m: f"{m.group(1)}{ZERO_WIDTH_SPACE}{m.group(2)}", text)


def clean(text: object) -> str:
    """One line of plain text, safe for a terminal or a log: no controls, no workflow command.
    For Markdown use ``markdown.escape``."""
    return terminal_safe(text)


def image_digest(value: str | None) -> str | None:
    """``value`` when it is ``sha256:<64 hex>`` or ``name@sha256:<64 hex>``; else INVALID."""
    if value is None:
        return None
    return value if isinstance(value, str) and IMAGE_DIGEST.fullmatch(value) else INVALID


def image_id(value: str | None) -> str | None:
    """``value`` when it is ``sha256:<64 hex>``; else INVALID."""
    if value is None:
        return None
    return value if isinstance(value, str) and IMAGE_ID.fullmatch(value) else INVALID
