"""What ``harness merge`` checks of its inputs before it copies anything: each is a results
folder of the same matrix, none is in use, and all were made by the same code; and which
machines ran them.

The rules are listed in harness/results/merge.py's docstring and docs/results.md, "Merging".
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.contract.files import file_kind
from harness.contract.machine import Machine, fingerprint
from harness.errors import StoreError
from harness.results import layout
from harness.results.manifest import Manifest, read_manifest
from harness.results.out_folder import MERGE_OUT, check_out_folder
from harness.results.run_reader import RunRecord, record_or_none


@dataclass
class Mixed:
    """One way the inputs' code differs: ``what`` is ``harness_version``, ``workload_digest``,
    ``user_code_digest`` (the user's own code, ``workload.path``) or ``image_digest`` (then
    ``image`` names the image), ``values`` each input's values."""

    what: str
    values: dict[str, list[str]]
    image: str | None = None

    @classmethod
    def from_json(cls, entry: object) -> Mixed | None:
        """An entry of a merged manifest's ``merge.mixed``, read leniently: a manifest is not
        trusted to hold what merge wrote. None when it is not an entry at all."""
        if not isinstance(entry, dict):
            return None
        raw = entry.get("values")
        values = {
            str(folder): [str(v) for v in found] if isinstance(found, list) else [str(found)]
            for folder, found in (raw.items() if isinstance(raw, dict) else [])
        }
        image = entry.get("image")
        return cls(str(entry.get("what", "code")), values, None if image is None else str(image))

    def describe(self) -> str:
        label = {
            "harness_version": f"harness version ({layout.MANIFEST_FILE} harness_version)",
            "workload_digest": "workload code (run.json provenance.workload_digest)",
            "user_code_digest": "your code, workload.path (run.json provenance.user_code_digest)",
            "image_digest": f"image {self.image} (run.json provenance.image_digest)",
        }.get(self.what, self.what)
        shown = "; ".join(
            f"{folder}: {', '.join(short_digest(v) for v in values) or 'none recorded'}"
            for folder, values in self.values.items()
        )
        return f"{label} differs: {shown}"


def short_digest(value: str) -> str:
    """A digest shortened for a message (``sha256:`` kept); anything else as it is."""
    prefix, _, rest = value.rpartition(":")
    if len(rest) == 64 and all(c in "0123456789abcdef" for c in rest):
        return f"{prefix}:{rest[:12]}" if prefix else rest[:12]
    return value


def manifest_of(folder: Path) -> Manifest:
    """An input's manifest; one of another results format is refused (manifest.read_manifest)."""
    if not folder.is_dir():
        raise StoreError(f"{folder}: no such results folder", "give folders `harness run` wrote")
    manifest = read_manifest(folder)
    if manifest is None or manifest.matrix_digest is None or manifest.matrix_text is None:
        raise StoreError(
            f"{folder} has no {layout.MANIFEST_FILE}: it is not a results folder of `harness run`",
            "give the folders that `harness run --shard I/N --out DIR` wrote",
        )
    return manifest


