"""What only a GPU shows, checked on a GPU machine in one go (scripts/gpu-check.sh runs it).

The main job is ``harness run --executor local examples/gpu-check.yaml`` (both models, the cuDNN
axes for ``cnn``, deterministic algorithms off/on/warn, the placements; 2 repeats of 300 steps)
then ``harness report``; beside it the host-sync count at two step counts and the capture
benchmark. It writes ``OUT/summary.md`` (which cells reproduce and which diverge, with the first
divergence; which ops ``warn`` named; per-step time with and without the loss capture; the sync
counts; the GPU, driver and torch), ``OUT/gpu-check.json`` and ``.md`` (every check's details),
``OUT/results/`` (the results folder with its report) and ``OUT/capture.json``.

Checks (``CHECKS``; the default set is ``DEFAULT``, sized to finish in 8 minutes on one H100;
name checks after OUT to run others, ``all`` for every one):

- ``facts``: the GPU (name, SM count, capability), driver, torch, CUDA and cuDNN of this machine;
- ``probe``: the GPU probe the Docker executor runs in each GPU image, run here directly;
- ``matrix``: the GPU check matrix through ``harness run`` and ``harness report``;
- ``host_syncs``: ``run.count_host_syncs`` runs of each model at two step counts: on one GPU
  the count should not grow with the steps (docs/workload.md, "Host syncs per step");
- ``capture``: benchmarks/bench_capture.py on this device (the workload against a plain loop);
- not by default (about 20 s each): ``run_ok`` (one GPU run ends ok, with the GPU in its
  provenance), ``cuda_error`` (a sticky CUDA error still leaves a failed ``run.json`` naming
  it), ``sigterm`` / ``sigint`` (a signal during training leaves a failed ``run.json`` saying
  it was terminated / interrupted).

Environment: ``HARNESS_GPU_CHECK_ACCELERATOR=cpu`` is the dry mode: the same code paths on the
CPU (``probe`` is left out, the sync count is null with its reason), few steps, to test this
script in CI. ``HARNESS_GPU_CHECK_MATRIX`` (another matrix file), ``HARNESS_GPU_CHECK_STEPS``
(steps per matrix run), ``HARNESS_GPU_CHECK_PARALLEL`` (runs side by side on the one GPU,
default 6), ``HARNESS_GPU_CHECK_SYNC_STEPS`` (two step counts), ``HARNESS_GPU_CHECK_MODELS``
(the models of the sync count and the benchmark), ``HARNESS_GPU_CHECK_BENCH`` (the benchmark's
``--steps``/``--repeats``, e.g. ``300,2``).

Exit code 0 when every check passed, 1 otherwise; the files say which failed and why.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
RUN_S = 300  # no single run may take longer than this
#: "cpu" is the dry mode: the same checks on a CPU, to try this script where no GPU is
ACCELERATOR = os.environ.get("HARNESS_GPU_CHECK_ACCELERATOR", "gpu")
DRY = ACCELERATOR == "cpu"
MATRIX = Path(os.environ.get("HARNESS_GPU_CHECK_MATRIX", ROOT / "examples" / "gpu-check.yaml"))
STEPS = os.environ.get("HARNESS_GPU_CHECK_STEPS", "20" if DRY else "")
PARALLEL = int(os.environ.get("HARNESS_GPU_CHECK_PARALLEL", "6"))
SYNC_STEPS = [
    int(n) for n in os.environ.get("HARNESS_GPU_CHECK_SYNC_STEPS", "5,10" if DRY else "50,300")
    .split(",")
]  # fmt: skip
MODELS = os.environ.get("HARNESS_GPU_CHECK_MODELS", "mlp,cnn").split(",")
BENCH_STEPS, BENCH_REPEATS = (
    int(n) for n in os.environ.get("HARNESS_GPU_CHECK_BENCH", "10,1" if DRY else "300,2").split(",")
)


def sh(argv: list[str], timeout: float = RUN_S, **kwargs: Any) -> subprocess.CompletedProcess:
    """argv (never a shell string), its text output captured; a missing program is exit 127."""
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
    except FileNotFoundError as exc:
        return subprocess.CompletedProcess(argv, 127, "", str(exc))
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {exc.timeout} s")


def make_spec(folder: Path, run: dict[str, Any], **settings: Any) -> Path:
    """A spec.json for one run, made the way the host makes it: from a matrix."""
    from harness.matrix import load_matrix

    axes = {
        "image": ["local"],
        "accelerator": [ACCELERATOR],
        "placement": ["before_model"],
        "devices": [1],
    }
    axes.update({k: [v] for k, v in settings.items()})
    matrix = {"name": "gpu-check", "run": {"repeats": 1, "seed": 201014, "threads": 1, **run}}
    matrix["axes"] = axes
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "matrix.yaml"
    path.write_text(json.dumps(matrix))  # JSON is YAML
    spec = load_matrix(path).cells[0].spec(0)
    out = folder / "spec.json"
    out.write_text(json.dumps(spec.to_dict(), indent=2))
    return out


def workload(spec: Path, out: Path) -> list[str]:
    return [PY, "-m", "harness.workload", "--spec", str(spec), "--out", str(out)]


def record(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / "run.json").read_text())
    except (OSError, ValueError) as exc:
        return {"status": "missing", "error": {"type": "NoRecord", "message": str(exc)}}


def short(rec: dict[str, Any]) -> dict[str, Any]:
    error = rec.get("error") or {}
    prov = rec.get("provenance") or {}
    return {
        "status": rec.get("status"),
        "steps": rec.get("steps"),
        "error_type": error.get("type"),
        "error_message": (error.get("message") or "")[:400],
        "gpu": prov.get("gpus"),  # every GPU the run saw
        "trajectory": (rec.get("digests") or {}).get("trajectory"),
    }


FACTS = """\
import json, torch
facts = {"torch": torch.__version__, "cuda": torch.version.cuda,
         "cudnn": torch.backends.cudnn.version(), "devices": torch.cuda.device_count()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    facts.update(name=p.name, sm_count=p.multi_processor_count,
                 capability=f"{p.major}.{p.minor}", memory_bytes=p.total_memory)
print(json.dumps(facts))
"""


def check_facts(work: Path) -> dict[str, Any]:
    smi = sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"])
    torch_facts = sh([PY, "-c", FACTS])
    lines = torch_facts.stdout.strip().splitlines()
    facts = json.loads(lines[-1]) if lines else {"stderr": torch_facts.stderr[-1000:]}
    driver = None
    if smi.returncode == 0 and len(smi.stdout.strip().splitlines()) > 1:
        driver = smi.stdout.strip().splitlines()[1].split(",")[1].strip()
    return {
        "ok": torch_facts.returncode == 0,
        "accelerator": ACCELERATOR,
        "driver": driver,
        "nvidia_smi": smi.stdout.strip() or smi.stderr.strip()[:300],
        "python": sys.version.split()[0],
        **facts,
    }


def check_probe(work: Path) -> dict[str, Any]:
    from harness.workload import gpu_probe  # the script the Docker executor runs per image

    proc = sh([PY, gpu_probe.__file__, "1"])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"stdout": proc.stdout, "stderr": proc.stderr}
    return {"ok": proc.returncode == 0, "exit_code": proc.returncode, "result": result}


def check_run_ok(work: Path) -> dict[str, Any]:
    spec = make_spec(work, {"epochs": 1, "max_steps_per_epoch": 200})
    proc = sh(workload(spec, work))
    rec = short(record(work))
    return {"ok": proc.returncode == 0 and rec["status"] == "ok", **rec}


def check_cuda_error(work: Path) -> dict[str, Any]:
    spec = make_spec(
        work,
        {"epochs": 1, "max_steps_per_epoch": 200, "test_fault": {"kind": "cuda_error", "step": 20}},
    )
    started = time.monotonic()
    proc = sh(workload(spec, work))
    rec = short(record(work))
    said = (rec["error_type"] or "") + " " + (rec["error_message"] or "")
    return {
        "ok": proc.returncode != 0 and rec["status"] == "failed" and "CUDA" in said.upper(),
        "exit_code": proc.returncode,
        "seconds": round(time.monotonic() - started, 1),
        **rec,
    }


def check_signal(sig: signal.Signals, expected: str) -> Callable[[Path], dict[str, Any]]:
    def check(work: Path) -> dict[str, Any]:
        spec = make_spec(work, {"epochs": 50, "max_steps_per_epoch": 400})
        log = open(work / "run.log", "wb")
        proc = subprocess.Popen(workload(spec, work), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if b"epoch 2/" in (work / "run.log").read_bytes():
                break  # in fit, between epochs 2 and 3
            time.sleep(0.2)
        sent = time.monotonic()
        proc.send_signal(sig)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log.close()
        rec = short(record(work))
        return {
            "ok": rec["status"] == "failed" and rec["error_type"] == expected,
            "exit_code": code,
            "seconds_to_exit": round(time.monotonic() - sent, 1),
            **rec,
        }

    return check


# ---------------------------------------------------------------- the matrix


def check_matrix_file(text: str) -> str:
    """The check's matrix for this run: the accelerator swapped in (dry mode: ``cpu``), the
    steps of a run set when ``HARNESS_GPU_CHECK_STEPS`` is."""
    import yaml

    data = yaml.safe_load(text)
    data.setdefault("run", {})
    if STEPS:
        data["run"]["max_steps_per_epoch"] = int(STEPS)
    data.setdefault("axes", {})["accelerator"] = [ACCELERATOR]
    for entry in data.get("include") or []:
        if "accelerator" in entry:
            entry["accelerator"] = ACCELERATOR
    return json.dumps(data, indent=2)  # JSON is YAML


def _cell_row(cell: dict[str, Any], results: Path) -> dict[str, Any]:
    """What the summary says of one cell, from report.json and its runs' records."""
    first = cell.get("first_divergence") or {}
    ops: set[str] = set()
    errors: list[str] = []
    for run in cell.get("runs") or []:
        rec = record(results / run.get("path", "")) if run.get("path") else {}
        ops.update(rec.get("nondeterministic_ops") or [])
        error = rec.get("error") or run.get("error") or {}
        if error:
            errors.append(f"{error.get('type')}: {(error.get('message') or '')[:160]}")
    settings = cell.get("settings") or {}
    return {
        "name": cell.get("name"),
        "model": settings.get("model", "mlp"),
        "deterministic_algorithms": settings.get("deterministic_algorithms"),
        "verdict": cell.get("verdict"),
        "reproducible": cell.get("reproducible"),
        "first_divergence": first.get("step") if first else None,
        "max_abs_delta": first.get("max_abs_delta") if first else None,
        "seconds_per_epoch": cell.get("seconds_per_epoch"),
        "nondeterministic_ops": sorted(ops),
        "errors": errors[:2],
    }


def check_matrix(work: Path, out: Path) -> dict[str, Any]:
    matrix = out / "matrix.yaml"
    matrix.write_text(check_matrix_file(MATRIX.read_text()))
    results = out / "results"
    argv = [PY, "-m", "harness.cli", "run", str(matrix), "--out", str(results)]
    argv += ["--executor", "local", "--progress", "plain", "--no-report"]
    if not DRY:  # that many 1-GPU runs side by side on GPU 0 (harness/run/schedule.py)
        argv += ["--gpus", ",".join(["0"] * PARALLEL)]
    ran = sh(argv, timeout=RUN_S * 2)
    report = sh([PY, "-m", "harness.cli", "report", str(results)], timeout=RUN_S)
    try:
        data = json.loads((results / "report.json").read_text())
    except (OSError, ValueError):
        data = None
    cells = [_cell_row(c, results) for c in (data or {}).get("cells", [])]
    return {
        "ok": ran.returncode in (0, 1) and report.returncode == 0 and data is not None,
        "exit_code": ran.returncode,
        "report_exit_code": report.returncode,
        "cells": cells,
        "stderr_tail": (ran.stderr + report.stderr)[-2000:],
    }


# ---------------------------------------------------------------- host syncs, capture


def check_host_syncs(work: Path, out: Path) -> dict[str, Any]:
    """``count_host_syncs`` runs of each model at two step counts, side by side (their times
    do not matter); on one GPU the two counts of a model should be equal."""
    jobs = []
    for model in MODELS:
        for steps in SYNC_STEPS:
            folder = work / f"{model}-{steps}"
            run = {"epochs": 1, "max_steps_per_epoch": steps, "count_host_syncs": True}
            jobs.append((model, steps, folder, make_spec(folder, run, model=model)))
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), PARALLEL))) as pool:
        procs = list(pool.map(lambda j: sh(workload(j[3], j[2])), jobs))
    found: dict[str, Any] = {}
    ok = True
    for (model, steps, folder, _), proc in zip(jobs, procs, strict=True):
        rec = record(folder)
        syncs = rec.get("host_syncs")
        found.setdefault(model, []).append({"steps": steps, "status": rec.get("status"), **(
            syncs or {"count": None, "reason": "no host_syncs in the record"})})  # fmt: skip
        good = rec.get("status") == "ok" and syncs is not None
        good = good and (syncs["count"] is not None) != DRY  # a count on a GPU, none on a CPU
        ok = ok and proc.returncode == 0 and good
    constant = {
        model: (len({r["count"] for r in rows}) == 1 if rows[0]["count"] is not None else None)
        for model, rows in found.items()
    }
    return {"ok": ok, "models": found, "constant": constant}


