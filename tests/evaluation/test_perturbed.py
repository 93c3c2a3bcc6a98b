"""Simulated devices: an unperturbed device equals the backbone, and noise is drawn when documented."""

import pytest
import torch

from pnn_ssl.evaluation.perturbed import PerturbedNetwork, read_network, with_weights
from pnn_ssl.models import MLPBackbone, cnn_network, mlp_network
from pnn_ssl.physics import ActivationNoise, WeightNoise


def _mlp() -> MLPBackbone:
    torch.manual_seed(0)
    return MLPBackbone(16, (12, 8, 6)).eval()


def _images(count: int = 10) -> torch.Tensor:
    return torch.rand(count, 1, 4, 4, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    "backbone",
    [
        _mlp(),
        mlp_network(16, (12, 8), (5,), head_stages=(1, 2)).eval(),
        cnn_network(1, (3, 4), (5,), head_stages=(2,), kernel_size=3).eval(),
    ],
    ids=["mlp", "staged-mlp", "staged-cnn"],
)
def test_unperturbed_device_equals_backbone(backbone):
    x = _images()
    expected = backbone.hidden(x, (1, 2))
    actual = PerturbedNetwork(backbone).hidden(x, (1, 2))
    for layer in (1, 2):
        assert torch.equal(actual[layer], expected[layer])


def test_zero_noise_levels_equal_clean():
    backbone, x = _mlp(), _images()
    clean = backbone.hidden(x, (3,))[3]
    generator = torch.Generator().manual_seed(0)
    for site in ("activation", "pre-activation"):
        network = PerturbedNetwork(backbone, activation_noise=ActivationNoise(0.0, site), generator=generator)
        assert torch.equal(network.hidden(x, (3,))[3], clean)
    copy = with_weights(backbone, lambda number, weight: WeightNoise(0.0).draw(weight, generator))
    assert torch.equal(PerturbedNetwork(copy).hidden(x, (3,))[3], clean)


def test_activation_noise_redrawn_but_weight_noise_static():
    backbone, x = _mlp(), _images()
    generator = torch.Generator().manual_seed(0)
    noisy = PerturbedNetwork(backbone, activation_noise=ActivationNoise(0.1, "activation"), generator=generator)
    assert not torch.equal(noisy.hidden(x, (3,))[3], noisy.hidden(x, (3,))[3])

    device = PerturbedNetwork(with_weights(backbone, lambda number, weight: WeightNoise(0.1).draw(weight, generator)))
    first, second = device.hidden(x, (3,))[3], device.hidden(x, (3,))[3]
    assert torch.equal(first, second)
    assert not torch.equal(first, backbone.hidden(x, (3,))[3])


def test_with_weights_leaves_original_unchanged():
    backbone = _mlp()
    before = backbone.layers[0].weight.clone()
    copy = with_weights(backbone, lambda number, weight: weight * 0)
    assert torch.equal(backbone.layers[0].weight, before)
    assert torch.count_nonzero(copy.layers[0].weight) == 0
    assert torch.equal(copy.layers[0].bias, backbone.layers[0].bias)


def test_neuron_mask_zeroes_listed_neurons():
    backbone, x = _mlp(), _images()
    mask = torch.ones(12, dtype=torch.bool)
    mask[[0, 5]] = False
    network = PerturbedNetwork(backbone, neuron_masks={1: mask})
    h = network.hidden(x, (1,))[1]
    assert torch.count_nonzero(h[:, [0, 5]]) == 0
    assert torch.equal(h[:, mask], backbone.hidden(x, (1,))[1][:, mask])


def test_read_network_statistics_hand_built():
    # One identity layer: the ReLU outputs are the inputs with negatives set to 0.
    backbone = MLPBackbone(4, (4,))
    with torch.no_grad():
        backbone.layers[0].weight.copy_(torch.eye(4))
        backbone.layers[0].bias.zero_()
    images = torch.tensor([[1.0, -1.0, 0.0, 2.0], [0.0, 0.0, 3.0, -4.0], [-1.0, 5.0, 0.0, 0.0]]).view(3, 1, 2, 2)
    features, statistics = read_network(PerturbedNetwork(backbone), images, 1, prepare=lambda x: x, statistics_depth=1, batch_size=2)
    assert features.tolist() == [[1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 3.0, 0.0], [0.0, 5.0, 0.0, 0.0]]
    assert statistics.zero_fraction[1] == pytest.approx(8 / 12)
    assert statistics.mean[1].tolist() == pytest.approx([1 / 3, 5 / 3, 1.0, 2 / 3])


def test_cnn_statistics_are_per_channel():
    network = PerturbedNetwork(cnn_network(1, (3,), (5,), head_stages=(1,), kernel_size=3).eval())
    _, statistics = read_network(network, _images(), 1, prepare=lambda x: x, statistics_depth=1)
    assert statistics.mean[1].shape == (3,)
    assert 0.0 <= statistics.zero_fraction[1] <= 1.0
