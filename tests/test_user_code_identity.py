"""The identity of the user's own code (``workload.path``) across run, resume, merge and diagnose
(docs/workload.md, "What is your code"; issue 28, items 2 to 5, 9 and 18): what its digest
covers (never a results folder inside it), the snapshot the runs import, merge refusing shards
of other code, and diagnose replaying only code it can show is the runs' own.

Fake-executor runs here (the logic); tests/test_user_code_runs.py does the same with real runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.cli import main
from harness.contract import code as code_mod
from harness.contract.code import (
    is_results_folder,
    snapshot_user_code,
    user_code_digest,
    user_code_files,
)
from harness.diagnose.identity import check_identity, replay_code
from harness.errors import HarnessError, StoreError
from harness.executors import ExecutorOptions
from harness.executors.base import RunIdentity
from harness.executors.fake import FakeExecutor
from harness.matrix import load_matrix
from harness.results import layout
from harness.results.manifest import read_manifest
from harness.results.merge import merge
from harness.results.run_reader import load_record
from harness.run.matrix_runner import RunConfig, run_matrix

OWN = """\
name: own
run: {repeats: 2}
workload:
  entry: convnet:build
  path: code
axes:
  placement: [none, before_model]
"""


def project(root: Path) -> tuple[Path, Path]:
    """A user's project: ``code/convnet/__init__.py`` and ``matrix.yaml`` beside it."""
    code = root / "code"
    (code / "convnet").mkdir(parents=True)
    (code / "convnet" / "__init__.py").write_text("def build(run):\n    return None\n")
    matrix = root / "matrix.yaml"
    matrix.write_text(OWN)
    return code, matrix


def fake_run(matrix: Path, out: Path, **kwargs):
    """``harness run`` with the fake executor (given the folder, as ``make_executor`` gives it)."""
    loaded = load_matrix(matrix)
    executor = FakeExecutor(ExecutorOptions(run_label="fake", code_dir=loaded.code_dir), seconds=0)
    config = RunConfig(matrix=loaded, out=out, progress="quiet", formats=(), **kwargs)
    return run_matrix(config, executor)


def old_digest(root: Path) -> str:
    """The digest as 45277e5 computed it, whole files in memory: the format must not change."""
    digest = hashlib.sha256()
    for path in user_code_files(root):
        data = path.read_bytes()
        name = path.relative_to(root).as_posix().encode()
        digest.update(name + b"\0" + str(len(data)).encode() + b"\0" + data)
    return digest.hexdigest()


# ------------------------------------------------------------ item 2: what the digest covers


def test_the_markers_of_a_results_folder_are_the_layouts_names():
    assert code_mod.RESULTS_MANIFEST == layout.MANIFEST_FILE
    assert code_mod.RESULTS_LOCK == layout.LOCK_FILE
    assert code_mod.RESULTS_SUBMISSION == f"{layout.SLURM_DIR}/{layout.SUBMISSION_FILE}"


def test_results_folders_inside_the_code_are_not_code(tmp_path):
    code, _ = project(tmp_path)
    before = user_code_digest(code)
    runs = code / "results" / "own-1"  # a finished results folder: its manifest
    (runs / "cells" / "a--1" / "repeat-0").mkdir(parents=True)
    (runs / "cells" / "a--1" / "repeat-0" / "run.json").write_text("{}")
    (runs / "report.md").write_text("# report\n")
    (runs / "manifest.json").write_text(json.dumps({"format_version": 2, "cells": []}))
    locked = code / "elsewhere"  # a run's first moment: only the lock
    locked.mkdir()
    (locked / ".lock").write_text("123")
    (locked / "spec.json").write_text("{}")
    slurm = code / "cluster"  # a Slurm submission's root before its merge
    (slurm / "slurm").mkdir(parents=True)
    (slurm / "slurm" / "submission.json").write_text("{}")
    (slurm / "slurm" / "array-1.sbatch").write_text("#!/bin/sh\n")
    assert [p.relative_to(code).as_posix() for p in user_code_files(code)] == [
        "convnet/__init__.py"
    ]
    assert user_code_digest(code) == before
    assert all(is_results_folder(f) for f in (runs, locked, slurm))
    # a manifest.json of the user's own (not a harness manifest) is code like any file
    (code / "web").mkdir()
    (code / "web" / "manifest.json").write_text('{"name": "app", "cells": 1}')
    assert not is_results_folder(code / "web")
    assert "web/manifest.json" in [p.relative_to(code).as_posix() for p in user_code_files(code)]
    # a FIFO at manifest.json is not read (it would block): not a results folder, not code
    os.mkfifo(code / "web" / "pipe")
    (code / "fifo").mkdir()
    os.mkfifo(code / "fifo" / "manifest.json")
    assert not is_results_folder(code / "fifo")


