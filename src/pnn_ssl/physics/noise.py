"""Gaussian noise models of a physical layer: static weight noise and per-pass activation noise.

Both add centred Gaussian noise and take their randomness from an explicit `torch.Generator`, so a
seed fixes every draw. They differ in when they are drawn. `WeightNoise` models programming
variability: the weights written to a device differ from the trained ones, once, and the device then
keeps them. `ActivationNoise` models read-out or thermal noise of the neurons: every forward pass
draws a fresh sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ACTIVATION_SITES = ("pre-activation", "activation")


@dataclass(frozen=True)
class WeightNoise:
    """Additive centred Gaussian noise on a layer's weight tensor, drawn once per simulated device.

    Where: every entry of the weight tensor (Linear or Conv2d weight, not the bias).
    Scale: `std` in the weights' own units when `relative` is false. When `relative` is true, the
    standard deviation is `std` times the sample std of that tensor's trained entries, so one level
    perturbs layers of different scale by the same fraction.
    When: `draw` is called once per simulated device, before the probe is trained. The device then
    keeps the perturbed weights for every forward pass.
    """

    std: float
    relative: bool = False

    def __post_init__(self) -> None:
        if not self.std >= 0:
            raise ValueError(f"invalid weight noise std {self.std!r}; it must be 0 or greater")

    def scale(self, weight: torch.Tensor) -> float:
        """Return the standard deviation, in weight units, applied to `weight`."""
        return self.std * float(weight.float().std()) if self.relative else self.std

    def draw(self, weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return a perturbed copy of `weight`; std 0 returns an exact copy and draws nothing."""
        std = self.scale(weight)
        if std == 0:
            return weight.clone()
        noise = torch.randn(weight.shape, generator=generator, device=weight.device, dtype=torch.float32)
        return (weight.float() + std * noise).to(weight.dtype)


def relative_change(original: list[torch.Tensor], perturbed: list[torch.Tensor]) -> float:
    """Return the mean relative change of the weights in %: sum |W' - W| / sum |W| * 100, pooled over tensors.

    Note: this is the ratio of the mean absolute change to the mean absolute weight, not the mean of
    elementwise |dW| / |W|. The elementwise ratio has no finite mean, because trained weights come
    arbitrarily close to 0.
    """
    change = sum(float((after.detach().double() - before.detach().double()).abs().sum()) for before, after in zip(original, perturbed))
    size = sum(float(before.detach().double().abs().sum()) for before in original)
    if size == 0:
        raise ValueError("the relative change of all-zero weights is undefined")
    return 100.0 * change / size


@dataclass(frozen=True)
class ActivationNoise:
    """Additive centred Gaussian noise on the neurons of every hidden layer, redrawn at every forward pass.

    Where: `site="pre-activation"` adds it to the output of the Linear or Conv2d map, before the
    ReLU. `site="activation"` adds it to the ReLU output. The next layer and the probe read the noisy
    value, which is neither clipped nor quantised.
    Scale: absolute, `std` in the units of the activations (the inputs are pixel values in [0, 1]).
    When: each call draws a new sample for every neuron of every image, so two passes over the same
    images give different outputs.
    """

    std: float
    site: str = "activation"

    def __post_init__(self) -> None:
        if not self.std >= 0:
            raise ValueError(f"invalid activation noise std {self.std!r}; it must be 0 or greater")
        if self.site not in ACTIVATION_SITES:
            raise ValueError(f"invalid activation noise site {self.site!r}; expected one of {', '.join(ACTIVATION_SITES)}")

    def __call__(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return `h` plus a fresh noise sample in float32; std 0 returns `h` unchanged and draws nothing."""
        if self.std == 0:
            return h
        noise = torch.randn(h.shape, generator=generator, device=h.device, dtype=torch.float32)
        return h.float() + self.std * noise
