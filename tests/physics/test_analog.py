"""The simulated analog matrix-vector multiplier: quantisation, each noise's scale and when it is drawn."""

import pytest
import torch

from pnn_ssl.physics import AnalogMatVec


def _device(**settings):
    torch.manual_seed(0)
    return AnalogMatVec(6, 4, **settings)


def test_quantise_rounds_to_levels_and_clips():
    device = _device(weight_range=0.1, levels=5)  # levels -0.1, -0.05, 0, 0.05, 0.1
    values = torch.tensor([0.03, -0.08, 0.2, 0.012, -0.3])
    assert torch.allclose(device.quantise(values), torch.tensor([0.05, -0.1, 0.1, 0.0, -0.1]))


def test_zero_levels_only_clip():
    device = _device(weight_range=0.1, levels=0)
    assert torch.equal(device.quantise(torch.tensor([0.0123, 0.5])), torch.tensor([0.0123, 0.1]))


def test_noiseless_device_equals_clean_layer():
    device = _device(bias=True, weight_range=1.0, levels=0, programming_noise=0.0, read_noise=0.0)
    x = torch.rand(5, 1, 2, 3)  # images flatten to 6 inputs
    expected = torch.relu(x.flatten(1) @ device.weight.detach().T + device.bias.detach())
    assert torch.allclose(device(x), expected, atol=1e-6)


def test_programming_noise_scale():
    device = _device(weight_range=0.1, levels=0, programming_noise=0.05)
    target = {"weight": torch.zeros(200, 500)}
    errors = device.program(target)  # every target is 0, so the conductances are the noise
    assert errors.std().item() == pytest.approx(0.05 * 0.1, rel=0.02)  # 1e5 draws: relative std error 0.2 %
    assert errors.mean().abs().item() < 1e-4


def test_read_noise_scale_and_redraw():
    device = _device(weight_range=1.0, levels=0, programming_noise=0.0, read_noise=0.01)
    with torch.no_grad():
        device.weight.fill_(0.5)  # outputs near 3, far from the ReLU's kink
    x = torch.ones(20000, 6)
    first, second = device(x), device(x)
    assert (first - 3.0).std().item() == pytest.approx(0.01, rel=0.03)
    assert not torch.equal(first, second)  # drawn again at every read


def test_forward_programs_once_until_weights_change():
    device = _device(weight_range=0.1, levels=64, programming_noise=0.05, read_noise=0.0)
    x = torch.rand(8, 6)
    first, second = device(x), device(x)
    assert torch.equal(first, second)  # the same programmed conductances
    with torch.no_grad():
        device.weight.mul_(1.0)  # an in-place update, as an optimiser step makes, programs again
    assert not torch.equal(device(x), first)


def test_run_batched_equals_each_run():
    device = _device(bias=True, programming_noise=0.0, read_noise=0.0)
    generator = torch.Generator().manual_seed(1)
    settings = {"weight": torch.randn(3, 4, 6, generator=generator) * 0.05, "bias": torch.randn(3, 4, generator=generator) * 0.05}
    x = torch.rand(3, 5, 6, generator=generator)
    stacked = device.run_batched(x, settings, stacked_input=True)
    shared = device.run_batched(x[0], settings, stacked_input=False)
    for index in range(3):
        setting = {name: value[index] for name, value in settings.items()}
        assert torch.allclose(stacked[index], device.run(x[index], setting), atol=1e-6)
        assert torch.allclose(shared[index], device.run(x[0], setting), atol=1e-6)


def test_output_carries_no_gradient():
    device = _device()
    assert device.weight.requires_grad
    assert not device(torch.rand(2, 6)).requires_grad


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="levels=1"):
        AnalogMatVec(6, 4, levels=1)
    with pytest.raises(ValueError, match="weight_range=0"):
        AnalogMatVec(6, 4, weight_range=0.0)


def test_function_layer_trains_through_spsa_estimate():
    from pnn_ssl.physics import FunctionLayer
    from pnn_ssl.training.zeroth_order import estimate_gradient

    calls = []

    def device(x, parameters):  # a black box: y = x * gain, measured without autograd
        calls.append(torch.is_grad_enabled())
        return x * parameters["gain"]

    layer = FunctionLayer(device, {"gain": torch.tensor([0.0])})
    x = torch.ones(3, 1)

    def losses_of(settings):  # (gain - 2)^2 through the device, one setting at a time
        outputs = layer.run_batched(x, settings, stacked_input=False)  # (P, 3, 1)
        return (outputs - 2.0).square().mean(dim=(1, 2))

    estimate_gradient(dict(layer.named_parameters()), losses_of, perturbations=2, size=0.1, estimator="spall",
                      generator=torch.Generator().manual_seed(0))
    # d/dg (g - 2)^2 at g = 0 is -4, and a one-parameter central difference of a quadratic is exact.
    assert torch.allclose(layer.gain.grad, torch.tensor([-4.0]))
    assert calls == [False] * 4
