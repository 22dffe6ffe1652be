"""harness/results/safe_paths.py on a real file system: below a results folder no component is
followed,
a link (or a file where a folder belongs) is a StoreError naming it, and nothing is created or
removed through one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.errors import StoreError
from harness.results.safe_paths import open_lock, real_dir, refuse_link, remove_tree


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "kept").write_text("kept")
    return folder


def test_real_dir_makes_missing_folders_and_accepts_a_linked_root(tmp_path: Path, outside: Path):
    linked_root = tmp_path / "root-link"
    linked_root.symlink_to(outside)  # the folder the user named may be a link
    made = real_dir(linked_root, linked_root / "a" / "b")
    assert made.is_dir() and (outside / "a" / "b").is_dir()


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_real_dir_refuses_a_link_at_any_component(tmp_path: Path, outside: Path, depth: int):
    root = tmp_path / "root"
    parts = ["a", "b", "c"]
    for k in range(depth):
        (root / Path(*parts[: k + 1])).mkdir(parents=True)
    link = root / Path(*parts[: depth + 1])
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    with pytest.raises(StoreError, match="is a symbolic link") as raised:
        real_dir(root, root / "a" / "b" / "c" / "d")
    assert str(link) in raised.value.message and raised.value.hint
    assert sorted(p.name for p in outside.iterdir()) == ["kept"]  # nothing made there


def test_real_dir_refuses_a_file_where_a_folder_belongs(tmp_path: Path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "plots").write_text("x")
    with pytest.raises(StoreError, match="is a regular file, not a folder"):
        real_dir(tmp_path / "root", tmp_path / "root" / "plots")


def test_refuse_link_checks_without_creating(tmp_path: Path, outside: Path):
    root = tmp_path / "root"
    root.mkdir()
    refuse_link(root, root / "cells" / "x" / "repeat-0")  # missing: passes
    assert list(root.iterdir()) == []
    (root / "cells").symlink_to(outside)
    with pytest.raises(StoreError, match="cells"):
        refuse_link(root, root / "cells" / "x" / "repeat-0")


def test_remove_tree_never_starts_at_a_link(tmp_path: Path, outside: Path):
    root = tmp_path / "root"
    (root / "diagnoses").mkdir(parents=True)
    (root / "diagnoses" / "d").symlink_to(outside)
    with pytest.raises(StoreError, match="symbolic link"):
        remove_tree(root, root / "diagnoses" / "d")
    with pytest.raises(StoreError, match="symbolic link"):
        remove_tree(root, root / "diagnoses" / "d" / "a")
    assert (outside / "kept").read_text() == "kept"
    (root / "diagnoses" / "e" / "a").mkdir(parents=True)
    (root / "diagnoses" / "e" / "a" / "out").symlink_to(outside)  # inside: removed, not followed
    remove_tree(root, root / "diagnoses" / "e")
    assert not (root / "diagnoses" / "e").exists() and (outside / "kept").is_file()


def test_open_lock_refuses_a_link_and_a_fifo(tmp_path: Path, outside: Path):
    (tmp_path / "link").symlink_to(outside / "kept")
    with pytest.raises(StoreError, match="a symbolic link"):
        open_lock(tmp_path / "link")
    assert (outside / "kept").read_text() == "kept"
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(StoreError, match="a FIFO"):
        open_lock(tmp_path / "fifo")
    with open_lock(tmp_path / "lock") as handle:  # a new regular file
        handle.write("1")
    assert (tmp_path / "lock").read_text() == "1"
