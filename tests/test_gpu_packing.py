"""Runs per GPU (issue 32): the rule on hand-made measurements, the scheduler's slots from a
measurement file with a fake device memory (no GPU here), the command line's refusals, and
the GPU check's packing section in its CPU dry mode.

No GPU is lent to these tests: the rule is tested, not measured. The numbers in the hand-made
measurements are made up; the real ones come from ``bash scripts/gpu-check.sh OUT packing``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.executors import ExecutorOptions
from harness.executors.fake import FakeExecutor
from harness.matrix import load_matrix
from harness.run.gpu_packing import (
    GIB,
    PACKING_FORMAT,
    Device,
    Measurement,
    Point,
    cell_key,
    decide,
    measurement_json,
    pack_gpus,
    point_of,
    read_measurements,
    runs_per_gpu,
)
from harness.run.matrix_runner import packed_gpus
from harness.run.schedule import (
    Host,
    Job,
    SlotPool,
    gpu_device,
    need_of,
    parse_gpu_list,
    run_jobs,
)

REPO = Path(__file__).resolve().parents[1]
H100 = Device("NVIDIA H100 80GB HBM3", 80 * GIB)
MS = 0.001


def points(slowdown: dict[int, float], memory: int = GIB // 2, **odd: dict[int, bool]) -> list:
    """1, 2, 4, 8 runs side by side: each run ``slowdown[k]`` times the alone step (1 ms);
    ``odd``: ``bits_equal`` or ``together`` per count where not True."""
    return [
        Point(
            k,
            (MS,) * (k - 1) + (MS * slowdown.get(k, 1.0),),  # the slowest run decides
            memory,
            odd.get("bits_equal", {}).get(k, True),
            odd.get("together", {}).get(k, True),
        )
        for k in (1, 2, 4, 8)
    ]


def test_the_slowdown_bounds_the_runs_per_gpu() -> None:
    decision = runs_per_gpu(points({2: 1.05, 4: 1.2, 8: 1.6}), H100.memory_bytes)
    assert decision.runs_per_gpu == 4 and decision.measured
    assert "8 side by side slowed a run 1.60x" in decision.reason
    # just within the tolerance is in; the first count over it stops the count, even when a
    # larger one measured faster (no count past a refusal)
    assert runs_per_gpu(points({8: 1.25}), H100.memory_bytes).runs_per_gpu == 8
    assert runs_per_gpu(points({2: 1.3, 4: 1.1}), H100.memory_bytes).runs_per_gpu == 1


def test_the_device_memory_bounds_the_runs_per_gpu() -> None:
    """12 GiB a run: 4 fit 90% of 80 GiB (72), 8 do not; on a fake 40 GiB device, 2 do."""
    heavy = points({}, memory=12 * GIB)
    decision = runs_per_gpu(heavy, 80 * GIB)
    assert decision.runs_per_gpu == 4
    assert "8 runs of 12.00 GiB exceed 90% of the 80.0 GiB device" in decision.reason
    assert runs_per_gpu(heavy, 40 * GIB).runs_per_gpu == 2
    assert runs_per_gpu(heavy, 40 * GIB, margin=0.0).runs_per_gpu == 2  # 48 > 40 still
    assert runs_per_gpu(heavy, 200 * GIB, run_memory_bytes=30 * GIB).runs_per_gpu == 4


def test_never_more_than_measured_and_never_past_changed_bits_or_apart_runs() -> None:
    roomy = runs_per_gpu(points({}), 1000 * GIB)
    assert roomy.runs_per_gpu == 8 and roomy.reason == "8 is the most measured side by side"
    changed = runs_per_gpu(points({}, bits_equal={4: False}), H100.memory_bytes)
    assert changed.runs_per_gpu == 2 and "changed a trajectory's bits" in changed.reason
    apart = runs_per_gpu(points({}, together={2: False}), H100.memory_bytes)
    assert apart.runs_per_gpu == 1 and "did not train side by side" in apart.reason


def test_without_a_measurement_the_answer_is_one_and_says_so() -> None:
    no_alone = runs_per_gpu(points({})[1:], H100.memory_bytes)
    assert (no_alone.runs_per_gpu, no_alone.measured) == (1, False)
    assert "alone" in no_alone.reason
    no_memory = runs_per_gpu([Point(1, (MS,), None, True, True)], H100.memory_bytes)
    assert (no_memory.runs_per_gpu, no_memory.measured) == (1, False)
    cell = {"accelerator": "gpu", "devices": 1, "model": "mlp", "cell_name": "a"}
    mlp = Measurement(H100, cell_key(cell), tuple(points({})))
    assert decide([cell], [mlp], H100).runs_per_gpu == 8
    for measurements, device, words in (
        ([], H100, "no packing measurement of cell a on NVIDIA H100"),
        ([mlp], Device("NVIDIA A100-SXM4-40GB", 40 * GIB), "no packing measurement of cell a"),
        ([mlp], None, "could not be read"),
        (
            [Measurement(H100, cell_key({**cell, "model": "cnn"}), mlp.points)],
            H100,
            "no packing measurement",
        ),
    ):
        decision = decide([cell], measurements, device)
        assert (decision.runs_per_gpu, decision.measured) == (1, False), words
        assert words in decision.reason
    # a matrix gets its least packable GPU cell's count; CPU cells do not count
    cnn = {**cell, "model": "cnn", "cell_name": "b"}
    cpu = {**cell, "accelerator": "cpu", "model": "cnn"}
    assert decide([cell, cpu], [mlp], H100).runs_per_gpu == 8
    assert decide([cell, cnn], [mlp], H100).runs_per_gpu == 1


def test_ddp_cells_are_never_packed() -> None:
    cell = {"accelerator": "gpu", "devices": 1, "model": "mlp"}
    mlp = Measurement(H100, cell_key(cell), tuple(points({})))
    ddp = {**cell, "devices": 2, "cell_name": "ddp"}
    decision = decide([cell, ddp], [mlp], H100)
    assert decision.runs_per_gpu == 1 and "cell ddp is DDP" in decision.reason


def test_a_measurement_file_reads_back_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    cell = {"accelerator": "gpu", "devices": 1, "model": "mlp"}
    mlp = Measurement(H100, cell_key(cell), tuple(points({4: 1.1})))
    path = tmp_path / "gpu-packing.json"
    path.write_text(json.dumps({"format": PACKING_FORMAT, "measurements": [measurement_json(mlp)]}))
    assert read_measurements(path) == [mlp]
    for text in ("{", '{"format": 99, "measurements": []}', '{"format": 1}'):
        path.write_text(text)
        with pytest.raises(HarnessError, match="packing measurement"):
            read_measurements(path)


def test_point_of_reads_step_time_bits_and_overlap_from_records() -> None:
    def rec(trajectory: str, finished: str, seconds: float = 4.0) -> dict:
        epochs = [{"steps": 1000, "train_seconds": seconds, "val_seconds": 0.5}]
        timing = {"started_at": "2026-12-07T10:00:00+00:00", "finished_at": finished}
        return {
            "status": "ok",
            "epochs": epochs,
            "timing": timing,
            "digests": {"trajectory": trajectory},
        }

    same = [rec("t", "2026-12-07T10:00:20+00:00"), rec("t", "2026-12-07T10:00:21+00:00", 5.0)]
    point = point_of(same, "t", 123)
    assert point.step_seconds == (0.004, 0.005) and point.peak_memory_bytes == 123
    assert point.bits_equal and point.together
    one_after_the_other = [same[0], rec("t", "2026-12-07T10:00:26+00:00")]
    assert not point_of(one_after_the_other, "t", None).together
    assert not point_of(same, "other", None).bits_equal
    failed = [same[0], {**same[1], "status": "failed"}]
    assert point_of(failed, "t", None).step_seconds == ()  # a count with a failed run: no time


GPU_MATRIX = """\
name: packed
run: {{repeats: 4, epochs: 1, max_steps_per_epoch: 3}}
axes: {{image: [local], accelerator: [gpu], devices: [{devices}], model: [mlp]}}
"""


def write_matrix(tmp_path: Path, devices: int = 1) -> Path:
    path = tmp_path / f"m{devices}.yaml"
    path.write_text(GPU_MATRIX.format(devices=devices))
    return path


def packing_file(tmp_path: Path, matrix: Path, device: Device, slowdown: dict[int, float]) -> Path:
    cell = load_matrix(matrix).cells[0].settings
    measurement = Measurement(device, cell_key(cell), tuple(points(slowdown, memory=12 * GIB)))
    path = tmp_path / "gpu-packing.json"
    data = {"format": PACKING_FORMAT, "measurements": [measurement_json(measurement)]}
    path.write_text(json.dumps(data))
    return path


def run_on(tmp_path: Path, gpus: str | None, specs: list) -> list:
    """The scheduler runs ``specs`` with the fake executor on 8 cores and ``gpus`` (as
    ``run_matrix`` would get them), each run held until as many runs as GPU slots are in
    flight; the slots held at that moment."""
    host = Host(cpus=tuple(range(8)), gpus=parse_gpu_list(gpus or ""))
    hold = threading.Event()
    fake = FakeExecutor(ExecutorOptions("t"), seconds=0, hold=hold)
    cancel = threading.Event()

    def work(spec, slot):
        run_dir = tmp_path / f"run-{spec.repeat}"
        run_dir.mkdir()
        return fake.run(spec, slot, run_dir, timeout_s=120, cancel=cancel)

    jobs = [Job(s, need_of(s)) for s in specs]
    scheduler = threading.Thread(target=run_jobs, args=(jobs, SlotPool(host), work, cancel))
    scheduler.start()
    try:
        held = fake.wait_for_running(len(host.gpus), timeout=60)
    finally:
        hold.set()
        scheduler.join(timeout=60)
    assert fake.max_concurrency == len(host.gpus)  # never more runs at once than GPU slots
    return held


def test_auto_packs_as_the_measurement_allows_on_a_fake_device(tmp_path: Path) -> None:
    """The whole path but nvidia-smi: the file, the rule, the slots, the scheduler."""
    matrix = write_matrix(tmp_path)
    loaded = load_matrix(matrix)
    packing = packing_file(tmp_path, matrix, H100, {})  # 12 GiB a run: 4 fit 80 GiB
    gpus, notice = packed_gpus(loaded, "auto", gpus="0", packing=packing, device=lambda: H100)
    assert gpus == "0,0,0,0"
    assert notice is not None and notice.startswith("runs per GPU: 4 (measured: 8 runs of")
    specs = [c.spec(r) for c in loaded.cells for r in range(4)]
    held = run_on(tmp_path, gpus, specs)
    assert sorted(s.gpus for s in held) == [(0,)] * 4  # four runs on GPU 0 at once
    assert len({c for s in held for c in s.cpus}) == 4  # each on its own core
    # a fake 40 GiB device of the same name: 2 a GPU; two GPUs: 2 each
    small = Device(H100.name, 40 * GIB)
    assert packed_gpus(loaded, "auto", gpus="0,1", packing=packing, device=lambda: small)[0] == (
        "0,0,1,1"
    )


def test_auto_without_a_measurement_keeps_one_run_per_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no default file there
    loaded = load_matrix(write_matrix(tmp_path))
    gpus, notice = packed_gpus(loaded, "auto", gpus="0", device=lambda: H100)
    assert gpus == "0"
    assert notice is not None and notice.startswith("runs per GPU: 1 (unmeasured: no packing ")
    assert str(tmp_path / "cache" / "harness" / "gpu-packing.json") in notice
    held = run_on(tmp_path, gpus, [c.spec(r) for c in loaded.cells for r in range(4)])
    assert [s.gpus for s in held] == [(0,)]
    # another GPU model than the one measured: unmeasured here, 1
    packing = packing_file(tmp_path, write_matrix(tmp_path), H100, {})
    other = Device("NVIDIA A100-SXM4-80GB", 80 * GIB)
    assert packed_gpus(loaded, "auto", gpus="0", packing=packing, device=lambda: other) == (
        "0",
        "runs per GPU: 1 (unmeasured: no packing measurement of cell "
        f"{loaded.cells[0].name} on NVIDIA A100-SXM4-80GB)",
    )


def test_the_default_and_a_number_need_no_measurement_and_ddp_is_refused(tmp_path: Path) -> None:
    loaded = load_matrix(write_matrix(tmp_path))
    assert packed_gpus(loaded, "1", gpus="0,1") == ("0,1", None)  # today's slots, untouched
    assert packed_gpus(loaded, "1") == (None, None)
    assert packed_gpus(loaded, "3", gpus="0,1") == ("0,0,0,1,1,1", None)
    assert pack_gpus((2, 0), 2) == (2, 2, 0, 0)
    ddp = load_matrix(write_matrix(tmp_path, devices=2))
    with pytest.raises(HarnessError, match="DDP runs are never packed"):
        packed_gpus(ddp, "2", gpus="0,1")
    gpus, notice = packed_gpus(ddp, "auto", gpus="0,1", device=lambda: H100)
    assert gpus == "0,1" and notice is not None and "is DDP" in notice


@pytest.mark.parametrize("value", ["0", "-1", "many", "65", "1.5", "²"])
def test_the_command_line_refuses_a_bad_runs_per_gpu(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["run", str(write_matrix(tmp_path)), "--out", str(out), "--executor", "fake"]
    assert main([*argv, "--runs-per-gpu", value]) == 2
    err = capsys.readouterr().err
    assert "Invalid value for --runs-per-gpu" in err and "write auto" in err, err
    assert "from 1 to 64" in err and "Traceback" not in err
    assert not out.exists()


def test_the_command_line_refuses_packing_a_ddp_matrix_and_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    base = ["--out", str(out), "--executor", "fake", "--gpus", "0,1"]
    assert main(["run", str(write_matrix(tmp_path, devices=2)), *base, "--runs-per-gpu", "2"]) == 2
    err = capsys.readouterr().err
    assert "--runs-per-gpu 2: cell" in err and "DDP runs are never packed" in err, err
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 1}')
    argv = ["run", str(write_matrix(tmp_path)), *base, "--runs-per-gpu", "auto"]
    assert main([*argv, "--packing", str(bad)]) == 2
    assert "is not a packing measurement" in capsys.readouterr().err
    assert main([*argv[:-1], "2", "--packing", str(bad)]) == 2
    assert "--packing is read only with --runs-per-gpu auto" in capsys.readouterr().err
    assert not out.exists()


def test_auto_on_this_machine_without_a_readable_gpu_runs_one_per_gpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through ``harness run`` on this GPU-less machine: the file says 4 fit an H100, but no
    GPU can be read here, so 1, said on stderr; the runs go (fake executor)."""
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no nvidia-smi, whatever the host
    matrix = write_matrix(tmp_path)
    packing = packing_file(tmp_path, matrix, H100, {})
    data = tmp_path / "data"
    data.mkdir()
    argv = ["run", str(matrix), "--out", str(tmp_path / "out"), "--executor", "fake"]
    argv += ["--data-dir", str(data), "--progress", "quiet", "--no-report", "--gpus", "0"]
    assert main([*argv, "--runs-per-gpu", "auto", "--packing", str(packing)]) == 0
    err = capsys.readouterr().err
    assert "harness: runs per GPU: 1 (unmeasured: this machine's GPU could not be read" in err


