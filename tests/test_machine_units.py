"""The machine of a run (issue 27) as pure logic, on hand-made facts: /proc/cpuinfo parsed, the
fingerprint's inputs, the cpu_isa ceilings' variables, the words that say how two machines
differ, and how the report, compare, merge and diagnose use them. Nothing here is a fact of the
machine that runs the tests; tests/test_machines.py has the real runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from fault_tools import nudge_losses
from test_report import base_losses, make_cell, make_results, write_run
from test_report_records import own_run

from harness.cli.merge import machine_lines
from harness.contract import RunSpec
from harness.contract.machine import (
    CODE_PATH,
    CPU_ISA_CHOICES,
    ISA_CEILINGS,
    ISA_ENV_VARS,
    Machine,
    cpu_text,
    differences,
    fingerprint,
    gpu_identity,
    gpu_text,
    machine_fingerprint,
    machines_differ,
    parse_cpuinfo,
)
from harness.contract.spec import environment_for, isa_passthrough, run_environment
from harness.diagnose.words import machine_sentences
from harness.errors import HarnessError
from harness.executors.base import Slot
from harness.executors.docker_kwargs import container_environment
from harness.executors.fake import FakeExecutor
from harness.exit_codes import EXIT_MACHINE_CHANGED, EXIT_OK, EXIT_REGRESSION
from harness.gates.baseline import CellDigests, ResultSet, from_file, from_results, to_json
from harness.gates.compare import compare, compare_cell
from harness.gates.gate_markdown import render_markdown
from harness.matrix import load_matrix
from harness.report import analyze
from harness.report.exporters import render_json
from harness.report.markdown import render_markdown as render_report
from harness.report.summaries import compare_across
from harness.report.terminal import render_plain
from harness.results.merge import describe_conflict, merge
from harness.run.matrix_runner import RunConfig, run_matrix

QUICK = Path(__file__).resolve().parents[1] / "examples" / "placement-quick.yaml"

XEON = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 8
flags\t\t: fpu vme sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni amx_tile \
hypervisor md_clear

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Something else entirely
"""

GRAVITON = """\
processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 asimddp sve i8mm bf16
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1
"""


def machine(**changes) -> Machine:
    """A machine with a fingerprint computed from its facts (as the workload does)."""
    base = Machine(
        cpu_vendor="GenuineIntel",
        cpu_name="Intel(R) Xeon(R) Processor",
        cpu_family=6,
        cpu_model=143,
        cpu_stepping=8,
        cpu_flags=["sse4_2", "avx", "avx2", "fma", "avx512f", "amx_tile"],
        cpu_capability="AVX512",
        isa_limits=dict.fromkeys(ISA_ENV_VARS),
        onednn="3.12.0",
        mkl="2024.2",
        kernel="6.1.0",
        libc="glibc 2.36",
    )
    made = dataclasses.replace(base, **changes)
    made.fingerprint = machine_fingerprint(made)
    return made


AVX2 = {
    "cpu_capability": "AVX2",
    "isa_limits": {**dict.fromkeys(ISA_ENV_VARS), **ISA_CEILINGS["avx2"]},
}


def test_cpuinfo_gives_the_first_processors_facts_and_only_the_kernel_flags():
    assert parse_cpuinfo(XEON) == {
        "cpu_vendor": "GenuineIntel",
        "cpu_name": "Intel(R) Xeon(R) Processor",
        "cpu_family": 6,
        "cpu_model": 143,
        "cpu_stepping": 8,
        # in KERNEL_FLAGS order; hypervisor, md_clear and fpu change no kernel
        "cpu_flags": ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
                      "avx512vl", "avx512_vnni", "amx_tile"],
    }  # fmt: skip


def test_cpuinfo_of_an_arm_cpu_reads_its_implementer_part_and_features():
    assert parse_cpuinfo(GRAVITON) == {
        "cpu_vendor": "0x41",
        "cpu_name": None,
        "cpu_family": 8,
        "cpu_model": 0xD40,
        "cpu_stepping": 1,
        "cpu_flags": ["asimd", "asimddp", "sve", "bf16", "i8mm"],
    }


