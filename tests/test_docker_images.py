"""Workload image naming and build context, without an engine."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from harness import images
from harness.errors import ExecutorError


def copy_sources(dest: Path) -> Path:
    root = images.source_root()
    for name, path in images.workload_files(root):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return dest


def test_tag_names_base_and_code_digest() -> None:
    digest = "0123456789abcdef" * 4
    tag = images.workload_tag("nvcr.io/nvidia/pytorch:24.01-py3", digest)
    assert tag == "harness-workload:nvcr.io-nvidia-pytorch-24.01-py3-0123456789ab"


def test_context_holds_workload_side_only() -> None:
    with tarfile.open(fileobj=images.build_context(), mode="r") as tar:
        names = set(tar.getnames())
    assert images.DOCKERFILE == "harness/image/Dockerfile" and images.DOCKERFILE in names
    assert "harness/contract/__init__.py" in names
    assert "harness/mnist.py" in names
    assert "harness/workload/__main__.py" in names
    assert not any(n.startswith(("harness/executors", "harness/cli")) for n in names)
    assert "harness/images.py" not in names and "harness/record.py" not in names
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
    names = {name for name, _ in images.workload_files()}
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
