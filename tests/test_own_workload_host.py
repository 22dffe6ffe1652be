"""The host side of "your own training as the workload" (docs/matrix.md, "Your own training"):
``workload.path`` found and refused as the matrix file says, the user's folder reaching the run
(``--code-dir``, its digest in the environment), resume rerunning the runs whose code changed,
``workload.requirements`` checked in the local interpreter and part of the image's identity, and
``harness run`` stopping at the first failure of the user's training (exit 2, nothing lost).

The runs here are the fake executor's (scheduling, resume and exit logic); the real workload
process with a build function is the example's test.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from harness.cli import main
from harness.contract import USER_CODE_ENV, RunSpec
from harness.contract.code import user_code_digest, user_code_files
from harness.contract.record import USER_WORKLOAD_ERRORS
from harness.errors import ExecutorError, MatrixError
from harness.executors import ExecutorOptions, Slot, images
from harness.executors.fake import FakeExecutor
from harness.executors.local import LocalExecutor
from harness.executors.local_probes import check_requirements
from harness.matrix import load_matrix, parse_matrix
from harness.results import layout
from harness.results.manifest import read_manifest
from harness.results.merge import merge
from harness.results.run_reader import load_record
from harness.run.matrix_runner import RunConfig, run_matrix
from harness.run.schedule import Host

OWN = """\
name: own
run: {{repeats: 2}}
workload:
  entry: convnet:build
  path: {path}
  params: {{ch: 4, act: relu}}
axes:
  placement: [none, before_model]
  params: [{{ch: 4}}, {{ch: 8}}]
"""


def user_folder(root: Path) -> Path:
    """A user's code folder with a package, its cache and a hidden folder."""
    code = root / "code"
    (code / "convnet" / "__pycache__").mkdir(parents=True)
    (code / "convnet" / "__init__.py").write_text("def build(run):\n    return None\n")
    (code / "convnet" / "__pycache__" / "x.cpython-312.pyc").write_bytes(b"cache")
    (code / ".git").mkdir()
    (code / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return code


def write_matrix(root: Path, text: str) -> Path:
    path = root / "matrix.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------ workload.path in the matrix


def test_workload_path_is_resolved_against_the_matrix_file_not_the_cwd(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    code = user_folder(project)
    matrix = write_matrix(project, OWN.format(path="code"))
    monkeypatch.chdir(tmp_path)  # elsewhere: "code" here does not exist
    loaded = load_matrix(Path("project") / "matrix.yaml")
    assert loaded.code_dir == code and loaded.code_dir.is_absolute()
    assert load_matrix(matrix).code_dir == code


@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        (lambda root: None, "does not exist"),
        (lambda root: (root / "nothere").write_text("a file"), "is not a folder"),
    ],
)
def test_a_workload_path_that_is_no_folder_names_file_line_and_fix(tmp_path, setup, problem):
    setup(tmp_path)
    matrix = write_matrix(tmp_path, OWN.format(path="nothere"))
    with pytest.raises(MatrixError) as caught:
        load_matrix(matrix)
    assert caught.value.message == (
        f"{matrix}:5: workload.path 'nothere' ({tmp_path / 'nothere'}) {problem}"
    )
    assert "relative to the matrix file" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("block", "line", "key"),
    [
        ("workload:\n  path: code\n", 3, "path"),
        ("workload:\n  params: {a: 1}\n  requirements: [einops==0.8.1]\n", 4, "requirements"),
        # an entry of null in an axis is the built-in MNIST: still nothing uses the folder
        ("workload:\n  path: code\naxes:\n  entry: [null]\n", 3, "path"),
    ],
)
def test_path_or_requirements_without_an_entry_are_refused(tmp_path, block, line, key):
    user_folder(tmp_path)
    text = "name: t\n" + block
    if "axes:" not in block:
        text += "axes: {seed: [1, 2]}\n"
    matrix = write_matrix(tmp_path, text)
    with pytest.raises(MatrixError) as caught:
        load_matrix(matrix)
    assert caught.value.message.startswith(f"{matrix}:{line}: workload.{key} is given but no ")
    assert "it would be ignored" in caught.value.message
    assert f"remove workload.{key}" in (caught.value.hint or "")


