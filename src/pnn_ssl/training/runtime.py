"""Device, threads, precision and seeding shared by every training and evaluation loop."""

from __future__ import annotations

import contextlib
import hashlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from pnn_ssl.config import ConfigError, check_device_name


@dataclass(frozen=True)
class Runtime:
    """Device and precision of the tensors of a run."""

    device: torch.device
    precision: str  # bf16 | fp32

    def autocast(self) -> contextlib.AbstractContextManager:
        """Return the autocast context for forward passes (bf16 matmuls, fp32 master weights)."""
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def generator(self, seed: int, *names: object) -> torch.Generator:
        """Return a generator on this device seeded from `seed` and a stream name such as ("augment", 3)."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derive_seed(seed, *names))
        return generator


def resolve_device(name: str) -> torch.device:
    """Turn "auto", "cpu", "cuda" or "cuda:N" into a device, with a clear error when CUDA is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device_name("train.device", name)
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"invalid train.device={name!r}: no CUDA device is available; use train.device=cpu or auto")
    return device


def setup_runtime(device: str = "auto", precision: str = "bf16", threads: int = 0) -> Runtime:
    """Select the device, set the thread count and flush denormals to zero.

    Denormal arithmetic is slow on CPUs, and Adam's second-moment estimates and small gradients drift
    into that range during training. Flushing them made epochs of the bf16 MNIST MLP about 1.4x
    faster on a 2-core Xeon, with per-epoch losses unchanged to 4 decimals.
    """
    resolved = resolve_device(device)
    if threads > 0:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    return Runtime(device=resolved, precision=precision)


def derive_seed(seed: int, *names: object) -> int:
    """Return a 63-bit seed that depends only on `seed` and the names, stable across processes."""
    text = "/".join(str(part) for part in (seed, *names))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch's global generators (used for weight initialisation)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
