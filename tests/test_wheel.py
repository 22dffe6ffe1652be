"""The package as a user gets it: a wheel installed into a fresh venv, away from the checkout.

The venv has the host dependencies only (no torch: that is the ``workload`` extra). From a folder
outside the checkout, so the checkout cannot be imported, it must plan, run (fake executor) and
report, and build and run the workload image from the recipe and the sources inside its own
site-packages. The venv is built once per module.

The wheel is built from a copy of ``pyproject.toml`` and ``harness/``, not in the checkout: an
in-tree setuptools build leaves ``build/lib`` behind, and a later wheel would carry its stale
modules (a removed ``harness/contract.py``, say); the copy also leaves the checkout untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import BASE_IMAGE

from harness.executors import images

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "placement-quick.yaml"
#: What the fresh venv's harness says about its workload image (run inside the venv).
IMAGE_INFO = """
import json
from harness.executors import images
print(json.dumps({
    "root": str(images.source_root()),
    "files": {name: str(path) for name, path in images.workload_files()},
    "digest": images.code_digest(),
}))
"""


def checked(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        pytest.fail(
            f"{what} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
            f"--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


@dataclass(frozen=True)
class Venv:
    """A venv holding the wheel, and how to run its commands from outside the checkout."""

    root: Path
    site: Path  # its site-packages
    cwd: Path  # an empty folder outside the checkout

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    @property
    def harness(self) -> str:
        return str(self.root / "bin" / "harness")

    def run(
        self, argv: list[str], *, cwd: Path | None = None, timeout: float = 300, **env: str
    ) -> subprocess.CompletedProcess:
        full_env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "HARNESS_WORKLOAD_PYTHON")
        }
        full_env["VIRTUAL_ENV"] = str(self.root)
        full_env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{full_env.get('PATH', '')}"
        full_env.update(env)
        return subprocess.run(  # argv list
            [str(a) for a in argv],
            cwd=cwd or self.cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@dataclass(frozen=True)
class Wheel:
    path: Path
    src: Path  # the snapshot of the checkout it was built from


def build_wheel(dest: Path, work: Path) -> Wheel:
    """``pip wheel --no-deps --no-build-isolation`` of the package, with this venv's pip."""
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "harness", src / "harness", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    argv += ["--disable-pip-version-check", "-q", "-w", str(dest), "."]
    checked(
        subprocess.run(argv, cwd=src, capture_output=True, text=True, timeout=600, check=False),
        "pip wheel",
    )
    (wheel,) = dest.glob("torch_repro_matrix-*.whl")
    return Wheel(wheel, src)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Wheel:
    work = tmp_path_factory.mktemp("wheel-build")
    return build_wheel(work / "dist", work)


@pytest.fixture(scope="module")
def venv(wheel: Wheel, tmp_path_factory) -> Venv:
    """A fresh venv of the system python (no --system-site-packages) with the wheel installed."""
    root = tmp_path_factory.mktemp("wheel-venv") / "venv"
    # The interpreter this test venv was made from: the system python, not the repo's .venv.
    base = getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable
    checked(
        subprocess.run(  # argv list
            [base, "-m", "venv", str(root)], capture_output=True, text=True, check=False
        ),
        "python -m venv",
    )
    cwd = tmp_path_factory.mktemp("outside-checkout")
    probe = Venv(root, root, cwd)
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(checked(probe.run([probe.python, "-c", purelib]), "sysconfig").stdout.strip())
    env = Venv(root, site, cwd)
    checked(
        env.run(
            [env.python, "-m", "pip", "install", "--disable-pip-version-check", "-q", wheel.path],
            timeout=900,
        ),
        "pip install WHEEL",
    )
    return env


@pytest.fixture(scope="module")
def venv_images(venv: Venv) -> dict:
    """The fresh venv's view of its workload image: context files, their root, code digest."""
    return json.loads(checked(venv.run([venv.python, "-c", IMAGE_INFO]), "image info").stdout)


def cell_names() -> list[str]:
    from harness.matrix import load_matrix

    return [cell.name for cell in load_matrix(EXAMPLE).cells]


def test_wheel_holds_the_image_recipe(wheel: Wheel) -> None:
    import zipfile

    names = set(zipfile.ZipFile(wheel.path).namelist())
    assert images.DOCKERFILE in names
    assert "harness/contract/__init__.py" in names and "harness/workload/__main__.py" in names
    assert not any(n.startswith(("docker/", "tests/")) for n in names)


