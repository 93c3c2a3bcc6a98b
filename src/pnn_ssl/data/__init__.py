"""Datasets: loading from files, packages or downloads, and batched augmentation."""

from pnn_ssl.data.sources import (
    DataError,
    ImageDataset,
    download,
    load_dataset,
    read_cifar10_batches,
    read_idx,
    read_mnist_pickle,
)

__all__ = [
    "DataError",
    "ImageDataset",
    "download",
    "load_dataset",
    "read_cifar10_batches",
    "read_idx",
    "read_mnist_pickle",
]