def test_cpuinfo_without_the_facts_gives_none():
    assert parse_cpuinfo("") == {
        "cpu_vendor": None,
        "cpu_name": None,
        "cpu_family": None,
        "cpu_model": None,
        "cpu_stepping": None,
        "cpu_flags": [],
    }
    assert parse_cpuinfo("cpu family\t: six\n")["cpu_family"] is None


@pytest.mark.parametrize(
    "change",
    [
        {"cpu_vendor": "AuthenticAMD"},
        {"cpu_family": 25},
        {"cpu_model": 106},
        {"cpu_flags": ["sse4_2", "avx", "avx2", "fma"]},
        {"cpu_capability": "AVX2"},
        {"isa_limits": {**dict.fromkeys(ISA_ENV_VARS), "MKL_CBWR": "AVX2"}},
        {"gpus": [["NVIDIA H100 80GB HBM3", "9.0", 132]]},
    ],
)
def test_what_decides_the_kernels_changes_the_fingerprint(change):
    assert machine(**change).fingerprint != machine().fingerprint


@pytest.mark.parametrize(
    "change",
    [
        {"cpu_name": "Intel(R) Xeon(R) Platinum 8480+"},
        {"cpu_stepping": 6},
        {"onednn": "3.7.1", "mkl": "2025.0"},
        {"kernel": "6.8.0", "libc": "glibc 2.39"},
        # an unset limit is the same as no entry
        {"isa_limits": {}},
    ],
)
def test_what_does_not_decide_the_kernels_keeps_the_fingerprint(change):
    assert machine(**change).fingerprint == machine().fingerprint


def test_the_fingerprint_is_short_hex_and_a_tampered_one_is_not_trusted():
    key = machine().fingerprint
    assert key is not None and len(key) == 12 and int(key, 16) >= 0
    assert fingerprint(machine()) == key
    assert fingerprint(dataclasses.replace(machine(), fingerprint="`x` <b>")) is None
    assert fingerprint(dataclasses.replace(machine(), fingerprint=None)) is None
    assert fingerprint(None) is None


@pytest.mark.parametrize("ceiling", sorted(ISA_CEILINGS))
def test_a_ceiling_sets_every_isa_variable_before_torch_whatever_the_starter_had(ceiling):
    spec = RunSpec(cpu_isa=ceiling)
    assert set(ISA_CEILINGS[ceiling]) == set(ISA_ENV_VARS)
    starter = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO", "PATH": "/bin"}
    env = environment_for(spec, starter)
    assert {k: env[k] for k in ISA_ENV_VARS} == ISA_CEILINGS[ceiling]
    assert env["PATH"] == "/bin"
    assert isa_passthrough(spec, starter) == {}


def test_native_sets_nothing_and_keeps_the_starters_limits():
    spec = RunSpec()
    assert spec.cpu_isa == "native" and CPU_ISA_CHOICES[0] == "native"
    assert not set(run_environment(spec)) & set(ISA_ENV_VARS)
    starter = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "HOME": "/root"}
    assert environment_for(spec, starter)["ATEN_CPU_CAPABILITY"] == "avx2"
    assert isa_passthrough(spec, starter) == {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    }


def test_a_container_gets_the_hosts_limits_only_for_a_native_run(monkeypatch):
    for name in ISA_ENV_VARS:  # whatever limits this test process was started with
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    monkeypatch.setenv("SOME_OTHER_HOST_VARIABLE", "x")
    slot = Slot(cpus=(0,), gpus=())
    native = container_environment(RunSpec(), slot)
    assert (native["ATEN_CPU_CAPABILITY"], native["MKL_CBWR"]) == ("default", "COMPATIBLE")
    assert "SOME_OTHER_HOST_VARIABLE" not in native and "ONEDNN_MAX_CPU_ISA" not in native
    capped = container_environment(RunSpec(cpu_isa="avx2"), slot)
    assert {k: capped[k] for k in ISA_ENV_VARS} == ISA_CEILINGS["avx2"]