def test_an_entry_in_an_axis_or_include_is_enough_for_path_and_requirements(tmp_path):
    user_folder(tmp_path)
    for where in ("axes:\n  entry: [null, 'convnet:build']\n", "include:\n  - {entry: 'a:b'}\n"):
        text = "name: t\nworkload:\n  path: code\n  requirements: [einops==0.8.1]\n" + where
        loaded = load_matrix(write_matrix(tmp_path, text))
        assert loaded.code_dir == tmp_path / "code"


def test_path_and_requirements_are_not_the_matrix_identity(tmp_path):
    """Moving the folder, or a new requirement (a new image: its id is compared), keeps the
    results folder; what the code is, is compared run by run (user_code_digest)."""
    user_folder(tmp_path)
    (tmp_path / "moved").mkdir()
    first = parse_matrix(OWN.format(path="code"), tmp_path / "m.yaml")
    moved = parse_matrix(OWN.format(path="moved"), tmp_path / "m.yaml")
    asks = OWN.format(path="code").replace("  params: {ch", "  requirements: [x==1]\n  params: {ch")
    assert parse_matrix(asks, tmp_path / "m.yaml").model.workload.requirements == ["x==1"]
    assert first.digest == moved.digest == parse_matrix(asks, tmp_path / "m.yaml").digest
    other_entry = OWN.format(path="code").replace("convnet:build", "convnet:other")
    assert parse_matrix(other_entry, tmp_path / "m.yaml").digest != first.digest


def test_cell_names_name_only_the_params_that_vary(tmp_path):
    user_folder(tmp_path)
    loaded = load_matrix(write_matrix(tmp_path, OWN.format(path="code")))
    names = [c.name for c in loaded.cells]
    assert names == [
        "local-cpu1-none-det1-bench0-algoff-ch4",
        "local-cpu1-none-det1-bench0-algoff-ch8",
        "local-cpu1-before_model-det1-bench0-algoff-ch4",
        "local-cpu1-before_model-det1-bench0-algoff-ch8",
    ]
    assert loaded.cells[1].settings["params"] == {"ch": 8, "act": "relu"}


# ------------------------------------------------------------ the user's code digest


def test_user_code_digest_covers_every_file_but_caches_and_hidden_folders(tmp_path):
    code = user_folder(tmp_path)
    names = [p.relative_to(code).as_posix() for p in user_code_files(code)]
    assert names == ["convnet/__init__.py"]
    before = user_code_digest(code)
    (code / "convnet" / "__pycache__" / "y.pyc").write_bytes(b"more cache")
    (code / ".git" / "ORIG_HEAD").write_text("x")
    (code / "stray.pyc").write_bytes(b"x")
    assert user_code_digest(code) == before
    (code / "data.csv").write_text("1,2\n")  # any file counts, not only .py
    with_data = user_code_digest(code)
    assert with_data != before
    (code / "data.csv").rename(code / "other.csv")  # a name counts too
    assert user_code_digest(code) not in (before, with_data)


# ------------------------------------------------------------ what a run gets


def _specs(loaded) -> tuple[RunSpec, RunSpec]:
    own = loaded.cells[0].spec(0)
    builtin = RunSpec.from_dict({**own.to_dict(), "entry": None, "params": {}})
    return own, builtin


