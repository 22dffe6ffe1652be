"""``harness diagnose``: replay two runs and name where they first part ways.

The order of the work, so that its cost hardly grows with the step number:

1. the records say where to look: the initial weights' digests, then the earlier of the
   weights' (weights.npy) and the losses' first difference;
2. both runs are replayed up to that step, hashing the training state after every step, with
   every operation logged at that step and the ``LOG_BEFORE`` steps before it only;
3. if the replays part ways earlier still (the optimizer's state can differ before the
   weights do, and the weights long before the loss), that earlier step is replayed and
   logged instead.

docs/diagnose.md walks through an example.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.contract import write_bytes_atomic, write_json_atomic
from harness.contract.machine import Machine, fingerprint
from harness.contract.spec import DIAGNOSE_LEVELS
from harness.diagnose.findings import Finding, Replay, compare, loss_step
from harness.diagnose.run_pair import (
    RecordedRun,
    ReplayRunner,
    pick_runs,
    recorded_step,
    recorded_weights_step,
)
from harness.diagnose.words import machine_sentences, markdown, sentences, setting_differences
from harness.errors import HarnessError
from harness.results.layout import DIAGNOSES_DIR, DIAGNOSIS_FILE, DIAGNOSIS_MARKDOWN
from harness.results.safe_paths import real_dir
from harness.results.store import ResultsDir

DIAGNOSIS_FORMAT_VERSION = 1
#: Forces module-level logging (the fallback for torch without DebugMode), e.g. in tests.
LEVEL_ENV = "HARNESS_DIAGNOSE_LEVEL"
#: How many times the logged step may move earlier before the diagnosis gives up.
MAX_REPLAYS = 3
#: Steps logged before the recorded first divergence: the records hash the weights, not the
#: optimizer's state, which parts first (1 against 2 threads on one machine: the state after
#: step 0, the weights after step 2, the losses at step 74). A few logged steps cost less than a
#: second pair of replays.
LOG_BEFORE = 3


@dataclass
class Diagnosis:
    """What ``diagnosis.json`` holds."""

    name: str
    runs: list[dict[str, Any]]
    finding: Finding
    sentences: list[str]
    recorded_loss_step: int | None
    #: the first step after which the recorded weights differ (weights.npy), where recorded
    recorded_weights_step: int | None
    replays: int
    steps_replayed: list[int] = field(default_factory=list)
    #: the machine fingerprints of the two recorded runs and of their replays (None where not
    #: recorded): a diagnosis made on another machine says so first
    machines: dict[str, list[str | None]] = field(default_factory=dict)
    format_version: int = DIAGNOSIS_FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, **dataclasses.asdict(self)}

    @property
    def title(self) -> str:
        a, b = self.runs
        if a["cell_id"] == b["cell_id"]:
            return f"Diagnosis: {a['cell']}, repeats {a['repeat']} and {b['repeat']}"
        return (
            f"Diagnosis: {a['cell']} (repeat {a['repeat']}) and {b['cell']} (repeat {b['repeat']})"
        )

    @property
    def anchor(self) -> str:
        return f"diagnosis-{self.name}"


def diagnosis_name(a: RecordedRun, b: RecordedRun) -> str:
    return f"{a.cell.id}-{a.repeat}--{b.cell.id}-{b.repeat}"


def level_from(option: str | None) -> str:
    level = option or os.environ.get(LEVEL_ENV) or "ops"
    if level not in DIAGNOSE_LEVELS:
        raise HarnessError(
            f"unknown diagnosis level {level!r}",
            f"choose {' or '.join(DIAGNOSE_LEVELS)} (--level or {LEVEL_ENV})",
        )
    return level


def plan(
    a: RecordedRun, b: RecordedRun, max_steps: int | None
) -> tuple[int, int | None, int | None]:
    """(steps to replay, first step to log, last step to log) from what the records show.

    ``LOG_BEFORE`` steps before the recorded one are logged too: the optimizer's state, which
    the records do not hash, can differ steps before the weights do (Adam's update is about
    ``lr * sign(grad)`` early on, equal for gradients that differ in their last bits)."""
    step = recorded_step(a, b)
    if step == -1:
        return 1, None, None  # the weights differ as created: one step shows the data as well
    if step is not None:
        return step + 1, max(0, step - LOG_BEFORE), step
    available = min(len(a.losses), len(b.losses))
    return max(1, min(available, max_steps or available)), None, None


def run_diagnosis(
    results: Path,
    runner_for: Any,
    *,
    cell: str | None = None,
    cells: tuple[str, str] | None = None,
    repeats: tuple[int, int] | None = None,
    level: str = "ops",
    rank: int = 0,
    max_steps: int | None = None,
    say: Any = print,
) -> Diagnosis:
    """Replay the two runs until their first divergence is logged, and write the diagnosis.

    ``runner_for((a, b))`` returns a ``ReplayRunner`` ready for those two ``RecordedRun`` (the
    executor prepared, its identity checked against theirs); ``say`` gets one progress line per
    replay.
    """
    # the replays start in their own folders: every path handed to them must be absolute
    results = Path(results).resolve()
    a, b = pick_runs(results, cell, cells, repeats)
    store = ResultsDir(results)
    store.lock()  # no `harness run` writes here while the replays run
    try:
        store.check_folders()  # a link at diagnoses/ ... is refused before any replay
        return _diagnose(results, runner_for, a, b, level, rank, max_steps, say)
    finally:
        store.unlock()


def _diagnose(
    results: Path,
    runner_for: Any,
    a: RecordedRun,
    b: RecordedRun,
    level: str,
    rank: int,
    max_steps: int | None,
    say: Any,
) -> Diagnosis:
    name = diagnosis_name(a, b)
    folder = results / DIAGNOSES_DIR / name
    steps, log_from, log_step = plan(a, b, max_steps)
    runner: ReplayRunner = runner_for((a, b))
    try:
        finding, replayed, replayed_on = _replay_until_logged(
            runner, a, b, folder, (steps, log_from, log_step), level, rank, say
        )
    finally:
        runner.executor.cleanup()
    return _write(results, folder, name, (a, b), finding, replayed, replayed_on)


def same_hash(first: Replay, second: Replay) -> None:
    """Two replays' hashes are compared only where one hash made them (replay.json's
    ``hash``): an image built by another harness may hash otherwise."""
    kinds = first.data.get("hash"), second.data.get("hash")
    if kinds[0] != kinds[1]:
        raise HarnessError(
            f"the replays of {first.label} and {second.label} hashed their tensors with "
            f"different hashes ({kinds[0]} and {kinds[1]}): their hashes cannot be compared",
            "run both cells' images from this harness (harness run rebuilds an image whose "
            "workload code changed) and diagnose again",
        )


def _replay_until_logged(
    runner: ReplayRunner,
    a: RecordedRun,
    b: RecordedRun,
    folder: Path,
    first_plan: tuple[int, int | None, int | None],
    level: str,
    rank: int,
    say: Any,
) -> tuple[Finding, list[int], tuple[Machine | None, Machine | None]]:
    """The finding, the steps of each replay, and the machines the last replays ran on."""
    finding: Finding | None = None
    replayed: list[int] = []
    machines: tuple[Machine | None, Machine | None] = (None, None)
    steps, log_from, log_step = first_plan
    for _ in range(MAX_REPLAYS):
        options = {
            "steps": steps,
            "log_from": log_from,
            "log_step": log_step,
            "level": level,
            "rank": rank,
        }
        what = "hashing every step"
        if log_step is not None:
            what = f"logging step {log_step}"
            if log_from is not None and log_from != log_step:
                what = f"logging steps {log_from} to {log_step}"
        count = f"{steps} step" + ("s" if steps != 1 else "")
        say(f"replaying {a.label} and {b.label}: {count}, {what}")
        first, second = runner.replay_pair((a, b), options, (folder / "a", folder / "b"))
        same_hash(first, second)
        replayed.append(steps)
        machines = (first.machine, second.machine)
        finding = compare(first, second)
        if finding.kind != "relog":
            break
        moved = min(s for s in (finding.state_step, finding.loss_step) if s is not None)
        steps, log_from, log_step = moved + 1, moved, moved
    assert finding is not None
    if finding.kind == "relog":
        raise HarnessError(
            f"the replays of {a.label} and {b.label} part ways at a different step each time "
            f"({len(replayed)} tries)",
            "the nondeterminism depends on timing: run the diagnosis again",
        )
    return finding, replayed, machines


def _write(
    results: Path,
    folder: Path,
    name: str,
    runs: tuple[RecordedRun, RecordedRun],
    finding: Finding,
    replayed: list[int],
    replayed_on: tuple[Machine | None, Machine | None],
) -> Diagnosis:
    a, b = runs
    placements = {a.spec.get("placement"), b.spec.get("placement")}
    losses = loss_step(a.losses, b.losses)
    weights = recorded_weights_step(a, b)
    said = machine_sentences((a.machine, b.machine), replayed_on)
    diagnosis = Diagnosis(
        name=name,
        runs=[_run_entry(r, results) for r in (a, b)],
        finding=finding,
        sentences=said
        + sentences(
            finding,
            losses,
            placements,
            weights,
            setting_differences(a.cell.settings, b.cell.settings),
        ),
        recorded_loss_step=losses,
        recorded_weights_step=weights,
        replays=len(replayed),
        steps_replayed=replayed,
        machines={
            "recorded": [fingerprint(a.machine), fingerprint(b.machine)],
            "replayed": [fingerprint(m) for m in replayed_on],
        },
    )
    real_dir(results, folder, what="the diagnosis")  # never through a link
    write_json_atomic(folder / DIAGNOSIS_FILE, diagnosis.to_dict())
    op = dataclasses.asdict(finding.op) if finding.op is not None else None
    text = markdown(diagnosis.title, diagnosis.sentences, op, diagnosis.anchor)
    write_bytes_atomic(folder / DIAGNOSIS_MARKDOWN, text.encode("utf-8"))
    return diagnosis


def _run_entry(run: RecordedRun, results: Path) -> dict[str, Any]:
    return {
        "cell_id": run.cell.id,
        "cell": run.cell.name,
        "repeat": run.repeat,
        "path": str(run.run_dir.relative_to(results)),
        "settings": dict(run.cell.settings),
    }


def runner_factory(results: Path, executor_choice: str, data_dir: Path | None, python: str | None,
                   cancel: threading.Event, *, code: Path | None = None,
                   say: Any = None) -> Any:  # fmt: skip
    """A ``runner_for`` that uses the executor the results' matrix chooses, replaying the user's
    code from the folder's snapshot (or ``code``, ``--code``: harness/diagnose/identity.py) and
    refusing a replay whose code, torch, Python or image is not what made the runs."""
    from harness.contract import RunSpec
    from harness.diagnose.identity import check_identity, replay_code
    from harness.matrix import load_matrix
    from harness.results.layout import MATRIX_FILE
    from harness.results.manifest import read_manifest
    from harness.run.matrix_runner import make_executor

    results = Path(results).resolve()  # the replays start in their own folders

    def runner_for(runs: tuple[RecordedRun, RecordedRun]) -> ReplayRunner:
        matrix_file = results / MATRIX_FILE
        if not matrix_file.is_file():
            raise HarnessError(
                f"{results} has no {MATRIX_FILE}: the diagnosis cannot tell how its runs ran",
                "diagnose a folder `harness run` or `harness merge` wrote",
            )
        manifest = read_manifest(results)
        recorded = manifest.workload_path if manifest is not None else None
        # before any executor exists: nothing is mounted or imported that the user did not name
        # or that is not the runs' own snapshot
        replay = replay_code(results, runs, code, recorded)
        loaded = load_matrix(
            matrix_file,
            code_dir=replay.folder if replay is not None else None,
            check_code_dir=replay is not None,
        )
        executor = make_executor(loaded, executor_choice, data_dir=data_dir, python=python)
        executor.bind_results(results.resolve())
        executor.use_code(replay.folder if replay else None, replay.digest if replay else None)
        # what a `harness diagnose` or `harness run` killed with SIGKILL left running here
        # (under the folder's lock, as `harness run` sweeps)
        for notice in executor.sweep():
            sys.stderr.write(f"harness: {notice}\n")
        specs = [RunSpec.from_dict(r.spec) for r in runs]
        identities = executor.prepare(specs)
        checked = check_identity(runs, [executor.identity_for(s, identities) for s in specs])
        if say is not None:
            if replay is not None:
                say(replay.says())
            if checked:
                say(f"checked against both records: {', '.join(checked)}")
        return ReplayRunner(executor, loaded.model.run.timeout_s, cancel, results)

    return runner_for
