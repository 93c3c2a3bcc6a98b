"""Staged networks: initialisation order, representations read by the probes, heads."""

import pytest
import torch

from pnn_ssl.models import MLPBackbone, Projector, cnn_network, mlp_network


def test_staged_mlp_init_equals_backbone_and_projector():
    torch.manual_seed(3)
    backbone = MLPBackbone(784, (32, 24))
    projector = Projector(24, (16, 16))
    torch.manual_seed(3)
    staged = mlp_network(784, (32, 24), (16, 16), head_stages=(2,))

    expected = [*backbone.parameters(), *projector.parameters()]
    actual = list(staged.parameters())
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        assert torch.equal(a, b)


def test_staged_mlp_hidden_matches_backbone():
    torch.manual_seed(0)
    backbone = MLPBackbone(784, (32, 24))
    torch.manual_seed(0)
    staged = mlp_network(784, (32, 24), (16,), head_stages=(1, 2))
    x = torch.rand(5, 1, 28, 28)
    expected = backbone.hidden(x, (1, 2))
    actual = staged.hidden(x, (1, 2))
    assert staged.depth == 2
    for layer in (1, 2):
        assert torch.equal(actual[layer], expected[layer])


def test_cnn_hidden_is_flattened_block_output():
    network = cnn_network(1, (4, 8), (16, 16), head_stages=(1, 2)).eval()
    x = torch.rand(3, 1, 28, 28)
    features = network.hidden(x, (1, 2))
    assert features[1].shape == (3, 4 * 14 * 14)
    assert features[2].shape == (3, 8 * 7 * 7)
    first = network.stage(1)(x)  # (3, 4, 14, 14)
    assert torch.equal(features[1], first.flatten(1))
    assert torch.equal(features[2], network.stage(2)(first).flatten(1))


def test_cnn_head_maps_to_projector_width():
    network = cnn_network(3, (4, 8), (32, 16), head_stages=(1, 2), adapter_width=12)
    h = network.stage(1)(torch.rand(2, 3, 32, 32))
    assert network.stage(1).head[0].conv.out_channels == 12
    assert network.stage(1).head(h).shape == (2, 16)


def test_heads_only_where_requested():
    network = mlp_network(784, (8, 8, 8), (4,), head_stages=(3,))
    assert network.head_stages == (3,)
    assert network.stage(1).head is None
    with pytest.raises(ValueError, match=r"head stages \[4\] do not exist; the network has stages 1..3"):
        mlp_network(784, (8, 8, 8), (4,), head_stages=(4,))
