"""Workload image naming and build context, without an engine."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from harness import images


def copy_sources(dest: Path) -> Path:
    root = images.repo_root()
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
    assert "docker/Dockerfile" in names
    assert "harness/contract.py" in names
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
    assert images.code_digest(root) != before


def test_wheelhouse_is_served_on_loopback(tmp_path: Path) -> None:
    import urllib.request

    (tmp_path / "pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
    with images.serve_directory(tmp_path) as url:
        assert url.startswith("http://127.0.0.1:")
        listing = urllib.request.urlopen(url, timeout=5).read().decode()  # noqa: S310
        assert "pkg-1.0-py3-none-any.whl" in listing
