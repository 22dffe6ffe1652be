"""Where a matrix's MNIST comes from on the host: ``--data-dir``, else HARNESS_MNIST_DIR, else
the user cache, downloaded and verified once before any container (which has no network) starts.

Host side only (it raises ``HarnessError``); the files themselves are read and checked by
harness/mnist.py, which the workload image holds too.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import HarnessError
from harness.matrix import Cell
from harness.mnist import MIRRORS, DataError, default_cache_dir, download_mnist


def default_data_dir() -> Path | None:
    """HARNESS_MNIST_DIR, else None: the caller downloads MNIST into the user cache
    (``fetch_mnist(default_cache_dir())``)."""
    env = os.environ.get("HARNESS_MNIST_DIR")
    return Path(env).resolve() if env else None


def fetch_mnist(cache: Path, mirrors: tuple[str, ...] = MIRRORS) -> Path:
    """Download MNIST on the host, verified, once: containers have no network to do it."""
    try:
        return download_mnist(cache, mirrors)
    except DataError as exc:
        raise HarnessError(
            f"MNIST is not on this machine and could not be downloaded: {exc}",
            hint="copy the four IDX files (raw or .gz) to a folder, then pass --data-dir "
            "or set HARNESS_MNIST_DIR",
        ) from exc


def mnist_for(cells: list[Cell]) -> Path | None:
    """The user cache's MNIST, downloaded and verified once where a cell trains the built-in
    model; a matrix of the user's own training only (every cell an ``entry``) downloads
    nothing: it gets the cache where it already is, else None (docs/workload.md)."""
    cache = default_cache_dir()
    if any(cell.settings.get("entry") is None for cell in cells):
        return fetch_mnist(cache)
    return cache if cache.is_dir() else None
