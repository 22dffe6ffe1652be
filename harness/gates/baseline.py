"""Result sets for the baseline gate: from a results folder, or from a golden-digests file.

A golden-digests file is the small JSON a repository keeps (``harness baseline DIR -o FILE``)
instead of a results folder of hundreds of MB. It holds the matrix's digest (the manifest's
``matrix_digest``: ``harness compare`` refuses another matrix unless told), the machines that
ran it, and, per cell id, what ``harness compare`` needs and nothing else::

    {"format_version": 2, "kind": "harness-baseline", "matrix": NAME, "matrix_digest": ...,
     "machines": {"<fingerprint>": <provenance.machine>},
     "cells": {"<cell id>": {"name", "settings", "reproducible", "trajectories": [per repeat],
                            "final_weights", "image", "image_digest", "torch",
                            "machines": [fingerprint per repeat]}}}

A format 1 file (before machines were recorded) is still read: its machines are unknown, and
``harness compare`` says so rather than blame or excuse a machine.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from harness.contract import write_json_atomic
from harness.contract.machine import Machine, fingerprint
from harness.errors import HarnessError
from harness.results.manifest import read_manifest

BASELINE_FORMAT_VERSION = 2
#: Formats ``from_file`` reads: 1 has no machines.
READABLE_FORMATS = (1, 2)
BASELINE_KIND = "harness-baseline"


@dataclass
class CellDigests:
    """One cell of a result set: its verdict and the digests that pin its results."""

    name: str
    settings: dict[str, Any]
    reproducible: bool | None
    trajectories: list[str | None]  # per repeat; None where the run did not finish
    final_weights: str | None  # of the first finished repeat
    image: str
    image_digest: str | None
    torch: str | None = None
    #: the machine fingerprint of each repeat (None: not recorded, or the run did not finish)
    machines: list[str | None] = field(default_factory=list)

    @property
    def machine_set(self) -> set[str]:
        """The machines its finished repeats ran on, as far as they were recorded."""
        return {m for m in self.machines if m is not None}

    @property
    def image_identity(self) -> str:
        """What "the same image" means: its digest; for ``local`` (no digest) the torch build."""
        if self.image_digest:
            return self.image_digest
        return f"{self.image} (torch {self.torch or 'unknown'})"


@dataclass
class ResultSet:
    source: str
    matrix: str
    matrix_digest: str | None
    cells: dict[str, CellDigests]
    #: fingerprint -> the machine's facts, for every machine a cell names
    machines: dict[str, Machine] = field(default_factory=dict)


def from_results(root: str | Path) -> ResultSet:
    """Verdicts and digests of a results folder (its run records; no torch needed)."""
    from harness.report import analyze

    report = analyze(root)
    manifest = read_manifest(root)
    # the settings as the runs had them (params a mapping), not as the report shows them
    ran = {c.id: c.settings for c in manifest.cells} if manifest else {}
    cells = {}
    machines: dict[str, Machine] = {}
    for cell in report.cells:
        first_ok = next((r for r in cell.runs if r.status == "ok"), None)
        for run in cell.runs:
            key = fingerprint(run.machine)
            if run.status == "ok" and key is not None and run.machine is not None:
                machines.setdefault(key, run.machine)
        cells[cell.id] = CellDigests(
            name=cell.name,
            settings=ran.get(cell.id, cell.settings),
            reproducible=cell.reproducible,
            trajectories=[r.trajectory if r.status == "ok" else None for r in cell.runs],
            final_weights=first_ok.final_weights if first_ok else None,
            image=str(cell.settings.get("image")),
            image_digest=first_ok.image_digest if first_ok else None,
            torch=first_ok.torch if first_ok else None,
            machines=[fingerprint(r.machine) if r.status == "ok" else None for r in cell.runs],
        )
    digest = manifest.matrix_digest if manifest else None
    return ResultSet(str(root), report.name, digest, cells, machines)


def to_json(results: ResultSet) -> dict[str, Any]:
    return {
        "format_version": BASELINE_FORMAT_VERSION,
        "kind": BASELINE_KIND,
        "matrix": results.matrix,
        "matrix_digest": results.matrix_digest,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": results.source,
        "machines": {key: asdict(m) for key, m in sorted(results.machines.items())},
        "cells": {cid: asdict(c) for cid, c in sorted(results.cells.items())},
    }


def from_file(path: str | Path) -> ResultSet:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HarnessError(
            f"{path}: not a readable golden-digests file ({exc})",
            "make one with `harness baseline RESULTS_DIR -o FILE`",
        ) from exc
    if not isinstance(data, dict) or data.get("kind") != BASELINE_KIND:
        raise HarnessError(
            f'{path} is not a golden-digests file (no "kind": "{BASELINE_KIND}")',
            "make one with `harness baseline RESULTS_DIR -o FILE`, or give a results folder",
        )
    if data.get("format_version") not in READABLE_FORMATS:
        raise HarnessError(
            f"{path}: golden-digests format {data.get('format_version')!r} is not one of "
            f"{', '.join(map(str, READABLE_FORMATS))}",
            "regenerate it with this harness: `harness baseline RESULTS_DIR -o FILE`",
        )
    digest = data.get("matrix_digest")
    if digest is not None and not isinstance(digest, str):
        raise HarnessError(
            f"{path}: matrix_digest is {digest!r}, not a digest",
            "regenerate it with `harness baseline`",
        )
    try:
        cells = {cid: CellDigests(**entry) for cid, entry in data["cells"].items()}
        machines = _machines(data.get("machines", {}))
    except (KeyError, TypeError, AttributeError) as exc:
        raise HarnessError(
            f"{path}: malformed golden-digests file ({exc})",
            "regenerate it with `harness baseline`",
        ) from exc
    return ResultSet(str(path), data.get("matrix", ""), digest, cells, machines)


def _machines(data: Any) -> dict[str, Machine]:
    """The file's machines, each validated as a record's ``provenance.machine`` is."""
    if not isinstance(data, dict):
        raise TypeError(f"machines is {type(data).__name__}, not a mapping")
    adapter = TypeAdapter(Machine)
    machines = {}
    for key, value in data.items():
        try:
            machines[str(key)] = adapter.validate_python(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise TypeError(
                f"machines[{key!r}]{'.' + where if where else ''}: {first['msg']}"
            ) from exc
    return machines


def load_result_set(path: str | Path) -> ResultSet:
    """A results folder or a golden-digests file, whichever ``path`` is."""
    path = Path(path)
    if path.is_dir():
        return from_results(path)
    if path.is_file():
        return from_file(path)
    raise HarnessError(
        f"{path}: no such results folder or golden-digests file",
        "give a folder `harness run`/`harness merge` wrote, or a file from `harness baseline`",
    )


def write_baseline(results_dir: str | Path, out: str | Path) -> ResultSet:
    """``harness baseline DIR -o FILE``: write the golden digests of a results folder."""
    results = from_results(results_dir)
    if not results.cells:
        raise HarnessError(f"{results_dir} has no cells", "give a folder with finished runs")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, to_json(results))
    return results