def test_files_are_hashed_in_chunks_with_the_digest_of_before(tmp_path):
    code, _ = project(tmp_path)
    (code / "data.bin").write_bytes(os.urandom(3 * code_mod.CHUNK + 17))
    assert user_code_digest(code) == old_digest(code)
    big = code / "big.bin"  # sparse: 256 MiB on no disk
    with open(big, "wb") as handle:
        handle.truncate(256 << 20)
    tracemalloc.start()
    try:
        digest = user_code_digest(code)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * code_mod.CHUNK, f"peak {peak} bytes: a file was read whole"
    assert digest == old_digest(code)


# ------------------------------------------------------------ item 3: the snapshot


def test_the_snapshot_is_content_addressed_read_only_and_reused(tmp_path):
    code, _ = project(tmp_path)
    (code / "run.sh").write_text("#!/bin/sh\n")
    (code / "run.sh").chmod(0o755)
    store = tmp_path / "out" / "code"
    folder, digest = snapshot_user_code(code, store)
    assert folder == store / digest and digest == user_code_digest(code)
    assert user_code_digest(folder) == digest
    assert stat.S_IMODE((folder / "convnet" / "__init__.py").stat().st_mode) == 0o444
    assert stat.S_IMODE((folder / "run.sh").stat().st_mode) == 0o555
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # containers' user 65534 reads it
    inode = (folder / "convnet" / "__init__.py").stat().st_ino
    assert snapshot_user_code(code, store) == (folder, digest)  # unchanged: the same copy
    assert (folder / "convnet" / "__init__.py").stat().st_ino == inode
    (code / "convnet" / "__init__.py").write_text("def build(run):\n    return 1\n")
    edited, new = snapshot_user_code(code, store)
    assert new != digest and edited == store / new
    assert "return None" in (folder / "convnet" / "__init__.py").read_text()  # kept
    assert sorted(p.name for p in store.iterdir()) == sorted([digest, new])  # no temporaries


def test_a_link_planted_at_a_snapshot_is_replaced_never_followed(tmp_path):
    code, _ = project(tmp_path)
    store = tmp_path / "out" / "code"
    store.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("mine")
    digest = user_code_digest(code)
    (store / digest).symlink_to(victim)
    folder, got = snapshot_user_code(code, store)
    assert got == digest and not folder.is_symlink() and folder.is_dir()
    assert sorted(p.name for p in victim.iterdir()) == ["keep"]


def test_runs_import_the_snapshot_and_record_its_digest(tmp_path):
    code, matrix = project(tmp_path)
    out = tmp_path / "out"
    loaded = load_matrix(matrix)
    executor = FakeExecutor(ExecutorOptions(run_label="fake", code_dir=loaded.code_dir), seconds=0)
    run_matrix(RunConfig(matrix=loaded, out=out, progress="quiet", formats=()), executor)
    digest = user_code_digest(code)
    assert executor.options.code_dir == out / "code" / digest  # what the runs were given
    for record in out.glob("cells/*/repeat-*"):
        assert load_record(record).provenance.user_code_digest == digest


def test_a_results_folder_inside_the_code_resumes_with_zero_reruns(tmp_path):
    code, matrix = project(tmp_path)
    out = code / "results" / "own"  # --out inside workload.path
    first = fake_run(matrix, out)
    assert first.exit_code == 0 and first.skipped == 0
    again = fake_run(matrix, out)
    assert (again.skipped, again.set_aside, sum(again.statuses.values())) == (4, 0, 0)