def test_local_runs_of_a_build_function_get_the_folder_and_its_digest(tmp_path, monkeypatch):
    code = user_folder(tmp_path)
    loaded = load_matrix(write_matrix(tmp_path, OWN.format(path="code")))
    options = ExecutorOptions(python="/usr/bin/python3", code_dir=code, code_digest="d" * 64)
    executor = LocalExecutor(options)
    own, builtin = _specs(loaded)
    argv = executor.argv(tmp_path / "run", own)
    assert argv[argv.index("--code-dir") + 1] == str(code)
    monkeypatch.setenv(USER_CODE_ENV, "planted")  # the host's own never reaches a run
    assert executor.env(own, Slot((0,)))[USER_CODE_ENV] == "d" * 64
    # the built-in MNIST experiment: no folder, no digest (a change there does not rerun it)
    assert "--code-dir" not in executor.argv(tmp_path / "run", builtin)
    assert USER_CODE_ENV not in executor.env(builtin, Slot((0,)))
    bare = LocalExecutor(ExecutorOptions(python="/usr/bin/python3"))  # no workload.path
    assert "--code-dir" not in bare.argv(tmp_path / "run", own)


# ------------------------------------------------------------ requirements


def test_local_requirements_are_checked_in_the_runs_interpreter() -> None:
    """The venv has einops 0.8.1 (pyproject's dev extra); one probe answers for them all."""
    check_requirements(sys.executable, ["einops==0.8.1", "einops>=0.8", "numpy"])
    with pytest.raises(ExecutorError) as caught:
        check_requirements(sys.executable, ["einops>=0.8", "einops==0.7.0", "no-such-dist-xq==1"])
    message, hint = caught.value.message, caught.value.hint or ""
    assert "einops==0.7.0 (0.8.1 installed)" in message
    assert "no-such-dist-xq==1 (not installed)" in message and "einops>=0.8" not in message
    assert sys.executable in message
    assert hint.startswith("pip install einops==0.7.0 no-such-dist-xq==1 into ")
    assert "in a container, where the workload image installs it" in hint


def test_a_local_matrix_missing_a_requirement_stops_before_any_run(tmp_path, capsys):
    user_folder(tmp_path)
    text = OWN.format(path="code").replace(
        "  params: {ch", "  requirements: ['einops>=9.0']\n  params: {ch"
    )
    matrix = write_matrix(tmp_path, text)
    out = tmp_path / "r"
    data = os.environ.get("HARNESS_MNIST_DIR", str(tmp_path))
    rc = main(["run", str(matrix), "--out", str(out), "--executor", "local", "--data-dir", data])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "einops>=9.0 (0.8.1 installed)" in err and "pip install 'einops>=9.0' into" in err
    assert "Traceback" not in err
    assert not (out / layout.MANIFEST_FILE).exists()  # nothing started, nothing to resume


def test_requirements_are_a_file_in_the_context_and_part_of_the_tag() -> None:
    code = images.code_digest()
    assert images.image_digest(code, ()) == code  # no requirements: the plain image
    one = images.image_digest(code, ["einops==0.8.1", "a>=1"])
    assert one == images.image_digest(code, ["a>=1", "einops==0.8.1"])  # sorted
    assert one not in (code, images.image_digest(code, ["einops==0.8.0", "a>=1"]))
    assert images.workload_tag("b:1", one) != images.workload_tag("b:1", code)
    context = images.build_context(requirements=["einops>=0.8", "a==1"])
    with tarfile.open(fileobj=context) as tar:
        text = tar.extractfile(images.REQUIREMENTS_FILE).read().decode()  # type: ignore[union-attr]
    assert text == "a==1\neinops>=0.8\n"
    with tarfile.open(fileobj=images.build_context()) as tar:
        assert tar.extractfile(images.REQUIREMENTS_FILE).read() == b""  # type: ignore[union-attr]
    # pip reads them from the file, after the harness's own; no RUN line names one
    recipe = (images.source_root() / images.DOCKERFILE).read_text()
    assert "-r /opt/harness-user-requirements.txt" in recipe
    assert recipe.index("${WORKLOAD_REQUIREMENTS}") < recipe.index("-r /opt/harness-user")
    assert recipe.count("${PIP_INSTALL_ARGS}") == 2  # the same (offline) pip arguments


# ------------------------------------------------------------ resume and the user's code


