"""Which two runs a diagnosis compares, what their records already say, and their replays.

The runs come from a results folder: two repeats of one cell, or one repeat of each of two
cells. Each is replayed with the executor the matrix chose (the same image, in a container,
when the cell has one), under the folder's lock, into ``diagnoses/<name>/a`` and ``b``.
"""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.contract import RECORD_FILE, SPEC_FILE, RunSpec, write_json_atomic
from harness.contract.files import REPLAY_FILE, REPLAY_OUTPUTS_FILE, open_regular, read_regular
from harness.contract.machine import Machine
from harness.contract.spec import SpecError
from harness.diagnose.file_checks import replay_data
from harness.diagnose.findings import Replay, loss_step
from harness.errors import HarnessError
from harness.executors.base import Executor, RunOutcome, Slot
from harness.exit_codes import EXIT_INTERRUPTED
from harness.report.trajectories import first_weight_divergence
from harness.results.layout import MANIFEST_FILE, run_dir
from harness.results.manifest import ManifestCell
from harness.results.run_reader import (
    RecordError,
    load_record,
    load_weight_hashes,
    log_tail,
    verified_losses,
)
from harness.results.safe_paths import real_dir, remove_tree
from harness.results.store import ResultsDir
from harness.run.schedule import SlotPool, detect_host, need_of


@dataclass
class RecordedRun:
    """One finished run of the results folder, verified."""

    cell: ManifestCell
    repeat: int
    run_dir: Path
    spec: dict[str, Any]
    losses: np.ndarray
    init_digest: str | None
    split: str | None
    #: weights.npy (parameter hashes after every step), with the hash's kind; None in records
    #: written before it existed
    weights: np.ndarray | None = None
    weights_kind: tuple[str, tuple[str, ...]] | None = None
    #: the record's ``provenance.machine`` (None: not recorded)
    machine: Machine | None = None
    #: the record's ``provenance``: what made the run (code digests, torch, image), which a
    #: replay must match (harness/diagnose/identity.py)
    provenance: Any = None

    @property
    def label(self) -> str:
        return f"{self.cell.name} repeat {self.repeat}"


def find_cell(cells: list[ManifestCell], wanted: str, results: Path) -> ManifestCell:
    """A cell by id or by name."""
    for cell in cells:
        if wanted in (cell.id, cell.name):
            return cell
    known = ", ".join(f"{c.id} ({c.name})" for c in cells[:6])
    more = f" and {len(cells) - 6} more" if len(cells) > 6 else ""
    raise HarnessError(
        f"{results} has no cell {wanted!r}",
        f"name a cell by its id or name: {known}{more} (`harness report {results}` lists them)",
    )


def load_run(results: Path, cell: ManifestCell, repeat: int) -> RecordedRun:
    folder = run_dir(results, Path(cell.dir).name, repeat)
    if not (folder / RECORD_FILE).is_file():
        raise HarnessError(
            f"{cell.name} has no finished repeat {repeat} in {results}",
            "name repeats that ran: --repeats A --repeats B (0 is the first)",
        )
    try:
        record = load_record(folder)
        losses = verified_losses(folder, record)
        weights = load_weight_hashes(folder, record)
    except RecordError as exc:
        raise HarnessError(f"cannot use {folder}: {exc}", "run the matrix again") from exc
    if record.status != "ok":
        raise HarnessError(
            f"{cell.name} repeat {repeat} failed ({record.error.type if record.error else '?'})",
            "a diagnosis replays finished runs: pick repeats that succeeded "
            "(--repeats A --repeats B)",
        )
    return RecordedRun(
        cell,
        repeat,
        folder,
        dict(record.spec),
        losses,
        record.digests.init_weights,
        record.digests.split,
        weights,
        (record.weights.hash, tuple(record.weights.parameters)) if record.weights else None,
        record.provenance.machine,
        record.provenance,
    )


