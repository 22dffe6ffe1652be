"""Workload image naming and build context, without an engine; and, on a real engine, the
build's guard against pip replacing the base image's torch."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import re
import shutil
import tarfile
import uuid
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import ExecutorError
from harness.executors import images


def copy_sources(dest: Path) -> Path:
    root = images.source_root()
    for name, path in images.workload_files(root):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return dest


DIGEST = "0123456789abcdef" * 4


def old_slug(base: str) -> str:
    """The tag before issue 12: the slug (cut at 100) and the code digest, no base hash."""
    return (re.sub(r"[^a-z0-9_.-]+", "-", base.lower()).strip("-.") or "base")[:100]


def test_tag_names_base_its_full_reference_and_code_digest() -> None:
    base = "nvcr.io/nvidia/pytorch:24.01-py3"
    tag = images.workload_tag(base, DIGEST)
    ref = hashlib.sha256(base.encode()).hexdigest()[:12]
    assert tag == f"harness-workload:nvcr.io-nvidia-pytorch-24.01-py3-{ref}-0123456789ab"


#: Pairs of distinct base references that the old tagging mapped to one tag.
COLLIDING = [
    ("a/b:c", "a/b-c"),
    ("Repo/X:1", "repo/x:1"),
    ("reg.io/p:t", "reg.io/p/t"),
    ("x" * 120 + ":a", "x" * 120 + ":b"),  # equal in their first 100 characters
    ("pytorch/pytorch:2.3.0", "pytorch/pytorch@2.3.0"),
]


@pytest.mark.parametrize(("one", "other"), COLLIDING)
def test_bases_whose_slugs_collide_get_two_tags(one: str, other: str) -> None:
    assert old_slug(one) == old_slug(other)  # the collision the test is about
    assert images.workload_tag(one, DIGEST) != images.workload_tag(other, DIGEST)


@settings(deadline=None)
@given(base=st.text(min_size=1, max_size=400), digest=st.text("0123456789abcdef", min_size=64))
def test_tags_are_valid_docker_tags_of_any_length(base: str, digest: str) -> None:
    """Docker's rule for the part after the colon: ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``."""
    repository, _, tag = images.workload_tag(base, digest).partition(":")
    assert repository == images.IMAGE_REPOSITORY
    assert len(tag) <= 128 and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag), tag
    assert tag.endswith(f"-{images.base_ref_hash(base)}-{digest[:12]}")  # hashes never cut


def test_a_long_base_is_cut_to_the_limit_exactly() -> None:
    tag = images.workload_tag("registry.example.com/" + "deep/" * 60 + "image:tag", DIGEST)
    assert len(tag.partition(":")[2]) == 128


def test_a_tag_is_reused_only_when_every_label_matches() -> None:
    labels = {
        images.LABEL_BASE: "a/b:c",
        images.LABEL_BASE_DIGEST: "sha256:" + "1" * 64,
        images.LABEL_CODE: DIGEST,
    }
    assert images.is_reusable(labels, "a/b:c", "sha256:" + "1" * 64, DIGEST)
    assert not images.is_reusable(labels, "a/b-c", "sha256:" + "1" * 64, DIGEST)
    assert not images.is_reusable(labels, "a/b:c", "sha256:" + "2" * 64, DIGEST)
    assert not images.is_reusable(labels, "a/b:c", "sha256:" + "1" * 64, "f" * 64)
    assert not images.is_reusable(None, "a/b:c", "sha256:" + "1" * 64, DIGEST)


def build_kwargs(url: str | None) -> dict:
    return images.build_kwargs(
        base="b:1", tag="harness-workload:t", digest=DIGEST, base_digest="d", wheelhouse_url=url
    )


def test_builds_use_host_networking_only_for_a_loopback_wheelhouse() -> None:
    assert "network_mode" not in build_kwargs(None)  # the engine's default build network
    assert build_kwargs(None)["buildargs"]["PIP_INSTALL_ARGS"] == ""
    for url in ("http://127.0.0.1:8123/", "http://localhost:9/", "http://[::1]:80/"):
        kwargs = build_kwargs(url)
        assert kwargs["network_mode"] == "host", url
        assert kwargs["buildargs"]["PIP_INSTALL_ARGS"] == f"--no-index --find-links {url}"
    assert "network_mode" not in build_kwargs("http://wheels.example.com/simple/")
    assert "network_mode" not in build_kwargs("http://10.0.0.5:8000/")
    labels = build_kwargs(None)["labels"]
    assert labels == {
        images.LABEL_CODE: DIGEST,
        images.LABEL_BASE: "b:1",
        images.LABEL_BASE_DIGEST: "d",
    }


