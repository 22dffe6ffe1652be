"""The results folder as ``harness run`` writes it: lock, manifest identity, resume decisions and
host-written failure records (names: layout.py, the manifest: manifest.py, ``--out``:
out_folder.py, run folders read by run_reader.py).

``run.json`` is the commit marker of a run: written last, atomically.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import logging
import os
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness import __version__
from harness.contract import (
    LOSSES_FILE,
    RECORD_FILE,
    SPEC_FILE,
    RunSpec,
    write_json_atomic,
)
from harness.contract.record import (
    STOPPED_BY_SIGNAL,
    ErrorType,
    RunError,
    failed_record,
    read_rank_errors,
    with_rank_errors,
    write_record,
)
from harness.errors import StoreError
from harness.executors.base import RunIdentity
from harness.matrix import Cell, LoadedMatrix
from harness.results import layout
from harness.results.layout import default_out
from harness.results.manifest import (
    Manifest,
    ManifestCell,
    read_manifest,
    write_manifest,
    write_matrix_text,
)
from harness.results.out_folder import RUN_OUT, check_out_folder, left_by_a_start
from harness.results.run_reader import (
    CorruptRun,
    RecordError,
    RunRecord,
    load_record,
    log_tail,
    record_or_none,
    verified_losses,
)
from harness.results.safe_paths import open_lock, real_dir, refuse_link, remove_tree

__all__ = [
    "ResultsDir",
    "RunState",
    "default_out",
    "record_failure",
    "set_aside_notices",
]

log = logging.getLogger(__name__)


class ResultsDir:
    """One results folder; ``lock`` it before writing to it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock_handle: Any = None
        self._superseded: Path | None = None  # where set_aside moves runs, once it has
        self._aside_lock = threading.Lock()

    def run_dir(self, cell: Cell | str, repeat: int) -> Path:
        """A run's folder; ``cell`` is a Cell or its folder name."""
        dirname = layout.cell_dirname(cell.name, cell.id) if isinstance(cell, Cell) else cell
        return layout.run_dir(self.root, dirname, repeat)

    def lock(self) -> None:
        """Non-blocking exclusive lock; a second harness on the same folder is told who holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open_lock(self.root / layout.LOCK_FILE)  # held until unlock; never a link
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StoreError(
                f"{self.root} is in use by harness pid {holder}",
                "wait for that run to finish, or choose another --out",
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handle = handle

    def unlock(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def read_manifest(self) -> Manifest | None:
        """The folder's manifest (None for a new folder); another format is a StoreError."""
        return read_manifest(self.root)

    def check_out(self) -> Manifest | None:
        """The manifest of a folder that ``harness run`` may write to: a results folder (its
        manifest), or a missing or empty one (None; a lone ``.lock`` and ``code/`` snapshots
        left by a run that could not start count as empty). Anything else is refused
        untouched: a StoreError."""
        manifest = self.read_manifest()
        if manifest is not None:
            self.check_folders()
            return manifest
        check_out_folder(self.root, RUN_OUT, ignore=left_by_a_start)
        return None

    def check_folders(self, run_dirs: Iterable[Path] = ()) -> None:
        """Refuse, before anything is written, a folder the harness writes in that is a
        symbolic link or not a folder (``layout.FOLDERS``: ``cells/``, ``superseded/``,
        ``plots/`` ...; and each of ``run_dirs`` with the folders above it): a StoreError
        naming it (``safe_paths``). Nothing is created."""
        for name in layout.FOLDERS:
            real_dir(self.root, self.root / name, create=False)
        for run_dir in run_dirs:
            refuse_link(self.root, run_dir, what="a run folder")

    def write_manifest(
        self,
        matrix: LoadedMatrix,
        cells: list[Cell] | None = None,
        shard: dict[str, int] | None = None,
    ) -> None:
        """Write the manifest; refuse a folder that was made from a different matrix or shard,
        or by a harness of another results format.

        ``cells`` (default: all) are the cells this folder holds; ``shard`` is
        ``{"index": i, "total": n}`` for ``harness run --shard i/n``, else None.
        """
        old = self.read_manifest()
        if old is not None and old.matrix_digest != matrix.digest:
            from harness.matrix.change import another_matrix, runs_held

            if runs_held(self.root)[0]:  # failed runs too: they are evidence, never dropped
                raise another_matrix(self.root, old, matrix)
            old = None  # no run record here: the new matrix takes the folder over
        if old is not None and old.shard != shard:
            raise StoreError(
                f"{self.root} holds shard {_shard_text(old.shard)} of this matrix, "
                f"not shard {_shard_text(shard)}",
                "give each shard its own --out; `harness merge` joins them",
            )
        manifest = Manifest(
            name=matrix.model.name,
            matrix_path=str(matrix.path),
            matrix_text=matrix.text,
            matrix_sha256=matrix.text_sha256,
            matrix_digest=matrix.digest,
            repeats=matrix.model.run.repeats,
            harness_version=__version__,
            created_at=(old.created_at if old else None) or _now(),
            shard=shard,
            cells=[ManifestCell.of(c) for c in (matrix.cells if cells is None else cells)],
            workload_path=str(matrix.code_dir) if matrix.code_dir is not None else None,
        )
        write_manifest(self.root, manifest)
        write_matrix_text(self.root, matrix.text)

    # ------------------------------------------------------------ resume

    def check_run(
        self, run_dir: Path, spec: RunSpec, identity: RunIdentity | None = None
    ) -> RunState:
        """What resume makes of a run folder (the reason goes to the log):

        - reuse: an ok record of the same spec, made by what would run it now (``identity``:
          each field that is not None equals the record's provenance), whose ``losses.npy``
          loads, has the recorded shape and hashes to ``digests.trajectory``;
        - set aside: an ok record of another spec or identity, or a record whose files fail
          those checks, or a ``run.json`` that cannot be read: evidence, moved aside whole
          (``set_aside``), never deleted;
        - run: no folder, no record (a run that never finished) or a failed record: not a
          result; ``prepare_run`` clears it.
        """
        if not run_dir.exists():
            return RunState("run")
        try:
            record = load_record(run_dir)
        except RecordError as exc:
            if not (run_dir / RECORD_FILE).exists():
                return RunState("run")
            log.warning("rerunning: %s", exc)
            return RunState("set_aside", ("run", f"whose {RECORD_FILE} cannot be read"))
        if not record.ok:
            log.info("rerunning %s: its last attempt failed", run_dir)
            return RunState("run")
        if record.spec != spec.to_dict():
            log.info("rerunning %s: its spec changed", run_dir)
            return RunState(
                "set_aside", ("finished run", "of another spec than the one that would run now")
            )
        differences = identity.differences(record.provenance) if identity is not None else []
        if differences:
            why = "made " + " and ".join(_difference_text(*d) for d in differences)
            log.warning("rerunning %s: it was %s", run_dir, why)
            return RunState("set_aside", ("finished run", why))
        try:
            verified_losses(run_dir, record)
        except CorruptRun as exc:
            log.warning("rerunning %s: %s", run_dir, exc)
            return RunState(
                "set_aside",
                ("finished run", f"whose {LOSSES_FILE} does not bear out its {RECORD_FILE}"),
            )
        return RunState("reuse")

    def finished(self, run_dir: Path, spec: RunSpec, identity: RunIdentity | None = None) -> bool:
        """True when the run is done and may be reused as it is (``check_run``)."""
        return self.check_run(run_dir, spec, identity).action == "reuse"

    def set_aside(self, run_dirs: list[Path]) -> Path | None:
        """Move each run folder, whole, to ``superseded/<UTC time>/cells/<cell>/repeat-<k>/``
        (one such folder per ResultsDir, so per ``harness run``). Returns that folder, None when
        there was nothing to move. Nothing is deleted."""
        with self._aside_lock:
            for run_dir in run_dirs:
                repeat = layout.repeat_of(run_dir)
                if repeat is None or not run_dir.exists():
                    continue
                refuse_link(self.root, run_dir, what="a run to set aside")
                if self._superseded is None:
                    real_dir(self.root, self.root / layout.SUPERSEDED_DIR, what="set-aside runs")
                    self._superseded = layout.new_superseded_dir(self.root)
                dest = layout.superseded_run_dir(self._superseded, run_dir.parent.name, repeat)
                real_dir(self.root, dest.parent, what="set-aside runs")
                if dest.exists():
                    raise StoreError(
                        f"cannot set {run_dir} aside: {dest} exists",
                        "move that folder away, then rerun the same command",
                    )
                shutil.move(run_dir, dest)
            return self._superseded

    def prepare_run(self, run_dir: Path, spec: RunSpec) -> None:
        """Start from an empty folder holding only the spec.

        Only a folder that holds no result is cleared: no ``run.json``, or a failed one. A
        folder with any other record (the runner has set those aside already) is set aside,
        never deleted.
        """
        refuse_link(self.root, run_dir, what="a run folder")
        if run_dir.exists():
            if _may_clear(run_dir):
                remove_tree(self.root, run_dir, what="a run folder")
            else:
                where = self.set_aside([run_dir])
                log.warning("set aside %s in %s before rerunning it", run_dir, where)
        real_dir(self.root, run_dir, what="a run folder")
        write_json_atomic(run_dir / SPEC_FILE, spec.to_dict())


