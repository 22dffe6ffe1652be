"""The machine in real runs (issue 27): every ``provenance.machine`` field read in the run's own
process, the ``cpu_isa`` ceiling in force, and a baseline or a merge across two code paths of
this machine (a native run and one with the CPU ceilings forced, a stand-in for another machine)
named as such by ``compare``, ``merge`` and the report.

What this machine computes is never pinned: whether the two code paths give other bits is read
from the runs themselves, and the facts of the CPU from this machine's /proc/cpuinfo.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BASE_IMAGE

from harness.contract.machine import (
    ISA_CEILINGS,
    ISA_ENV_VARS,
    Machine,
    machine_fingerprint,
    parse_cpuinfo,
)
from harness.exit_codes import EXIT_CONFLICT, EXIT_MACHINE_CHANGED, EXIT_OK
from harness.results.run_reader import load_record

pytestmark = pytest.mark.slow

MATRIX = """\
name: machines
run: {repeats: 2, epochs: 1, max_steps_per_epoch: 60}
axes:
  placement: [before_model]
"""
#: The stand-in for another machine: the lowest code path, exported for the whole run.
CEILING = ISA_CEILINGS["sse4_2"]


def native_env() -> dict[str, str]:
    """This process's environment without any ISA limit: the machine as it is."""
    return {k: v for k, v in os.environ.items() if k not in ISA_ENV_VARS}


def harness(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env if env is not None else native_env(),
    )


