"""A hostile workload on the real engine: it plants links in its run folder; the host follows none.

The test builds a base image from the stand-in base whose Python, at start and again at exit,
plants in ``/out`` (the run folder): ``run.log`` as a symbolic link to a file of the host's
holding a secret, ``.run.json.tmp`` (and the other fixed temporary names the host once used) as
links to another file of the host's, a link inside ``tensorboard/`` and a FIFO. The files linked
to lie in the test's tmp_path, outside the run folder: the host can read and write them, the
container cannot see them. ``harness run --executor docker`` builds its workload image on that
base (harness replaces the entry point, so the plant rides on a ``.pth`` file in
site-packages) and runs two repeats of two epochs: one exits 0 after planting, one exits 3.

Before the fix the host copied the secret into run.json's log tail and the report (through
``run.log``), and wrote its failure record through ``.run.json.tmp`` over the other file.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from conftest import BASE_IMAGE
from fault_tools import Harness, write_matrix
from test_docker_images import remove_with_descendants, tar_context

from harness.report.markdown_blocks import escape
from harness.results.run_reader import load_record

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SECRET = "hostile-test-secret-7c1e2f"

#: Imported by a .pth file at every Python start in the image; acts only in a run's container.
PLANT = '''\
"""A workload that attacks its host through the run folder (tests/test_hostile_run_folder.py)."""
import atexit
import json
import os
import sys

OUT = "/out"
SECRET_FILE = {secret!r}
VICTIM_FILE = {victim!r}


def _link(name, target):
    path = os.path.join(OUT, name)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.symlink(target, path)


def _plant():
    _link("run.log", SECRET_FILE)
    for name in (".run.json.tmp", ".run.log.tmp", ".spec.json.tmp"):
        _link(name, VICTIM_FILE)


def _at_exit():
    _plant()
    os.makedirs(os.path.join(OUT, "tensorboard"), exist_ok=True)
    _link("tensorboard/hostname", "/etc/hostname")
    if not os.path.lexists(os.path.join(OUT, "pipe")):
        os.mkfifo(os.path.join(OUT, "pipe"))
    with open(os.path.join(OUT, "spec.json")) as handle:
        repeat = json.load(handle).get("repeat")
    print("hostile: planted", flush=True)
    sys.stderr.flush()
    if repeat == 1:
        os._exit(3)


if os.path.isfile(os.path.join(OUT, "spec.json")):
    _plant()
    atexit.register(_at_exit)
'''

DOCKERFILE = f"""\
FROM {BASE_IMAGE}
COPY hostile_plant.py zz_hostile.pth /tmp/hostile/
RUN python -c "import shutil, site; d = site.getsitepackages()[0]; \
[shutil.copy('/tmp/hostile/' + n, d) for n in ('hostile_plant.py', 'zz_hostile.pth')]" \
 && rm -rf /tmp/hostile
"""


@pytest.fixture
def hostile_base(client, tmp_path: Path):
    """The stand-in base plus the plant; (tag, secret file, victim file). Removed after, with
    the workload image harness builds on it."""
    host = tmp_path / "host"
    host.mkdir()
    secret = host / "secret.txt"
    secret.write_text(f"{SECRET}\n")
    victim = host / "victim.txt"
    victim.write_text("the host's own file, not the container's\n")
    tag = f"harness-test/hostile:{uuid.uuid4().hex[:8]}"
    image, _ = client.images.build(
        fileobj=tar_context(
            {
                "Dockerfile": DOCKERFILE,
                "hostile_plant.py": PLANT.format(secret=str(secret), victim=str(victim)),
                "zz_hostile.pth": "import hostile_plant\n",
            }
        ),
        custom_context=True,
        tag=tag,
        network_mode="none",
        rm=True,
        forcerm=True,
        pull=False,
    )
    try:
        yield tag, secret, victim
    finally:
        remove_with_descendants(client, image.id)


def test_a_hostile_workload_makes_the_host_follow_nothing(hostile_base, tmp_path: Path):
    base, secret, victim = hostile_base
    secret_before, victim_before = secret.read_bytes(), victim.read_bytes()
    matrix = write_matrix(
        tmp_path / "m.yaml", f"hostile-{uuid.uuid4().hex[:6]}", repeats=2, epochs=2, image=base
    )
    out = tmp_path / "out"
    run = Harness(matrix, out, "--executor", "docker", report=True)
    try:
        code = run.finish(timeout=1500)
    finally:
        run.kill()
    assert code == 1, run.text[-3000:]  # runs failed

    # Nothing was written through a link, nothing was read through one.
    assert victim.read_bytes() == victim_before
    assert secret.read_bytes() == secret_before
    assert SECRET not in run.text
    files = [p for p in out.rglob("*") if not p.is_dir()]
    assert [p for p in files if p.is_symlink() or not p.is_file()] == []
    leaked = [p for p in files if SECRET.encode() in p.read_bytes()]
    assert leaked == []
    for name in ("report.md", "report.json"):
        assert (out / name).is_file(), name

    run_dirs = sorted(out.glob("cells/*/repeat-*"))
    assert [d.name for d in run_dirs] == ["repeat-0", "repeat-1"]
    for run_dir in run_dirs:
        record = load_record(run_dir)
        assert record.status == "failed" and record.written_by == "host", run_dir
        assert record.error.type == "unsafe_run_folder"
        message = record.error.message
        assert message.startswith("the container left ")
        assert f"run.log -> {secret} (not followed; removed)" in message
        assert f".run.json.tmp -> {victim} (not followed; removed)" in message
        assert "tensorboard/hostname -> /etc/hostname" in message
        assert "a FIFO in the run folder: pipe (removed)" in message
        # run.log is the host's capture of the container's output, a regular file
        log = run_dir / "run.log"
        assert log.is_file() and not log.is_symlink()
        assert "hostile: planted" in log.read_text()
        assert not (run_dir.parent / f".{run_dir.name}.log").exists()
        assert not (run_dir / "pipe").exists() and not (run_dir / ".run.json.tmp").exists()
    assert "the container exited with code 3" in load_record(run_dirs[1]).error.message

    report = (out / "report.md").read_text()  # names the planted link, in Markdown's escapes
    assert report.count(escape(f"run.log -> {secret} (not followed; removed)")) == 2
    assert "unsafe_run_folder" in (out / "report.json").read_text()
    assert "the container left" in run.text
    # While they ran, the progress display read each run's epochs from the host's capture (the
    # run folder's run.log was the planted link all along).
    # (which epoch a tick catches depends on the machine's speed: 1/2 or 2/2)
    epochs = [ln for ln in run.lines if "] epoch  " in ln and re.search(r": [12]/2 done$", ln)]
    assert epochs, run.text[-3000:]
