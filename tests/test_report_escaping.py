"""Text that cannot act (issue 10): what run records, logs and provenance put into the Markdown
report and the GitHub job summary is validated or escaped. Checked with a real Markdown
renderer, markdown-it-py with raw HTML and linkify on (a superset of GitHub's autolinks): the
rendered HTML holds no tag, link or image from the tampered text, no control character, and no
line of the Markdown starts a workflow command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from test_report import base_losses, make_cell, make_results, write_run

from harness.cli import main
from harness.report import inert_text as inert
from harness.report.markdown_blocks import escape, fence

GOOD_DIGEST = "sha256:" + "ab" * 32
GOOD_ID = "sha256:" + "cd" * 32
EVIL_MESSAGE = (
    "see https://evil.example/x and HTTP://EVIL.EXAMPLE/y \x1b[31mred\x1b[0m "
    "www.evil.com mail a@evil.com mailto:b@evil.com <img src=x> "
    "\x1b]8;;https://evil.example/osc\x07osc link\x1b]8;;\x07 \u202eevil\u202c"
)
EVIL_TAIL = "\n".join(
    [
        "::error::boom",
        "  ::warning file=x::indented",
        "##[error]old style",
        "```",
        "<img src=x><script>alert(1)</script>",
        "```",
        "~~~~",
        "\x1b[1;31mTraceback\x1b[0m https://evil.example/tail\r::error::after a CR",
        "</details><img src=y>",
    ]
)


BARE_DOMAIN_LINK = re.compile(r'<a href="http://(?!www\.)([^"]+)">\1</a>', re.I)


def renderer() -> MarkdownIt:
    """GitHub-like: tables, strikethrough, raw HTML passed through, linkify (with fuzzy links:
    more than GitHub links; ``live_tags`` leaves out the bare-domain links GitHub never makes)."""
    return MarkdownIt("gfm-like", {"html": True, "linkify": True})


def live_tags(html: str) -> list[str]:
    """Every <img>, <script> and <a> the HTML holds, but the plot links the report makes and
    the bare-domain links of linkify-it's fuzzy mode ("0.AL" -> http://0.AL, the text shown
    without a scheme): GitHub autolinks only ``www.``, a scheme and e-mail addresses."""
    html = BARE_DOMAIN_LINK.sub("", html)
    tags = re.findall(r"<(?:img|script|a|iframe)\b[^>]*>", html, flags=re.I)
    return [t for t in tags if not t.startswith('<a href="plots/')]


def command_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if re.match(r"\s*(::|##\[)", ln)]


def _tampered(root: Path) -> None:
    """Two cells on one image: `clean` with valid provenance; `evil` with an <img> for a digest,
    a non-id for an image id, HTML for a torch version, and a failed run whose error message and
    log tail carry links, ANSI escapes, workflow commands and code fences."""
    clean = make_cell("clean", image="repo/a:1", placement="before_model")
    evil = make_cell("evil", image="repo/a:1", placement="none")
    make_results(root, [clean, evil], repeats=2)
    for k in range(2):
        write_run(root, clean, k, base_losses())
    write_run(root, evil, 0, base_losses())
    write_run(
        root,
        evil,
        1,
        None,
        status="failed",
        error={"type": "failed\x1b[2J", "message": EVIL_MESSAGE, "log_tail": EVIL_TAIL},
    )
    provenance = {
        clean["dir"]: {"image_digest": f"repo/a@{GOOD_DIGEST}", "image_id": GOOD_ID},
        evil["dir"]: {
            "image_digest": "<img src=x>",
            "image_id": "sha256:zz<script>alert(1)</script>",
            "torch": "<script>alert(2)</script> https://evil.example/torch",
        },
    }
    for cell_dir, prov in provenance.items():
        path = root / cell_dir / "repeat-0" / "run.json"
        record = json.loads(path.read_text())
        record["provenance"] = prov
        path.write_text(json.dumps(record))


def _check_markdown(md: str) -> str:
    """The Markdown and its HTML hold nothing that acts; returns the HTML."""
    assert "\x1b" not in md and "\r" not in md and "\u202e" not in md
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", md)
    assert command_lines(md) == []
    html = renderer().render(md)
    assert live_tags(html) == []
    assert "evil.example" in html  # the text is shown, not dropped ...
    assert "href=" not in html.replace('<a href="plots/', "")
    return html


def test_tampered_records_render_without_tags_links_or_commands(tmp_path: Path, capsys):
    _tampered(tmp_path)
    assert main(["report", str(tmp_path), "--format", "md", "--no-plots"]) == 0
    out = capsys.readouterr()
    for stream in (out.out, out.err):  # the terminal gets neither escapes nor commands
        assert "\x1b" not in stream and command_lines(stream) == []
    md = (tmp_path / "report.md").read_text()
    html = _check_markdown(md)
    # The digests: the valid ones as code, the others as (invalid), never their text.
    images = md.split("## Images", 1)[1].split("\n## ", 1)[0]
    assert f"`repo/a@{GOOD_DIGEST}`" in images and f"`{GOOD_ID}`" in images
    assert images.count("(invalid)") == 2
    assert "img src" not in images and "zz" not in images
    assert "&lt;script&gt;" in html  # the torch "version", escaped text
    # The log tail: one code block, whole, that nothing in it closed; beside it only the
    # recipe's code, made from validated settings alone (no text of a record reaches it).
    blocks = re.findall(r"<pre><code([^>]*)>(.*?)</code></pre>", html, flags=re.S)
    recipe = [text for attrs, text in blocks if "language-python" in attrs]
    blocks = [text for attrs, text in blocks if "language-python" not in attrs]
    assert len(blocks) == 1 and len(recipe) <= 1
    assert all("img" not in text and "evil" not in text for text in recipe)
    assert "::error::boom" in blocks[0] and "&lt;/details&gt;&lt;img src=y&gt;" in blocks[0]
    assert "after a CR" in blocks[0]
    assert html.count("<details><summary>log tail") == 1
    assert html.count("<details") == html.count("</details>")  # every fold closes


def test_the_github_summary_is_as_inert(tmp_path: Path, monkeypatch):
    _tampered(tmp_path / "r")
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert main(["report", str(tmp_path / "r"), "--github", "--artifact", "a`b\x1b[1m"]) == 0
    _check_markdown(summary.read_text())


@pytest.mark.parametrize(
    "text",
    [
        "https://evil.example/x",
        "http://evil.example",
        "ftp://evil.example/f",
        "HTTPS://EVIL.EXAMPLE",
        "www.evil.com/path",
        "WWW.evil.com",
        "(www.evil.com)",
        "*www.evil.com*",
        "a@evil.com",
        "first.last+tag@evil.io",
        "mailto:a@evil.com",
        "xmpp:a@evil.com",
        "<https://evil.example>",
        "[x](https://evil.example)",
        "![i](https://evil.example/i.png)",
        "<img src=x onerror=alert(1)>",
        "<script>alert(1)</script>",
    ],
)
def test_escape_leaves_no_link_or_tag(text: str):
    assert live_tags(renderer().render(text)), "the renderer must see a link or tag in it"
    out = escape(text)
    html = renderer().render(out)
    assert live_tags(html) == [], html
    assert re.sub(r"<[^>]+>", "", html).strip() != ""  # still shown


def test_escape_strips_control_characters_and_ansi():
    assert escape("\x1b[31mred\x1b[0m \x07bell\x00 \x9b1mc1") == "red bell c1"
    assert escape("a\u202ebidi\u2066x") == "abidix"
    assert escape("::error::boom").startswith(inert.ZERO_WIDTH_SPACE + "::")


def test_digests_and_ids_must_match_their_patterns():
    assert inert.image_digest(GOOD_DIGEST) == GOOD_DIGEST
    for name in ("repo/a", "docker.io/pytorch/pytorch", "localhost:5000/x/y-z", "a.b_c"):
        assert inert.image_digest(f"{name}@{GOOD_DIGEST}") == f"{name}@{GOOD_DIGEST}"
    for bad in (
        "<img src=x>",
        GOOD_DIGEST.upper(),
        GOOD_DIGEST[:-1],
        GOOD_DIGEST + "0",
        "sha256:" + "g" * 64,
        f"<b>@{GOOD_DIGEST}",
        f"https://evil.example/a@{GOOD_DIGEST}",
        f"{GOOD_DIGEST}\n",
        "md5:" + "a" * 32,
    ):
        assert inert.image_digest(bad) == inert.INVALID, bad
    assert inert.image_id(GOOD_ID) == GOOD_ID
    assert inert.image_id(f"repo/a@{GOOD_ID}") == inert.INVALID
    assert inert.image_digest(None) is None and inert.image_id(None) is None


FRAGMENTS = st.sampled_from(
    [
        "https://",
        "http://",
        "www.",
        "@",
        "evil.example",
        "a",
        " ",
        "\n",
        "\r",
        "\t",
        "<img src=x>",
        "<script>",
        "</details>",
        "```",
        "````",
        "~~~",
        "\x1b[31m",
        "\x1b]8;;",
        "\x07",
        "::error::",
        "##[",
        "|",
        "[x](",
        ")",
        "![",
        "mailto:",
        "&",
        "#",
        "\\",
    ]
)
HOSTILE = st.lists(st.one_of(FRAGMENTS, st.text(max_size=5)), max_size=25).map("".join)


@settings(max_examples=300, deadline=None)
@given(HOSTILE)
@example("//evil.example")  # protocol-relative: linkify links it (hypothesis found it)
def test_escaped_text_never_renders_a_link_or_tag(text: str):
    html = renderer().render(f"| x |\n|---|\n| {escape(text)} |\n\n{escape(text)}\n")
    assert live_tags(html) == []
    assert "\x1b" not in html


@settings(max_examples=300, deadline=None)
@given(HOSTILE)
def test_nothing_closes_a_log_block(text: str):
    """A fenced log tail is one code block holding exactly the cleaned text, whatever it holds."""
    tokens = renderer().parse(f"before\n\n{fence(text)}\n\nafter\n")
    assert [t.type for t in tokens if t.type in ("fence", "code_block", "html_block")] == ["fence"]
    (block,) = [t for t in tokens if t.type == "fence"]
    expected = inert.defuse_commands(inert.strip_controls(text, multiline=True))
    assert block.content == expected + "\n"
    assert command_lines(block.content) == []
    assert tokens[-2].content == "after"  # what follows the block is outside it


def test_a_clean_digest_survives_rendering_as_code():
    html = renderer().render(f"`repo/a@{GOOD_DIGEST}`")
    assert f"<code>repo/a@{GOOD_DIGEST}</code>" in html