def _config(matrix: Path, out: Path, notices: io.StringIO | None = None) -> RunConfig:
    return RunConfig(
        matrix=load_matrix(matrix), out=out, progress="quiet", formats=(), notice_stream=notices
    )


def _fake(matrix: Path, **kwargs) -> FakeExecutor:
    loaded = load_matrix(matrix)
    options = ExecutorOptions(
        run_label="fake", code_dir=loaded.code_dir, code_digest=user_code_digest(loaded.code_dir)
    )
    return FakeExecutor(options, seconds=0.0, **kwargs)


def test_a_change_to_the_users_folder_reruns_its_runs_and_says_so(tmp_path):
    code = user_folder(tmp_path)
    text = OWN.format(path="code").replace(
        "  params: [{ch: 4}, {ch: 8}]", "  entry: [null, 'convnet:build']"
    )
    matrix = write_matrix(tmp_path, text)
    out = tmp_path / "r"
    assert run_matrix(_config(matrix, out), _fake(matrix)).exit_code == 0
    own = next(d for d in (out / "cells").iterdir() if "convnet" in d.name) / "repeat-0"
    assert load_record(own).provenance.user_code_digest == user_code_digest(code)
    builtin = next(d for d in (out / "cells").iterdir() if "convnet" not in d.name)
    assert load_record(builtin / "repeat-0").provenance.user_code_digest is None

    unchanged = run_matrix(_config(matrix, out), _fake(matrix))
    assert unchanged.skipped == 8 and unchanged.set_aside == 0

    (code / "convnet" / "__init__.py").write_text("def build(run):\n    return 1\n")
    notices = io.StringIO()
    changed = run_matrix(_config(matrix, out, notices), _fake(matrix))
    # the 4 runs of the build function again; the built-in MNIST's 4 are kept
    assert (changed.set_aside, changed.skipped, changed.statuses["ok"]) == (4, 4, 4)
    said = notices.getvalue()
    assert "set aside 4 finished runs made from other code in your workload folder (digest " in said
    assert load_record(own).provenance.user_code_digest == user_code_digest(code)


def test_the_manifest_records_the_folder_for_diagnose_and_merge(tmp_path):
    code = user_folder(tmp_path)
    matrix = write_matrix(tmp_path, OWN.format(path="code"))
    out = tmp_path / "r"
    run_matrix(_config(matrix, out), _fake(matrix))
    manifest = read_manifest(out)
    assert manifest is not None and manifest.workload_path == str(code)
    # results/matrix.yaml is a copy: its "code" names a folder beside it, not the user's
    copy = load_matrix(out / layout.MATRIX_FILE, check_code_dir=False)
    assert copy.code_dir == out / "code" != code
    recorded = load_matrix(out / layout.MATRIX_FILE, code_dir=Path(manifest.workload_path))
    assert recorded.code_dir == code
    # merging needs no code: a folder moved since is no error, and the record goes along
    code.rename(tmp_path / "gone")
    merged = tmp_path / "merged"
    merge([out], merged, formats=())
    assert read_manifest(merged).workload_path == str(code)  # type: ignore[union-attr]
    # a matrix without workload.path writes the manifest it wrote before
    plain = write_matrix(tmp_path, "name: p\nrun: {repeats: 1}\naxes: {seed: [1]}\n")
    run_matrix(_config(plain, tmp_path / "p"), FakeExecutor(seconds=0.0))
    data = json.loads((tmp_path / "p" / layout.MANIFEST_FILE).read_text())
    assert "workload_path" not in data


# ------------------------------------------------------------ the user's training fails