def test_the_words_name_what_differs_most_telling_first():
    other = machine(
        cpu_vendor="AuthenticAMD",
        cpu_name="AMD EPYC 7763",
        cpu_family=25,
        cpu_model=1,
        cpu_flags=["sse4_2", "avx", "avx2", "fma"],
        gpus=[["NVIDIA A100-SXM4-80GB", "8.0", 108]],
        **AVX2,
    )
    assert differences(machine(), other) == [
        "CPU capability AVX512 vs AVX2",
        "ISA limits none vs ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2, "
        "MKL_ENABLE_INSTRUCTIONS=AVX2, MKL_CBWR=AVX2",
        "CPU Intel(R) Xeon(R) Processor (GenuineIntel, family 6, model 143) vs AMD EPYC 7763 "
        "(AuthenticAMD, family 25, model 1)",
        "CPU flags avx512f, amx_tile only on the first",
        "GPUs none vs NVIDIA A100-SXM4-80GB (sm_80, 108 SMs)",
    ]
    assert differences(machine(), other, with_gpus=False)[-1].startswith("CPU flags")
    assert differences(machine(), other, ignore=CODE_PATH)[0].startswith("CPU Intel")
    assert differences(machine(), machine(cpu_name="renamed")) == []


def test_runs_on_one_machine_or_of_unknown_machines_do_not_differ():
    assert machines_differ([machine(), machine(cpu_stepping=2)]) is None
    assert machines_differ([machine(), None, None]) is None
    assert machines_differ([None, machine(**AVX2)]) is None
    assert machines_differ([]) is None
    # a fingerprint that is not one is no evidence either way
    forged = dataclasses.replace(machine(**AVX2), fingerprint="not-a-fingerprint")
    assert machines_differ([machine(), forged]) is None


def test_runs_on_different_machines_say_how():
    found = machines_differ([machine(), machine(**AVX2), machine()])
    assert found == (
        "ran on different machines (CPU capability AVX512 vs AVX2; ISA limits none vs "
        "ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2, "
        "MKL_CBWR=AVX2)"
    )
    # across cpu_isa, the code path is the setting's: no machine difference is left
    assert machines_differ([machine(), machine(**AVX2)], ignore=CODE_PATH) is None
    # GPUs only when asked (the report's GPU note says them otherwise)
    h100 = machine(gpus=[["NVIDIA H100 80GB HBM3", "9.0", 132]])
    assert machines_differ([machine(), h100]) is None
    assert machines_differ([machine(), h100], with_gpus=True) == (
        "ran on different machines (GPUs none vs NVIDIA H100 80GB HBM3 (sm_90, 132 SMs))"
    )


def _provenance(m: Machine | None) -> dict:
    return {"machine": dataclasses.asdict(m) if m is not None else None}


def _two_machine_folder(root: Path) -> dict[str, dict]:
    """Two cells that differ only in their image: 'same' has both repeats on one machine,
    'split' one repeat on each machine, with other bits."""
    cells = {
        "same": make_cell("same", image="img:1"),
        "split": make_cell("split", image="img:2"),
    }
    make_results(root, list(cells.values()), repeats=2)
    base = base_losses()
    for k in range(2):
        write_run(root, cells["same"], k, base, provenance=_provenance(machine()))
    write_run(root, cells["split"], 0, base, provenance=_provenance(machine()))
    changed = base.copy()
    changed[70] += 1e-3
    write_run(root, cells["split"], 1, changed, provenance=_provenance(machine(**AVX2)))
    return cells


