"""Which code a diagnosis replays, and that it is what made the runs.

A replay answers for the runs only when it runs their code: the user's own code (``workload.path``,
``provenance.user_code_digest``), the harness's workload code, the image and torch. So:

- the user's code comes from the snapshot ``harness run`` made of it in the results folder
  (``code/<digest>/``, harness/contract/code.py): a real folder (no link on the way) whose files
  still give the digest both runs recorded. Identical to what ran, by construction;
- a results folder is input the harness cannot trust (copied, tampered with): the folder its
  manifest names (``workload_path``) is never mounted or imported on the folder's word. Only a
  folder the user names (``harness diagnose DIR --code PATH``) is, and only when its digest is
  the runs' (code moved since, or a folder from before snapshots);
- the executor's identity (workload digest, Python and torch for local replays, the image id for
  containers: what resume compares, ``RunIdentity``) must be the one each run recorded, else the
  diagnosis is refused, naming what changed. The machine is not refused: the diagnosis names it
  (``words.machine_sentences``).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from harness.contract.code import user_code_digest
from harness.errors import HarnessError
from harness.executors.base import RunIdentity
from harness.results.layout import MANIFEST_FILE, code_store

#: The option that names the user's code for a diagnosis.
CODE_OPTION = "--code"


@dataclass(frozen=True)
class ReplayCode:
    """The folder the build function's replays import, its digest, and where it came from
    (``snapshot`` or ``--code``), for the line ``harness diagnose`` prints."""

    folder: Path
    digest: str
    source: str

    def says(self) -> str:
        where = "the results folder's snapshot" if self.source == "snapshot" else CODE_OPTION
        return (
            f"replaying your code from {self.folder} ({where}; digest {self.digest[:12]}, the "
            "one both runs recorded)"
        )


def _short(value: str | None) -> str:
    return "none recorded" if not value else value[:12]


def _plain_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def replay_code(
    results: Path, runs: tuple[Any, Any], given: Path | None, recorded_path: str | None
) -> ReplayCode | None:
    """The code to replay ``runs`` (two ``RecordedRun``) with; None when neither runs a build
    function from a folder of the user's (no ``workload.path``). A HarnessError, naming what is
    wrong and what to pass, when no folder can be trusted to be the code that made them."""
    own = [r for r in runs if r.spec.get("entry")]
    if not own:
        return None
    digests = [getattr(r.provenance, "user_code_digest", None) for r in own]
    labels = " and ".join(r.label for r in own)
    if len(set(digests)) > 1:
        shown = ", ".join(f"{r.label}: {_short(d)}" for r, d in zip(own, digests, strict=True))
        raise HarnessError(
            f"{labels} were made from different versions of your code (user_code_digest {shown}):"
            " a replay of each would compare your edits, not what made one run differ",
            "rerun the matrix into the same --out (runs of other code are rerun), then diagnose",
        )
    digest = digests[0]
    if given is not None:
        return _given_code(given, digest, labels)
    if digest is None and not recorded_path:
        return None  # an entry from an installed package: no folder of the user's to replay
    snapshot = code_store(results) / digest if digest else None
    if (
        snapshot is not None
        and _plain_folder(code_store(results))
        and _plain_folder(snapshot)
        and user_code_digest(snapshot) == digest
    ):
        return ReplayCode(snapshot, digest, "snapshot")
    why = (
        f"the snapshot of the code that made {labels} (code/{_short(digest)}) is not in "
        f"{results}, or its files no longer give that digest"
        if digest
        else f"the records of {labels} name no digest of your code (made by an older harness)"
    )
    named = (
        f"; its {MANIFEST_FILE} names {recorded_path} as your code folder, which is not used "
        "on the results folder's word"
        if recorded_path
        else ""
    )
    _refuse(f"{why}{named}", digest)


def _refuse(what: str, digest: str | None) -> NoReturn:
    must = f" (its digest must be {_short(digest)}...)" if digest else ""
    raise HarnessError(
        f"cannot tell which code to replay: {what}",
        f"name the folder of your code as it was when the runs were made: {CODE_OPTION} PATH{must}",
    )


def _given_code(given: Path, digest: str | None, labels: str) -> ReplayCode:
    folder = Path(os.path.abspath(given))
    if not folder.is_dir():
        raise HarnessError(
            f"{CODE_OPTION} {given}: no such folder",
            "name the folder holding your code (the package your entry names)",
        )
    now = user_code_digest(folder)
    if digest is not None and now != digest:
        raise HarnessError(
            f"{CODE_OPTION} {folder} is not the code that made {labels}: its digest is "
            f"{_short(now)}..., the runs recorded {_short(digest)}... (a file was edited, added "
            "or removed since)",
            "name the folder as it was when the runs were made (git stash, or check out that "
            "commit), or rerun the matrix into the same --out and diagnose the new runs",
        )
    return ReplayCode(folder, now, CODE_OPTION)


#: What a replay of another identity would differ by, in words, and what to do.
_CHANGED = {
    "workload_digest": ("the harness's workload code", "diagnose with the harness version that "
                        f"made them (harness_version in {MANIFEST_FILE})"),
    "python": ("Python", "pass --python with the interpreter that made them"),
    "torch": ("torch", "pass --python with an interpreter that has the torch that made them"),
    "image_id": ("the workload image", "diagnose with the harness and base image that made "
                 "them (the image was rebuilt since)"),
    "user_code_digest": ("your code", f"name the code that made them: {CODE_OPTION} PATH"),
}  # fmt: skip


def check_identity(runs: tuple[Any, Any], expected: list[RunIdentity | None]) -> list[str]:
    """Refuse (HarnessError) when a replay would run other code, another torch, Python or image
    than the run it replays recorded (``expected``: the executor's identity per run); else the
    fields checked, for the line ``harness diagnose`` prints."""
    changed: list[str] = []
    hints: list[str] = []
    checked: set[str] = set()
    for run, identity in zip(runs, expected, strict=True):
        if identity is None:
            continue
        checked.update(f for f in RunIdentity.COMPARED if getattr(identity, f) is not None)
        for field, recorded, now in identity.differences(run.provenance):
            words, hint = _CHANGED.get(field, (field, "diagnose where the runs were made"))
            changed.append(f"{run.label}: {words} ({_short(recorded)} recorded, {_short(now)} now)")
            if hint not in hints:
                hints.append(hint)
    if changed:
        raise HarnessError(
            "a replay would not run what made the runs, so it could not say why they differ: "
            + "; ".join(changed),
            "; or ".join(hints),
        )
    return sorted(checked)