def pick_runs(
    results: Path,
    cell: str | None = None,
    cells: tuple[str, str] | None = None,
    repeats: tuple[int, int] | None = None,
) -> tuple[RecordedRun, RecordedRun]:
    """The two runs to compare: ``cells`` (repeat 0 of each, or ``repeats``); else ``cell``
    (default: the first that does not reproduce), its repeats ``repeats`` (default: 0 and the
    first whose losses differ from 0's, else 1)."""
    manifest = ResultsDir(results).read_manifest()
    if manifest is None:
        raise HarnessError(
            f"{results} is not a results folder (no {MANIFEST_FILE})",
            "pass the folder `harness run` wrote (its last line says `results: <folder>`)",
        )
    if cells is not None:
        first, second = (find_cell(manifest.cells, c, results) for c in cells)
        a, b = repeats or (0, 0)
        return load_run(results, first, a), load_run(results, second, b)
    chosen = find_cell(manifest.cells, cell, results) if cell else _first_diverging(results)
    if repeats is not None:
        return load_run(results, chosen, repeats[0]), load_run(results, chosen, repeats[1])
    base = load_run(results, chosen, 0)
    others: list[RecordedRun] = []
    for k in range(1, manifest.repeats or 2):
        try:
            others.append(load_run(results, chosen, k))
        except HarnessError:  # a failed or missing repeat: another may do
            continue
    if not others:
        raise HarnessError(
            f"{chosen.name} has no other finished repeat to compare repeat 0 with",
            "use --cells to compare it with another cell, or --repeats A --repeats B",
        )
    differing = [r for r in others if recorded_step(base, r) is not None]
    return base, (differing or others)[0]


def _first_diverging(results: Path) -> ManifestCell:
    from harness.report import analyze

    report = analyze(results)
    manifest = ResultsDir(results).read_manifest()
    assert manifest is not None
    for entry in report.cells:
        if entry.reproducible is False:
            return find_cell(manifest.cells, entry.id, results)
    raise HarnessError(
        f"every cell of {results} reproduces (or has no verdict): there is no divergence to "
        "diagnose",
        "name one with --cell ID to replay two of its repeats anyway, or compare two cells "
        "with --cells ID1 ID2",
    )


def recorded_weights_step(a: RecordedRun, b: RecordedRun) -> int | None:
    """The first step after which the recorded weights differ (None: equal, or not comparable:
    not recorded, another hash or other parameters)."""
    if a.weights is None or b.weights is None or a.weights_kind != b.weights_kind:
        return None
    return first_weight_divergence(a.weights, b.weights)


def recorded_step(a: RecordedRun, b: RecordedRun) -> int | None:
    """The first step the records show different: -1 when the initial weights already differ,
    else the earlier of the weights' and the losses' first difference (the optimizer's state
    can differ earlier still: the replay finds that), else None."""
    if a.init_digest and b.init_digest and a.init_digest != b.init_digest:
        return -1
    steps = [
        s for s in (recorded_weights_step(a, b), loss_step(a.losses, b.losses)) if s is not None
    ]
    return min(steps) if steps else None