# ------------------------------------------------------------ item 5: merge


def test_merge_refuses_shards_of_other_user_code(tmp_path):
    code, matrix = project(tmp_path)
    fake_run(matrix, tmp_path / "s1", shard=_shard(1))
    (code / "convnet" / "__init__.py").write_text("def build(run):\n    return 2\n")
    fake_run(matrix, tmp_path / "s2", shard=_shard(2))
    with pytest.raises(StoreError) as caught:
        merge([tmp_path / "s1", tmp_path / "s2"], tmp_path / "m", formats=())
    assert "your code, workload.path (run.json provenance.user_code_digest) differs" in (
        caught.value.message
    )
    merged = merge([tmp_path / "s1", tmp_path / "s2"], tmp_path / "m", formats=(), allow_mixed=True)
    assert [m.what for m in merged.mixed] == ["user_code_digest"]
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["merge"]["mixed"][0]["what"] == "user_code_digest"
    # both snapshots go along, so diagnose on the merged folder replays the code that ran
    assert len(list((tmp_path / "m" / "code").iterdir())) == 2


def _shard(index: int):
    from harness.run.shard import ShardSpec

    return ShardSpec(index, 2)


# ------------------------------------------------------------ items 4, 9, 18: diagnose


def _runs(digests: tuple[str | None, str | None], entry: str | None = "convnet:build"):
    return tuple(
        SimpleNamespace(
            label=f"cell repeat {k}",
            spec={"entry": entry},
            provenance=SimpleNamespace(user_code_digest=d, torch="2.0", python="3.12"),
        )
        for k, d in enumerate(digests)
    )


def test_diagnose_replays_the_snapshot_and_refuses_other_code(tmp_path):
    code, matrix = project(tmp_path)
    out = tmp_path / "out"
    fake_run(matrix, out)
    digest = user_code_digest(code)
    chosen = replay_code(out, _runs((digest, digest)), None, str(code))
    assert chosen is not None and chosen.folder == out / "code" / digest
    assert "snapshot" in chosen.says()
    assert replay_code(out, _runs((None, None), entry=None), None, str(code)) is None
    assert replay_code(out, _runs((None, None)), None, None) is None  # no workload.path
    with pytest.raises(HarnessError, match="name no digest of your code"):  # an older record
        replay_code(out, _runs((None, None)), None, str(code))
    with pytest.raises(HarnessError, match="different versions of your code"):
        replay_code(out, _runs((digest, "f" * 64)), None, None)
    # the snapshot edited: its files no longer give its name, so it is not used
    (out / "code" / digest / "convnet" / "__init__.py").chmod(0o644)
    (out / "code" / digest / "convnet" / "__init__.py").write_text("x = 1\n")
    with pytest.raises(HarnessError) as caught:
        replay_code(out, _runs((digest, digest)), None, str(code))
    assert f"names {code} as your code folder, which is not used" in caught.value.message
    assert "--code PATH" in (caught.value.hint or "")
    # --code: used only when its digest is the runs'
    assert replay_code(out, _runs((digest, digest)), code, None).folder == code  # type: ignore[union-attr]
    (code / "convnet" / "__init__.py").write_text("def build(run):\n    return 3\n")
    with pytest.raises(HarnessError, match="is not the code that made"):
        replay_code(out, _runs((digest, digest)), code, None)


def test_a_replay_of_another_torch_python_or_image_is_refused():
    runs = _runs(("a" * 64, "a" * 64))
    same = RunIdentity(python="3.12", torch="2.0", user_code_digest="a" * 64)
    assert check_identity(runs, [same, same]) == ["python", "torch", "user_code_digest"]
    other = RunIdentity(python="3.12", torch="2.9", image_id=None)
    with pytest.raises(HarnessError) as caught:
        check_identity(runs, [same, other])
    assert caught.value.message.endswith("cell repeat 1: torch (2.0 recorded, 2.9 now)")
    assert "--python" in (caught.value.hint or "")
    image = RunIdentity(image_id="sha256:" + "b" * 64)
    with pytest.raises(HarnessError, match="the workload image"):
        check_identity(runs, [image, None])


