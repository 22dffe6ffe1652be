"""``cublas_workspace``, its own setting: the values it takes, the environment each run gets,
the value in force that the run record keeps, cell names, and the report (its column, and the
cost-of-determinism twins matched by the workspace in force).

Pure logic first; then one real ``harness run`` (local executor, real MNIST, 20 steps per run)
started from a shell that exported ``CUBLAS_WORKSPACE_CONFIG``, which no run may inherit; and
one real workload started directly with it exported and no re-exec, so the workload's own entry
point (what a container with the variable in its image relies on) removes it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fault_tools import Harness
from test_report_summaries import cell, ok_run

from harness.contract import RunSpec, SpecError, cublas_workspace_in_force, environment_for
from harness.contract.settings import BY_NAME, TWIN
from harness.executors.base import Slot
from harness.executors.docker_kwargs import container_environment
from harness.executors.local import run_env
from harness.matrix import parse_matrix
from harness.matrix.models import CellSettings, json_schema
from harness.report.flatten import cell_row
from harness.report.markdown_cells import setting_text
from harness.report.report_data import Cost
from harness.report.summaries import costs, effective
from harness.results.run_reader import load_record
from harness.workload.__main__ import numerics_env

ROOT = Path(__file__).resolve().parents[1]
PATH = Path("m.yaml")
VAR = "CUBLAS_WORKSPACE_CONFIG"
#: What the shell that starts the harness exported: a well-formed value no spec asks for.
EXPORTED = ":999:9"
SETTING = BY_NAME["cublas_workspace"]

GOOD = ["auto", "unset", ":4096:8", ":16:8", ":4096:8:16:8", ":1:1", ":9999999:9999", ":1:1" * 8]
BAD = [
    "",
    "AUTO",
    "auto ",
    "none",
    ":4096",
    "4096:8",
    ":4096:8:",
    ":0:8",
    ":4096:0",
    ":04096:8",
    ":4096:8\n",
    ":4096:8 :16:8",
    ":10000000:8",  # SIZE of 8 digits
    ":4096:10000",  # COUNT of 5 digits
    ":1:1" * 9,  # nine pairs
]


# ------------------------------------------------------------------ the values it takes


@pytest.mark.parametrize("value", GOOD)
def test_good_values_pass_every_check(value: str):
    """The table's check (the spec), the matrix model and the JSON Schema's pattern agree."""
    assert SETTING.check(value) is None
    assert RunSpec(cublas_workspace=value).cublas_workspace == value
    assert CellSettings.model_validate({"cublas_workspace": value}).cublas_workspace == value
    patch = json_schema()["$defs"]["Patch"]["properties"]["cublas_workspace"]
    assert re.search(patch["anyOf"][0]["pattern"], value)


@pytest.mark.parametrize("value", BAD)
def test_bad_values_fail_every_check(value: str):
    words = (
        "auto, unset, or :SIZE:COUNT pairs (SIZE KiB, COUNT buffers), e.g. :4096:8 or :4096:8:16:8"
    )
    assert SETTING.check(value) == f"cublas_workspace must be {words}, got {value!r}"
    with pytest.raises(SpecError, match="cublas_workspace must be auto, unset"):
        RunSpec(cublas_workspace=value)
    with pytest.raises(ValueError, match="string_pattern_mismatch"):
        CellSettings.model_validate({"cublas_workspace": value})
    assert not re.fullmatch(SETTING.pattern, value)


@pytest.mark.parametrize("value", [None, 4096, True, [":4096:8"]])
def test_values_that_are_not_strings_are_refused(value):
    assert SETTING.check(value) is not None
    with pytest.raises(SpecError):
        RunSpec(cublas_workspace=value)


def test_the_pattern_is_in_the_schema_for_axes_include_and_exclude():
    defs = json_schema()["$defs"]
    axis = defs["Axes"]["properties"]["cublas_workspace"]["anyOf"][0]["items"]["pattern"]
    patch = defs["Patch"]["properties"]["cublas_workspace"]["anyOf"][0]["pattern"]
    assert axis == patch == SETTING.pattern


# ------------------------------------------------------------------ the environment


@pytest.mark.parametrize(
    ("workspace", "algorithms", "expected"),
    [
        ("auto", "off", None),
        ("auto", "on", ":4096:8"),
        ("auto", "warn", ":4096:8"),
        ("unset", "on", None),
        ("unset", "warn", None),
        ("unset", "off", None),
        (":16:8", "off", ":16:8"),
        (":16:8", "on", ":16:8"),
        (":4096:8:16:8", "warn", ":4096:8:16:8"),
    ],
)
def test_the_workspace_in_force_and_every_environment_that_starts_a_run(
    workspace: str, algorithms: str, expected: str | None
):
    """The one resolver, and each place a run's environment is built: the local executor's
    child, the workload's own entry point (and so each DDP rank it re-executes), the container.
    A starter that exported the variable never passes it on."""
    assert cublas_workspace_in_force(workspace, algorithms) == expected
    spec = RunSpec(cublas_workspace=workspace, deterministic_algorithms=algorithms)
    inherited = {VAR: EXPORTED, "KEEP": "1", "PYTHONHASHSEED": "5"}
    builds = {
        "environment_for": environment_for(spec, inherited),
        "local executor": run_env(spec, Slot((0,)), base=inherited),
        "workload entry point": numerics_env(spec, inherited),
        "container": container_environment(spec, Slot((0,))),
    }
    for where, env in builds.items():
        assert env.get(VAR) == expected, where
        assert env["PYTHONHASHSEED"] == "0", where
    assert builds["local executor"]["KEEP"] == builds["workload entry point"]["KEEP"] == "1"


# ------------------------------------------------------------------ cells


def test_cell_names_slug_the_value_and_the_default_keeps_ids():
    text = (
        "name: t\naxes:\n  placement: [none]\n"
        '  cublas_workspace: [auto, unset, ":4096:8", ":4096:8:16:8"]\n'
    )
    cells = parse_matrix(text, PATH).cells
    assert [c.name for c in cells] == [
        "local-cpu1-none-det1-bench0-algoff-wsauto",
        "local-cpu1-none-det1-bench0-algoff-wsunset",
        "local-cpu1-none-det1-bench0-algoff-ws4096-8",
        "local-cpu1-none-det1-bench0-algoff-ws4096-8-16-8",
    ]
    assert not any(":" in c.name for c in cells)
    without = parse_matrix("name: t\naxes:\n  placement: [none]\n", PATH)
    assert cells[0].id == without.cells[0].id  # auto is the default: in no id
    assert len({c.id for c in cells}) == 4
    assert cells[2].spec(0).to_dict()["cublas_workspace"] == ":4096:8"


def test_a_matrix_that_does_not_use_it_keeps_its_digest():
    """The digest of a matrix without the setting is the one it had before the setting existed
    (computed then), so its results folders still resume and compare; one that uses it
    differs."""
    plain = parse_matrix("name: t\naxes:\n  placement: [none]\n", PATH)
    assert plain.digest == "79770d2111cef8cc546fd48240523aa4f49f707d65d55d9e31442ae8a87a11a7"
    used = parse_matrix("name: t\naxes:\n  placement: [none]\n  cublas_workspace: [auto]\n", PATH)
    assert used.digest != plain.digest


# ------------------------------------------------------------------ the report (hand-made)


def det_run(tmp_path: Path, name: str, workspace: str | None):
    run = ok_run(tmp_path, 0, None, name, trajectory="t")
    run.determinism = {"cublas_workspace_config": workspace}
    return run


def test_the_column_shows_the_value_in_force_beside_auto(tmp_path: Path):
    on = cell("on", runs=[det_run(tmp_path, "on", ":4096:8")], cublas_workspace="auto")
    off = cell("off", runs=[det_run(tmp_path, "off", None)], cublas_workspace="auto")
    named = cell("named", runs=[det_run(tmp_path, "named", ":16:8")], cublas_workspace=":16:8")
    wrong = cell("wrong", runs=[det_run(tmp_path, "wrong", ":16:8")], cublas_workspace="unset")
    old = cell("old", runs=[ok_run(tmp_path, 0, None, "old", trajectory="t")])
    old.settings["cublas_workspace"] = "auto"
    older = cell("older", runs=[det_run(tmp_path, "older", ":4096:8")])  # no such setting yet
    cells = (on, off, named, wrong, old, older)
    texts = [setting_text(cell_row(c), "cublas_workspace") for c in cells]
    assert texts == [
        "auto (:4096:8)",
        "auto (unset)",
        ":16:8",
        "unset (:16:8)",
        "auto",
        "auto (:4096:8)",
    ]
    assert cell_row(on)["cublas_workspace"] == "auto"  # the CSV keeps the value as asked
    assert cell_row(on)["cublas_workspace_in_force"] == ":4096:8"
    assert cell_row(old)["cublas_workspace_in_force"] is None


def twin_cells(workspaces: dict[str, tuple[str, str]]) -> list:
    """Cells named by key: (deterministic_algorithms, cublas_workspace), all else equal."""
    return [
        cell(
            name,
            spe=float(i + 1),
            placement="none",
            deterministic_algorithms=alg,
            cublas_workspace=ws,
            cudnn_deterministic=alg != "off",
            cudnn_benchmark=alg == "off",
        )
        for i, (name, (alg, ws)) in enumerate(workspaces.items())
    ]


def test_twins_are_matched_by_the_workspace_in_force():
    """The twin has the workspace unset, by ``unset`` or by ``auto`` beside alg off."""
    assert TWIN["cublas_workspace"] == "unset"
    default = twin_cells({"on": ("on", "auto"), "warn": ("warn", "auto"), "off": ("off", "auto")})
    assert costs(default) == [
        Cost(cell="on", twin="off", seconds_per_epoch=1.0, twin_seconds_per_epoch=3.0),
        Cost(cell="warn", twin="off", seconds_per_epoch=2.0, twin_seconds_per_epoch=3.0),
    ]
    named = twin_cells(
        {
            "on-unset": ("on", "unset"),
            "off-4096": ("off", ":4096:8"),
            "on-4096": ("on", ":4096:8"),
            "off-unset": ("off", "unset"),
        }
    )
    assert costs(named) == [
        Cost(cell="on-unset", twin="off-unset", seconds_per_epoch=1.0, twin_seconds_per_epoch=4.0),
        Cost(cell="off-4096", twin="off-unset", seconds_per_epoch=2.0, twin_seconds_per_epoch=4.0),
        Cost(cell="on-4096", twin="off-unset", seconds_per_epoch=3.0, twin_seconds_per_epoch=4.0),
    ]
    # an older folder's cells, without the setting (missing, or null as read from old specs),
    # had auto; they pair as before
    old = twin_cells({"on": ("on", "auto"), "off": ("off", "auto")})
    del old[0].settings["cublas_workspace"]
    old[1].settings["cublas_workspace"] = None
    assert costs(old) == [
        Cost(cell="on", twin="off", seconds_per_epoch=1.0, twin_seconds_per_epoch=2.0)
    ]
    for missing in ({}, {"cublas_workspace": None}):
        on = effective({"deterministic_algorithms": "on", **missing})
        assert on["cublas_workspace"] == ":4096:8"
    # auto and unset beside alg off are the same computation: the first is the twin
    both = twin_cells({"off-auto": ("off", "auto"), "off-unset": ("off", "unset")})
    both += twin_cells({"on": ("on", "auto")})
    assert costs(both) == [
        Cost(cell="on", twin="off-auto", seconds_per_epoch=1.0, twin_seconds_per_epoch=1.0)
    ]


def test_which_axis_breaks_it_names_the_workspace_like_any_axis():
    from harness.report.summaries import describe_image

    cells = [
        cell("a", cublas_workspace="auto"),
        cell("b", "diverges", distinct=2, cublas_workspace=":16:8"),
    ]
    assert "cublas_workspace breaks it: cublas_workspace=:16:8 never reproduces, while " in (
        describe_image("img", cells)
    )


# ------------------------------------------------------------------ real runs

MATRIX = """\
name: ws
run: {repeats: 1, epochs: 1, max_steps_per_epoch: 20, threads: 1, timeout_s: 600}
include:
  - {cublas_workspace: ":16:8"}
  - {cublas_workspace: unset, deterministic_algorithms: "on"}
  - {cublas_workspace: auto, cudnn_deterministic: false, cudnn_benchmark: true}