def test_the_venv_has_no_torch_and_imports_the_installed_package(venv: Venv) -> None:
    proc = venv.run([venv.python, "-c", "import torch"])
    assert proc.returncode != 0 and "No module named 'torch'" in proc.stderr
    where = checked(
        venv.run([venv.python, "-c", "import harness; print(harness.__file__)"]), "import harness"
    ).stdout.strip()
    assert Path(where).is_relative_to(venv.site), where


def test_plan_from_the_wheel(venv: Venv) -> None:
    proc = checked(venv.run([venv.harness, "plan", EXAMPLE]), "harness plan")
    for name in cell_names():
        assert name in proc.stdout, proc.stdout


def test_run_and_report_from_the_wheel(venv: Venv, tmp_path: Path) -> None:
    out = tmp_path / "results"
    # The fake executor writes well-formed records without torch; MNIST is never read.
    argv = [venv.harness, "run", EXAMPLE, "--executor", "fake", "--out", out]
    argv += ["--progress", "plain", "--no-report", "--data-dir", tmp_path / "no-mnist"]
    checked(venv.run(argv), "harness run --executor fake")
    records = [json.loads(p.read_text()) for p in out.glob("cells/*/repeat-*/run.json")]
    assert len(records) == 6 and {r["status"] for r in records} == {"ok"}
    assert not (out / "report.md").exists()

    checked(venv.run([venv.harness, "report", out]), "harness report")
    markdown = (out / "report.md").read_text()
    report_json = (out / "report.json").read_text()
    report_csv = (out / "report.csv").read_text()
    for name in cell_names():
        assert name in report_json and name in report_csv
        assert name in markdown or name.replace("_", "\\_") in markdown


def test_the_image_comes_from_the_installed_package(
    venv: Venv, venv_images: dict, wheel: Wheel
) -> None:
    assert Path(venv_images["root"]) == venv.site
    files = venv_images["files"]
    assert files[images.DOCKERFILE] == str(venv.site / "harness" / "image" / "Dockerfile")
    assert all(Path(path).is_relative_to(venv.site) for path in files.values())
    # The same context, and so the same digest and tag, as the tree the wheel was built from:
    # context paths are relative to the folder holding the package, wherever that is.
    snapshot = dict(images.workload_files(wheel.src))
    assert sorted(files) == sorted(snapshot)
    assert venv_images["digest"] == images.code_digest(wheel.src)
    # And as the checkout itself. The wheel was built from a snapshot of it taken when this
    # module started, so the two differ only if the workload code was edited while the tests
    # ran: then the comparison proves nothing, and the test says so rather than skip.
    checkout = dict(images.workload_files())
    edited = sorted(
        set(checkout) ^ set(snapshot)
        | {
            n
            for n in set(checkout) & set(snapshot)
            if checkout[n].read_bytes() != snapshot[n].read_bytes()
        }
    )
    if edited:
        pytest.fail(
            f"the checkout's workload code changed while the tests ran ({', '.join(edited)}): "
            "the wheel holds the earlier snapshot; rerun on an unchanged checkout",
            pytrace=False,
        )
    assert venv_images["digest"] == images.code_digest()


@pytest.mark.docker
def test_a_container_cell_runs_from_the_wheel(
    venv: Venv, venv_images: dict, client, mnist_dir: Path, tmp_path: Path
) -> None:
    name = f"wheel-{uuid.uuid4().hex[:6]}"
    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        f"name: {name}\n"
        "run: {repeats: 1, epochs: 1, max_steps_per_epoch: 20, seed: 201014, threads: 1, "
        "timeout_s: 600}\n"
        "axes:\n"
        f"  image: ['{BASE_IMAGE}']\n"
        "  accelerator: [cpu]\n"
        "  placement: [before_model]\n"
        "  devices: [1]\n"
    )
    out = tmp_path / "out"
    argv = [venv.harness, "run", matrix, "--executor", "docker", "--out", out]
    argv += ["--progress", "plain", "--no-report"]
    # DOCKER_HOST and HARNESS_WHEELHOUSE come from this process's environment.
    proc = checked(
        venv.run(argv, cwd=tmp_path, timeout=900, HARNESS_MNIST_DIR=str(mnist_dir)),
        "harness run --executor docker (from the wheel)",
    )
    (record_path,) = out.glob("cells/*/repeat-0/run.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "ok", proc.stdout

    # The image the run used is the one the venv's package names: its Dockerfile and sources.
    tag = images.workload_tag(BASE_IMAGE, venv_images["digest"])
    image = client.images.get(tag)
    assert image.labels[images.LABEL_CODE] == venv_images["digest"]
    assert record["provenance"]["image_id"] == image.id
    left = client.containers.list(all=True, filters={"label": "harness.run"})
    assert not [c for c in left if c.labels.get("harness.run", "").startswith(f"{name}-")]
