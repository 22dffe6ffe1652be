"""``harness diagnose`` on real runs (real MNIST, real Lightning, replays through the executor):
the initial weights for ``none`` and ``before_trainer``, the first operation for 1 against 2
threads and for two learning rates, no divergence for two repeats of ``before_model``; the same
answer at module level and inside a container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import BASE_IMAGE

from harness.contract import LOSSES_FILE, WEIGHTS_FILE
from harness.diagnose.words import PHASES

pytestmark = pytest.mark.slow

#: Whether, where and when 1 and 2 threads part ways depends on the CPU's kernels: one machine
#: parted in a backward ``mm`` of step 0 (the losses at step 74), another in a forward ``addmm``
#: of step 0 (the losses at step 37); with MKL_CBWR=COMPATIBLE the bits do not depend on the
#: thread count at all. So the tests check each diagnosis against the replays' own logs and
#: records and pin none of it (docs/testing.md, "Facts of one machine"). Two learning rates part
#: ways in the optimizer step of step 0 on every machine: the other pair, whose operation is
#: found wherever it runs.
STEPS = 80
#: the default learning rate, and the other cell's
LEARNING_RATES = (0.0001, 0.0002)
MATRIX = f"""\
name: diagnose
run: {{repeats: 2, epochs: 1, max_steps_per_epoch: {STEPS}}}
axes:
  placement: [none, before_trainer, before_model]
  threads: [1, 2]
  learning_rate: [{LEARNING_RATES[0]}]
exclude:
  - {{placement: none, threads: 2}}
  - {{placement: before_trainer, threads: 2}}
include:
  - {{placement: before_model, threads: 1, learning_rate: {LEARNING_RATES[1]}}}
"""


def harness(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def cell_ids(out: Path, learning_rate: float = LEARNING_RATES[0]) -> dict[tuple[str, int], str]:
    """(placement, threads) -> cell id of the cells of ``learning_rate``, from the manifest."""
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        (c["settings"]["placement"], c["settings"]["threads"]): c["id"]
        for c in manifest["cells"]
        if c["settings"]["learning_rate"] == learning_rate
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("diagnose")
    matrix = tmp / "matrix.yaml"
    matrix.write_text(MATRIX)
    out = tmp / "results"
    proc = harness("run", str(matrix), "--out", str(out), "--progress", "quiet", "--no-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def diagnosis(out: Path, proc: subprocess.CompletedProcess, cwd: Path | None = None) -> dict:
    """diagnosis.json of the `diagnosis:` line (a path as the user gave the folder)."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("diagnosis: "))
    path = (cwd or Path.cwd()) / line.removeprefix("diagnosis: ")
    assert path.parent.parent.resolve() == (out / "diagnoses").resolve()
    return json.loads(path.read_text())


def test_none_names_the_initial_weights(results: Path):
    cell = cell_ids(results)[("none", 1)]
    # a relative folder, as a user types it: the replays start in their own folders
    proc = harness("diagnose", "results", "--cell", cell, "--no-report", cwd=results.parent)
    found = diagnosis(results, proc, cwd=results.parent)
    assert found["finding"]["kind"] == "initial_weights"
    assert found["finding"]["parameters_differ"][0] == "model.1.weight"
    assert found["steps_replayed"] == [1]  # the records showed it: one step replayed
    assert "The initial weights already differ: `model.1.weight`" in proc.stdout
    assert "the seed is never set (placement `none`)" in proc.stdout
    assert "The data split differs too" in proc.stdout


def test_before_trainer_names_the_initial_weights_and_the_same_split(results: Path):
    cell = cell_ids(results)[("before_trainer", 1)]
    proc = harness("diagnose", str(results), "--cell", cell, "--no-report")
    found = diagnosis(results, proc)
    assert found["finding"]["kind"] == "initial_weights"
    assert found["finding"]["split_same"] is True
    assert "`model.1.weight` is the first parameter" in proc.stdout
    assert "The data split is the same in both runs" in proc.stdout


def _hashes(described: list[dict]) -> list[str | None]:
    return [d.get("hash") for d in described]


