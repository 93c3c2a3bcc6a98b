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
    x, y = features.train, features.train_labels
    n, d = x.shape
    device = x.device
    weight, bias = _init_linear(repeats, d, num_classes, generator, device)
    optimizer = torch.optim.Adam([weight, bias], lr=lr, fused=device.type in ("cpu", "cuda"))
    curves: list[list[float]] = [[] for _ in range(repeats)]

    for _ in range(epochs):
        order = torch.stack([torch.randperm(n, generator=generator, device=device) for _ in range(repeats)])
        for start in range(0, n, batch_size):
            index = order[:, start : start + batch_size]  # (R, b)
            logits = torch.baddbmm(bias.unsqueeze(1), x[index], weight)  # (R, b, C)
            loss = F.cross_entropy(logits.flatten(0, 1), y[index].flatten(), reduction="none")
            loss = loss.view(repeats, -1).mean(1).sum()  # sum over repeats keeps their gradients apart

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        test = _evaluate(features.test, features.test_labels, weight, bias)
        for r in range(repeats):
            curves[r].append(float(test[r]))

    train = _evaluate(x, y, weight, bias)
    return ProbeResult("adam", [c[-1] for c in curves], train.tolist(), curves)


@torch.no_grad()
def _evaluate(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    correct = torch.zeros(weight.shape[0], device=x.device)
    for start in range(0, x.shape[0], 8192):
        logits = torch.einsum("nd,rdc->rnc", x[start : start + 8192], weight) + bias.unsqueeze(1)
        correct += (logits.argmax(-1) == y[start : start + 8192]).sum(-1)
    return correct / x.shape[0] * 100.0


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
def ridge_probe(features: Features, *, alpha: float = 1.0, num_classes: int = 10) -> ProbeResult:
    """Solve ridge regression onto centred one-hot targets in float64; predict by the largest output."""
    train, test = standardise(features.train.double(), features.test.double())
    targets = F.one_hot(features.train_labels, num_classes).double()
    offset = targets.mean(0)
    gram = train.T @ train + alpha * torch.eye(train.shape[1], dtype=train.dtype, device=train.device)
    weight = torch.linalg.solve(gram, train.T @ (targets - offset))  # (D, C)
    test_accuracy = float(_accuracy(test @ weight + offset, features.test_labels))
    train_accuracy = float(_accuracy(train @ weight + offset, features.train_labels))
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