def test_a_tampered_manifest_mounts_nothing(tmp_path, capsys, monkeypatch):
    """The folder the manifest names (a host folder with an id_rsa) is refused before any
    executor exists: with Docker unreachable, the answer is still the refusal, not an engine
    error; nothing of the named folder was mounted or read."""
    code, matrix = project(tmp_path)
    out = tmp_path / "out"
    fake_run(matrix, out)
    secret = tmp_path / "home"
    secret.mkdir()
    (secret / "id_rsa").write_text("PRIVATE")
    data = json.loads((out / "manifest.json").read_text())
    data["workload_path"] = str(secret)
    (out / "manifest.json").write_text(json.dumps(data))
    for snapshot in (out / "code").iterdir():  # the folder holds no snapshot
        snapshot.rename(tmp_path / snapshot.name)
    before = (secret / "id_rsa").stat().st_atime_ns
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    rc = main(["diagnose", str(out), "--cell", data["cells"][0]["id"], "--executor", "docker"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"names {secret} as your code folder, which is not used" in err
    assert "--code PATH" in err and "Traceback" not in err and "docker" not in err.lower()
    assert (secret / "id_rsa").stat().st_atime_ns == before
    assert not (out / "diagnoses").exists() or not any((out / "diagnoses").iterdir())


def test_diagnose_replays_with_the_snapshot_not_the_manifests_folder(tmp_path, monkeypatch):
    """The executor the replays get runs the build function from the results folder's snapshot,
    even after the user's folder moved."""
    from harness.diagnose import runner_factory
    from harness.diagnose.run_pair import load_run

    code, matrix = project(tmp_path)
    out = tmp_path / "out"
    fake_run(matrix, out)
    code.rename(tmp_path / "moved")
    made: list[FakeExecutor] = []

    def make_executor(loaded, *args, **kwargs):
        made.append(FakeExecutor(ExecutorOptions(code_dir=loaded.code_dir), seconds=0))
        return made[-1]

    monkeypatch.setattr("harness.run.matrix_runner.make_executor", make_executor)
    cell = read_manifest(out).cells[0]  # type: ignore[union-attr]
    runs = (load_run(out, cell, 0), load_run(out, cell, 1))
    said: list[str] = []
    runner_factory(out, "fake", None, None, threading.Event(), say=said.append)(runs)
    digest = runs[0].provenance.user_code_digest
    assert made[0].options.code_dir == out / "code" / digest
    assert made[0].options.code_digest == digest
    assert any("the results folder's snapshot" in line for line in said)


def test_moved_code_is_named_with_code_and_the_hint_says_so(tmp_path, monkeypatch):
    """Code moved and no snapshot: the error says where the path came from (the manifest, not
    the matrix file) and how to point diagnose at the code (``--code``); with it, the replays
    run that folder."""
    from harness.diagnose import runner_factory
    from harness.diagnose.run_pair import load_run

    code, matrix = project(tmp_path)
    out = tmp_path / "out"
    fake_run(matrix, out)
    code.rename(tmp_path / "moved")
    for snapshot in (out / "code").iterdir():
        snapshot.rename(tmp_path / f"old-{snapshot.name}")
    made: list[FakeExecutor] = []

    def make_executor(loaded, *args, **kwargs):
        made.append(FakeExecutor(ExecutorOptions(code_dir=loaded.code_dir), seconds=0))
        return made[-1]

    monkeypatch.setattr("harness.run.matrix_runner.make_executor", make_executor)
    cell = read_manifest(out).cells[0]  # type: ignore[union-attr]
    runs = (load_run(out, cell, 0), load_run(out, cell, 1))
    with pytest.raises(HarnessError) as caught:
        runner_factory(out, "fake", None, None, threading.Event())(runs)
    said = f"{caught.value.message}\n{caught.value.hint}"
    assert "relative to the matrix file" not in said and not made
    assert f"its manifest.json names {code} as your code folder" in said
    assert "--code PATH (its digest must be" in said
    runner_factory(out, "fake", None, None, threading.Event(), code=tmp_path / "moved")(runs)
    assert made[0].options.code_dir == tmp_path / "moved"
