"""The product does not know about the folder beside the checkout: no file under harness/
names it (code, comments, package data). MNIST comes from --data-dir, HARNESS_MNIST_DIR or the
user cache; only the scripts (scripts/, .ci/run) point HARNESS_MNIST_DIR there."""

from __future__ import annotations

from pathlib import Path

import harness
from harness.run.mnist_source import default_data_dir

PACKAGE = Path(harness.__file__).resolve().parent
FORBIDDEN = (b"../shared", b"shared/data")


def test_no_file_under_harness_names_the_shared_folder() -> None:
    files = [p for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert len(files) > 20, f"expected the package's files under {PACKAGE}"
    hits = [
        f"{p.relative_to(PACKAGE.parent)}: {word.decode()}"
        for p in files
        for word in FORBIDDEN
        if word in p.read_bytes()
    ]
    assert hits == []


def test_default_data_dir_is_the_environment_or_none(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HARNESS_MNIST_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path.resolve()
    monkeypatch.delenv("HARNESS_MNIST_DIR")
    assert default_data_dir() is None  # the runner then downloads into the user cache
