"""Side-by-side timing of SPSA's 2n loss evaluations: one batched forward against a loop of 2n passes.

Both sides evaluate the same stacked settings (theta +- c delta_i, i = 1..n) of the first layer of
the SPSA MLP (784 -> 1000, bias-free) with its fixed 3x256 projector and the authors' Barlow Twins
variant, on the same two views of a batch of random images. The loop is what the authors' code
does: one forward, projector and loss per setting. The script alternates the two sides, prints the
median time of each and their ratio, and checks that both give the same losses. Run:

    OMP_NUM_THREADS=1 python benchmarks/bench_spsa.py [--repeats 10] [--threads 1] [--precision fp32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pnn_ssl import config as config_module
from pnn_ssl.physics import AnalogMatVec
from pnn_ssl.training.end_to_end import make_objective
from pnn_ssl.training.layerwise import build_network
from pnn_ssl.training.runtime import Runtime
from pnn_ssl.training.zeroth_order import EVALUATIONS, rademacher


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed evaluations per side (default: 10)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="forward precision (default: fp32)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per view (default: 128, the authors')")
    parser.add_argument("--perturbations", type=int, default=10, help="n, directions per step (default: 10)")
    return parser.parse_args()


def time_side(evaluate, arguments: dict, repeats: int) -> tuple[list[float], torch.Tensor]:
    times, totals = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        with torch.no_grad():
            totals, _, _ = evaluate(**arguments)
        times.append(time.perf_counter() - started)
    return times, totals


def compare(label: str, layer, head, objective, x, settings, runtime: Runtime, repeats: int) -> None:
    arguments = dict(layer=layer, head=head, objective=objective, x=x, settings=settings,
                     stacked_input=False, autocast=runtime.autocast)
    batched_times, loop_times = [], []
    for _ in range(repeats):  # alternate, so that a change in machine load hits both sides alike
        times, batched = time_side(EVALUATIONS["batched"], arguments, 1)
        batched_times += times
        times, looped = time_side(EVALUATIONS["loop"], arguments, 1)
        loop_times += times
    batched_median, loop_median = statistics.median(batched_times), statistics.median(loop_times)
    difference = (batched - looped).abs().max().item()
    print(f"{label:28s} batched {batched_median * 1e3:8.1f} ms   loop {loop_median * 1e3:8.1f} ms   "
          f"ratio {loop_median / batched_median:5.2f}x   max |loss difference| {difference:.2e}")


def main() -> None:
    args = parse_arguments()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    config = config_module.resolve(["spsa-reference-code"], ["model.widths=[1000]", "train.device=cpu"])
    runtime = Runtime(device=torch.device("cpu"), precision=args.precision)
    stage = build_network(config, (1, 28, 28)).stage(1)
    objective = make_objective(config.loss)

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2 * args.batch_size, 1, 28, 28, generator=generator)  # (2B, C, H, W), both views
    n, size = args.perturbations, config.spsa.perturbation
    print(f"{2 * n} settings, {2 * args.batch_size} images each, {args.precision}, {args.threads} thread(s), "
          f"median of {args.repeats}")

    weight = stage.layer.linear.weight.detach()
    directions = rademacher(n, weight.shape, generator).float()
    settings = {"linear.weight": torch.cat([weight + size * directions, weight - size * directions])}
    compare("digital layer (vmap)", stage.layer, stage.head, objective, x, settings, runtime, args.repeats)

    device = AnalogMatVec(784, 1000, programming_noise=0.0, read_noise=0.0)
    settings = {"weight": torch.cat([device.weight.detach() + size * directions, device.weight.detach() - size * directions])}
    compare("analog device (matmul)", device, stage.head, objective, x, settings, runtime, args.repeats)


if __name__ == "__main__":
    main()