def test_the_report_lists_the_machines_and_marks_runs_compared_across_them(tmp_path: Path):
    _two_machine_folder(tmp_path)
    report = analyze(tmp_path)
    a, b = machine().fingerprint, machine(**AVX2).fingerprint
    assert [(m.fingerprint, m.capability, m.runs, m.cells) for m in report.machines] == [
        (a, "AVX512", 3, 2),
        (b, "AVX2", 1, 1),
    ]
    cells = {c.name: c for c in report.cells}
    assert cells["same"].machines_differ is None
    assert cells["split"].verdict == "diverges"
    assert cells["split"].machines_differ.startswith(
        "ran on different machines (CPU capability AVX512 vs AVX2"
    )
    assert "its repeats ran on different machines (CPU capability AVX512 vs AVX2" in (
        cells["split"].detail
    )
    # across images the first repeats are compared: both ran on the first machine
    (comparison,) = report.comparisons
    assert comparison.axis == "image" and comparison.machines_differ is None
    md = render_report(report).decode()
    assert "**2 machines ran these runs**" in md
    assert f"| `{a}` | Intel\\(R\\) Xeon\\(R\\) Processor" in md
    assert "| AVX2 | ATEN\\_CPU\\_CAPABILITY=avx2" in md
    assert "(*machines differ*)" in md and "- split: ran on different machines" in md
    data = json.loads(render_json(report))
    assert [m["fingerprint"] for m in data["machines"]] == [a, b]
    split = next(c for c in data["cells"] if c["name"] == "split")
    assert [r["machine"] for r in split["runs"]] == [a, b]
    assert split["machines_differ"] == cells["split"].machines_differ
    terminal = " ".join(render_plain(report, width=400))
    assert f"2 machines ran these runs: {a} (CPU capability AVX512), {b} (CPU capability AVX2)" in (
        terminal
    )
    assert "1 of 2 cells compare repeats across them" in terminal


def test_a_comparison_across_images_names_the_machines_that_differ(tmp_path: Path):
    cells = _two_machine_folder(tmp_path)
    write_run(tmp_path, cells["split"], 0, base_losses(), provenance=_provenance(machine(**AVX2)))
    report = analyze(tmp_path)
    (comparison,) = report.comparisons
    assert comparison.machines_differ == machines_differ([machine(), machine(**AVX2)])
    md = render_report(report).decode()
    assert "- image (same, split): ran on different machines \\(CPU capability AVX512 vs AVX2" in md
    assert "so the difference need not come from the setting" in md


def test_one_machine_is_named_in_one_line_and_old_records_name_none(tmp_path: Path):
    cell = make_cell("only")
    make_results(tmp_path, [cell], repeats=2)
    write_run(tmp_path, cell, 0, base_losses(), provenance=_provenance(machine()))
    write_run(tmp_path, cell, 1, base_losses(), provenance=_provenance(None))
    report = analyze(tmp_path)
    assert [m.runs for m in report.machines] == [1]
    md = render_report(report).decode()
    assert f"**Machine** `{machine().fingerprint}`: Intel\\(R\\) Xeon\\(R\\) Processor" in md
    assert "CPU capability AVX512" in md
    assert report.cells[0].verdict == "reproduces" and report.cells[0].machines_differ is None


def digests(reproducible, trajectories, machines, image_digest="sha256:" + "a" * 64):
    return CellDigests(
        name="c",
        settings={},
        reproducible=reproducible,
        trajectories=list(trajectories),
        final_weights="w",
        image="img",
        image_digest=image_digest,
        machines=list(machines),
    )


A, B = machine(), machine(**AVX2)
FA, FB = A.fingerprint, B.fingerprint
FACTS = ({FA: A}, {FB: B, FA: A})


def test_a_trajectory_changed_on_another_machine_is_no_regression_and_no_pass():
    base = digests(True, ["t1", "t1"], [FA, FA])
    cur = digests(True, ["t2", "t2"], [FB, FB])
    changes = compare_cell("id", base, cur, FACTS)
    assert [(c.what, c.regression, c.machine_changed) for c in changes] == [
        ("trajectory changed on another machine (see machine changed)", False, True),
        (
            "machine changed: CPU capability AVX512 vs AVX2; ISA limits none vs "
            "ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2, "
            "MKL_CBWR=AVX2",
            False,
            False,
        ),
    ]
    assert (changes[1].baseline, changes[1].current) == (
        f"{FA} (CPU capability AVX512)",
        f"{FB} (CPU capability AVX2)",
    )
    result = compare(
        ResultSet("b", "m", "d", {"id": base}, FACTS[0]),
        ResultSet("c", "m", "d", {"id": cur}, FACTS[1]),
    )
    assert result.exit_code == EXIT_MACHINE_CHANGED
    md = render_markdown(result)
    assert md.startswith("**Machine changed: the gate fails.**")
    assert "### Machine changed" in md