@dataclass(frozen=True)
class RunState:
    """What resume does with one run folder: ``reuse`` it, ``run`` it (there is no result to
    keep), or ``set_aside`` the result it holds and run it again; ``why`` (set aside only) is
    (what the folder holds, why it is not reused), e.g. ("finished run", "made by other
    workload code (digest 1234abcd... -> 5678ef01...)"), the words of the stderr notice."""

    action: Literal["reuse", "run", "set_aside"]
    why: tuple[str, str] | None = None


def _may_clear(run_dir: Path) -> bool:
    """A folder with no run record, or a readable failed one: not a result."""
    if not (run_dir / RECORD_FILE).exists():
        return True
    try:
        return not load_record(run_dir).ok
    except RecordError:
        return False


def _short(value: str | None, field: str) -> str:
    if value is None:
        return "none recorded"
    if field in ("workload_digest", "image_id", "user_code_digest"):
        algo, _, hexdigits = value.rpartition(":")
        return f"{algo + ':' if algo else ''}{hexdigits[:8]}..."
    return value


_DIFFERENCE_WORDS = {
    "workload_digest": ("by other workload code", "digest "),
    "python": ("by another Python", ""),
    "torch": ("with another torch", ""),
    "image_id": ("in another workload image", ""),
    "user_code_digest": ("from other code in your workload folder", "digest "),
}


