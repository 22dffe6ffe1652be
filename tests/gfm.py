"""The report as GitHub shows it: cmark-gfm (GitHub's fork of cmark, through cmarkgfm) renders
the Markdown to HTML, and the tables are read back from that HTML, not from the source."""

from __future__ import annotations

import re
from html import unescape

import cmarkgfm
from cmarkgfm.cmark import Options


def render(markdown: str) -> str:
    """HTML as cmark-gfm makes it; raw HTML (``<details>``) kept, as GitHub keeps it."""
    return cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)


def _text(cell_html: str) -> str:
    """What a reader sees in a cell: tags dropped, entities decoded, no-break spaces as spaces."""
    return unescape(re.sub(r"<[^>]+>", "", cell_html)).replace("\xa0", " ").strip()


def tables(html: str) -> list[list[list[str]]]:
    """Every table: its rows (the header row first), each a list of cell texts."""
    out = []
    for table in re.findall(r"<table>(.*?)</table>", html, flags=re.S):
        rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)
        out.append(
            [[_text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)] for r in rows]
        )
    return out
