"""Shared test setup and fixtures.

`helpers` is importable from every test folder, and denormals are flushed: the library does that in
`setup_runtime`, and tests that call lower-level functions directly need it too, because denormal
arithmetic slows small CPU problems down by up to 10x. The fixtures give a tiny MNIST-format
dataset and a small-model config for fast end-to-end tests.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_flush_denormal(True)

from helpers.datafiles import write_idx_dataset  # noqa: E402  (needs the path above)

SMALL_MODEL = [
    "model.widths=[32, 32]",
    "model.projector_widths=[16, 16]",
    "train.epochs=3",
    "train.batch_size=64",
    "train.checkpoint_every=1",
    "probe.epochs=2",
    "probe.repeats=2",
    "probe.lbfgs_max_iter=10",
    "probe.layers=[1, 2]",
    "train.device=cpu",
]


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory):
    """256 training and 128 test images of random strokes, written as standard IDX files."""
    folder = tmp_path_factory.mktemp("tiny-mnist")
    rng = np.random.default_rng(0)
    images = np.zeros((384, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=384).astype(np.uint8)
    for index, label in enumerate(labels):  # class k lights up row band k, so a probe can learn it
        images[index, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
    images = np.clip(images.astype(int) + rng.integers(0, 60, size=images.shape), 0, 255).astype(np.uint8)
    write_idx_dataset(folder, images[:256], labels[:256], images[256:], labels[256:])
    return folder


@pytest.fixture
def small_overrides(tiny_mnist):
    return [*SMALL_MODEL, f"data.data_dir={tiny_mnist}", "data.download=false"]
