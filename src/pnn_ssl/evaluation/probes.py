"""Linear probes on cached representations.

Three probes, all on the same cached features of a frozen backbone:

- `adam_probes`: the protocol of Laydevant et al. (2023). A fresh Linear layer with bias is
  trained with Adam (lr 1e-3, batch 64) for a fixed number of epochs, and this is repeated with
  different initialisations and shuffles. The repeats are trained together as one batched model.
  Each repeat has its own weights and mini-batches, and since Adam acts element by element the
  repeats do not interact.
- `lbfgs_probe`: multinomial logistic regression on standardised features, full batch, L-BFGS with
  a strong-Wolfe line search; a converged, protocol-independent number.
- `ridge_probe`: closed-form ridge regression onto one-hot targets on standardised features.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from pnn_ssl.evaluation.features import Features


@dataclass
class ProbeResult:
    """Accuracies of one probe kind on one layer; lists have one entry per repeat."""

    probe: str
    test_accuracy: list[float]
    train_accuracy: list[float]
    curves: list[list[float]] = field(default_factory=list)  # test accuracy after each epoch, per repeat
    seconds: float = 0.0

    @property
    def mean(self) -> float:
        return sum(self.test_accuracy) / len(self.test_accuracy)

    @property
    def std(self) -> float:
        """Sample standard deviation over repeats (0 for a single repeat)."""
        n = len(self.test_accuracy)
        if n < 2:
            return 0.0
        return math.sqrt(sum((a - self.mean) ** 2 for a in self.test_accuracy) / (n - 1))


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Accuracy in % along the last two dims: logits (..., N, C), labels (N,) -> (...)."""
    return (logits.argmax(-1) == labels).float().mean(-1) * 100.0