@pytest.mark.parametrize(
    ("lines", "device"),
    [
        (["NVIDIA H100 80GB HBM3, 81559"] * 2, Device("NVIDIA H100 80GB HBM3", 81559 * 1024**2)),
        (["NVIDIA H100 80GB HBM3, 81559", "NVIDIA A100-SXM4-40GB, 40960"], None),  # unlike GPUs
        ([], None),
        (["garbled"], None),
    ],
)
def test_this_machines_gpu_is_read_from_nvidia_smi(
    lines: list[str], device: Device | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in nvidia-smi on PATH prints the fake device: one model and its memory, or
    nothing the rule could use."""
    tool = tmp_path / "nvidia-smi"
    tool.write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for line in lines))
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert gpu_device() == device


@pytest.mark.slow
def test_the_gpu_check_packing_section_runs_in_its_cpu_dry_mode(tmp_path: Path, mnist_dir) -> None:
    """`bash scripts/gpu-check.sh OUT packing` with HARNESS_GPU_CHECK_ACCELERATOR=cpu: 1 then 2
    real runs side by side, their step times and bits; no memory and no device on a CPU, so
    the file it writes gives 1 and says why."""
    env = {**os.environ, "HARNESS_GPU_PYTHON": sys.executable, "HARNESS_MNIST_DIR": str(mnist_dir)}
    env["HARNESS_GPU_CHECK_ACCELERATOR"] = "cpu"
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu-check.sh"), str(out), "packing"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "gpu-packing.json").read_text())
    (measured,) = read_measurements(out / "gpu-packing.json")
    assert [p.runs for p in measured.points] == [1, 2]
    assert all(p.bits_equal and len(p.step_seconds) == p.runs for p in measured.points)
    assert measured.cell["model"] == "mlp" and measured.points[0].peak_memory_bytes is None
    assert data["rule"] == {"runs_per_gpu": 1, "measured": False, "why": "no peak memory measured"}
    assert "CPU dry mode" in (out / "gpu-packing.md").read_text()