@contextmanager
def shared_lock(folder: Path) -> Iterator[None]:
    """Hold a shared lock on ``folder``'s results lock while it is read; a folder whose lock a
    harness holds (a shard still running) is refused, naming the pid in the lock file.

    A folder without a lock file was never locked (a harness creates it before locking); none is
    created, so read-only inputs can be merged."""
    path = folder / layout.LOCK_FILE
    try:  # never through a link, and a FIFO must not block: a regular file only
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        yield
        return
    except OSError as exc:
        raise StoreError(
            f"{path} cannot be opened as a results lock ({exc.strerror or exc}; a link is "
            "never followed)",
            "remove it (it holds nothing of the results), then merge again",
        ) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(
                f"{path} is {file_kind(os.fstat(fd).st_mode)}, not a results lock",
                "remove it (it holds nothing of the results), then merge again",
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            try:  # a pid: digits only, whatever the file holds
                holder = "".join(
                    c for c in os.pread(fd, 32, 0).decode("ascii", "replace") if c.isdigit()
                )
            except OSError:
                holder = ""
            raise StoreError(
                f"{folder} is in use by harness pid {holder or '(unknown)'} "
                f"(its {layout.LOCK_FILE} is locked): a shard still running, or a harness "
                "still writing there",
                "wait for that harness to finish, then merge again",
            ) from exc
        yield
    finally:
        os.close(fd)  # releases the lock


def check_inputs(inputs: list[Path], manifests: list[Manifest], out: Path) -> None:
    """One matrix in every input, and an output that is new (or empty) and none of them
    (checked again under its lock, ``merge``)."""
    if len({m.matrix_digest for m in manifests}) > 1:
        lines = "; ".join(
            f"{p} ({m.name!r}, digest {(m.matrix_digest or '')[:12]})"
            for p, m in zip(inputs, manifests, strict=True)
        )
        raise StoreError(
            f"these folders hold results of different matrices: {lines}",
            "merge only the shards of one matrix run",
        )
    resolved_out = out.resolve()
    for p in inputs:
        if p.resolve() == resolved_out:
            raise StoreError(f"{out} is one of the inputs", "merge into a new folder (-o DIR)")
    check_out_folder(out, MERGE_OUT)


def records_of(inputs: list[Path]) -> dict[str, list[RunRecord]]:
    """Every readable run record of each input (by folder name), read once for the checks
    below; a record that cannot be read is no evidence either way and is left out."""
    found: dict[str, list[RunRecord]] = {}
    for folder in inputs:
        runs = (record_or_none(run_dir) for _, _, run_dir in layout.run_dirs(folder))
        found[str(folder)] = [record for record in runs if record is not None]
    return found


def mixed_code(
    inputs: list[Path], manifests: list[Manifest], records: dict[str, list[RunRecord]]
) -> list[Mixed]:
    """What differs between the inputs' code: harness version, workload digest, the user's code
    digest (runs of a build function), and per image name the image digest. A value an input
    does not record (an older record, a host-written failure record) is no evidence either way
    and is left out."""
    versions: dict[str, set[str]] = {}
    workloads: dict[str, set[str]] = {}
    users: dict[str, set[str]] = {}
    images: dict[str, dict[str, set[str]]] = {}
    for folder, manifest in zip(inputs, manifests, strict=True):
        name = str(folder)
        versions[name] = {manifest.harness_version} if manifest.harness_version else set()
        workloads[name] = set()
        users[name] = set()
        for record in records[name]:
            prov = record.provenance
            if prov.workload_digest:
                workloads[name].add(prov.workload_digest)
            if prov.user_code_digest:
                users[name].add(prov.user_code_digest)
            image = prov.image or record.spec.get("image")
            if prov.image_digest and isinstance(image, str):
                images.setdefault(image, {}).setdefault(name, set()).add(prov.image_digest)
    mixed: list[Mixed] = []
    for what, per_input, image in (
        ("harness_version", versions, None),
        ("workload_digest", workloads, None),
        ("user_code_digest", users, None),
        *(("image_digest", per, img) for img, per in sorted(images.items())),
    ):
        if len(set().union(*per_input.values())) > 1:
            values = {folder: sorted(v) for folder, v in per_input.items()}
            mixed.append(Mixed(what, values, image))
    return mixed


def machines_of(records: dict[str, list[RunRecord]]) -> dict[str, dict[str, Machine]]:
    """Each input's machines (fingerprint -> the first record's facts of it), from its runs'
    records (``records_of``). Shards that ran on different machines are merged all the same
    (that is what sharding across runners does); the merged manifest lists them
    (``merge.machines``) and the report marks runs compared across them."""
    found: dict[str, dict[str, Machine]] = {}
    for folder, runs in records.items():
        mine = found.setdefault(folder, {})
        for record in runs:
            machine = record.provenance.machine
            key = fingerprint(machine)
            if machine is not None and key is not None:
                mine.setdefault(key, machine)
    return found
