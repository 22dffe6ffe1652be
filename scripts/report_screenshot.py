"""A picture of a report as GitHub shows it: report.md rendered by cmark-gfm (GitHub's own
renderer) into HTML with GitHub's type and table styles, beside report.md so that its plots
load, then photographed by headless Chromium at GitHub's 1,000-pixel width.

    .venv/bin/python scripts/report_screenshot.py RESULTS_DIR OUT.png [--height 1400]

Chromium comes from Debian (``apt-get install chromium fonts-noto-color-emoji``); the tests do
not need it. docs/report-screenshot.png was made with this from ``scripts/demo.sh``'s results.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cmarkgfm
from cmarkgfm.cmark import Options

#: GitHub's Markdown body, in the few rules a report uses (github-markdown-css, light theme).
STYLE = """
body { margin: 0; background: #fff; }
.markdown-body { box-sizing: border-box; max-width: 1000px; padding: 32px; color: #1f2328;
  font: 16px/1.5 -apple-system, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif,
  "Noto Color Emoji"; word-wrap: break-word; }
h1, h2 { border-bottom: 1px solid #d1d9e0b3; padding-bottom: .3em; font-weight: 600;
  margin: 24px 0 16px; line-height: 1.25; }
h1 { font-size: 2em; } h2 { font-size: 1.5em; }
p, table, details { margin: 0 0 16px; }
table { border-spacing: 0; border-collapse: collapse; display: block; width: max-content;
  max-width: 100%; overflow: auto; }
th { font-weight: 600; }
th, td { padding: 6px 13px; border: 1px solid #d1d9e0; }
tr { background: #fff; border-top: 1px solid #d1d9e0b3; }
tr:nth-child(2n) { background: #f6f8fa; }
summary { cursor: pointer; display: list-item; }
img { max-width: 100%; }
code { padding: .2em .4em; font-size: 85%; background: #818b981f; border-radius: 6px; }
"""


def html_page(markdown: str) -> str:
    body = cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<style>{STYLE}</style></head><body><article class='markdown-body'>{body}</article>"
        "</body></html>"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a results folder with report.md")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--height", type=int, default=1400, help="pixels photographed")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.stderr.write("report_screenshot: no chromium; apt-get install chromium\n")
        return 2
    page = args.results / ".report-screenshot.html"  # beside report.md: plots/ resolve
    page.write_text(html_page((args.results / "report.md").read_text()), encoding="utf-8")
    try:
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
                [
                    browser,
                    "--headless",
                    "--no-sandbox",  # root in a container has no user namespace for it
                    "--disable-gpu",
                    "--hide-scrollbars",
                    f"--user-data-dir={profile}",
                    f"--window-size=1000,{args.height}",
                    f"--screenshot={args.out.resolve()}",
                    page.resolve().as_uri(),
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
    finally:
        page.unlink(missing_ok=True)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