def test_context_holds_workload_side_only() -> None:
    with tarfile.open(fileobj=images.build_context(), mode="r") as tar:
        names = set(tar.getnames())
    assert images.DOCKERFILE == "harness/image/Dockerfile" and images.DOCKERFILE in names
    assert "harness/contract/__init__.py" in names
    assert "harness/mnist.py" in names
    assert "harness/workload/__main__.py" in names
    assert not any(n.startswith(("harness/executors", "harness/cli")) for n in names)
    assert (
        "harness/executors/images.py" not in names and "harness/results/run_reader.py" not in names
    )
    assert not any("__pycache__" in n for n in names)


def test_code_digest_follows_workload_code_only(tmp_path: Path) -> None:
    root = copy_sources(tmp_path / "tree")
    before = images.code_digest(root)
    (root / "harness" / "images.py").write_text("# host side: not in the image\n")
    assert images.code_digest(root) == before
    with open(root / "harness" / "workload" / "__main__.py", "a") as handle:
        handle.write("\n# changed\n")
    changed = images.code_digest(root)
    assert changed != before
    (root / "harness" / "contract" / "extra.py").write_text("# a new contract module\n")
    assert images.code_digest(root) != changed


def test_recipe_and_sources_come_from_the_imported_package() -> None:
    import harness

    package = Path(harness.__file__).resolve().parent
    assert images.source_root() == package.parent
    files = dict(images.workload_files())
    assert files[images.DOCKERFILE] == package / "image" / "Dockerfile"
    assert all(path.is_relative_to(package) for path in files.values())


def test_code_digest_does_not_depend_on_where_the_package_lies(tmp_path: Path) -> None:
    here = copy_sources(tmp_path / "site-packages")
    there = copy_sources(tmp_path / "elsewhere" / "lib")
    assert images.code_digest(here) == images.code_digest(there) == images.code_digest()


def test_every_copy_source_of_the_recipe_is_in_the_context() -> None:
    with tarfile.open(fileobj=images.build_context()) as tar:
        names = set(tar.getnames())
    recipe = (images.source_root() / images.DOCKERFILE).read_text()
    sources = [
        src
        for line in recipe.splitlines()
        if line.startswith("COPY ")
        for src in line.split()[1:-1]
        if not src.startswith("--")
    ]
    assert "harness/contract/" in sources
    for src in sources:
        assert src in names or any(n.startswith(src.rstrip("/") + "/") for n in names), src


def test_an_incomplete_installation_says_to_reinstall(tmp_path: Path) -> None:
    root = copy_sources(tmp_path / "site-packages")
    (root / images.DOCKERFILE).unlink()
    shutil.rmtree(root / "harness" / "contract")
    with pytest.raises(ExecutorError) as caught:
        images.workload_files(root)
    message = str(caught.value)  # the message and its hint
    assert images.DOCKERFILE in message and "harness/contract/" in message
    assert "reinstall" in message and "checkout" not in message