def test_a_failure_of_the_users_training_starts_no_more_runs(tmp_path, monkeypatch):
    """One slot, so runs go one at a time: the first (placement none) fails as the user's
    training does, and nothing else starts; its record is kept; after the fix, a rerun into the
    same folder does the rest."""
    assert USER_WORKLOAD_ERRORS == ("WorkloadError", "DeterminismFlagsChanged")
    user_folder(tmp_path)
    matrix = write_matrix(tmp_path, OWN.format(path="code"))
    monkeypatch.setattr("harness.run.matrix_runner.detect_host", lambda gpus: Host(cpus=(0,)))
    out = tmp_path / "r"
    fake = _fake(matrix, workload_error_placement="none")
    summary = run_matrix(_config(matrix, out), fake)
    assert fake.calls == [(load_matrix(matrix).cells[0].id, 0)]
    assert summary.exit_code == 2 and summary.statuses == {"failed": 1}
    failure = summary.workload_error
    assert failure is not None and failure.type == "WorkloadError"
    assert failure.message == "fake: convnet:build returned no loss"
    assert load_record(failure.run_dir).error.type == "WorkloadError"  # type: ignore[union-attr]

    fixed = run_matrix(_config(matrix, out), _fake(matrix))
    assert fixed.exit_code == 0 and fixed.statuses["ok"] == 8 and fixed.workload_error is None


def test_runs_in_flight_finish_when_the_users_training_fails(tmp_path, monkeypatch):
    """Two slots: the failing run (none) and before_model start together; before_model is held
    until the failure has been seen, and still finishes ok; before_trainer never starts."""
    user_folder(tmp_path)
    text = "name: t\nrun: {repeats: 1}\nworkload: {entry: 'convnet:build', path: code}\n"
    matrix = write_matrix(
        tmp_path, text + "axes: {placement: [none, before_model, before_trainer]}\n"
    )
    monkeypatch.setattr("harness.run.matrix_runner.detect_host", lambda gpus: Host(cpus=(0, 1)))
    seen = threading.Event()
    import harness.run.run_execution as execution

    original = execution._user_workload_failure

    def failure_seen(run, record):  # the runner is about to stop starting runs
        found = original(run, record)
        if found is not None:
            threading.Timer(0.3, seen.set).start()
        return found

    monkeypatch.setattr(execution, "_user_workload_failure", failure_seen)

    class Gated(FakeExecutor):
        def run(self, spec, slot, run_dir, *, timeout_s, cancel):
            if spec.placement != "none":
                assert seen.wait(10), "the failing run never failed"
            return super().run(spec, slot, run_dir, timeout_s=timeout_s, cancel=cancel)

    loaded = load_matrix(matrix)
    options = ExecutorOptions(code_dir=loaded.code_dir, code_digest="c" * 64)
    fake = Gated(options, seconds=0.0, workload_error_placement="none")
    out = tmp_path / "r"
    summary = run_matrix(_config(matrix, out), fake)
    assert summary.exit_code == 2
    assert summary.statuses == {"failed": 1, "ok": 1}, summary.statuses
    assert [c for c, _ in fake.calls] == [loaded.cells[0].id, loaded.cells[1].id]
    second = layout.cell_dirname(loaded.cells[1].name, loaded.cells[1].id)
    assert load_record(layout.run_dir(out, second, 0)).ok


def test_harness_run_prints_the_message_and_a_hint_and_exits_2(tmp_path, monkeypatch, capsys):
    user_folder(tmp_path)
    matrix = write_matrix(tmp_path, OWN.format(path="code"))
    monkeypatch.setattr("harness.run.matrix_runner.detect_host", lambda gpus: Host(cpus=(0,)))
    monkeypatch.setattr(
        "harness.cli.run.make_executor",
        lambda *a, **k: _fake(matrix, workload_error_placement="none"),
    )
    out = tmp_path / "r"
    assert main(["run", str(matrix), "--out", str(out), "--progress", "quiet"]) == 2
    captured = capsys.readouterr()
    name = load_matrix(matrix).cells[0].name
    assert f"error: {name} #0: WorkloadError: fake: convnet:build returned no loss" in captured.err
    assert f"then rerun the same command with --out {out}" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert (out / "report.md").exists()  # the report of what finished is written


# ------------------------------------------------------------ the report


