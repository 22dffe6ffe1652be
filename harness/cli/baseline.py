"""``harness baseline DIR -o FILE``: the small golden-digests file a repository keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.cli.options import out_option
from harness.gates.baseline import write_baseline


def command(
    results: Annotated[Path, typer.Argument(help="a results folder of a good run")],
    out: Annotated[Path, out_option("the golden-digests JSON file")],
) -> int:
    """Write each cell's verdict and digests, for `harness compare FILE RESULTS`."""
    written = write_baseline(results, out)
    good = sum(1 for c in written.cells.values() if c.reproducible)
    typer.echo(f"{out}: {len(written.cells)} cells ({good} reproduce)")
    return 0