def _first_difference(a: list, b: list) -> int | None:
    """The first index where two sequences differ over their common length, else None."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)


def _first_loss_difference(a: np.ndarray, b: np.ndarray) -> int | None:
    """The first step whose loss bits differ (losses.npy, [steps, ranks])."""
    n = min(len(a), len(b))
    rows = (a[:n].view(np.uint32) != b[:n].view(np.uint32)).any(axis=1)
    return int(np.argmax(rows)) if rows.any() else None


def _shapes(op: dict) -> list[list[list[int]]]:
    return [[d["shape"] for d in op[k]] for k in ("inputs", "outputs")]


@dataclass
class Diagnosed:
    """One ``harness diagnose`` of the 1- against the 2-thread cell, and what its replays
    logged, read as soon as it finished (another diagnosis of the same two runs replays into
    the same folders)."""

    out: Path
    proc: subprocess.CompletedProcess
    found: dict
    #: replay.json of the replays ``a`` and ``b``, and their losses
    replays: tuple[dict, dict]
    losses: tuple[np.ndarray, np.ndarray]


def diagnose(
    out: Path, cells: tuple[str, str], env: dict[str, str] | None = None, report: bool = False
) -> Diagnosed:
    """``harness diagnose`` of repeat 0 of two cells."""
    flags = [] if report else ["--no-report"]
    proc = harness("diagnose", str(out), "--cells", cells[0], "--cells", cells[1], *flags, env=env)
    found = diagnosis(out, proc)
    folder = out / "diagnoses" / found["name"]
    a, b = (json.loads((folder / w / "replay.json").read_text()) for w in ("a", "b"))
    losses = (np.load(folder / "a" / LOSSES_FILE), np.load(folder / "b" / LOSSES_FILE))
    return Diagnosed(out, proc, found, (a, b), losses)


def threads_cells(out: Path) -> tuple[str, str]:
    """The ``before_model`` cells of 1 and 2 threads."""
    ids = cell_ids(out)
    return ids[("before_model", 1)], ids[("before_model", 2)]


def learning_rate_cells(out: Path) -> tuple[str, str]:
    """The ``before_model`` cells of 1 thread at the two learning rates."""
    first, second = (cell_ids(out, lr)[("before_model", 1)] for lr in LEARNING_RATES)
    return first, second


def records_agree(run: Diagnosed) -> bool:
    """Whether the two recorded runs are the same bits: every loss, and the parameters' hashes
    after every step (weights.npy)."""
    folders = [run.out / r["path"] for r in run.found["runs"]]
    same = [
        np.load(folders[0] / name).tobytes() == np.load(folders[1] / name).tobytes()
        for name in (LOSSES_FILE, WEIGHTS_FILE)
    ]
    return all(same)


def _where(module: str | None, types: dict[str, str]) -> str:
    """How the sentence places an operation of ``module`` (harness/diagnose/words.py)."""
    if module is None:
        return "outside every module"
    if module == "":
        return "in the LightningModule itself"
    return f"in module `{module}` ({types[module]})"


def _threads_op(run: Diagnosed) -> tuple[dict, dict] | None:
    """The 1- against 2-thread diagnosis, whatever this CPU's kernels computed (issue 27):
    where the records differ, its operation checked against the replays' logs (``_logged_op``);
    where this machine's kernels do not depend on the thread count (the records are the same
    bits), the answer that there is nothing to find, and None."""
    if not records_agree(run):
        return _logged_op(run)
    found = run.found
    assert found["finding"]["kind"] == "no_divergence", found["sentences"]
    assert found["recorded_loss_step"] is None and found["recorded_weights_step"] is None
    assert f"did not diverge in {STEPS} replayed steps" in run.proc.stdout
    assert "Their records agree as well." in run.proc.stdout
    return None


def _logged_op(run: Diagnosed) -> tuple[dict, dict]:
    """The diagnosis's operation, checked against the replays' own logs: no operation, phase,
    module or step is pinned, since which of them part two runs depends on the CPU. Returns
    the operation as diagnosis.json holds it, and its entry in the first replay's log."""
    found, (a, b) = run.found, run.replays
    finding = found["finding"]
    assert finding["kind"] == "operation", found["sentences"]
    assert finding["level"] == a["level"] == b["level"]
    op = finding["op"]
    # the same model and the same data: only the setting compared differs
    assert a["parameters"] == b["parameters"] and a["init"] == b["init"]
    assert a["batches"] == b["batches"] and a["state_names"] == b["state_names"]
    # the step is the first after which the training state differs, and it was logged
    state = _first_difference(a["states"], b["states"])
    assert state is not None and finding["state_step"] == op["step"] == state
    assert state in a["logged_steps"] and state in b["logged_steps"]
    # the operation is that step's first, in log order, whose output hashes differ
    ops_a, ops_b = a["ops"][str(state)], b["ops"][str(state)]
    outputs = ([_hashes(e["outputs"]) for e in ops] for ops in (ops_a, ops_b))
    k = _first_difference(*outputs)
    assert k is not None, f"no logged output differs at step {state}"
    x, y = ops_a[k], ops_b[k]
    ran = ([(e["op"], e["module"], e["phase"]) for e in ops[: k + 1]] for ops in (ops_a, ops_b))
    assert next(ran) == next(ran)  # both ran the same operations up to it
    assert (op["index"], op["of"]) == (x["index"], len(ops_a)) and x["index"] == k
    for key in ("op", "phase", "module", "tensors", "inputs", "outputs"):
        assert op[key] == x[key], key
    # its input hashes were equal in both logs: the operation itself made the difference
    assert _hashes(x["inputs"]) == _hashes(y["inputs"])
    assert op["inputs_equal"] is True and op["differing_inputs"] == []
    assert op["max_ulps"] > 0 and op["max_abs_delta"] > 0
    # the losses part ways no earlier than the state, in the replays and in the records (a
    # loss that differs makes gradients, and so a state, that differ after its own step)
    replayed = _first_loss_difference(*run.losses)
    assert finding["loss_step"] == replayed
    for loss_step in (replayed, found["recorded_loss_step"]):
        assert loss_step is None or loss_step >= state
    # the sentence names the logged operation, its step, phase and module
    what = f"operation whose output bits differ is `{x['op']}`"
    if finding["level"] != "ops":
        what = f"logged value whose bits differ is the {x['op']}"
    phase = PHASES.get(x["phase"], x["phase"])
    where = _where(x["module"], a["module_types"])
    assert f"The first {what} at step {state}, {phase}, {where}" in run.proc.stdout
    if x["inputs"]:
        assert "Its inputs were equal in both runs" in run.proc.stdout
    else:
        assert "Everything logged before it was equal in both runs" in run.proc.stdout
    return op, x


