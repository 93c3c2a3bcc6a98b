"""Writers of small dataset files in the standard IDX and CIFAR-10 formats, for tests."""

from __future__ import annotations

import gzip as gzip_module
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

IDX_DTYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}
IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_BATCH_NAMES = tuple(f"data_batch_{index}" for index in range(1, 6)) + ("test_batch",)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as an IDX byte stream: magic number, big-endian sizes, big-endian data."""
    array = np.asarray(array)
    code = IDX_DTYPE_CODES[array.dtype.newbyteorder("=")]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: str | Path, array: np.ndarray, gzip: bool = False) -> Path:
    """Write array as an IDX file, gzip-compressed if gzip is true; return the path."""
    data = idx_bytes(array)
    if gzip:
        # Level 1 keeps writing the full 60,000-image sets fast.
        data = gzip_module.compress(data, compresslevel=1)
    path = Path(path)
    path.write_bytes(data)
    return path


def write_idx_dataset(
    folder: str | Path,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    gzip: bool = False,
) -> Path:
    """Write the four standard IDX files into folder (with .gz names if gzip); return folder.

    Images may be (N, H, W) or (N, 1, H, W) uint8; labels are written as uint8.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (
        _drop_channel(train_images),
        np.asarray(train_labels, dtype=np.uint8),
        _drop_channel(test_images),
        np.asarray(test_labels, dtype=np.uint8),
    )
    suffix = ".gz" if gzip else ""
    for name, array in zip(IDX_NAMES, arrays):
        write_idx(folder / f"{name}{suffix}", array, gzip=gzip)
    return folder


def _drop_channel(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=np.uint8)
    return images[:, 0] if images.ndim == 4 else images


def cifar_batch_bytes(images: np.ndarray, labels: np.ndarray, batch_label: str = "test") -> bytes:
    """Pickle one CIFAR-10 batch dict from images (n, 3, 32, 32) uint8 and labels (n,)."""
    images = np.asarray(images, dtype=np.uint8)
    batch = {
        b"batch_label": batch_label.encode(),
        # Each row is the red, green and blue 32x32 planes one after the other.
        b"data": images.reshape(len(images), 3 * 32 * 32),
        b"labels": [int(label) for label in labels],
        b"filenames": [f"image_{index}.png".encode() for index in range(len(images))],
    }
    return pickle.dumps(batch, protocol=2)


def write_cifar_batches(
    folder: str | Path,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    batches: int = 5,
) -> Path:
    """Write data_batch_1..<batches> and test_batch into folder; return folder.

    The training set is split into `batches` nearly equal parts. The standard layout has five.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in _cifar_batch_files(train_images, train_labels, test_images, test_labels, batches):
        (folder / name).write_bytes(data)
    return folder


def write_cifar_archive(
    path: str | Path,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    batches: int = 5,
) -> Path:
    """Write a cifar-10-python.tar.gz-style archive with the batches under cifar-10-batches-py/."""
    path = Path(path)
    files = _cifar_batch_files(train_images, train_labels, test_images, test_labels, batches)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files:
            member = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return path


def _cifar_batch_files(train_images, train_labels, test_images, test_labels, batches):
    image_parts = np.array_split(np.asarray(train_images), batches)
    label_parts = np.array_split(np.asarray(train_labels), batches)
    files = []
    for index, (images, labels) in enumerate(zip(image_parts, label_parts), start=1):
        batch_label = f"training batch {index} of {batches}"
        files.append((f"data_batch_{index}", cifar_batch_bytes(images, labels, batch_label)))
    files.append(("test_batch", cifar_batch_bytes(test_images, test_labels, "testing batch 1 of 1")))
    return files
