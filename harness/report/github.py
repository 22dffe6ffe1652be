"""The report as a GitHub Actions job summary, within GitHub's 1 MiB limit per step.

Why cut at a boundary: a summary cut mid-row or mid-code-block renders as garbage. So the cut
falls before a heading, between table rows, or between paragraphs, never inside a code fence
or a ``<details>`` block; a note then says how much was left out and which artifact holds the
full report. The Markdown comes from harness/report/markdown.py, which has made every text
from the run records inert; the note adds only numbers, the artifact name and the run's link.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.report.inert_text import clean
from harness.results.layout import REPORT_FILES

#: GitHub rejects a step's summary above 1 MiB ("Job summaries" docs).
SUMMARY_LIMIT = 1024 * 1024
#: The artifact gpu-matrix.yml uploads the full report files under.
DEFAULT_ARTIFACT = "report"
_REPORT_FILES = ", ".join(f"`{name}`" for name in REPORT_FILES.values())


@dataclass
class SummaryResult:
    path: Path
    bytes_written: int
    full_bytes: int
    cut: bool
    lines_kept: int
    lines_total: int


def _boundaries(lines: list[str]) -> list[int]:
    """Indexes i such that ``lines[:i]`` is whole Markdown: outside fences and details, and
    not between a table's header row and its separator."""
    ok: list[int] = []
    fence: str | None = None
    details = 0
    for i, line in enumerate(lines):
        stripped = line.strip()
        if fence is None and details == 0 and not stripped.startswith("|---"):
            ok.append(i)
        if fence is not None:
            if stripped.startswith(fence) and stripped.strip("`") == "":
                fence = None
        elif stripped.startswith("```"):
            fence = "`" * (len(stripped) - len(stripped.lstrip("`")))
        elif stripped.startswith("<details"):
            details += 1
        elif stripped.startswith("</details>"):
            details = max(0, details - 1)
    if fence is None and details == 0:
        ok.append(len(lines))
    return ok


def cut_note(shown: int, total: int, full_bytes: int, artifact: str, link: str | None) -> str:
    artifact = clean(artifact).replace("`", "'")  # inside a code span: no backtick closes it
    where = f"the `{artifact}` artifact of this workflow run"
    if link:
        where += f" ({link})"
    return (
        f"\n> [!WARNING]\n> This report is {full_bytes / 1024:,.0f} KiB, more than GitHub's "
        f"{SUMMARY_LIMIT // 1024:,} KiB job-summary limit, so it was cut here after {shown} of "
        f"{total} lines. The full report ({_REPORT_FILES}) is in {where}.\n"
    )


def fit_summary(
    markdown: str,
    limit: int = SUMMARY_LIMIT,
    *,
    artifact: str = DEFAULT_ARTIFACT,
    link: str | None = None,
) -> tuple[str, bool, int]:
    """(text within ``limit`` UTF-8 bytes, whether it was cut, lines kept)."""
    data = markdown.encode("utf-8")
    lines = markdown.split("\n")
    if len(data) <= limit:
        return markdown, False, len(lines)
    sizes = [len(line.encode("utf-8")) + 1 for line in lines]
    prefix = [0]
    for size in sizes:
        prefix.append(prefix[-1] + size)
    best = 0
    for i in _boundaries(lines):
        note = cut_note(i, len(lines), len(data), artifact, link)
        if prefix[i] + len(note.encode("utf-8")) <= limit:
            best = i
    note = cut_note(best, len(lines), len(data), artifact, link)
    text = "\n".join(lines[:best]) + "\n" + note
    if len(text.encode("utf-8")) > limit:  # only when the note alone does not fit
        raise HarnessError(f"a job summary of {limit} bytes cannot hold even the cut note")
    return text, True, best


def run_link() -> str | None:
    """The workflow run's page, from the variables GitHub sets on every runner."""
    server, repo, run = (
        os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else None


def write_summary(
    markdown: str,
    path: str | Path | None = None,
    *,
    artifact: str = DEFAULT_ARTIFACT,
    limit: int = SUMMARY_LIMIT,
) -> SummaryResult:
    """Append the report to ``$GITHUB_STEP_SUMMARY`` (or ``path``) within what is left of
    ``limit`` after what this step already wrote there."""
    target = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        raise HarnessError(
            "GITHUB_STEP_SUMMARY is not set: --github writes the job summary of a GitHub "
            "Actions step",
            "run it inside a workflow step, or set GITHUB_STEP_SUMMARY=FILE to try it locally",
        )
    target = Path(target)
    used = target.stat().st_size if target.exists() else 0
    room = limit - used
    text, cut, kept = fit_summary(markdown, room, artifact=artifact, link=run_link())
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(text)
    return SummaryResult(
        target,
        len(text.encode("utf-8")),
        len(markdown.encode("utf-8")),
        cut,
        kept,
        len(markdown.split("\n")),
    )
