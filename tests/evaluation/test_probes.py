"""Linear probes on synthetic features with a known best accuracy."""

import pytest
import torch

from pnn_ssl.evaluation.features import Features
from pnn_ssl.evaluation.probes import ProbeResult, adam_probes, lbfgs_probe, ridge_probe, standardise


def _separable(n: int = 600, d: int = 20, classes: int = 4, seed: int = 0) -> Features:
    """Class k has feature k shifted by +6: linearly separable with a wide margin."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=generator)
    x = torch.randn(n, d, generator=generator)
    x[torch.arange(n), labels] += 6.0
    return Features(x[: n // 2], x[n // 2 :], labels[: n // 2], labels[n // 2 :])


def test_adam_probes_learn_separable_classes():
    features = _separable()
    result = adam_probes(features, repeats=3, epochs=10, batch_size=16, lr=1e-2, generator=torch.Generator().manual_seed(0), num_classes=4)
    assert len(result.test_accuracy) == 3
    assert min(result.test_accuracy) > 97.0
    assert all(len(curve) == 10 for curve in result.curves)


def test_adam_repeats_differ_but_are_reproducible():
    features = _separable()
    kwargs = dict(repeats=2, epochs=1, batch_size=64, lr=1e-3, num_classes=4)
    first = adam_probes(features, generator=torch.Generator().manual_seed(5), **kwargs)
    second = adam_probes(features, generator=torch.Generator().manual_seed(5), **kwargs)
    assert first.test_accuracy == second.test_accuracy
    assert first.curves[0] != first.curves[1] or first.train_accuracy[0] != first.train_accuracy[1]


def test_adam_repeat_matches_an_independent_linear_layer():
    # A single repeat is an nn.Linear trained with Adam on the same mini-batches.
    features = _separable(n=200, d=6, classes=3)
    generator = torch.Generator().manual_seed(2)
    result = adam_probes(features, repeats=1, epochs=2, batch_size=32, lr=1e-2, generator=generator, num_classes=3)

    replay = torch.Generator().manual_seed(2)
    bound = 1 / 6**0.5
    weight = ((torch.rand(1, 6, 3, generator=replay) * 2 - 1) * bound)[0]
    bias = ((torch.rand(1, 3, generator=replay) * 2 - 1) * bound)[0]
    layer = torch.nn.Linear(6, 3)
    with torch.no_grad():
        layer.weight.copy_(weight.T)
        layer.bias.copy_(bias)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2)
    for _ in range(2):
        order = torch.randperm(100, generator=replay)
        for start in range(0, 100, 32):
            index = order[start : start + 32]
            loss = torch.nn.functional.cross_entropy(layer(features.train[index]), features.train_labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    accuracy = (layer(features.test).argmax(1) == features.test_labels).float().mean().item() * 100
    assert result.test_accuracy[0] == pytest.approx(accuracy, abs=1e-4)


def test_lbfgs_and_ridge_probes_separate_classes():
    features = _separable()
    assert lbfgs_probe(features, num_classes=4, max_iter=100).test_accuracy[0] > 97.0
    assert ridge_probe(features, num_classes=4).test_accuracy[0] > 97.0


def test_standardise_maps_dead_features_to_zero():
    train = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    test = torch.tensor([[0.0, 2.0]])
    train_std, test_std = standardise(train, test)
    assert torch.equal(train_std[:, 0], torch.zeros(2))
    assert test_std[0, 1].item() == 0.0


def test_probe_result_statistics():
    result = ProbeResult("adam", [90.0, 92.0, 94.0], [0.0] * 3)
    assert result.mean == pytest.approx(92.0)
    assert result.std == pytest.approx(2.0)
    assert ProbeResult("lbfgs", [91.0], [0.0]).std == 0.0