"""


@pytest.fixture(scope="module")
def real(tmp_path_factory, mnist_dir) -> Path:
    """One real ``harness run`` (local executor) from a shell that exported the variable."""
    root = tmp_path_factory.mktemp("ws")
    (root / "m.yaml").write_text(MATRIX)
    out = root / "out"
    env = {VAR: EXPORTED, "HARNESS_MNIST_DIR": str(mnist_dir)}
    run = Harness(root / "m.yaml", out, "--executor", "local", env=env, report=True)
    assert run.finish(timeout=900) == 0, run.text[-3000:]
    return out


def record_of(out: Path, name: str):
    (run_dir,) = out.glob(f"cells/{name}-*/repeat-0")
    return load_record(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "asked", "in_force", "algorithms"),
    [
        ("local-cpu1-before_model-det1-bench0-algoff-ws16-8", ":16:8", ":16:8", False),
        ("local-cpu1-before_model-det1-bench0-algon-wsunset", "unset", None, True),
        ("local-cpu1-before_model-det0-bench1-algoff-wsauto", "auto", None, False),
    ],
)
def test_a_real_run_records_the_workspace_it_had(
    real: Path, name: str, asked: str, in_force: str | None, algorithms: bool
):
    """The spec says what was asked; the provenance what the process had (never the exported
    value). On the CPU, deterministic algorithms with the workspace unset do not raise: cuBLAS
    is not used."""
    record = record_of(real, name)
    assert record.ok
    assert record.spec["cublas_workspace"] == asked
    assert record.provenance.determinism.cublas_workspace_config == in_force
    assert record.provenance.determinism.deterministic_algorithms is algorithms
    assert record.provenance.env[VAR] == in_force


@pytest.mark.slow
def test_the_real_report_shows_the_column_and_the_twins(real: Path):
    report = json.loads((real / "report.json").read_text())
    in_force = {row["name"]: row["cublas_workspace_in_force"] for row in report["table"]}
    assert sorted(in_force.values()) == [":16:8", "unset", "unset"]
    md = (real / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| verdict |"))
    assert " cublas_workspace |" in header
    # Markdown-escaped: auto \(unset\) reads auto (unset)
    assert "| auto \\(unset\\) |" in md and "| :16:8 |" in md and "| unset |" in md
    twins = {(c["cell"], c["twin"]) for c in report["costs"]}
    auto = "local-cpu1-before_model-det0-bench1-algoff-wsauto"
    assert twins == {
        ("local-cpu1-before_model-det1-bench0-algoff-ws16-8", auto),
        ("local-cpu1-before_model-det1-bench0-algon-wsunset", auto),
    }


@pytest.mark.slow
def test_the_workload_itself_removes_an_inherited_variable(workload, tmp_path, mnist_dir):
    """Started with the variable exported and PYTHONHASHSEED already right (no re-exec), as in
    a container whose image sets it: the entry point removes it before torch starts."""
    out = tmp_path / "run"
    env = {VAR: EXPORTED, "PYTHONHASHSEED": "0"}
    result = workload({"max_steps_per_epoch": 3}, out, env=env, data_dir=mnist_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    record = load_record(out)
    assert record.provenance.determinism.cublas_workspace_config is None
    assert record.provenance.env[VAR] is None
