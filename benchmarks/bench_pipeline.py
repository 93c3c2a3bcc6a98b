"""Side-by-side timing of our training and probe pipelines against the reference code's way.

Reference style, as the notebooks of Laydevant et al. (2023) run it (re-implemented here, not copied):
- SSL epoch: per-sample PIL transforms (rotation, pad-2 crop, scale, contrast, as torchvision's PIL
  path does them) inside a DataLoader with num_workers=0, fp32 eager model, Adam with its default
  (foreach) implementation, no denormal flushing;
- probe: a fresh Linear probe trained for N epochs with the frozen backbone recomputed for every
  mini-batch of 64, and the full test set evaluated after each epoch.

Ours: the whole dataset as a uint8 tensor, batched per-sample augmentation on the device, bf16
autocast with fp32 master weights, fused Adam, flushed denormals (optionally torch.compile); the
probe caches the features once and trains its repeats as one batched model.

Both sides run in this one process, alternating, and the script prints the ratios. Epoch times are
extrapolated from a measured number of steps. Run:

    python benchmarks/bench_pipeline.py [--steps 30] [--probe-batches 150] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

from pnn_ssl import config as config_module
from pnn_ssl.data.sources import load_dataset
from pnn_ssl.evaluation.features import backbone_features
from pnn_ssl.evaluation.probes import adam_probes
from pnn_ssl.training.end_to_end import build_model, make_objective, make_prepare, run_epoch
from pnn_ssl.training.runtime import Runtime


# ---------------------------------------------------------------------------------------------
# Reference style.


class PerSampleSSLDataset(torch.utils.data.Dataset):
    """Two independently augmented views per image, transformed one sample at a time with PIL."""

    def __init__(self, images: np.ndarray, augment: config_module.AugmentConfig, seed: int = 0) -> None:
        self.images = images  # (N, 28, 28) uint8
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.images)

    def _view(self, image: Image.Image) -> torch.Tensor:
        a = self.augment
        image = image.rotate(self.rng.uniform(-a.rotation_deg, a.rotation_deg), resample=Image.NEAREST, fillcolor=0)
        padded = ImageOps.expand(image, border=a.crop_padding, fill=0)
        i, j = self.rng.integers(0, 2 * a.crop_padding + 1, size=2)
        image = padded.crop((j, i, j + 28, i + 28))
        s = self.rng.uniform(*a.scale)
        centre = 14.0
        inverse = (1 / s, 0, centre - centre / s, 0, 1 / s, centre - centre / s)
        image = image.transform((28, 28), Image.AFFINE, inverse, resample=Image.NEAREST, fillcolor=0)
        image = ImageEnhance.Contrast(image).enhance(self.rng.uniform(1 - a.contrast, 1 + a.contrast))
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).flatten()

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index])
        return self._view(image), self._view(image)


def reference_ssl_steps(images: np.ndarray, config, steps: int) -> float:
    """Seconds per SSL step in the reference style (data loading included)."""
    torch.set_flush_denormal(False)
    model = build_model(config, 784, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    objective = make_objective(config.loss)
    loader = torch.utils.data.DataLoader(PerSampleSSLDataset(images, config.augment), batch_size=256, shuffle=True, num_workers=0)
    times = []
    for index, (view_a, view_b) in enumerate(_timed(loader, times)):
        z = model(torch.cat([view_a, view_b]))
        z_a, z_b = z.chunk(2)
        loss, _ = objective(z_a, z_b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if index + 1 == steps + 2:
            break
    torch.set_flush_denormal(True)
    return statistics.median(np.diff(times)[2:])


def _timed(iterable, times):
    times.append(time.perf_counter())
    for item in iterable:
        yield item
        times.append(time.perf_counter())


@torch.no_grad()
def _reference_forward(backbone, x):
    return backbone(x)


def reference_probe_seconds(backbone, dataset, batches: int, epochs: int) -> tuple[float, float]:
    """Return (extrapolated seconds for one probe of `epochs` epochs, seconds per measured batch)."""
    torch.set_flush_denormal(False)
    backbone.eval()
    probe = torch.nn.Linear(backbone.widths[-1], 10)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-3)
    train = dataset.train_images.float().div(255).flatten(1)
    order = torch.randperm(train.shape[0])
    started = time.perf_counter()
    for batch in range(batches):
        index = order[batch * 64 : (batch + 1) * 64]
        loss = F.cross_entropy(probe(_reference_forward(backbone, train[index])), dataset.train_labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    per_batch = (time.perf_counter() - started) / batches

    started = time.perf_counter()
    test = dataset.test_images.float().div(255).flatten(1)
    for start in range(0, test.shape[0], 512):
        probe(_reference_forward(backbone, test[start : start + 512]))
    test_seconds = time.perf_counter() - started
    torch.set_flush_denormal(True)
    batches_per_epoch = -(-train.shape[0] // 64)
    return epochs * (per_batch * batches_per_epoch + test_seconds), per_batch


# ---------------------------------------------------------------------------------------------
# Ours.


def our_ssl_steps(dataset, config, runtime: Runtime, steps: int, compile_model: bool) -> float:
    """Seconds per SSL step of our training loop, measured over `steps` steps after warm-up."""
    import dataclasses

    model = build_model(config, 784, 10)
    forward = torch.compile(model) if compile_model else model
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr, fused=True)
    prepare = make_prepare(dataset, False, runtime.device)
    warmup = dataclasses.replace(dataset, train_images=dataset.train_images[: 256 * 3])
    run_epoch(forward, optimizer, warmup, config, runtime, prepare, epoch=0)
    subset = dataclasses.replace(dataset, train_images=dataset.train_images[: 256 * steps])
    started = time.perf_counter()
    run_epoch(forward, optimizer, subset, config, runtime, prepare, epoch=1)
    return (time.perf_counter() - started) / steps


def our_probe_seconds(backbone, dataset, runtime: Runtime, epochs: int, repeats: int) -> float:
    prepare = make_prepare(dataset, False, runtime.device)
    started = time.perf_counter()
    features = backbone_features(backbone, dataset, (backbone.depth,), prepare=prepare, autocast=runtime.autocast)
    adam_probes(features[backbone.depth], repeats=repeats, epochs=epochs, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="SSL steps measured per side (default 30)")
    parser.add_argument("--probe-batches", type=int, default=150, help="reference probe batches measured (default 150)")
    parser.add_argument("--probe-epochs", type=int, default=20, help="probe epochs (default 20, the paper's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile our model (compile time excluded)")
    args = parser.parse_args()

    torch.set_flush_denormal(True)
    runtime = Runtime(device=torch.device("cpu"), precision="bf16")
    dataset = load_dataset("mnist")
    config = config_module.resolve(["paper"])
    steps_per_epoch = -(-dataset.train_images.shape[0] // config.train.batch_size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, MNIST {tuple(dataset.train_images.shape)}")

    ours = our_ssl_steps(dataset, config, runtime, args.steps, args.compile)
    reference = reference_ssl_steps(dataset.train_images[:, 0].numpy(), config, args.steps)
    print(f"SSL epoch  reference style {reference * steps_per_epoch:6.1f} s   ours {ours * steps_per_epoch:5.1f} s   "
          f"ratio {reference / ours:4.1f}x   ({args.steps} steps each, {steps_per_epoch} steps per epoch)")

    backbone = build_model(config, 784, 10).backbone
    reference_probe, _ = reference_probe_seconds(backbone, dataset, args.probe_batches, args.probe_epochs)
    for repeats in (1, 3):
        ours_probe = our_probe_seconds(backbone, dataset, runtime, args.probe_epochs, repeats)
        print(f"probe x{repeats}   reference style {reference_probe * repeats:6.1f} s   ours {ours_probe:5.1f} s   "
              f"ratio {reference_probe * repeats / ours_probe:4.1f}x   ({args.probe_epochs} epochs, batch 64, last layer)")


if __name__ == "__main__":
    main()
