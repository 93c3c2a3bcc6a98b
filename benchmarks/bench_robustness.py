"""Side-by-side timing of the robustness suite's batched probe against one probe at a time.

The suite trains the Adam probe of Laydevant et al. (2023) (batch 64, lr 1e-3) on M feature matrices of one shape,
one per perturbed network, with R repeats each. Three ways to do the same work, all through
`train_adam_probes` so that the arithmetic is the same:

- one at a time: M * R calls with one probe each;
- repeats batched: M calls with R probes each (what `adam_probes` did for a single network);
- all batched: one call with M * R probes, as `pnn-ssl robustness` runs a group.

A fourth line, "autograd, repeats batched", is the training loop that `adam_probes` ran before the
closed-form version: autograd through `F.cross_entropy` on 10 unpadded classes, M calls of R probes.

The features are ReLU outputs of a random Gaussian, rounded to bfloat16 as in a bf16 run and
stored as bfloat16 (as the suite stores them) or float32 (`--float32`). Each way runs `--epochs`
epochs (default 1) and the time is extrapolated to the paper's 20 epochs. All three run in this one
process, alternating, and the script prints the ratios. Run:

    OMP_NUM_THREADS=1 python benchmarks/bench_robustness.py [--members 8] [--repeats 2] [--epochs 1]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from pnn_ssl.evaluation.probes import train_adam_probes


def make_features(members: int, n: int, d: int, *, float32: bool) -> torch.Tensor:
    """Return (members, n, d) non-negative features with bfloat16 values."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(members, n, d, generator=generator).relu_().bfloat16()
    return features.float() if float32 else features


def time_probes(features: torch.Tensor, labels: torch.Tensor, members_per_call: int, repeats_per_call: int, repeats: int, epochs: int) -> float:
    """Train `repeats` probes on every matrix, `members_per_call` matrices and `repeats_per_call` probes per call; return seconds."""
    started = time.perf_counter()
    for start in range(0, features.shape[0], members_per_call):
        for _ in range(repeats // repeats_per_call):
            train_adam_probes(
                features[start : start + members_per_call],
                labels,
                repeats=repeats_per_call,
                epochs=epochs,
                batch_size=64,
                lr=1e-3,
                generator=torch.Generator().manual_seed(0),
            )
    return time.perf_counter() - started


def time_autograd_probes(features: torch.Tensor, labels: torch.Tensor, repeats: int, epochs: int) -> float:
    """Train `repeats` probes per matrix with autograd and cross-entropy, one matrix per call; return seconds."""
    started = time.perf_counter()
    n, d = features.shape[1:]
    for matrix in features:
        x = matrix.float()
        generator = torch.Generator().manual_seed(0)
        bound = d**-0.5
        weight = ((torch.rand(repeats, d, 10, generator=generator) * 2 - 1) * bound).requires_grad_()
        bias = ((torch.rand(repeats, 10, generator=generator) * 2 - 1) * bound).requires_grad_()
        optimizer = torch.optim.Adam([weight, bias], lr=1e-3, fused=True)
        for _ in range(epochs):
            order = torch.stack([torch.randperm(n, generator=generator) for _ in range(repeats)])
            for start in range(0, n, 64):
                index = order[:, start : start + 64]
                logits = torch.baddbmm(bias.unsqueeze(1), x[index], weight)
                loss = F.cross_entropy(logits.flatten(0, 1), labels[index].flatten(), reduction="none")
                optimizer.zero_grad(set_to_none=True)
                loss.view(repeats, -1).mean(1).sum().backward()
                optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8, help="feature matrices, one per perturbed network (default 8)")
    parser.add_argument("--repeats", type=int, default=2, help="probes per matrix (default 2)")
    parser.add_argument("--epochs", type=int, default=1, help="probe epochs measured; times are scaled to 20 (default 1)")
    parser.add_argument("--train", type=int, default=60000, help="training images (default 60000, MNIST)")
    parser.add_argument("--width", type=int, default=1000, help="feature dimension (default 1000)")
    parser.add_argument("--float32", action="store_true", help="store the features as float32 instead of bfloat16")
    args = parser.parse_args()

    torch.set_flush_denormal(True)
    features = make_features(args.members, args.train, args.width, float32=args.float32)
    labels = torch.randint(0, 10, (args.train,), generator=torch.Generator().manual_seed(1))
    scale = 20 / args.epochs
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.members} matrices of "
        f"({args.train}, {args.width}) {features.dtype}, {args.repeats} repeats, {args.epochs} epoch(s) measured, scaled to 20"
    )

    ways = {
        "one at a time": (1, 1),
        "repeats batched": (1, args.repeats),
        "all batched": (args.members, args.repeats),
    }
    seconds = {name: time_probes(features, labels, members, per_call, args.repeats, args.epochs) * scale for name, (members, per_call) in ways.items()}
    seconds["autograd, repeats batched"] = time_autograd_probes(features, labels, args.repeats, args.epochs) * scale
    probes = args.members * args.repeats
    baseline = seconds["one at a time"]
    for name, value in seconds.items():
        print(f"{name:<26} {value:7.1f} s for {probes} probes   {value / probes:5.2f} s per probe   {baseline / value:4.1f}x")


if __name__ == "__main__":
    main()