def check_capture(work: Path, out: Path) -> dict[str, Any]:
    """benchmarks/bench_capture.py on this device: the workload against a plain loop."""
    argv = [PY, str(ROOT / "benchmarks" / "bench_capture.py")]
    argv += ["--device", "cpu" if DRY else "cuda", "--steps", str(BENCH_STEPS)]
    argv += ["--repeats", str(BENCH_REPEATS), "--models", *MODELS]
    argv += ["--json", str(out / "capture.json")]
    proc = sh(argv, timeout=RUN_S * 2)
    try:
        data = json.loads((out / "capture.json").read_text())
    except (OSError, ValueError):
        data = None
    return {
        "ok": proc.returncode == 0 and data is not None,
        "exit_code": proc.returncode,
        "capture": data,
        "stdout_tail": proc.stdout[-1500:],
        "stderr_tail": proc.stderr[-1500:],
    }


def in_out(check: Callable[[Path, Path], dict[str, Any]], out: Path) -> Callable[[Path], Any]:
    return lambda work: check(work, out)


def checks(out: Path) -> dict[str, Callable[[Path], dict[str, Any]]]:
    return {
        "facts": check_facts,
        "probe": check_probe,
        "matrix": in_out(check_matrix, out),
        "host_syncs": in_out(check_host_syncs, out),
        "capture": in_out(check_capture, out),
        "run_ok": check_run_ok,
        "cuda_error": check_cuda_error,
        "sigterm": check_signal(signal.SIGTERM, "Terminated"),
        "sigint": check_signal(signal.SIGINT, "Interrupted"),
    }


