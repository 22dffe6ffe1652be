"""Is ``--out`` new, empty or ours: the one check of an output folder, for ``harness run``,
``harness merge`` and ``harness submit slurm``.

Each verb first looks for what makes a folder its own (a manifest, a submission record); a
folder that is not, is refused untouched unless it is missing or empty: a file (or a link to
one) at its name, a folder that cannot be listed, a folder holding anything. Each verb words
the refusal its own way (``OutWords``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import StoreError
from harness.results import layout

#: How many of a refused folder's entries a message names.
NAMED_ENTRIES = 3


@dataclass(frozen=True)
class OutWords:
    """How one verb words its refusal of an ``--out`` folder: ``not_ours`` follows
    ``<folder> is not empty`` (``{holds}``: the first entries' names), ``hint`` goes with each
    refusal (``folder_hint``, where given, with "exists and is not a folder"); ``counted``: say
    how many more entries there are (else ``and more``)."""

    not_ours: str
    hint: str
    folder_hint: str | None = None
    counted: bool = True

    def holds(self, entries: list[str]) -> str:
        named = ", ".join(entries[:NAMED_ENTRIES])
        rest = len(entries) - NAMED_ENTRIES
        if rest <= 0:
            return named
        return f"{named} and {rest} more" if self.counted else f"{named} and more"


def check_out_folder(
    root: Path, words: OutWords, *, ignore: Callable[[Path], bool] = lambda _: False
) -> None:
    """Refuse ``root`` as an output folder unless it is missing or empty (entries ``ignore``
    matches aside): a StoreError in ``words``. The verb has found it is not its own folder."""
    if not (root.exists() or root.is_symlink()):
        return
    if not root.is_dir():
        raise StoreError(f"{root} exists and is not a folder", words.folder_hint or words.hint)
    try:
        entries = sorted(p.name for p in root.iterdir() if not ignore(p))
    except OSError as exc:
        raise StoreError(f"{root} cannot be read: {exc.strerror or exc}", words.hint) from exc
    if entries:
        text = words.not_ours.format(holds=words.holds(entries))
        raise StoreError(f"{root} is not empty{text}", words.hint)


def left_by_a_start(path: Path) -> bool:
    """What a ``harness run`` that stopped before its manifest leaves: the lock, and ``code/``
    holding only snapshots of the user's code (``code/<sha256>/``, harness/contract/code.py),
    so that the corrected matrix can use the same folder."""
    if path.name == layout.LOCK_FILE:
        return True
    if path.name != layout.CODE_DIR or path.is_symlink() or not path.is_dir():
        return False
    return all(
        len(p.name) == 64 and all(c in "0123456789abcdef" for c in p.name) for p in path.iterdir()
    )


#: ``harness run --out``: a results folder it wrote is resumed.
RUN_OUT = OutWords(
    f" and not a harness results folder (no {layout.MANIFEST_FILE}; it holds {{holds}}); "
    "nothing was written to it",
    "give --out a new or empty folder, or a results folder that `harness run` wrote "
    f"(it has a {layout.MANIFEST_FILE}) to resume it",
)

#: ``harness merge -o``: always a new or empty folder.
MERGE_OUT = OutWords(
    " (it holds {holds}); nothing was written to it",
    "merge into a new or empty folder (-o DIR)",
)

#: ``harness submit slurm --out``: a folder it submitted into is submitted again.
SUBMIT_OUT = OutWords(
    f" and has no {layout.SLURM_DIR}/{layout.SUBMISSION_FILE}: it is not a folder harness "
    "submit slurm wrote (it holds {holds}); nothing was written to it",
    "give --out a new or empty folder, or the folder of an earlier submission to resume it",
    folder_hint="give --out a new folder",
    counted=False,
)
