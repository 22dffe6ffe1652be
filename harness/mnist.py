"""MNIST's four IDX files: where they are, whether they are intact, and a verified download.

Standard library only, so that both sides use it: the workload reads the files, the host checks
them (``harness doctor``) and downloads them before containers, which have no network, start.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import urllib.request
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

#: MD5 of the uncompressed IDX files (the published values).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

#: The mirrors torchvision downloads from, in its order.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)


class DataError(Exception):
    """MNIST is missing or corrupt; the message names the file and the fix."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "harness" / "mnist"


def _candidates(data_dir: Path, name: str) -> list[Path]:
    paths = []
    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        paths += [folder / name, folder / f"{name}.gz"]
    return paths


def missing_files(data_dir: Path) -> list[str]:
    """The IDX files that are in neither of the layouts read here (raw or .gz)."""
    return [n for n in MNIST_MD5 if not any(p.is_file() for p in _candidates(data_dir, n))]


def read_idx_bytes(data_dir: Path, name: str) -> bytes:
    """The uncompressed bytes of one IDX file (raw or .gz), checked against its known MD5."""
    for path in _candidates(data_dir, name):
        if path.is_file():
            break
    else:
        raise DataError(
            f"MNIST file {name} (or {name}.gz) not found in {data_dir}: point --data-dir, "
            "--data-dir or HARNESS_MNIST_DIR at a folder holding the four IDX files, "
            "or leave them unset to download MNIST"
        )
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable gzip file ({exc}); replace it") from exc
    digest = hashlib.md5(raw).hexdigest()  # a checksum, not security
    if digest != MNIST_MD5[name]:
        raise DataError(
            f"{path}: MD5 of the uncompressed data is {digest}, expected {MNIST_MD5[name]}; "
            "the file is corrupt or not MNIST: delete it and copy or download it again"
        )
    return raw


def verify_mnist(data_dir: Path) -> None:
    """Check all four files (name and MD5) without converting them."""
    for name in MNIST_MD5:
        read_idx_bytes(data_dir, name)


def download_mnist(dest: Path, mirrors: Sequence[str] = MIRRORS, timeout: float = 60.0) -> Path:
    """Download the four gzipped files like torchvision does, trying each mirror, verified.

    A file already in ``dest`` with the right MD5 is kept. A download that fails the check is
    deleted and the next mirror is tried.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in MNIST_MD5:
        try:
            read_idx_bytes(dest, name)
            continue
        except DataError:
            pass
        target = dest / f"{name}.gz"
        errors = []
        for mirror in mirrors:
            url = f"{mirror}{name}.gz"
            tmp = target.with_name(f".{target.name}.part")
            try:
                log.info("downloading %s", url)
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    with open(tmp, "wb") as handle:
                        shutil.copyfileobj(response, handle)
                tmp.replace(target)
                read_idx_bytes(dest, name)
                break
            except (OSError, DataError) as exc:
                errors.append(f"{url}: {exc}")
                tmp.unlink(missing_ok=True)
                target.unlink(missing_ok=True)
        else:
            raise DataError(
                f"could not download {name}.gz: {'; '.join(errors)}; copy MNIST to a folder "
                "and pass --data-dir or set HARNESS_MNIST_DIR"
            )
    return dest