def test_each_param_is_a_report_column_and_entry_is_shown(tmp_path):
    user_folder(tmp_path)
    matrix = write_matrix(tmp_path, OWN.format(path="code"))
    out = tmp_path / "r"
    config = RunConfig(matrix=load_matrix(matrix), out=out, progress="quiet", plots=False)
    run_matrix(config, _fake(matrix, diverge_placement="none"))
    data = json.loads((out / "report.json").read_text())
    row = data["table"][1]
    assert (row["entry"], row["params.act"], row["params.ch"]) == ("convnet:build", "relu", 8)
    assert "params" not in row
    keys = list(row)
    assert keys.index("allow_tf32") < keys.index("entry") < keys.index("params.act")
    assert keys.index("params.act") < keys.index("params.ch") < keys.index("repeats")
    header = (out / "report.csv").read_text().splitlines()[0].split(",")
    assert header[header.index("entry") :][:3] == ["entry", "params.act", "params.ch"]
    md = (out / "report.md").read_text()
    # the varying key is a column (and a grid axis) named as the user named it; the constant
    # ones are said once, with the entry
    assert "| verdict | divergence (epoch / batch / step) | placement | ch |" in md
    assert "ch=4" in md and "ch=8" in md
    assert "entry=convnet:build" in md and "act=relu" in md and "params." not in md
    assert "placement=none never reproduces" in md


EVIL_PARAM = "<img src=x onerror=alert(1)>|[a](javascript:alert(1)) www.evil.example ::warning::x"


def test_params_strings_are_inert_in_the_markdown(tmp_path):
    user_folder(tmp_path)
    text = (
        "name: t\nrun: {repeats: 2}\nworkload: {entry: 'convnet:build', path: code}\n"
        f"axes:\n  params: [{{note: {json.dumps(EVIL_PARAM)}}}, {{note: plain}}]\n"
    )
    matrix = write_matrix(tmp_path, text)
    out = tmp_path / "r"
    config = RunConfig(matrix=load_matrix(matrix), out=out, progress="quiet", plots=False)
    run_matrix(config, _fake(matrix))
    md = (out / "report.md").read_text()
    assert "<img" not in md and "](javascript" not in md and "www.evil" not in md
    assert "\n::warning" not in md and "|[a]" not in md
    data = json.loads((out / "report.json").read_text())
    assert {r["params.note"] for r in data["table"]} == {EVIL_PARAM, "plain"}  # kept verbatim


def test_a_report_without_a_build_function_has_no_entry_or_params_anywhere(tmp_path):
    """Its report.json, CSV and Markdown are what they were before entry and params existed
    (the manifest's cells now carry both, at their defaults)."""
    matrix = write_matrix(tmp_path, "name: p\nrun: {repeats: 2}\naxes: {seed: [1, 2]}\n")
    out = tmp_path / "r"
    config = RunConfig(matrix=load_matrix(matrix), out=out, progress="quiet", plots=False)
    run_matrix(config, FakeExecutor(seconds=0.0))
    manifest = read_manifest(out)
    assert manifest is not None and manifest.cells[0].settings["params"] == {}
    data = json.loads((out / "report.json").read_text())
    for cell in data["cells"]:
        assert not {"entry", "params"} & set(cell["settings"])
    assert not {"entry", "params"} & set(data["table"][0])
    assert "entry" not in (out / "report.csv").read_text().splitlines()[0]
    assert "entry" not in (out / "report.md").read_text()


def test_an_unknown_key_in_workload_lists_the_workload_keys(tmp_path):
    matrix = write_matrix(tmp_path, "name: t\nworkload:\n  entry: 'a:b'\n  pth: code\n")
    with pytest.raises(MatrixError) as caught:
        load_matrix(matrix)
    assert f"{matrix}:4: unknown key 'pth' in workload" in caught.value.message
    assert "did you mean 'path'? allowed here: entry, path, requirements, params" in (
        caught.value.message
    )
