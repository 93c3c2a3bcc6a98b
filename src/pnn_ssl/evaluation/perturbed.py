"""A trained backbone as a simulated device: its physical layers with noise and pruning applied.

`PerturbedNetwork` reads representations through `hidden` and `depth`, as `MLPBackbone` and
`StagedNetwork` do, so the feature extraction and the probes take it unchanged. Weight noise and
weight pruning change a copy of the weights once, when the device is built (`with_weights`).
Activation noise and neuron masks act inside every forward pass.

A physical layer is an affine map (Linear, or Conv2d for a CNN block), a ReLU, and for a CNN block
BatchNorm and 2x2 max-pooling after the ReLU. The noise sites and the neuron masks sit at the
affine output (pre-activation) and the ReLU output (activation).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pnn_ssl.models import ConvBlock, DenseLayer, MLPBackbone, StagedNetwork
from pnn_ssl.physics import ActivationNoise


@dataclass(frozen=True)
class PhysicalLayer:
    """The parts of one physical layer, split where noise and masks are inserted."""

    affine: nn.Linear | nn.Conv2d
    flatten: bool  # a Linear layer reads its input flattened to (B, D)
    after: Callable[[torch.Tensor], torch.Tensor] | None  # what follows the ReLU (CNN: BatchNorm, pooling)


def physical_layers(backbone: nn.Module) -> list[PhysicalLayer]:
    """Split an MLPBackbone or StagedNetwork into its physical layers, in order."""
    if isinstance(backbone, MLPBackbone):
        return [PhysicalLayer(layer, True, None) for layer in backbone.layers]
    if isinstance(backbone, StagedNetwork):
        return [_stage_layer(stage.layer) for stage in backbone.stages]
    raise TypeError(f"cannot split a {type(backbone).__name__} into physical layers; expected MLPBackbone or StagedNetwork")


def _stage_layer(layer: nn.Module) -> PhysicalLayer:
    if isinstance(layer, DenseLayer):
        return PhysicalLayer(layer.linear, True, None)
    if isinstance(layer, ConvBlock):
        return PhysicalLayer(layer.conv, False, lambda h: F.max_pool2d(layer.norm(h), 2))  # as ConvBlock.forward
    raise TypeError(f"unsupported physical layer {type(layer).__name__}; expected DenseLayer or ConvBlock")


def with_weights(backbone: nn.Module, transform: Callable[[int, torch.Tensor], torch.Tensor]) -> nn.Module:
    """Return a deep copy of `backbone` whose layer-k weight is `transform(k, weight)` (k from 1; biases kept)."""
    device = copy.deepcopy(backbone)
    with torch.no_grad():
        for number, part in enumerate(physical_layers(device), start=1):
            part.affine.weight.copy_(transform(number, part.affine.weight))
    return device


class PerturbedNetwork(nn.Module):
    """Physical layers of a backbone with activation noise and neuron masks applied at every pass.

    `neuron_masks` maps a 1-based layer number to a boolean keep mask over its neurons (its
    channels for a CNN block). A removed neuron's ReLU output is set to 0. `activation_noise` acts on
    every layer at its site, drawing from `generator` at every pass. With neither, the network
    computes exactly what the backbone computes.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        activation_noise: ActivationNoise | None = None,
        neuron_masks: dict[int, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if activation_noise is not None and activation_noise.std > 0 and generator is None:
            raise ValueError("activation noise needs a torch.Generator to draw from")
        self.backbone = backbone
        self.parts = physical_layers(backbone)
        self.activation_noise = activation_noise
        self.neuron_masks = neuron_masks or {}
        self.generator = generator

    @property
    def depth(self) -> int:
        return len(self.parts)

    def layer_outputs(self, x: torch.Tensor, deepest: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Yield (layer number, ReLU output, representation) for layers 1..deepest."""
        noise = self.activation_noise if self.activation_noise is not None and self.activation_noise.std > 0 else None
        for number, part in enumerate(self.parts[:deepest], start=1):
            h = part.affine(x.flatten(1) if part.flatten else x)
            if noise is not None and noise.site == "pre-activation":
                h = noise(h, self.generator)
            h = torch.relu(h)
            if noise is not None and noise.site == "activation":
                h = noise(h, self.generator)
            mask = self.neuron_masks.get(number)
            if mask is not None:
                h = h * mask.view(-1, *([1] * (h.ndim - 2))).to(h.dtype)  # (D,) or (C, 1, 1) over the batch
            x = h if part.after is None else part.after(h)
            yield number, h, x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last layer's representation, unflattened."""
        for _, _, representation in self.layer_outputs(x, self.depth):
            pass
        return representation

    def hidden(self, x: torch.Tensor, layers: tuple[int, ...]) -> dict[int, torch.Tensor]:
        """Return the flattened representations (B, D_k) of the requested 1-based layers."""
        wanted = set(layers)
        return {
            number: representation.flatten(1)
            for number, _, representation in self.layer_outputs(x, max(wanted))
            if number in wanted
        }


@dataclass(frozen=True)
class ActivationStatistics:
    """Per-layer statistics of the ReLU outputs over a set of images, layers numbered from 1."""

    mean: dict[int, torch.Tensor]  # mean activation per neuron (per channel for a CNN block), float64
    zero_fraction: dict[int, float]  # fraction of ReLU outputs that are exactly 0


@torch.inference_mode()
def read_network(
    network: PerturbedNetwork,
    images: torch.Tensor,
    layer: int,
    *,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    statistics_depth: int = 0,
    batch_size: int = 1024,
) -> tuple[torch.Tensor, ActivationStatistics]:
    """Return the representations of `layer` (N, D) float32, and ReLU statistics of layers 1..statistics_depth."""
    network.eval()
    deepest = max(layer, statistics_depth)
    features: list[torch.Tensor] = []
    sums: dict[int, torch.Tensor] = {}
    zeros: dict[int, int] = {}
    sizes: dict[int, int] = {}
    for start in range(0, images.shape[0], batch_size):
        with autocast():
            for number, h, representation in network.layer_outputs(prepare(images[start : start + batch_size]), deepest):
                if number == layer:
                    features.append(representation.flatten(1).float())
                if number <= statistics_depth:
                    per_neuron = h.double().sum(0) if h.ndim == 2 else h.double().sum(dim=(0, 2, 3))  # (D,) or (C,)
                    sums[number] = sums.get(number, 0) + per_neuron
                    zeros[number] = zeros.get(number, 0) + int((h == 0).sum())
                    sizes[number] = sizes.get(number, 0) + h.numel()
    mean = {number: total / (sizes[number] / total.numel()) for number, total in sums.items()}  # values per neuron
    zero_fraction = {number: zeros[number] / sizes[number] for number in zeros}
    return torch.cat(features), ActivationStatistics(mean, zero_fraction)