def test_the_same_bits_on_another_machine_pass_and_say_the_machine_changed():
    base = digests(True, ["t1", "t1"], [FA, FA])
    cur = digests(True, ["t1", "t1"], [FB, FB])
    changes = compare_cell("id", base, cur, FACTS)
    assert [c.what.split(":")[0] for c in changes] == ["machine changed"]
    result = compare(
        ResultSet("b", "m", "d", {"id": base}, FACTS[0]),
        ResultSet("c", "m", "d", {"id": cur}, FACTS[1]),
    )
    assert result.exit_code == EXIT_OK


def test_a_cell_that_stops_reproducing_on_another_machine_is_still_a_regression():
    base = digests(True, ["t1", "t1"], [FA, FA])
    cur = digests(False, ["t2", "t3"], [FB, FB])
    changes = compare_cell("id", base, cur, FACTS)
    assert changes[0].what == "no longer reproduces (on another machine)"
    assert changes[0].regression and not changes[0].machine_changed
    result = compare(ResultSet("b", "m", "d", {"id": base}), ResultSet("c", "m", "d", {"id": cur}))
    assert result.exit_code == EXIT_REGRESSION


@pytest.mark.parametrize(
    ("was", "now"),
    [([None, None], [FB, FB]), ([FA, FA], []), ([FA, FA], [FA, FA])],
)
def test_an_unknown_or_same_machine_keeps_the_old_rules(was, now):
    base = digests(True, ["t1", "t1"], was)
    cur = digests(True, ["t2", "t2"], now)
    (change,) = compare_cell("id", base, cur, FACTS)
    assert (change.what, change.regression) == ("trajectory changed on the same image", True)


def test_a_baseline_without_machines_is_said_to_be_one():
    base = digests(True, ["t1", "t1"], [None, None])
    cur = digests(True, ["t2", "t2"], [FB, FB])
    result = compare(ResultSet("b", "m", "d", {"id": base}), ResultSet("c", "m", "d", {"id": cur}))
    assert result.machines_unknown == "baseline" and result.exit_code == EXIT_REGRESSION
    assert (
        "The baseline records no machine (made before machines were recorded)"
        in render_markdown(result)
    )
    both = compare(ResultSet("b", "m", "d", {"id": cur}), ResultSet("c", "m", "d", {"id": cur}))
    assert both.machines_unknown is None
    assert "no machine" not in render_markdown(both)


def test_the_golden_file_keeps_the_machines_and_reads_back(tmp_path: Path):
    _two_machine_folder(tmp_path / "r")
    written = from_results(tmp_path / "r")
    assert set(written.machines) == {FA, FB}
    assert written.cells[make_cell("split")["id"]].machines == [FA, FB]
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(to_json(written)))
    back = from_file(path)
    assert back.machines == written.machines and back.cells == written.cells


def test_diagnose_says_first_when_machines_differ():
    assert machine_sentences((A, A), (A, A)) == []
    assert machine_sentences((None, A), (None, None)) == []
    recorded, moved = machine_sentences((A, B), (A, A))
    assert recorded.startswith(f"The two runs ran on different machines, `{FA}` and `{FB}` (CPU")
    assert "cannot show that part" in recorded
    # the second run's replay ran on the first run's machine, not its own
    assert moved.startswith(f"The replays ran on machine `{FA}`, not on `{FB}`")
    (replayed,) = machine_sentences((B, B), (A, A))
    assert replayed.startswith(f"The replays ran on machine `{FA}`, not on `{FB}`")
    assert "(CPU capability AVX2 vs AVX512;" in replayed


def test_cpuinfo_after_blank_lines_and_with_a_colon_in_a_value():
    text = "\n\nvendor_id\t: GenuineIntel\nmodel name\t: Custom: Xeon\nflags\t: avx2 fma\n"
    facts = parse_cpuinfo(text)
    assert (facts["cpu_vendor"], facts["cpu_name"], facts["cpu_flags"]) == (
        "GenuineIntel",
        "Custom: Xeon",
        ["avx2", "fma"],
    )


