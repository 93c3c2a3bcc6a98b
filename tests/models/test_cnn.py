"""CNN blocks, frozen-statistics BatchNorm and the 1x1-conv adapter against independent formulas."""

import pytest
import torch
import torch.nn.functional as F

from pnn_ssl.models import ConvAdapter, ConvBlock, FrozenStatsBatchNorm2d


def _random_affine(norm: torch.nn.BatchNorm2d, generator: torch.Generator) -> None:
    with torch.no_grad():
        norm.weight.copy_(torch.randn(norm.num_features, generator=generator))
        norm.bias.copy_(torch.randn(norm.num_features, generator=generator))


def test_frozen_batchnorm_is_affine_map():
    generator = torch.Generator().manual_seed(0)
    norm = FrozenStatsBatchNorm2d(3)
    _random_affine(norm, generator)
    norm.train()
    x = torch.randn(4, 3, 5, 5, generator=generator)

    expected = norm.weight.view(1, 3, 1, 1) * x / (1.0 + 1e-5) ** 0.5 + norm.bias.view(1, 3, 1, 1)
    assert torch.allclose(norm(x), expected, atol=1e-6)


def test_frozen_batchnorm_keeps_initial_statistics():
    norm = FrozenStatsBatchNorm2d(3).train()
    norm(torch.randn(8, 3, 4, 4) * 5 + 2)
    assert torch.equal(norm.running_mean, torch.zeros(3))
    assert torch.equal(norm.running_var, torch.ones(3))


def test_train_batchnorm_uses_batch_statistics():
    block = ConvBlock(1, 2, kernel_size=3, batchnorm="train").train()
    x = torch.randn(16, 1, 6, 6)
    h = block.norm(torch.relu(block.conv(x)))
    assert torch.allclose(h.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5)


def test_conv_block_matches_formula_and_shape():
    generator = torch.Generator().manual_seed(1)
    block = ConvBlock(1, 4, kernel_size=5, batchnorm="frozen")
    _random_affine(block.norm, generator)
    x = torch.randn(2, 1, 28, 28, generator=generator)

    output = block(x)

    relu = torch.relu(F.conv2d(x, block.conv.weight, block.conv.bias, padding=2))
    affine = block.norm.weight.view(1, 4, 1, 1) * relu / (1.0 + 1e-5) ** 0.5 + block.norm.bias.view(1, 4, 1, 1)
    assert output.shape == (2, 4, 14, 14)
    assert torch.allclose(output, F.max_pool2d(affine, 2), atol=1e-5)


@pytest.mark.parametrize("pool", ["mean", "sum"])
def test_adapter_equals_conv_then_reduce(pool):
    adapter = ConvAdapter(3, 8, pool=pool)
    x = torch.randn(2, 3, 7, 7)
    maps = F.conv2d(x, adapter.conv.weight, adapter.conv.bias)  # (2, 8, 7, 7)
    expected = maps.sum(dim=(2, 3)) if pool == "sum" else maps.mean(dim=(2, 3))
    assert torch.allclose(adapter(x), expected, rtol=1e-5, atol=1e-5)


def test_adapter_sum_is_mean_times_spatial_size():
    mean_adapter = ConvAdapter(3, 8, pool="mean")
    sum_adapter = ConvAdapter(3, 8, pool="sum")
    sum_adapter.load_state_dict(mean_adapter.state_dict())
    x = torch.randn(2, 3, 4, 4)
    # A power-of-two size scales every rounding step exactly, so the factor 16 is exact.
    assert torch.equal(sum_adapter(x), mean_adapter(x) * 16)
    x = torch.randn(2, 3, 7, 7)
    assert torch.allclose(sum_adapter(x), mean_adapter(x) * 49, rtol=1e-5, atol=1e-5)


def test_invalid_modes_raise():
    with pytest.raises(ValueError, match="invalid adapter pool 'max'"):
        ConvAdapter(3, 8, pool="max")
    with pytest.raises(ValueError, match="invalid batchnorm mode 'eval'"):
        ConvBlock(1, 2, batchnorm="eval")