def _report_section(run: Diagnosed, cells: tuple[str, str], logged: dict | None) -> None:
    """The report the diagnosis rewrote: its section, linked from both cells' rows; with an
    operation (``logged``: its entry in the log), the state and loss steps and its table row:
    the logged operation's step, phase, name and module."""
    results, found = run.out, run.found
    md = (results / "report.md").read_text()
    anchor = f"diagnosis-{found['name']}"
    assert md.count(f"(#{anchor})") == 2
    start = md.index(f'<a id="{anchor}"></a>', md.index("## Diagnoses"))
    end = md.find('<a id="diagnosis-', start + 1)
    section = md[start : end if end != -1 else None]
    entries = json.loads((results / "report.json").read_text())["diagnoses"]
    entry = next(e for e in entries if e["name"] == found["name"])
    assert entry["kind"] == found["finding"]["kind"] and set(entry["cells"]) == set(cells)
    if logged is None:
        assert "did not diverge" in section
        return
    step, loss_step = found["finding"]["op"]["step"], found["recorded_loss_step"]
    assert f"After step {step} the training state differs" in section
    if loss_step is None:
        assert "The losses first differ" not in section
    elif loss_step > step:
        assert f"The losses first differ only at step {loss_step}" in section
    else:
        assert f"The losses first differ at step {loss_step}." in section
    module = logged["module"] or "-"
    assert f"| {step} | {logged['phase']} | `{logged['op']}` | `{module}` |" in section


@pytest.fixture(scope="module")
def threads_local(results: Path) -> Diagnosed:
    """The 1- against 2-thread diagnosis at the operation level, with the report."""
    return diagnose(results, threads_cells(results), report=True)