def test_a_gpus_identity_is_what_decides_its_kernels():
    gpu = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "sm_count": 132,
           "memory_bytes": 85e9, "uuid": "GPU-1", "pci_bus_id": "00000000:3B:00.0"}  # fmt: skip
    assert gpu_identity([gpu, {"name": "NVIDIA L4"}]) == [
        ["NVIDIA H100 80GB HBM3", "9.0", 132],
        ["NVIDIA L4", None, None],
    ]


def test_what_a_machine_does_not_say_is_said_as_unknown():
    bare = Machine(cpu_vendor="0x41", cpu_model=0xD40)
    assert cpu_text(bare) == "unnamed CPU (0x41, model 3392)"
    assert cpu_text(Machine()) == "unnamed CPU"
    assert gpu_text([None, None, None]) == "unnamed GPU"
    assert gpu_text(["NVIDIA L4", "8.9", None]) == "NVIDIA L4 (sm_89)"
    assert gpu_text(["NVIDIA L4", None, 58]) == "NVIDIA L4 (58 SMs)"
    unknown = machine(cpu_capability=None)
    assert differences(unknown, machine(**AVX2))[0] == "CPU capability unknown vs AVX2"
    assert differences(machine(**AVX2), unknown)[0] == "CPU capability AVX2 vs unknown"


def test_flags_and_gpus_on_either_side_are_each_named():
    a = machine(cpu_flags=["avx2", "avx512f"], gpus=[["A", "8.0", 108], ["A", "8.0", 108]])
    b = machine(cpu_flags=["avx2", "amx_tile", "amx_bf16"], gpus=[["B", "9.0", 132]])
    assert differences(a, b) == [
        "CPU flags avx512f only on the first; amx_tile, amx_bf16 only on the second",
        "GPUs A (sm_80, 108 SMs), A (sm_80, 108 SMs) vs B (sm_90, 132 SMs)",
    ]


def test_machines_that_differ_only_in_their_fingerprints_are_named_by_them():
    twin = dataclasses.replace(machine(), fingerprint="0" * 12)
    assert machines_differ([machine(), twin]) == (
        f"ran on different machines (machine {FA} vs {'0' * 12})"
    )
    # a difference the words can name is named, not the fingerprints
    assert "machine " not in machines_differ([machine(), machine(**AVX2)])


def _sets(base: dict[str, CellDigests], cur: dict[str, CellDigests]) -> tuple[ResultSet, ...]:
    return ResultSet("b", "m", "d", base, FACTS[0]), ResultSet("c", "m", "d", cur, FACTS[1])


def test_the_gate_tells_each_cell_whose_trajectory_moved_with_the_machine_word_for_word():
    base = digests(True, ["t1" * 8, "t1" * 8], [FA, FA])
    cur = digests(True, ["t2" * 8, "t2" * 8], [FB, FB])
    one = compare(*_sets({"x": base}, {"x": cur}))
    moved, machine_row = one.changes
    assert (moved.baseline, moved.current) == (("t1" * 8)[:12], ("t2" * 8)[:12])
    assert machine_row.what.startswith("machine changed: CPU capability AVX512 vs AVX2; ISA")
    md = render_markdown(one).splitlines()
    assert md[2:7] == [
        "### Machine changed",
        "",
        "1 cell changed its trajectory on the same image, and ran on another machine than the "
        "baseline's: CPU and GPU kernels, and so the bits, differ between machines, so this is "
        "not called a regression of the code. Make the baseline on a machine like this one (its "
        "fingerprint is in the report's header), or pin CI to the baseline's machine.",
        "",
        "### Other changes (not regressions)",
    ]
    two = render_markdown(compare(*_sets({"x": base, "y": base}, {"x": cur, "y": cur})))
    assert "\n2 cells changed their trajectories on the same image, and ran on" in two


def test_results_without_machines_against_a_baseline_with_them_are_said_to_be_so():
    base = digests(True, ["t1", "t1"], [FA, FA])
    cur = digests(True, ["t2", "t2"], [None, None])
    result = compare(*_sets({"x": base}, {"x": cur}))
    assert result.machines_unknown == "current results" and result.exit_code == EXIT_REGRESSION
    lines = render_markdown(result).splitlines()
    assert lines[2:4] == [
        "The current results record no machine (made before machines were recorded): the "
        "machines could not be compared, and a changed trajectory on the same image counts as "
        "a regression.",
        "",
    ]


