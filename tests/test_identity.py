"""Resume keyed on what ran: a finished run is reused only when its spec and its identity (the
workload code digest, Python and torch of the local interpreter; the image id of a container)
match what would run now, and its losses bear out its record. Anything else is moved aside
whole under superseded/<time>/, never deleted, and ``harness run`` says so on stderr whatever
the progress mode.

The local tests are real: real ``harness run`` processes training on real MNIST. The workload
code changes for real: the second run's interpreter imports a copy of the package with one
workload file changed (PYTHONPATH), so its runs record another digest; the host harness still
imports the checkout. The Docker test uses real containers and a real second image (a LABEL on
top of the workload image gives it a new image id).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from harness.contract.code import workload_digest
from harness.executors import ExecutorOptions, RunIdentity
from harness.executors.fake import FakeExecutor
from harness.executors.local_probes import probe_identity
from harness.matrix import parse_matrix
from harness.results.run_reader import load_record, verified_losses
from harness.run.matrix_runner import RunConfig, run_matrix

ROOT = Path(__file__).resolve().parents[1]

MATRIX = """\
name: identity
run: {repeats: 2, epochs: 1, max_steps_per_epoch: 20, seed: 201014, threads: 1, timeout_s: 600}
axes:
  placement: [before_model]
"""


def harness_run(
    matrix: Path, out: Path, *, progress: str = "quiet", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``harness run`` as a user runs it, stdout and stderr apart."""
    return subprocess.run(  # argv list, no shell
        [sys.executable, "-m", "harness.cli", "run", str(matrix), "--out", str(out)]
        + ["--progress", progress],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def run_records(out: Path) -> dict[str, object]:
    return {d.name: load_record(d) for d in sorted(out.glob("cells/*/repeat-*"))}


def mtimes(out: Path) -> dict[str, int]:
    return {d.name: (d / "run.json").stat().st_mtime_ns for d in out.glob("cells/*/repeat-*")}


def report_cell(out: Path) -> dict:
    (cell,) = json.loads((out / "report.json").read_text())["cells"]
    return cell


def changed_copy(dest: Path) -> Path:
    """A copy of the harness package with one workload file changed; returns the folder to put
    on PYTHONPATH."""
    shutil.copytree(
        ROOT / "harness", dest / "harness", ignore=shutil.ignore_patterns("__pycache__")
    )
    init = dest / "harness" / "workload" / "__init__.py"
    init.write_text(init.read_text() + "\n# a change to the workload code\n")
    return dest


@pytest.mark.slow
def test_other_workload_code_sets_the_finished_runs_aside(tmp_path: Path):
    """The issue's case: the workload code changes between two runs on one folder."""
    matrix = tmp_path / "m.yaml"
    matrix.write_text(MATRIX)
    out = tmp_path / "out"
    first = harness_run(matrix, out)
    assert first.returncode == 0, first.stderr[-3000:]
    old = run_records(out)
    assert len(old) == 2 and all(r.ok for r in old.values())
    old_bytes = {k: (out.glob(f"cells/*/{k}").__next__() / "run.json").read_bytes() for k in old}
    old_digest = old["repeat-0"].provenance.workload_digest
    # what the interpreter says it would run is what its runs recorded
    here = probe_identity(sys.executable)
    assert (here.python, here.torch) == (
        old["repeat-0"].provenance.python,
        old["repeat-0"].provenance.torch,
    )

    code = changed_copy(tmp_path / "code")
    new_digest = workload_digest(code / "harness")
    assert new_digest != old_digest
    second = harness_run(matrix, out, env={"PYTHONPATH": str(code)})  # quiet progress
    assert second.returncode == 0, second.stderr[-3000:]
    (where,) = (out / "superseded").iterdir()
    assert (
        f"set aside 2 finished runs made by other workload code (digest {old_digest[:8]}... -> "
        f"{new_digest[:8]}...) in {where}/; they will be rerun" in second.stderr
    ), second.stderr
    # the old runs are kept whole, byte for byte
    for name, data in old_bytes.items():
        (kept,) = where.glob(f"cells/*/{name}/run.json")
        assert kept.read_bytes() == data
        assert (kept.parent / "losses.npy").exists()
    new = run_records(out)
    assert {r.provenance.workload_digest for r in new.values()} == {new_digest}
    assert report_cell(out)["reproducible"] is True  # no mix of two code versions

    before = mtimes(out)
    third = harness_run(matrix, out, env={"PYTHONPATH": str(code)}, progress="plain")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "2 already done" in third.stderr and "set aside" not in third.stderr
    assert mtimes(out) == before
    assert len(list((out / "superseded").iterdir())) == 1


@pytest.mark.slow
def test_a_truncated_losses_file_reruns_exactly_that_run(tmp_path: Path):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(MATRIX)
    out = tmp_path / "out"
    first = harness_run(matrix, out)
    assert first.returncode == 0, first.stderr[-3000:]
    (kept_dir,) = out.glob("cells/*/repeat-0")
    (broken_dir,) = out.glob("cells/*/repeat-1")
    kept = {p.name: p.read_bytes() for p in kept_dir.iterdir() if p.is_file()}
    before = mtimes(out)
    losses = broken_dir / "losses.npy"
    truncated = losses.read_bytes()[: losses.stat().st_size // 2]
    losses.write_bytes(truncated)

    second = harness_run(matrix, out, progress="plain")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "1 already done" in second.stderr and second.stderr.count("] start ") == 1
    assert "set aside 1 finished run whose losses.npy does not bear out its run.json" in (
        second.stderr
    )
    assert f"rerunning {broken_dir}" in second.stderr  # the run, named
    assert mtimes(out)["repeat-0"] == before["repeat-0"]  # reused, untouched
    assert {p.name: p.read_bytes() for p in kept_dir.iterdir() if p.is_file()} == kept
    (aside,) = (out / "superseded").glob("*/cells/*/repeat-1")
    assert (aside / "losses.npy").read_bytes() == truncated  # the evidence is kept
    for name, record in run_records(out).items():
        assert record.ok
        verified_losses(out.glob(f"cells/*/{name}").__next__(), record)
    cell = report_cell(out)
    assert cell["reproducible"] is True and len(cell["runs"]) == 2


# ---------------------------------------------------------------- without training (fake)


def test_run_matrix_sets_aside_and_says_so_in_quiet_mode(tmp_path: Path):
    """Through run_matrix with the fake executor: the notice reaches its stream whatever the
    progress mode; failed runs are not results and are only cleared."""
    matrix = parse_matrix(
        "name: q\nrun: {repeats: 2}\naxes: {placement: [none, before_model]}\n", Path("q.yaml")
    )
    before = RunIdentity(workload_digest="1234abcd" + "0" * 56, python="3.11.7", torch="2.1")
    now = dataclasses.replace(before, workload_digest="5678ef01" + "0" * 56)
    out = tmp_path / "out"

    def run(identity: RunIdentity, **kwargs) -> tuple[object, str]:
        notices = io.StringIO()
        config = RunConfig(
            matrix=matrix, out=out, progress="quiet", formats=(), notice_stream=notices
        )
        fake = FakeExecutor(ExecutorOptions(), seconds=0.01, identity=identity, **kwargs)
        return run_matrix(config, fake), notices.getvalue()

    summary, said = run(before, fail_placement="none")
    assert summary.exit_code == 1 and said == ""
    summary, said = run(now)
    assert summary.set_aside == 2 and summary.skipped == 0
    assert said == (
        "harness: set aside 2 finished runs made by other workload code (digest 1234abcd... -> "
        f"5678ef01...) in {summary.superseded}/; they will be rerun\n"
    )
    assert len(list(summary.superseded.glob("cells/*/repeat-*"))) == 2  # the ok ones only
    assert {p.parent.name.split("-")[2] for p in summary.superseded.glob("cells/*/*/")} == {
        "before_model"
    }
    summary, said = run(dataclasses.replace(now, torch="2.2"))
    assert summary.set_aside == 4 and "made with another torch (2.1 -> 2.2)" in said
    summary, said = run(dataclasses.replace(now, torch="2.2"))
    assert summary.set_aside == 0 and summary.skipped == 4 and said == ""


def test_docker_executor_gives_local_cells_the_local_identity():
    """``local`` cells of a Docker matrix run as local processes: they get the interpreter's
    identity (asked of it for real), and no engine is reached for them."""
    from harness.executors.docker import DockerExecutor
    from harness.executors.local import LocalExecutor

    spec = parse_matrix(MATRIX, Path("m.yaml")).cells[0].spec(0)
    options = ExecutorOptions(python=sys.executable)
    identities = DockerExecutor(options).prepare([spec])
    assert identities == LocalExecutor(options).prepare([spec])
    local = identities["local"]
    assert local.workload_digest == workload_digest() and local.image_id is None
    assert local.python == sys.version.split()[0] and local.torch


def test_an_interpreter_that_cannot_say_what_it_runs_stops_the_matrix(tmp_path: Path):
    """Before any run starts and before the manifest is written: exit 2, the interpreter's own
    error (its last line, no traceback), and what to do."""
    broken = tmp_path / "python"
    broken.write_text(
        "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'harness'\" >&2\nexit 1\n"
    )
    broken.chmod(0o755)
    matrix = tmp_path / "m.yaml"
    matrix.write_text(MATRIX)
    for python, says in (
        (broken, "No module named 'harness'"),
        (tmp_path / "missing", "cannot start"),
    ):
        out = tmp_path / f"out-{python.name}"
        proc = subprocess.run(  # argv list, no shell
            [sys.executable, "-m", "harness.cli", "run", str(matrix), "--out", str(out)]
            + ["--executor", "local", "--python", str(python), "--progress", "quiet"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr
        assert says in proc.stderr and "Traceback" not in proc.stderr
        assert "hint: pass --python" in proc.stderr
        assert not (out / "manifest.json").exists()


# ---------------------------------------------------------------- containers


@pytest.mark.docker
@pytest.mark.slow
def test_a_new_workload_image_sets_the_finished_runs_aside(client, workload_image, tmp_path):
    """Real containers, a real second image: the workload image with one more LABEL (a new
    image id, built in a second). The runs of the first image are moved aside, said so."""
    from conftest import BASE_IMAGE

    from harness.executors.docker import DockerExecutor

    mnist = Path(os.environ.get("HARNESS_MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))
    matrix_path = tmp_path / "m.yaml"
    matrix_path.write_text(MATRIX.replace("axes:\n", f"axes:\n  image: ['{BASE_IMAGE}']\n"))
    matrix = parse_matrix(matrix_path.read_text(), matrix_path)
    out = tmp_path / "out"
    tag = f"harness-test/rebuilt:{uuid.uuid4().hex[:12]}"
    rebuilt, _ = client.images.build(
        fileobj=io.BytesIO(
            f"FROM {workload_image.tag}\nLABEL harness.test-rebuild={tag}\n".encode()
        ),
        tag=tag,
        rm=True,
    )
    assert rebuilt.id != workload_image.image_id

    class Rebuilt(DockerExecutor):
        def workload_image(self, base):
            return dataclasses.replace(super().workload_image(base), tag=tag, image_id=rebuilt.id)

    def run(cls) -> tuple[object, str]:
        notices = io.StringIO()
        config = RunConfig(
            matrix=matrix, out=out, progress="quiet", formats=("json",), notice_stream=notices
        )
        label = f"test-{uuid.uuid4().hex[:8]}"
        return run_matrix(config, cls(ExecutorOptions(run_label=label, data_dir=mnist))), (
            notices.getvalue()
        )

    try:
        summary, said = run(DockerExecutor)
        assert summary.exit_code == 0 and said == ""
        old = run_records(out)
        assert {r.provenance.image_id for r in old.values()} == {workload_image.image_id}
        summary, said = run(Rebuilt)
        assert summary.exit_code == 0 and summary.set_aside == 2
        assert (
            f"set aside 2 finished runs made in another workload image "
            f"({workload_image.image_id[:15]}... -> {rebuilt.id[:15]}...) in "
            f"{summary.superseded}/; they will be rerun" in said
        ), said
        kept = {d.name: load_record(d) for d in summary.superseded.glob("cells/*/repeat-*")}
        assert kept == old
        new = run_records(out)
        assert {r.provenance.image_id for r in new.values()} == {rebuilt.id}
        assert {r.digests.trajectory for r in new.values()} == {
            r.digests.trajectory for r in old.values()
        }  # the same code in both images
        assert report_cell(out)["reproducible"] is True
    finally:
        client.images.remove(tag, force=True)
