"""Side-by-side timing of one sequential layer-wise stage: our staged trainer against the reference code's way.

Reference style, as the authors' layer-wise MLP notebook trains stage k (re-implemented here, not
copied): per-sample PIL augmentation in a DataLoader (as in bench_pipeline.py), an fp32 eager model,
the trunk run from the input with each earlier layer's output detached (the earlier layers still
run with gradient tracking on), the forward stopped after layer k's projector, and one Adam
optimiser over every parameter of the model.

Ours: `run_stage_epoch` of the staged trainer: batched augmentation on the device, bf16 autocast,
the frozen prefix under no_grad, fused Adam over the trained stage only.

Both sides run in this one process, alternating stage by stage, and the script prints the ratios.
Epoch times are extrapolated from a measured number of steps. Run from the repository root:

    python benchmarks/bench_layerwise.py [--steps 20] [--preset layerwise-mlp-reference-code]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch

from bench_pipeline import PerSampleSSLDataset, _timed
from pnn_ssl import config as config_module
from pnn_ssl.data.sources import load_dataset
from pnn_ssl.training.end_to_end import make_prepare
from pnn_ssl.training.layerwise import begin_phase, build_network, plan_phases, run_stage_epoch, stage_objectives
from pnn_ssl.training.runtime import Runtime


def reference_stage_step(images: np.ndarray, config, number: int, steps: int) -> float:
    """Seconds per step of stage `number` in the reference style (data loading included)."""
    torch.set_flush_denormal(False)
    network = build_network(config, (1, 28, 28))
    optimizer = torch.optim.Adam(network.parameters(), lr=config.train.lr)
    objective = stage_objectives(config.loss, network.depth)[number]
    dataset = PerSampleSSLDataset(images, config.augment)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.train.batch_size, shuffle=True, num_workers=0)
    times = []
    for index, (view_a, view_b) in enumerate(_timed(loader, times)):
        h = torch.cat([view_a, view_b])
        for earlier in range(1, number):
            h = network.stage(earlier)(h).detach()
        z = network.stage(number).head(network.stage(number)(h))
        loss, _ = objective(*z.chunk(2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if index + 1 == steps + 2:
            break
    torch.set_flush_denormal(True)
    return statistics.median(np.diff(times)[2:])


def our_stage_step(dataset, config, runtime: Runtime, number: int, steps: int) -> float:
    """Seconds per step of stage `number` in our staged trainer, measured over `steps` steps after warm-up."""
    network = build_network(config, (1, 28, 28))
    phase = plan_phases("sequential", network.depth, config.train.epochs)[number - 1]
    optimizer = begin_phase(network, phase, config, runtime)
    objectives = stage_objectives(config.loss, network.depth)
    prepare = make_prepare(dataset, False, runtime.device)
    batch = config.train.batch_size
    warmup = dataclasses.replace(dataset, train_images=dataset.train_images[: batch * 3])
    run_stage_epoch(network, optimizer, phase, objectives, warmup, config, runtime, prepare, epoch=0)
    subset = dataclasses.replace(dataset, train_images=dataset.train_images[: batch * steps])
    started = time.perf_counter()
    run_stage_epoch(network, optimizer, phase, objectives, subset, config, runtime, prepare, epoch=1)
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps measured per side and stage (default 20)")
    parser.add_argument("--preset", default="layerwise-mlp-reference-code", help="layer-wise MLP preset to time")
    args = parser.parse_args()

    torch.set_flush_denormal(True)
    runtime = Runtime(device=torch.device("cpu"), precision="bf16")
    dataset = load_dataset("mnist")
    config = config_module.resolve([args.preset])
    steps_per_epoch = -(-dataset.train_images.shape[0] // config.train.batch_size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.preset}, MNIST {tuple(dataset.train_images.shape)}")

    images = dataset.train_images[:, 0].numpy()
    for number in range(1, len(config.model.widths) + 1):
        ours = our_stage_step(dataset, config, runtime, number, args.steps)
        reference = reference_stage_step(images, config, number, args.steps)
        print(f"stage {number} epoch  reference style {reference * steps_per_epoch:6.1f} s   "
              f"ours {ours * steps_per_epoch:5.1f} s   ratio {reference / ours:4.1f}x   ({args.steps} steps each)")


if __name__ == "__main__":
    main()
