"""``manifest.json``: what a results folder holds (``Manifest``), written by ``harness run`` and
``harness merge``, checked when read before any path is built from it.

The manifest's ``format_version``:

- 1: cell ids hashed every setting, defaults filled in;
- 2: cell ids hash the image and the settings that differ from their defaults
  (``harness.matrix.CELL_ID_SCHEME`` 2, recorded as ``cell_id_scheme``).

A manifest of another format is refused with what to do (``StoreError``), never misread: a cell
id of one scheme names a different cell, or none, in the other. The names a manifest gives (the
matrix name, each cell's name and id) must be plain single path parts, and each cell's ``dir``
must be ``cells/<name>--<id>``, before any path is built from them (``check_path_part``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from harness.contract import write_bytes_atomic, write_json_atomic
from harness.contract.files import UnsafeFile, read_regular
from harness.errors import StoreError
from harness.matrix import CELL_ID_SCHEME, Cell
from harness.results.layout import MANIFEST_FILE, MATRIX_FILE, cell_dirname, cell_relpath

MANIFEST_FORMAT_VERSION = 2


@dataclass
class ManifestCell:
    """One cell of the folder: ``dir`` is its folder relative to the results folder;
    ``control``: a control cell (``control: true``), written only when set, so a manifest
    without control cells reads and writes as before they existed."""

    id: str
    name: str
    dir: str
    settings: dict[str, Any]
    control: bool = False

    @classmethod
    def of(cls, cell: Cell) -> ManifestCell:
        dirname = cell_dirname(cell.name, cell.id)
        return cls(cell.id, cell.name, cell_relpath(dirname), dict(cell.settings), cell.control)


@dataclass
class Manifest:
    """``manifest.json``. A folder that ``harness run`` or ``harness merge`` wrote has every
    field but ``merged_from`` and ``merge`` (those two: merged folders only); the report needs
    ``cells`` alone."""

    cells: list[ManifestCell]
    format_version: int = MANIFEST_FORMAT_VERSION
    cell_id_scheme: int = CELL_ID_SCHEME
    name: str | None = None
    matrix_path: str | None = None
    matrix_text: str | None = None
    matrix_sha256: str | None = None
    matrix_digest: str | None = None
    repeats: int | None = None
    harness_version: str | None = None
    created_at: str | None = None
    #: ``{"index": i, "total": n}`` for ``harness run --shard i/n``, else None
    shard: dict[str, int] | None = None
    merged_from: list[dict[str, Any]] | None = None
    merge: dict[str, Any] | None = None
    #: the matrix's ``workload.path`` as the absolute folder it named when the runs were made
    #: (absent without one): ``matrix.yaml`` here is a copy, and a relative path in it would
    #: name a folder beside the results; ``harness diagnose`` replays from this one
    workload_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("merged_from", "merge", "workload_path"):
            if data[key] is None:
                del data[key]
        for cell in data["cells"]:
            if not cell["control"]:
                del cell["control"]
        return data


@lru_cache(maxsize=1)
def _adapter() -> TypeAdapter[Manifest]:
    return TypeAdapter(Manifest)


def read_manifest(root: str | Path) -> Manifest | None:
    """The manifest of a results folder, None when it has none.

    A manifest of another format, or one that is not JSON or lacks what the format requires, is
    a StoreError that says what the folder is and what to do.
    """
    path = Path(root) / MANIFEST_FILE
    try:  # a regular file only: a FIFO would hang the reader, a link lead it elsewhere
        data = json.loads(read_regular(path).decode("utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # no manifest, or the root is no folder
        return None
    except UnsafeFile as exc:
        raise _damaged(path, str(exc.strerror)) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(path, f"not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise _damaged(path, f"not a JSON object but {type(data).__name__}")
    _check_format(Path(root), data)
    try:
        manifest = _adapter().validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in exc.errors()[:3]
        )
        raise _damaged(
            path, f"not a manifest of format {MANIFEST_FORMAT_VERSION}: {problems}"
        ) from exc
    _check_names(path, manifest)
    return manifest


def write_manifest(root: str | Path, manifest: Manifest) -> None:
    write_json_atomic(Path(root) / MANIFEST_FILE, manifest.to_dict())


def write_matrix_text(root: str | Path, text: str) -> None:
    write_bytes_atomic(Path(root) / MATRIX_FILE, text.encode("utf-8"))


def _check_format(root: Path, data: dict[str, Any]) -> None:
    version = data.get("format_version")
    made_by = data.get("harness_version")
    if isinstance(made_by, str) and made_by:
        that_harness = (
            f"harness {made_by}, the version that made it (harness_version in {MANIFEST_FILE})"
        )
    else:
        that_harness = f"the harness version that made it ({MANIFEST_FILE} has no harness_version)"
    if isinstance(version, bool) or not isinstance(version, int):
        raise _damaged(root / MANIFEST_FILE, f"format_version is {version!r}, not a number")
    if version < MANIFEST_FORMAT_VERSION:
        raise StoreError(
            f"{root} was made by an older harness (results format {version}) "
            "with the old cell-id scheme (ids hashed every setting, defaults included); it cannot "
            f"be resumed or reported by this version (results format {MANIFEST_FORMAT_VERSION}, "
            f"cell-id scheme {CELL_ID_SCHEME})",
            "run the matrix into a new folder (--out NEW_DIR); or report this folder with "
            f"{that_harness}",
        )
    if version > MANIFEST_FORMAT_VERSION:
        raise StoreError(
            f"{root} was made by a newer harness (results format {version}); "
            f"it cannot be resumed or reported by this version (results format "
            f"{MANIFEST_FORMAT_VERSION})",
            f"report it with {that_harness}; or run the matrix into a new folder (--out NEW_DIR)",
        )
    scheme = data.get("cell_id_scheme")
    if scheme != CELL_ID_SCHEME:
        raise _damaged(
            root / MANIFEST_FILE,
            f"cell_id_scheme is {scheme!r}, but results format {version} has scheme "
            f"{CELL_ID_SCHEME}",
        )


def path_part_problem(text: object) -> str | None:
    """Why ``text`` is not a plain single path part (None when it is one): a non-empty string
    without ``/``, ``\\``, NUL or other control characters, not starting with ``.`` (so neither
    ``.`` nor ``..``)."""
    if not isinstance(text, str):
        return f"not a string but {type(text).__name__}"
    if not text:
        return "empty"
    if "/" in text or "\\" in text:
        return "it holds a path separator"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return "it holds a control character"
    if text.startswith("."):
        return "it starts with a dot"
    return None


def check_path_part(text: object, what: str) -> str:
    """``text`` when it is a plain single path part, else a ValueError naming ``what``."""
    problem = path_part_problem(text)
    if problem is not None:
        raise ValueError(f"{what} {text!r} is not a plain folder name: {problem}")
    return str(text)


def _check_names(path: Path, manifest: Manifest) -> None:
    """Every name a path is built from is one plain path part; each cell's ``dir`` is the one
    its name and id give (a tampered manifest must not lead a path out of the folder)."""
    try:
        if manifest.name is not None:
            check_path_part(manifest.name, "the matrix name")
        for i, cell in enumerate(manifest.cells):
            check_path_part(cell.name, f"cells[{i}].name")
            check_path_part(cell.id, f"cells[{i}].id")
            expected = cell_relpath(cell_dirname(cell.name, cell.id))
            if cell.dir != expected:
                raise ValueError(f"cells[{i}].dir is {cell.dir!r}, not {expected!r}")
    except ValueError as exc:
        raise _damaged(path, str(exc)) from exc


def _damaged(path: Path, what: str) -> StoreError:
    return StoreError(
        f"{path}: {what}",
        "the folder was not written by `harness run`, or its manifest was damaged; run the "
        "matrix into a new folder (--out NEW_DIR)",
    )