def _init_linear(repeats: int, d: int, c: int, generator: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Initialise `repeats` Linear(d, c) layers as torch.nn.Linear does: U(-1/sqrt(d), 1/sqrt(d))."""
    bound = 1.0 / math.sqrt(d)
    weight = (torch.rand(repeats, d, c, generator=generator, device=device) * 2 - 1) * bound
    bias = (torch.rand(repeats, c, generator=generator, device=device) * 2 - 1) * bound
    return weight.requires_grad_(), bias.requires_grad_()


def adam_probes(
    features: Features,
    *,
    repeats: int = 3,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    generator: torch.Generator,
    num_classes: int = 10,
) -> ProbeResult:
    """Train `repeats` linear probes together with Adam on shuffled mini-batches (last batch kept)."""
    curves: list[list[float]] = [[] for _ in range(repeats)]

    def record(weight: torch.Tensor, bias: torch.Tensor) -> None:
        test = probe_accuracy(features.test.unsqueeze(0), features.test_labels, weight, bias)[0]  # (R,)
        for r in range(repeats):
            curves[r].append(float(test[r]))

    weight, bias = train_adam_probes(
        features.train.unsqueeze(0),
        features.train_labels,
        repeats=repeats,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        generator=generator,
        num_classes=num_classes,
        after_epoch=record,
    )
    train = probe_accuracy(features.train.unsqueeze(0), features.train_labels, weight, bias)[0]
    return ProbeResult("adam", [c[-1] for c in curves], train.tolist(), curves)


# Padded class count of the batched probe. On a 2-core AVX-512 CPU with torch 2.13, a
# (1536, 1000) @ (1000, 10) float32 product took 4.7 ms and (1000, 16) took 1.9 ms. Padded
# columns get a fixed -inf logit, so their softmax output, gradient and Adam update are all 0.
_PADDED_CLASSES = 16


def train_adam_probes(
    train: torch.Tensor,
    labels: torch.Tensor,
    *,
    repeats: int,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    num_classes: int = 10,
    after_epoch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train `repeats` linear probes on each of M feature matrices as one batched model.

    `train` is (M, N, D), in float32 or bfloat16 (upcast batch by batch), `labels` (N,). Repeat r
    starts from the same initialisation and sees the same mini-batch order on every one of the M
    matrices, so differences between matrices come from the features alone. The gradient of the
    mean cross-entropy over each mini-batch is computed in closed form, (softmax - one-hot) / b, and
    Adam updates every probe independently. `after_epoch(weight, bias)` is called after each epoch.
    Returns weight (M, R, D, C) and bias (M, R, C).
    """
    members, n, d = train.shape
    device = train.device
    width = max(_PADDED_CLASSES, num_classes)
    initial_weight, initial_bias = _init_linear(repeats, d, num_classes, generator, device)
    weight = torch.zeros(members, repeats, d, width, device=device)
    bias = torch.zeros(members, repeats, 1, width, device=device)
    weight[..., :num_classes] = initial_weight.detach()
    bias[..., 0, :num_classes] = initial_bias.detach()
    weight, bias = weight.view(-1, d, width), bias.view(-1, 1, width)  # (M*R, D, P), (M*R, 1, P)
    padding = torch.zeros(width, device=device)
    padding[num_classes:] = float("-inf")
    weight.grad, bias.grad = torch.zeros_like(weight), torch.zeros_like(bias)
    optimizer = torch.optim.Adam([weight, bias], lr=lr, fused=device.type in ("cpu", "cuda"))

    for _ in range(epochs):
        order = torch.stack([torch.randperm(n, generator=generator, device=device) for _ in range(repeats)])
        for start in range(0, n, batch_size):
            index = order[:, start : start + batch_size]  # (R, b)
            size = index.shape[1]
            x = train.index_select(1, index.flatten()).float().view(-1, size, d)  # (M*R, b, D)
            logits = torch.baddbmm(bias + padding, x, weight)  # (M*R, b, P)
            gradient = torch.softmax(logits, -1)
            targets = labels[index].expand(members, repeats, size).reshape(-1, size, 1)
            gradient.scatter_add_(-1, targets, torch.full_like(targets, -1.0, dtype=gradient.dtype))
            gradient.div_(size)
            torch.bmm(x.transpose(1, 2), gradient, out=weight.grad)
            torch.sum(gradient, 1, keepdim=True, out=bias.grad)
            optimizer.step()

        if after_epoch is not None:
            after_epoch(*_unpad(weight, bias, members, repeats, num_classes))
    return _unpad(weight, bias, members, repeats, num_classes)


def _unpad(weight, bias, members: int, repeats: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    d = weight.shape[1]
    return (
        weight.detach().view(members, repeats, d, -1)[..., :num_classes],
        bias.detach().view(members, repeats, -1)[..., :num_classes],
    )


@torch.no_grad()
def probe_accuracy(x: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Return the accuracy in % of every probe on every feature matrix, (M, R).

    `x` is (M, N, D) and `weight` (M, R, D, C) with `bias` (M, R, C). Either M may be 1 and is then
    broadcast, for example to test one set of probes on M noisy copies of the test features. The
    features are cast to the weights' dtype.
    """
    members = max(x.shape[0], weight.shape[0])
    correct = torch.zeros(members, weight.shape[1], device=x.device)
    for start in range(0, x.shape[1], 8192):
        chunk = x[:, start : start + 8192].to(weight.dtype).unsqueeze(1)  # (M, 1, n, D)
        logits = chunk @ weight + bias.unsqueeze(2)  # (M, R, n, C)
        correct += (logits.argmax(-1) == labels[start : start + 8192]).sum(-1)
    return correct / x.shape[1] * 100.0


def standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and scale each feature by train statistics; constant (dead) features become 0."""
    mean = train.mean(0)
    std = train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def lbfgs_probe(
    features: Features, *, l2: float = 1e-4, max_iter: int = 300, num_classes: int = 10
) -> ProbeResult:
    """Fit multinomial logistic regression on standardised features with full-batch L-BFGS."""
    train, test = standardise(features.train, features.test)
    d = train.shape[1]
    weight = torch.zeros(d, num_classes, device=train.device, requires_grad=True)
    bias = torch.zeros(num_classes, device=train.device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(train @ weight + bias, features.train_labels) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        test_accuracy = float(_accuracy(test @ weight + bias, features.test_labels))
        train_accuracy = float(_accuracy(train @ weight + bias, features.train_labels))
    return ProbeResult("lbfgs", [test_accuracy], [train_accuracy])


@torch.no_grad()
def fit_ridge_probe(
    train: torch.Tensor, labels: torch.Tensor, *, alpha: float = 1.0, num_classes: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ridge regression onto centred one-hot targets on standardised features, in float64.

    The standardisation is folded into the returned map, so raw features x give the outputs
    x @ weight + bias: weight (D, C) and bias (C,), float64. A prediction is the largest output.
    """
    mean = train.double().mean(0)
    std = train.double().std(0).clamp_min(1e-6)
    standard = (train.double() - mean) / std
    targets = F.one_hot(labels, num_classes).double()
    offset = targets.mean(0)
    gram = standard.T @ standard + alpha * torch.eye(standard.shape[1], dtype=standard.dtype, device=standard.device)
    weight = torch.linalg.solve(gram, standard.T @ (targets - offset)) / std.unsqueeze(1)  # (D, C)
    return weight, offset - mean @ weight


@torch.no_grad()
def ridge_probe(features: Features, *, alpha: float = 1.0, num_classes: int = 10) -> ProbeResult:
    """Fit the ridge probe on the train features and report its accuracy on train and test."""
    weight, bias = fit_ridge_probe(features.train, features.train_labels, alpha=alpha, num_classes=num_classes)
    weight, bias = weight.view(1, 1, *weight.shape), bias.view(1, 1, -1)
    test_accuracy = float(probe_accuracy(features.test.unsqueeze(0), features.test_labels, weight, bias))
    train_accuracy = float(probe_accuracy(features.train.unsqueeze(0), features.train_labels, weight, bias))
    return ProbeResult("ridge", [test_accuracy], [train_accuracy])


def run_probes(
    features: dict[int, Features],
    *,
    repeats: int,
    epochs: int,
    batch_size: int,
    lr: float,
    converged: str,
    lbfgs_max_iter: int,
    l2: float,
    ridge_alpha: float,
    generator: torch.Generator,
    num_classes: int = 10,
) -> dict[int, list[ProbeResult]]:
    """Run the Adam probes and the converged probe on every cached layer."""
    results: dict[int, list[ProbeResult]] = {}
    for layer, layer_features in features.items():
        started = time.perf_counter()
        adam = adam_probes(
            layer_features,
            repeats=repeats,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            generator=generator,
            num_classes=num_classes,
        )
        adam.seconds = time.perf_counter() - started
        results[layer] = [adam]

        started = time.perf_counter()
        if converged == "lbfgs":
            extra = lbfgs_probe(layer_features, l2=l2, max_iter=lbfgs_max_iter, num_classes=num_classes)
        elif converged == "ridge":
            extra = ridge_probe(layer_features, alpha=ridge_alpha, num_classes=num_classes)
        else:
            continue
        extra.seconds = time.perf_counter() - started
        results[layer].append(extra)
    return results