def test_wheelhouse_is_served_on_loopback(tmp_path: Path) -> None:
    import urllib.request

    (tmp_path / "pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
    with images.serve_directory(tmp_path) as url:
        assert url.startswith("http://127.0.0.1:")
        listing = urllib.request.urlopen(url, timeout=5).read().decode()
        assert "pkg-1.0-py3-none-any.whl" in listing


#: Run in a base image: its torch says (in its metadata only) that it is 1.0.0, and pip would
#: uninstall nothing but that metadata (quick), so a new torch is installed over the old one.
#: torch itself, and what ``torch.__version__`` says, stay as they are.
RELABEL_TORCH = """\
import importlib.metadata
import re

dist = importlib.metadata.distribution("torch")
info = [f for f in dist.files if f.parent.name.endswith(".dist-info")]
metadata = dist.locate_file(next(f for f in info if f.name == "METADATA"))
metadata.write_text(re.sub(r"(?m)^Version: .*$", "Version: 1.0.0", metadata.read_text()))
record = dist.locate_file(next(f for f in info if f.name == "RECORD"))
record.write_text("".join(f"{f},,\\n" for f in info))
"""


def tar_context(files: dict[str, str]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def fake_torch_wheel(folder: Path, version: str) -> Path:
    """A pure-Python wheel named torch: what pip installs when it decides to replace torch."""
    files = {
        "torch/__init__.py": f"__version__ = {version!r}\n",
        f"torch-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n"
        ),
        f"torch-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: harness-tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ),
    }
    record = [
        f"{name},sha256="
        + base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode().rstrip("=")
        + f",{len(text.encode())}"
        for name, text in files.items()
    ]
    files[f"torch-{version}.dist-info/RECORD"] = (
        "\n".join([*record, f"torch-{version}.dist-info/RECORD,,"]) + "\n"
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"torch-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


def remove_with_descendants(client, image_id: str) -> None:
    """Remove an image and the images built on it (a failed build's cached steps)."""
    import docker

    parents = {i.id: i.attrs.get("Parent") for i in client.images.list(all=True)}
    doomed = [image_id]
    for child in doomed:  # grows as it goes: breadth first
        doomed += [i for i, parent in parents.items() if parent == child and i not in doomed]
    for image in reversed(doomed):
        try:
            client.images.remove(image, force=True)
        except docker.errors.ImageNotFound:
            pass  # pruned with the child removed before it


@pytest.mark.docker
@pytest.mark.slow
def test_the_build_fails_if_pip_replaces_the_base_images_torch(client, workload_image, tmp_path):
    """docs/docker.md: torch comes from the base untouched, and the build fails if pip would
    replace it. A real build on a base whose torch says it is 1.0.0 (older than Lightning's
    torch>=2.1.0), with a wheelhouse that offers a torch 2.99.0: pip replaces torch, and the
    recipe's check stops the build; no workload image is tagged."""
    import docker

    base = f"harness-test/torch-says-1.0.0:{uuid.uuid4().hex[:8]}"
    built, _ = client.images.build(
        fileobj=tar_context(
            {
                "Dockerfile": f"FROM {workload_image.tag}\nCOPY relabel.py /\n"
                "RUN python /relabel.py && rm /relabel.py\n",
                "relabel.py": RELABEL_TORCH,
            }
        ),
        custom_context=True,
        tag=base,
        network_mode="none",
        rm=True,
        forcerm=True,
        pull=False,
    )
    try:
        wheels = tmp_path / "wheels"
        fake_torch_wheel(wheels, "2.99.0")
        with pytest.raises(ExecutorError) as caught:
            images.ensure_workload_image(client, base, wheelhouse=wheels)
        message = str(caught.value)
        assert "pip replaced the base image torch" in message, message
        assert "torch-2.99.0" in message or "2.99.0" in message, message  # pip did replace it
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(images.workload_tag(base, images.code_digest()))
    finally:
        remove_with_descendants(client, built.id)


@pytest.mark.docker
@pytest.mark.slow
def test_two_bases_whose_old_tags_collide_each_run_their_own_image(client, tmp_path):
    """Issue 12: ``harness-test/aX:b`` (the stand-in, tagged) and ``harness-test/aX-b`` (the
    stand-in plus a layer and ``NCCL_ALGO=Ring``) had one workload tag; a real ``harness run`` of
    a matrix with both builds two workload images, and each run's record names the id of the
    one built for its base and shows that base's environment (so the container really ran it,
    not only the host's word for it)."""
    from conftest import BASE_IMAGE
    from fault_tools import Harness, write_matrix

    from harness.results.run_reader import load_record

    unique = uuid.uuid4().hex[:8]
    repo = f"harness-test/a{unique}"
    plain, layered = f"{repo}:b", f"{repo}-b"
    assert old_slug(plain) == old_slug(layered)
    client.images.get(BASE_IMAGE).tag(repo, "b")
    built = None
    try:
        built, _ = client.images.build(
            fileobj=tar_context(
                {
                    "Dockerfile": f"FROM {BASE_IMAGE}\nCOPY extra.txt /extra.txt\n"
                    "ENV NCCL_ALGO=Ring\n",
                    "extra.txt": "a second base\n",
                }
            ),
            custom_context=True,
            tag=layered,
            network_mode="none",
            rm=True,
            forcerm=True,
            pull=False,
        )
        matrix = write_matrix(tmp_path / "m.yaml", f"tags-{unique}", image=[plain, layered])
        harness = Harness(matrix, tmp_path / "out", "--executor", "docker")
        try:
            assert harness.finish(timeout=900) == 0, harness.text[-3000:]
        finally:
            harness.kill()
        by_base = {}
        for run_dir in sorted((tmp_path / "out").glob("cells/*/repeat-0")):
            record = load_record(run_dir)
            by_base[record.spec["image"]] = record
        assert sorted(by_base) == sorted([plain, layered])
        digest = images.code_digest()
        workload_ids = {}
        for base, record in by_base.items():
            assert record.ok, record.error
            tagged = client.images.get(images.workload_tag(base, digest))
            assert tagged.labels[images.LABEL_BASE] == base
            assert record.provenance.image_id == tagged.id
            ran = client.images.get(record.provenance.image_id)
            assert ran.labels[images.LABEL_BASE] == base
            workload_ids[base] = tagged.id
        assert workload_ids[plain] != workload_ids[layered]
        assert by_base[layered].provenance.env["NCCL_ALGO"] == "Ring"
        assert by_base[plain].provenance.env["NCCL_ALGO"] is None
        assert by_base[plain].provenance.image_digest == client.images.get(BASE_IMAGE).id
        assert by_base[layered].provenance.image_digest == built.id
    finally:
        digest = images.code_digest()
        for base in (plain, layered):  # only what this test tagged or built
            old = f"harness-workload:{old_slug(base)}-{digest[:12]}"  # a planted old tagging
            for tag in {images.workload_tag(base, digest), old}:
                with contextlib.suppress(docker_errors().ImageNotFound):
                    client.images.remove(tag)
        client.images.remove(plain)  # the stand-in keeps its own tag
        if built is not None:
            remove_with_descendants(client, built.id)


def docker_errors():
    import docker

    return docker.errors