def test_a_machine_change_lists_every_fingerprint_and_words_only_what_it_knows():
    c = machine(cpu_capability=None)
    base = digests(True, ["t1", "t1"], [FA, c.fingerprint])
    cur = digests(True, ["t1", "t1"], [FB, FB])
    (row,) = compare_cell("x", base, cur, ({FA: A, c.fingerprint: c}, {}))
    listed = sorted([FA, c.fingerprint])
    facts = {FA: "AVX512", c.fingerprint: "unknown"}
    assert row.baseline == ", ".join(f"{k} (CPU capability {facts[k]})" for k in listed)
    assert (row.what, row.current) == ("machine changed", FB)  # the current facts are not known


def test_a_machine_change_wins_over_a_refusal_and_a_regression_over_both():
    base = digests(True, ["t1", "t1"], [FA, FA])
    moved = digests(True, ["t2", "t2"], [FB, FB])
    broke = digests(False, ["t2", "t3"], [FB, FB])
    # the baseline's cell "gone" is missing from the current results: a refusal
    result = compare(*_sets({"x": base, "gone": base}, {"x": moved}))
    assert [r.what for r in result.refusals] == ["removed_cells"]
    assert result.exit_code == EXIT_MACHINE_CHANGED
    assert "### Also not comparable" in render_markdown(result)
    worse = compare(*_sets({"x": base, "y": base, "gone": base}, {"x": moved, "y": broke}))
    assert worse.exit_code == EXIT_REGRESSION


def _set_machine(run_dir: Path, m: Machine | None) -> None:
    """Give a fake executor's record the machine ``m`` ran it (its provenance only)."""
    path = run_dir / "run.json"
    record = json.loads(path.read_text())
    record["provenance"]["machine"] = dataclasses.asdict(m) if m is not None else None
    path.write_text(json.dumps(record))


def _fake_folder(out: Path, m: Machine | None) -> Path:
    config = RunConfig(
        matrix=load_matrix(QUICK), out=out, progress="quiet", formats=(), plots=False
    )
    run_matrix(config, FakeExecutor(seconds=0.01, diverge_placement="none"))
    for run_dir in sorted(out.glob("cells/*/repeat-*")):
        _set_machine(run_dir, m)
    return out


def test_merge_names_each_inputs_machines_and_a_conflict_across_them(tmp_path: Path):
    h100 = machine(gpus=[["NVIDIA H100 80GB HBM3", "9.0", 132]])
    x = _fake_folder(tmp_path / "x", A)
    y = _fake_folder(tmp_path / "y", h100)
    (bm0,) = [p for p in y.glob("cells/*before_model*/repeat-0")]
    nudge_losses(bm0)  # another result on the other machine
    unknown = next(p for p in y.glob("cells/*before_trainer*/repeat-0"))
    _set_machine(unknown, None)  # a record without a machine names none
    forged = next(p for p in x.glob("cells/*before_trainer*/repeat-1"))
    _set_machine(forged, dataclasses.replace(B, fingerprint="forged"))  # nor one that is no hex
    result = merge([x, y], tmp_path / "m", formats=(), plots=False)
    assert result.machines == {str(x): {FA: A}, str(y): {h100.fingerprint: h100}}
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["merge"]["machines"] == {str(x): [FA], str(y): [h100.fingerprint]}
    (conflict,) = result.result_conflicts
    words = "ran on different machines (GPUs none vs NVIDIA H100 80GB HBM3 (sm_90, 132 SMs))"
    assert conflict.machines_differ == words
    assert describe_conflict(conflict).endswith(f"{y}; they {words})")
    # copies with the same result are no result conflict, whatever their machines
    assert all(d.machines_differ is None for d in result.conflicts if d is not conflict)
    assert machine_lines(result) == [
        "  the inputs ran on 2 machines (the report marks runs compared across them):",
        f"    {x}: {FA} (CPU capability AVX512)",
        f"    {y}: {h100.fingerprint} (CPU capability AVX512)",
    ]
    one = merge([x], tmp_path / "one", formats=(), plots=False)
    assert machine_lines(one) == []


