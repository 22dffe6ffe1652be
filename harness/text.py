"""Text from runs, logs and records, made safe to print on a terminal or in a CI log.

A workload's error message, a log tail or a field of a run record is data, never an instruction:
printed raw, an ANSI escape can rewrite the terminal (move the cursor, set the window title, hide
text), and a line that starts with ``::`` (``::error::``, ``::add-mask::``, ``::set-output``, ...)
or holds ``##[`` is a GitHub Actions workflow command. ``terminal_safe`` strips the first and
neutralises the second; every place that prints run-derived text to a terminal goes through it.

Standard library only, so any side can use it.
"""

from __future__ import annotations

import logging
import re

#: ESC sequences (ECMA-48): CSI (``ESC [`` ... final byte), the string commands OSC, DCS, SOS,
#: PM and APC up to their terminator (BEL or ST), and every other ESC plus its bytes; then the
#: same in their 8-bit C1 forms. A string command's body stops at the next ESC or C1 introducer,
#: so the scan stays linear on hostile input (whatever is left of an unterminated one is plain
#: text once its ESC is stripped below).
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b[\]PX^_][^\x07\x1b\x90\x98\x9b-\x9f]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[ -/]*[0-~]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
    r"|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x90\x98\x9b-\x9f]*(?:\x07|\x1b\\|\x9c)"
)

#: Lone surrogates (text decoded with surrogateescape) cannot be written to a UTF-8 stream.
_SURROGATES = re.compile(r"[\ud800-\udfff]")

#: Line breaks: a terminal's (LF, CR, VT, FF), Unicode's (NEL, LINE and PARAGRAPH SEPARATOR).
_BREAKS = re.compile(r"\r\n|[\n\r\x0b\x0c\x85\u2028\u2029]")

#: What is left to strip: C0 controls but the kept line break (a tab became a space), DEL, C1
#: controls, and the bidirectional overrides and isolates that make a terminal show text in
#: another order.
_CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

#: A line that starts with this (after leading white space, which GitHub's runner trims) is a
#: workflow command.
COMMAND_START = "::"
#: The older form, ``##[command]data``, which GitHub's runner finds anywhere in a line.
OLD_COMMAND = "##["
#: Put before a line that would start a workflow command: the line then starts with ``>``.
GUARD = "> "


def terminal_safe(text: object, *, multiline: bool = False) -> str:
    """``text`` without control characters, safe to print to a terminal or a CI log:
    ``defuse_commands(strip_controls(text, multiline=multiline))``.

    Idempotent: ``terminal_safe(terminal_safe(t)) == terminal_safe(t)``. Non-strings are
    converted with ``str`` first.
    """
    return defuse_commands(strip_controls(text, multiline=multiline))


def strip_controls(text: object, *, multiline: bool = False) -> str:
    """``text`` without control characters.

    ANSI/ECMA-48 escape sequences (``\\x1b[31m``, OSC titles, ...) are removed whole; every
    other C0 and C1 control character and DEL is removed; a tab becomes a space; bidi controls
    are removed; lone surrogates become U+FFFD. One line (the default): every line break
    (``\\n``, ``\\r``, VT, FF, NEL, U+2028/9) becomes a space; ``multiline=True`` keeps them,
    as ``\\n``.
    """
    text = str(text)
    text = _ESCAPES.sub("", _SURROGATES.sub("\ufffd", text))
    text = _BREAKS.sub("\n" if multiline else " ", text.replace("\t", " "))
    return _CONTROLS.sub("", text)


def defuse_commands(text: str) -> str:
    """No line of ``text`` can start a GitHub workflow command: a line whose first non-blank
    characters are ``::`` gets ``"> "`` before it, and ``##[`` anywhere becomes ``# #[``."""
    while OLD_COMMAND in text:
        text = text.replace(OLD_COMMAND, "# #[")
    return "\n".join(_guard(line) for line in text.split("\n"))


def _guard(line: str) -> str:
    return GUARD + line if line.lstrip().startswith(COMMAND_START) else line


class TerminalSafeFormatter(logging.Formatter):
    """A logging formatter whose records (message, traceback) pass through ``terminal_safe``,
    line breaks kept."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().format(record), multiline=True)