def test_threads_name_the_first_operation_and_the_report_shows_it(threads_local: Diagnosed):
    assert threads_local.found["finding"]["level"] == "ops"
    found, logged = _threads_op(threads_local), None
    if found is not None:  # None: this machine's kernels do not depend on the thread count
        op, logged = found
        assert op["op"].startswith("aten.")  # an aten operation, not a module event
    _report_section(threads_local, threads_cells(threads_local.out), logged)


def test_two_learning_rates_part_in_the_optimizer_step_on_every_machine(results: Path):
    """Two learning rates, the same weights and data: the learning rate enters only the
    optimizer step, so the forward and backward passes of step 0 are the same bits on every
    machine and its update is not; the weights differ after step 0, the losses from step 1."""
    cells = learning_rate_cells(results)
    run = diagnose(results, cells, report=True)
    assert not records_agree(run)
    op, logged = _logged_op(run)
    assert op["op"].startswith("aten.") and (op["step"], op["phase"]) == (0, "optimizer")
    assert (run.found["recorded_weights_step"], run.found["recorded_loss_step"]) == (0, 1)
    _report_section(run, cells, logged)


#: What module level logs instead of aten operations (harness/workload/replay.py)
MODULE_EVENTS = {"module output", "module input gradient", "parameter gradient", "parameter update"}


def test_the_module_level_fallback_names_the_module(results: Path):
    """Module level: the same checks against the logs, which hold module events; the
    learning rates part in a parameter's update, on every machine."""
    level = {"HARNESS_DIAGNOSE_LEVEL": "modules"}
    threads = diagnose(results, threads_cells(results), env=level)
    rates = diagnose(results, learning_rate_cells(results), env=level)
    for run in (threads, rates):
        assert run.found["finding"]["level"] == "modules"
        for replay in run.replays:
            assert replay["level"] == "modules"
            assert {e["op"] for ops in replay["ops"].values() for e in ops} <= MODULE_EVENTS
    op, logged = _logged_op(rates)
    assert (op["op"], op["phase"]) == ("parameter update", "optimizer")
    named = [(rates, logged)]
    found = _threads_op(threads)
    if found is not None:  # None: this machine's kernels do not depend on the thread count
        named.append((threads, found[1]))
    for run, logged in named:
        assert run.found["finding"]["op"]["op"] in MODULE_EVENTS and logged["module"] is not None
        assert "module level" in run.proc.stdout
        assert _where(logged["module"], run.replays[0]["module_types"]) in run.proc.stdout


def test_before_model_repeats_do_not_diverge(results: Path):
    cell = cell_ids(results)[("before_model", 1)]
    proc = harness("diagnose", str(results), "--cell", cell, "--max-steps", "6", "--no-report")
    found = diagnosis(results, proc)
    assert found["finding"]["kind"] == "no_divergence"
    assert "did not diverge in 6 replayed steps" in proc.stdout


def test_a_cell_that_is_not_there_is_a_clear_error(results: Path):
    proc = harness("diagnose", str(results), "--cell", "nosuchcell", "--no-report")
    assert proc.returncode == 2
    assert "has no cell 'nosuchcell'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.docker
def test_in_a_container_the_answer_is_the_local_one(
    workload_image, tmp_path: Path, threads_local: Diagnosed
):
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        "name: diagnose-container\n"
        f"run: {{repeats: 1, epochs: 1, max_steps_per_epoch: {STEPS}}}\n"
        "axes:\n"
        f"  image: ['{BASE_IMAGE}']\n"
        "  placement: [before_model]\n"
        "  threads: [1, 2]\n"
    )
    out = tmp_path / "results"
    proc = harness("run", str(matrix), "--out", str(out), "--progress", "quiet", "--no-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    container = diagnose(out, threads_cells(out))
    replay = out / "diagnoses" / container.found["name"] / "a" / "run.json"
    assert json.loads(replay.read_text())["provenance"]["image_id"]  # it ran in the image
    # the local diagnosis of the same settings (same torch, same CPU) gives the same answer
    here, local = _threads_op(container), _threads_op(threads_local)
    assert container.found["finding"]["kind"] == threads_local.found["finding"]["kind"]
    if here is not None and local is not None:
        keys = ("step", "index", "of", "op", "phase", "module", "tensors")
        assert {k: here[0][k] for k in keys} == {k: local[0][k] for k in keys}
        assert _shapes(here[0]) == _shapes(local[0])