#: what runs without named checks: within 8 minutes on one H100 (the fault checks add ~90 s)
DEFAULT = ("facts", "probe", "matrix", "host_syncs", "capture")


# ---------------------------------------------------------------- summary.md


def _cell_lines(cells: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| cell | model | verdict | first divergence (step) | max abs delta there | s / epoch |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for c in cells:
        step = "" if c["first_divergence"] is None else str(c["first_divergence"])
        delta = "" if c["max_abs_delta"] is None else f"{c['max_abs_delta']:.3g}"
        spe = "" if c["seconds_per_epoch"] is None else f"{c['seconds_per_epoch']:.2f}"
        lines.append(f"| {c['name']} | {c['model']} | {c['verdict']} | {step} | {delta} | {spe} |")
    lines += ["", "s / epoch: the report's, of runs that ran side by side: not a timing."]
    failed = [c for c in cells if c["errors"]]
    if failed:
        lines += ["", "Runs that failed:", ""]
        lines += [f"- {c['name']}: {'; '.join(c['errors'])}" for c in failed]
    return lines


def summary(results: dict[str, Any]) -> str:
    """OUT/summary.md: what the check found, in the order the issue asks."""
    facts = results.get("facts", {})
    lines = ["# GPU check summary", "", "## Machine", ""]
    lines.append(
        f"accelerator `{ACCELERATOR}`{' (CPU dry mode)' if DRY else ''}; GPU "
        f"{facts.get('name') or 'none'} (SM count {facts.get('sm_count')}, capability "
        f"{facts.get('capability')}), driver {facts.get('driver')}, torch {facts.get('torch')}, "
        f"CUDA {facts.get('cuda')}, cuDNN {facts.get('cudnn')}, Python {facts.get('python')}"
    )
    matrix = results.get("matrix")
    lines += ["", "## Cells", ""]
    if matrix and matrix.get("cells"):
        cells = matrix["cells"]
        same = [c["name"] for c in cells if c["reproducible"] is True]
        lines.append(f"{len(same)} of {len(cells)} cells reproduce bit for bit.")
        lines += ["", *_cell_lines(cells)]
    else:
        lines.append("not run" if matrix is None else "no report (see gpu-check.md)")
    lines += ["", "## Ops that `warn` named", ""]
    warned = [c for c in (matrix or {}).get("cells", []) if c["deterministic_algorithms"] == "warn"]
    for c in warned:
        ops = ", ".join(f"`{op}`" for op in c["nondeterministic_ops"]) or "none"
        lines.append(f"- {c['name']}: {ops}")
    if not warned:
        lines.append("no `warn` cell ran")
    lines += ["", "## Per-step time, with and without loss capture", ""]
    capture = ((results.get("capture") or {}).get("capture") or {}).get("models")
    if capture:
        meta = results["capture"]["capture"]["settings"]
        lines.append(
            f"benchmarks/bench_capture.py, {meta['device']}, {meta['threads']} thread, "
            f"{meta['repeats']} repeat(s) of {meta['steps']} steps, medians:"
        )
        lines += [
            "",
            "| model | capture ms/step | plain loop ms/step | ratio | same loss bits |",
            "| --- | --- | --- | --- | --- |",
        ]
        for model, r in capture.items():
            lines.append(
                f"| {model} | {r['capture_ms_per_step']:.3f} | {r['plain_ms_per_step']:.3f} | "
                f"{r['ratio']:.2f} | {r['same_loss_bits']} |"
            )
    else:
        lines.append("not measured")
    lines += ["", "## Host syncs", ""]
    syncs = results.get("host_syncs") or {}
    for model, rows in (syncs.get("models") or {}).items():
        counts = ", ".join(
            f"{r['count'] if r['count'] is not None else 'null'} in {r['steps']} steps"
            for r in rows
        )
        verdict = syncs["constant"].get(model)
        said = {True: "does not grow with the steps", False: "GROWS with the steps"}.get(
            verdict, f"not counted: {rows[0].get('reason')}"
        )
        lines.append(f"- {model}: {counts}: {said}")
    if not syncs:
        lines.append("not run")
    lines += ["", "## Checks", "", "| check | ok | seconds |", "| --- | --- | --- |"]
    for name, result in results.items():
        lines.append(f"| {name} | {result.get('ok')} | {result.get('check_seconds')} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "gpu-check"))
    out.mkdir(parents=True, exist_ok=True)
    table = checks(out.resolve())
    named = sys.argv[2:]
    only = list(table) if named == ["all"] else named or list(DEFAULT)
    if DRY and not named:
        only.remove("probe")  # a GPU image's probe: it fails on a CPU
    unknown = [name for name in only if name not in table]
    if unknown:
        print(f"unknown checks: {', '.join(unknown)}; known: {', '.join(table)}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    for name in only:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"gpu-check-{name}-") as tmp:
            try:
                results[name] = table[name](Path(tmp))
            except Exception as exc:  # one broken check must not hide the others
                results[name] = {"ok": False, "exception": f"{type(exc).__name__}: {exc}"}
        results[name]["check_seconds"] = round(time.monotonic() - started, 1)
        print(f"{name}: {'ok' if results[name].get('ok') else 'FAILED'}", flush=True)
        (out / "gpu-check.json").write_text(json.dumps(results, indent=2, default=str))
    lines = ["# GPU check", "", "| check | ok | seconds | detail |", "| --- | --- | --- | --- |"]
    for name, result in results.items():
        detail = {k: v for k, v in result.items() if k not in ("ok", "check_seconds")}
        text = json.dumps(detail, default=str).replace("|", "\\|")[:600]
        lines.append(f"| {name} | {result.get('ok')} | {result.get('check_seconds')} | {text} |")
    report = out / "results" / "report.md"
    if report.is_file():
        lines += ["", "## The matrix's report", "", report.read_text()]
    (out / "gpu-check.md").write_text("\n".join(lines) + "\n")
    (out / "summary.md").write_text(summary(results))
    print((out / "summary.md").read_text(), flush=True)
    return 0 if all(r.get("ok") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
