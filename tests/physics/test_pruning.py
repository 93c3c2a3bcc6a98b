"""Neuron and magnitude pruning remove exactly the elements below the threshold."""

import pytest
import torch

from pnn_ssl.physics import magnitude_keep_masks, neuron_keep_mask


def test_neuron_mask_keeps_means_at_threshold():
    means = torch.tensor([0.0, 0.05, 0.1, 0.2])
    assert neuron_keep_mask(means, 0.1).tolist() == [False, False, True, True]


def test_neuron_mask_zero_threshold_keeps_all():
    means = torch.tensor([0.0, 0.0, 0.3])
    assert neuron_keep_mask(means, 0.0).all()


def test_global_pruning_removes_smallest_overall():
    weights = [torch.tensor([[0.3, -0.1], [0.2, 0.6]]), torch.tensor([-0.05, 0.4])]
    masks = magnitude_keep_masks(weights, 2 / 6, "global")
    assert masks[0].tolist() == [[True, False], [True, True]]
    assert masks[1].tolist() == [False, True]


def test_layer_pruning_removes_fraction_per_tensor():
    weights = [torch.tensor([0.3, -0.1, 0.2, 0.6]), torch.tensor([-0.05, 0.4])]
    masks = magnitude_keep_masks(weights, 0.5, "layer")
    assert masks[0].tolist() == [True, False, False, True]
    assert masks[1].tolist() == [False, True]


def test_pruning_breaks_ties_to_exact_count():
    masks = magnitude_keep_masks([torch.full((4,), 0.5)], 0.5)
    assert int((~masks[0]).sum()) == 2


def test_pruning_random_weights_exact_count_and_order():
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(30, 40, generator=generator), torch.randn(17, generator=generator)]
    total = sum(weight.numel() for weight in weights)
    for sparsity in (0.0, 0.25, 0.9, 1.0):
        masks = magnitude_keep_masks(weights, sparsity)
        removed = torch.cat([weight[~mask].abs() for weight, mask in zip(weights, masks)])
        kept = torch.cat([weight[mask].abs() for weight, mask in zip(weights, masks)])
        assert removed.numel() == round(sparsity * total)
        if removed.numel() and kept.numel():
            assert removed.max() <= kept.min()


def test_pruning_rejects_invalid_values():
    with pytest.raises(ValueError, match="invalid weight sparsity"):
        magnitude_keep_masks([torch.ones(3)], 1.5)
    with pytest.raises(ValueError, match="invalid pruning scope"):
        magnitude_keep_masks([torch.ones(3)], 0.5, "row")
    with pytest.raises(ValueError, match="invalid neuron pruning threshold"):
        neuron_keep_mask(torch.ones(3), -1.0)