@dataclass
class ReplayRunner:
    """Replays pairs of runs with one executor."""

    executor: Executor
    timeout_s: float
    cancel: threading.Event
    #: the results folder the replays write in: nothing below it is followed (safe_paths)
    root: Path

    def replay_pair(
        self,
        runs: tuple[RecordedRun, RecordedRun],
        options: dict[str, Any],
        dests: tuple[Path, Path],
    ) -> tuple[Replay, Replay]:
        """Both replays: side by side when the machine has the cores (and GPUs) for both at
        once, else one after the other; never more threads than cores."""
        try:
            specs = [RunSpec.from_dict({**run.spec, "diagnose": options}) for run in runs]
        except SpecError as exc:  # --rank past the run's ranks
            raise HarnessError(f"cannot replay these runs: {exc}", "check --rank") from exc
        for dest, spec in zip(dests, specs, strict=True):
            # never through a link: `diagnoses`, its folder or a replay's may be one
            remove_tree(self.root, dest, what="a replay's folder")
            real_dir(self.root, dest, what="a replay's folder")
            write_json_atomic(dest / SPEC_FILE, spec.to_dict())
        host = detect_host()  # once: it may ask nvidia-smi
        for run, spec in zip(runs, specs, strict=True):
            if SlotPool(host).acquire(need_of(spec)) is None:
                raise HarnessError(
                    f"this machine cannot run {run.label}: it needs {need_of(spec)}",
                    "diagnose on a machine like the one that ran it",
                )
        outcomes: list[RunOutcome | BaseException | None] = [None, None]

        def work(i: int, slot: Slot) -> None:
            try:
                outcomes[i] = self.executor.run(
                    specs[i], slot, dests[i], timeout_s=self.timeout_s, cancel=self.cancel
                )
            except BaseException as exc:  # noqa: BLE001 - raised below, in this thread
                outcomes[i] = exc

        self.check_cancel(runs)
        pool = SlotPool(host)
        slots = [pool.acquire(need_of(spec)) for spec in specs]
        if all(slots):
            threads = [threading.Thread(target=work, args=(i, s)) for i, s in enumerate(slots)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            for i, spec in enumerate(specs):
                slot = SlotPool(host).acquire(need_of(spec))
                assert slot is not None
                self.check_cancel(runs)
                work(i, slot)
        self.check_cancel(runs)  # a stopped replay is no finding
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        first = read_replay(runs[0].label, dests[0], outcomes[0])  # type: ignore[arg-type]
        second = read_replay(runs[1].label, dests[1], outcomes[1])  # type: ignore[arg-type]
        return first, second

    def check_cancel(self, runs: tuple[RecordedRun, RecordedRun]) -> None:
        """ReplaysStopped once Ctrl-C or SIGTERM has set ``cancel`` (the executor has stopped
        the replays in flight; its ``cleanup`` removes their containers)."""
        if self.cancel.is_set():
            raise ReplaysStopped(
                f"interrupted: the replays of {runs[0].label} and {runs[1].label} were stopped; "
                "no diagnosis was written",
                "run the same `harness diagnose` again when you want it (the runs themselves "
                "are as they were)",
            )


class ReplaysStopped(HarnessError):
    """Ctrl-C or SIGTERM stopped ``harness diagnose``: exit 130, as ``harness run``."""

    exit_code = EXIT_INTERRUPTED


def read_replay(label: str, dest: Path, outcome: RunOutcome | None = None) -> Replay:
    """A replay's files; a clear error, with the run's log, when it did not finish."""
    try:
        record = load_record(dest)
        losses = verified_losses(dest, record)
        data = json.loads(read_regular(dest / REPLAY_FILE).decode("utf-8"))  # never a FIFO
    except (OSError, ValueError, RecordError) as exc:
        why = outcome.message if outcome is not None and outcome.message else str(exc)
        tail = log_tail(dest)
        raise HarnessError(
            f"the replay of {label} did not finish: {why}",
            f"its log is {dest / 'run.log'}" + (f"; it ends:\n{tail}" if tail else ""),
        ) from exc
    if record.status != "ok":
        message = record.error.message if record.error else "failed"
        raise HarnessError(
            f"the replay of {label} failed: {message}", f"its log is {dest / 'run.log'}"
        )
    data = replay_data(label, data, dest / REPLAY_FILE)
    outputs = None
    try:  # a regular file only: never a FIFO (it would hang) or a link
        with open_regular(dest / REPLAY_OUTPUTS_FILE) as handle:
            outputs = np.load(io.BytesIO(handle.read()), allow_pickle=False)
    except FileNotFoundError:
        pass  # no operation was logged
    except (OSError, ValueError) as exc:
        raise HarnessError(
            f"the replay of {label} left {dest / REPLAY_OUTPUTS_FILE} unreadable: "
            f"{getattr(exc, 'strerror', None) or exc}",
            "run the diagnosis again",
        ) from exc
    return Replay(label, data, losses, record.digests.split, outputs, record.provenance.machine)