def machines_of(folder: Path) -> list[Machine]:
    return [load_record(run).provenance.machine for run in sorted(folder.glob("cells/*/repeat-*"))]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same matrix run natively (``native``) and with the ceiling exported (``capped``)."""
    tmp = tmp_path_factory.mktemp("machines")
    matrix = tmp / "matrix.yaml"
    matrix.write_text(MATRIX)
    made = {}
    for name, env in (("native", native_env()), ("capped", {**native_env(), **CEILING})):
        out = tmp / name
        proc = harness("run", str(matrix), "--out", str(out), "--progress", "quiet", env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        made[name] = out
    return made


def test_every_machine_field_is_read_or_says_why_not(folders):
    record = load_record(next(folders["native"].glob("cells/*/repeat-0")))
    machine = record.provenance.machine
    assert machine is not None
    for field in dataclasses.fields(Machine):
        value = getattr(machine, field.name)
        if value is None or value == []:
            assert f"machine.{field.name}" in record.provenance.unavailable, field.name
    # the facts of this machine, read here independently of the run
    cpu = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    assert {k: getattr(machine, k) for k in cpu} == cpu
    assert machine.kernel == platform.release()
    assert machine.isa_limits == dict.fromkeys(ISA_ENV_VARS)
    assert machine.cpu_capability  # torch's answer: never null for a run that trained
    assert machine.fingerprint == machine_fingerprint(machine)
    assert machine.gpus == []  # a CPU run sees no GPU
    # the limits in force are the environment's too
    assert all(record.provenance.env.get(k) is None for k in ISA_ENV_VARS)


def test_an_exported_ceiling_is_in_force_and_makes_another_machine(folders):
    native, capped = machines_of(folders["native"]), machines_of(folders["capped"])
    assert len({m.fingerprint for m in native}) == len({m.fingerprint for m in capped}) == 1
    assert capped[0].isa_limits == CEILING
    assert capped[0].cpu_capability == "DEFAULT"  # ATEN_CPU_CAPABILITY=default in force
    assert capped[0].fingerprint != native[0].fingerprint
    # the same CPU: only the code path differs
    same = ("cpu_vendor", "cpu_family", "cpu_model", "cpu_flags")
    assert [getattr(capped[0], k) for k in same] == [getattr(native[0], k) for k in same]


def _bits_changed(folders: dict[str, Path]) -> bool:
    """Whether the ceiling changed this machine's bits (a fact of this machine: read, never
    pinned)."""

    def trajectories(folder: Path) -> set[str]:
        runs = sorted(folder.glob("cells/*/repeat-*"))
        return {load_record(r).digests.trajectory for r in runs}

    return trajectories(folders["native"]) != trajectories(folders["capped"])


def test_compare_against_a_baseline_of_another_machine_says_machine_changed(folders):
    native, capped = machines_of(folders["native"])[0], machines_of(folders["capped"])[0]
    proc = harness("compare", str(folders["native"]), str(folders["capped"]))
    changed = _bits_changed(folders)
    assert proc.returncode == (EXIT_MACHINE_CHANGED if changed else EXIT_OK), proc.stdout
    words = f"{native.fingerprint} \\(CPU capability {native.cpu_capability}\\)"
    assert "| machine changed: " in proc.stdout and words in proc.stdout
    assert f"{capped.fingerprint} \\(CPU capability DEFAULT\\)" in proc.stdout
    assert "ISA limits none vs ATEN\\_CPU\\_CAPABILITY=default" in proc.stdout
    if native.cpu_capability != "DEFAULT":
        assert f"CPU capability {native.cpu_capability} vs DEFAULT" in proc.stdout
    if changed:
        assert proc.stdout.startswith("**Machine changed: the gate fails.**")
        assert "trajectory changed on another machine" in proc.stdout
        assert "error: machine changed:" in proc.stderr
    # the same through a golden-digests file of the baseline
    golden = folders["native"].parent / "golden.json"
    assert harness("baseline", str(folders["native"]), "-o", str(golden)).returncode == 0
    again = harness("compare", str(golden), str(folders["capped"]))
    assert again.returncode == proc.returncode
    assert "| machine changed: " in again.stdout and words in again.stdout


def test_merged_runs_of_two_machines_are_named_in_the_report(folders, tmp_path):
    native, capped = machines_of(folders["native"])[0], machines_of(folders["capped"])[0]
    out = tmp_path / "merged"
    proc = harness("merge", str(folders["native"]), str(folders["capped"]), "-o", str(out))
    changed = _bits_changed(folders)
    assert proc.returncode == (EXIT_CONFLICT if changed else EXIT_OK), proc.stderr[-2000:]
    assert "the inputs ran on 2 machines" in proc.stdout
    assert f"{capped.fingerprint} (CPU capability DEFAULT)" in proc.stdout
    md = (out / "report.md").read_text()
    assert "**2 machines ran these runs**" in md
    for m in (native, capped):
        assert f"| `{m.fingerprint}` |" in md
    # every run has a copy from each machine (records differ at least in their machine)
    assert "(*machines differ*)" in md
    if native.cpu_capability != "DEFAULT":
        assert (
            f"ran on different machines \\(CPU capability {native.cpu_capability} vs DEFAULT" in md
        )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["merge"]["machines"] == {
        str(folders["native"]): [native.fingerprint],
        str(folders["capped"]): [capped.fingerprint],
    }


@pytest.mark.parametrize("ceiling", ["sse4_2", "avx2"])
def test_the_cpu_isa_setting_is_in_force_whatever_the_starter_exported(
    ceiling, workload, mnist_dir, tmp_path
):
    out = tmp_path / "run"
    starter = {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "ALL", "MKL_CBWR": "AUTO"}
    spec = {"cpu_isa": ceiling, "max_steps_per_epoch": 5}
    result = workload(spec, out, env=starter, data_dir=mnist_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    record = load_record(out)
    machine = record.provenance.machine
    assert machine.isa_limits == ISA_CEILINGS[ceiling]
    assert {k: record.provenance.env[k] for k in ISA_ENV_VARS} == ISA_CEILINGS[ceiling]
    # ATen's capability is at most the ceiling (a CPU without AVX2 stays below avx2)
    allowed = {"sse4_2": {"DEFAULT"}, "avx2": {"DEFAULT", "AVX2"}}[ceiling]
    assert machine.cpu_capability in allowed


@pytest.mark.docker
def test_in_a_container_the_machine_is_read_inside_it(workload_image, tmp_path):
    """A native run keeps the host's exported limit, a ceiling sets its own; the CPU is the
    host's, read from inside the container."""
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        "name: machines-container\n"
        "run: {repeats: 1, epochs: 1, max_steps_per_epoch: 5}\n"
        f"axes:\n  image: ['{BASE_IMAGE}']\n  cpu_isa: [native, sse4_2]\n"
    )
    out = tmp_path / "results"
    env = {**native_env(), "MKL_CBWR": "COMPATIBLE"}
    proc = harness("run", str(matrix), "--out", str(out), "--progress", "quiet", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {load_record(r).spec["cpu_isa"]: load_record(r) for r in out.glob("cells/*/repeat-0")}
    cpu = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    for record in records.values():
        machine = record.provenance.machine
        assert record.provenance.image_id  # it ran in the workload image
        assert {k: getattr(machine, k) for k in cpu} == cpu
        assert machine.fingerprint == machine_fingerprint(machine)
    native = records["native"].provenance.machine
    assert native.isa_limits == {**dict.fromkeys(ISA_ENV_VARS), "MKL_CBWR": "COMPATIBLE"}
    assert records["sse4_2"].provenance.machine.isa_limits == CEILING
    assert records["sse4_2"].provenance.machine.cpu_capability == "DEFAULT"


def test_diagnose_on_another_machine_says_so_first(folders):
    """The capped runs replayed natively: the diagnosis names both machines before anything."""
    native, capped = machines_of(folders["native"])[0], machines_of(folders["capped"])[0]
    manifest = json.loads((folders["capped"] / "manifest.json").read_text())
    (cell,) = [c["id"] for c in manifest["cells"]]
    args = ("diagnose", str(folders["capped"]), "--cell", cell, "--max-steps", "2", "--no-report")
    proc = harness(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stdout.splitlines()
    first = (
        f"The replays ran on machine `{native.fingerprint}`, "
        f"not on `{capped.fingerprint}` where the recorded run ran (CPU capability"
    )
    assert said[1].strip().startswith(first)
    path = Path(next(x for x in said if x.startswith("diagnosis: ")).removeprefix("diagnosis: "))
    assert json.loads(path.read_text())["machines"] == {
        "recorded": [capped.fingerprint] * 2,
        "replayed": [native.fingerprint] * 2,
    }
