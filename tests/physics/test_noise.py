"""Weight and activation noise: exact zero levels, requested statistics, seeded draws."""

import pytest
import torch

from pnn_ssl.physics import ActivationNoise, WeightNoise, relative_change


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_weight_noise_zero_std_is_exact_copy():
    weight = torch.randn(5, 7, generator=_generator(0))
    noisy = WeightNoise(0.0).draw(weight, _generator(1))
    assert torch.equal(noisy, weight)
    assert noisy is not weight


def test_weight_noise_matches_requested_std():
    # 400k samples: the sample std is within 0.2 % of the true one at about 1 sigma.
    noise = WeightNoise(0.3).draw(torch.zeros(400_000), _generator(0))
    assert noise.std().item() == pytest.approx(0.3, rel=0.01)
    assert abs(noise.mean().item()) < 5 * 0.3 / 400_000**0.5


def test_relative_weight_noise_scales_with_weight_std():
    weight = torch.cat([torch.full((100_000,), 2.0), torch.full((100_000,), -2.0)])  # std 2
    noise = WeightNoise(0.1, relative=True)
    assert noise.scale(weight) == pytest.approx(0.2, rel=1e-4)
    assert (noise.draw(weight, _generator(0)) - weight).std().item() == pytest.approx(0.2, rel=0.01)


def test_weight_noise_same_seed_same_draw():
    weight = torch.randn(50, 50, generator=_generator(0))
    first = WeightNoise(0.1).draw(weight, _generator(3))
    second = WeightNoise(0.1).draw(weight, _generator(3))
    other = WeightNoise(0.1).draw(weight, _generator(4))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_relative_change_hand_computed():
    before = [torch.tensor([1.0, -2.0]), torch.tensor([[4.0]])]
    after = [torch.tensor([1.5, -2.0]), torch.tensor([[3.0]])]
    # (0.5 + 0 + 1) / (1 + 2 + 4) * 100
    assert relative_change(before, after) == pytest.approx(150.0 / 7.0)


def test_relative_change_of_zero_weights_raises():
    with pytest.raises(ValueError, match="undefined"):
        relative_change([torch.zeros(3)], [torch.ones(3)])


def test_activation_noise_redrawn_every_call():
    h = torch.zeros(1000)
    noise = ActivationNoise(0.5, "activation")
    generator = _generator(0)
    first, second = noise(h, generator), noise(h, generator)
    assert not torch.equal(first, second)
    assert first.std().item() == pytest.approx(0.5, rel=0.1)


def test_activation_noise_zero_std_returns_input():
    h = torch.randn(4, 3)
    assert ActivationNoise(0.0, "pre-activation")(h, _generator(0)) is h


def test_noise_rejects_invalid_values():
    with pytest.raises(ValueError, match="invalid activation noise site"):
        ActivationNoise(0.1, "output")
    with pytest.raises(ValueError, match="invalid weight noise std"):
        WeightNoise(-0.1)
    with pytest.raises(ValueError, match="invalid activation noise std"):
        ActivationNoise(float("nan"))
