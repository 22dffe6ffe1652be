"""MNIST loading: real files, checked by MD5, equal to torchvision + ToTensor bit for bit."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset

from harness.mnist import verify_mnist
from harness.workload.data import (
    MNIST_MD5,
    Batches,
    DataError,
    download_mnist,
    load_mnist,
    parse_idx,
    read_idx_bytes,
    resolve_data_dir,
    shard_indices,
)


@pytest.fixture(scope="module")
def train(mnist_dir):
    return load_mnist(mnist_dir, train=True)


@pytest.fixture(scope="module")
def raw_root(mnist_dir, tmp_path_factory) -> Path:
    """MNIST gunzipped in torchvision's layout (root/MNIST/raw), without downloading."""
    root = tmp_path_factory.mktemp("tv")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_MD5:
        with gzip.open(mnist_dir / f"{name}.gz") as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return root


def test_known_facts(train, mnist_dir):
    test = load_mnist(mnist_dir, train=False)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.float32
    assert train.labels.dtype == torch.int64
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    counts = torch.bincount(train.labels, minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert abs(train.images.mean().item() - 0.1307) < 1e-4
    assert abs(train.images.std().item() - 0.3081) < 1e-4


def test_equals_torchvision_to_tensor_on_all_70000(train, mnist_dir, raw_root):
    from torchvision import transforms
    from torchvision.datasets import MNIST

    to_tensor = transforms.ToTensor()
    for is_train, ours in ((True, train), (False, load_mnist(mnist_dir, train=False))):
        reference = MNIST(str(raw_root), train=is_train, download=False, transform=to_tensor)
        n = len(reference)
        assert n == len(ours)
        # all of them: ToTensor on torchvision's parsed images at once (an H x W x N array is N
        # channels to it), in a second rather than 70,000 PIL round trips (about 50 s) ...
        expected = to_tensor(reference.data.numpy().transpose(1, 2, 0)).unsqueeze(1)
        assert expected.dtype == ours.images.dtype and expected.shape == ours.images.shape
        assert torch.equal(expected.view(torch.int32), ours.images.view(torch.int32))
        assert torch.equal(reference.targets, ours.labels)
        # ... and the dataset's own items (PIL image -> ToTensor), spread over the whole set,
        # give those bits too
        for i in [*range(0, n, 97), n - 1]:
            image, label = reference[i]
            assert torch.equal(image.view(torch.int32), ours.images[i].view(torch.int32)), i
            assert label == ours.labels[i].item(), i


def test_raw_files_in_torchvision_layout_are_read(raw_root, train):
    again = load_mnist(raw_root, train=True)
    assert torch.equal(again.images, train.images)


def test_corrupt_file_is_named_with_the_fix(mnist_dir, tmp_path):
    for name in MNIST_MD5:
        shutil.copy(mnist_dir / f"{name}.gz", tmp_path / f"{name}.gz")
    data = bytearray(gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes()))
    data[1000] ^= 0xFF
    # the fastest level: the MD5 is of the file, whatever level wrote it (level 9: about 25 s)
    corrupt = gzip.compress(bytes(data), compresslevel=1)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(corrupt)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: MD5 .* delete it"):
        load_mnist(tmp_path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte .*HARNESS_MNIST_DIR"):
        read_idx_bytes(tmp_path, "train-images-idx3-ubyte")


def test_parse_idx_rejects_a_truncated_body():
    header = bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big")
    assert parse_idx(header + bytes(range(10))).tolist() == list(range(10))
    with pytest.raises(DataError, match="header says 10"):
        parse_idx(header + bytes(9))


def test_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_MNIST_DIR", str(tmp_path / "env"))
    # the spec holds no folder (it is the run's identity): --data-dir, then the environment
    assert resolve_data_dir("/cli") == Path("/cli")
    assert resolve_data_dir(None) == tmp_path / "env"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def mirror(tmp_path, mnist_dir):
    """Two real loopback HTTP mirrors: one serving corrupt files, one serving real MNIST."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in MNIST_MD5:
        (bad / f"{name}.gz").write_bytes(gzip.compress(b"\0\0\x08\x01not mnist"))
    servers = []
    for folder in (bad, mnist_dir):
        handler = functools.partial(_Quiet, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [f"http://127.0.0.1:{s.server_address[1]}/" for s in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_download_tries_mirrors_and_verifies(mirror, tmp_path, train):
    bad_url, good_url = mirror
    dest = tmp_path / "cache"
    with pytest.raises(DataError, match="could not download train-images-idx3-ubyte.gz"):
        download_mnist(dest, mirrors=[bad_url])
    assert not list(dest.glob("*.gz")), "a download that fails the MD5 check must be deleted"
    download_mnist(dest, mirrors=[bad_url, good_url])
    assert sorted(p.name for p in dest.glob("*.gz")) == sorted(f"{n}.gz" for n in MNIST_MD5)
    assert torch.equal(load_mnist(dest).images, train.images)


@pytest.mark.parametrize("length,world", [(55000, 2), (10, 3), (7, 4), (1, 2), (33, 1)])
def test_shard_matches_distributed_sampler(length, world):
    indices = torch.randperm(length, generator=torch.Generator().manual_seed(length))
    dataset = TensorDataset(indices)
    for rank in range(world):
        sampler = DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=False, drop_last=False
        )
        expected = [indices[i].item() for i in sampler]
        assert shard_indices(indices, rank, world).tolist() == expected


def test_batches_equal_dataloader_collation(train):
    indices = torch.randperm(1000, generator=torch.Generator().manual_seed(1))[:333]
    subset = Subset(TensorDataset(train.images, train.labels), indices.tolist())
    ours = list(Batches(train, indices, 32))
    theirs = list(DataLoader(subset, batch_size=32))
    assert len(ours) == len(theirs) == 11
    for (x, y), (ex, ey) in zip(ours, theirs, strict=True):
        assert torch.equal(x, ex) and torch.equal(y, ey)
    assert np.array_equal(ours[-1][0].numpy(), theirs[-1][0].numpy())


def test_host_fetch_downloads_once_or_says_how_to_provide_mnist(mirror, tmp_path):
    from harness.errors import HarnessError
    from harness.run.mnist_source import fetch_mnist

    bad_url, good_url = mirror
    with pytest.raises(HarnessError, match="could not be downloaded") as caught:
        fetch_mnist(tmp_path / "cache", mirrors=(bad_url,))
    assert "HARNESS_MNIST_DIR" in (caught.value.hint or "")
    dest = fetch_mnist(tmp_path / "cache", mirrors=(bad_url, good_url))
    verify_mnist(dest)