def test_own_runs_name_the_machine_and_its_code_path_when_they_differ(tmp_path: Path):
    for folder, m in (("a", A), ("b", B), ("c", None)):
        run_dir = own_run(tmp_path, folder, "nightly", base_losses())
        _set_machine(run_dir, m)
    (cell,) = analyze(tmp_path).cells
    named = {d.what: d.values for d in cell.differences}
    assert named["cpu_capability"] == {"a": "AVX512", "b": "AVX2"}
    assert named["isa_limits"] == {
        "a": "none",
        "b": "ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2, "
        "MKL_CBWR=AVX2",
    }
    assert named["machine"] == {"a": FA, "b": FB}
    # the same CPU: nothing else of the machine is named
    assert not {"cpu_flags", "cpu_name"} & set(named)
    same = tmp_path / "same"
    for folder in ("a", "b"):
        _set_machine(own_run(same, folder, "nightly", base_losses()), machine(cpu_capability=None))
    (cell,) = analyze(same).cells
    assert not {"cpu_capability", "isa_limits", "machine"} & {d.what for d in cell.differences}
    # a capability one record does not say is no difference (its fingerprint still is one)
    said = tmp_path / "said"
    _set_machine(own_run(said, "a", "nightly", base_losses()), machine())
    _set_machine(own_run(said, "b", "nightly", base_losses()), machine(cpu_capability=None))
    (cell,) = analyze(said).cells
    assert [d.what for d in cell.differences] == ["machine"]


def test_a_golden_file_keeps_only_the_machines_of_finished_runs(tmp_path: Path):
    cell = make_cell("c")
    make_results(tmp_path, [cell], repeats=2)
    write_run(tmp_path, cell, 0, base_losses(), provenance=_provenance(A))
    error = {"type": "failed", "message": "boom"}
    write_run(tmp_path, cell, 1, None, status="failed", error=error, provenance=_provenance(B))
    results = from_results(tmp_path)
    assert results.machines == {FA: A}
    assert results.cells[cell["id"]].machines == [FA, None]


@pytest.mark.parametrize(
    ("machines", "message"),
    [
        ({"k": 5}, "machines['k']: Input should be a dictionary or an instance of Machine"),
        ({"k": {"cpu_flags": ["avx2", 3]}}, "machines['k'].cpu_flags.1: Input should be a valid"),
    ],
)
def test_a_golden_files_bad_machine_is_named_where_it_is(machines, message, tmp_path: Path):
    path = tmp_path / "golden.json"
    data = {"format_version": 2, "kind": "harness-baseline", "matrix": "m", "cells": {},
            "matrix_digest": "d" * 64, "machines": machines}  # fmt: skip
    path.write_text(json.dumps(data))
    with pytest.raises(HarnessError) as caught:
        from_file(path)
    assert f"malformed golden-digests file ({message}" in caught.value.message


def test_across_cpu_isa_the_code_path_is_the_settings_not_the_machines(tmp_path: Path):
    cells = [make_cell(name, cpu_isa=isa) for name, isa in (("n", "native"), ("c", "avx2"))]
    make_results(tmp_path, cells, repeats=1)
    for cell, m in zip(cells, (A, B), strict=True):
        write_run(tmp_path, cell, 0, base_losses(), provenance=_provenance(m))
    report = analyze(tmp_path)
    (across,) = compare_across("cpu_isa", report.cells)
    assert across.equal is True and across.machines_differ is None
    # another CPU under the two code paths is still a machine of its own
    write_run(
        tmp_path, cells[1], 0, base_losses(), provenance=_provenance(machine(cpu_model=1, **AVX2))
    )
    (across,) = compare_across("cpu_isa", analyze(tmp_path).cells)
    assert across.machines_differ == (
        "ran on different machines (CPU Intel(R) Xeon(R) Processor (GenuineIntel, family 6, "
        "model 143) vs Intel(R) Xeon(R) Processor (GenuineIntel, family 6, model 1))"
    )