def _difference_text(field: str, recorded: str | None, expected: str) -> str:
    words, prefix = _DIFFERENCE_WORDS.get(field, (f"with another {field}", ""))
    return f"{words} ({prefix}{_short(recorded, field)} -> {_short(expected, field)})"


def set_aside_notices(groups: dict[tuple[str, str], int], where: Path) -> list[str]:
    """One line per reason: ``set aside 6 finished runs made by other workload code (digest
    1234abcd... -> 5678ef01...) in <out>/superseded/<time>/; they will be rerun``."""
    lines = []
    for (noun, why), n in groups.items():
        plural = "" if n == 1 else "s"
        they = "it" if n == 1 else "they"
        lines.append(f"set aside {n} {noun}{plural} {why} in {where}/; {they} will be rerun")
    return lines


def _shard_text(shard: dict[str, int] | None) -> str:
    return "(all cells)" if not shard else f"{shard.get('index')}/{shard.get('total')}"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


#: The host's errors that say more than the workload's record of the signal that stopped it,
#: with the signals (as recorded) each explains. A harness that was interrupted stops its runs
#: with SIGINT, and the workload's ``Interrupted`` says that well; SIGTERM from outside does not
#: say who sent it.
HOST_KNOWS_WHY = {
    ErrorType.TIMEOUT.value: STOPPED_BY_SIGNAL,
    ErrorType.DOCKER_UNREACHABLE.value: STOPPED_BY_SIGNAL,
    ErrorType.KILLED.value: STOPPED_BY_SIGNAL[:1],
}


def record_failure(
    run_dir: Path,
    spec: RunSpec,
    error_type: ErrorType | str,
    message: str,
    seconds: float | None = None,
    *,
    first_rank_error: bool = True,
    known_record: RunRecord | None = None,
) -> RunRecord:
    """Make sure a run that did not succeed has a failed run record with its log's tail; the
    record written is returned, so the caller need not read it back (``known_record``: the record
    the caller read already, so it is not read twice; None: read here).

    A failed record written by the workload is kept and given the tail; an ok record from a run
    the host saw fail (killed after writing) is turned into a failed one. A run that left unsafe
    entries in its folder (``unsafe_run_folder``) gets the host's error even over a failed
    record of the workload's: that is what the report must show; so does a run whose workload
    recorded the signal that stopped it when the host knows who sent it (``HOST_KNOWS_WHY``).
    Under DDP, the error files that failing ranks wrote (``rank-<r>.error.json``) go into
    ``error.ranks``; when the host writes the record itself (rank 0 was killed, as Lightning
    does when another rank fails), the rank that failed first gives the run's error, and the
    host's view is rank 0's; unless ``first_rank_error`` is False (the host stopped the run: a
    timeout, an interrupt).
    """
    tail = log_tail(run_dir)
    kind = ErrorType(error_type).value if isinstance(error_type, ErrorType) else error_type
    failures = read_rank_errors(run_dir, spec.devices) if spec.devices > 1 else []
    record = known_record if known_record is not None else record_or_none(run_dir)
    # the host's reason wins where it knows more: planted entries, and a signal the workload
    # recorded whose sender the host knows: its own stop at a timeout (SIGINT first), an engine
    # that went away, a container stopped from outside (SIGTERM)
    recorded = record.error.type if record is not None and record.error is not None else None
    host_wins = kind == ErrorType.UNSAFE_RUN_FOLDER.value or (
        recorded in HOST_KNOWS_WHY.get(kind, ())
    )
    if record is not None and not record.ok and not host_wins:
        error = record.error or RunError(type=kind, message=message)
        error = with_rank_errors(error, failures, own_rank=0, first_is_the_error=False)
        record = dataclasses.replace(record, error=dataclasses.replace(error, log_tail=tail))
    elif record is not None:
        after = " (after writing its record)" if record.ok else ""
        error = RunError(type=kind, message=f"{message}{after}", log_tail=tail)
        error = with_rank_errors(error, failures, own_rank=0, first_is_the_error=False)
        record = dataclasses.replace(record, status="failed", error=error, written_by="host")
    else:
        error = RunError(type=kind, message=message, log_tail=tail)
        error = with_rank_errors(error, failures, own_rank=0, first_is_the_error=first_rank_error)
        record = failed_record(spec.to_dict(), error, ranks=spec.devices, wall_seconds=seconds)
    write_record(run_dir, record)
    return record
