"""Networks as stacks of stages, for layer-wise training.

A stage is one physical layer (the part a physical system would implement) plus its local head.
The head (for a CNN the adapter, then the projector) turns the layer's representation into the
embedding on which the stage's own SSL loss is computed. The heads are digital and are discarded after
training. Stages are numbered from 1, like the layers that the probes read.

The builders create every physical layer first and the heads after them, in stage order. The
initial weights of an MLP staged network therefore equal those of `MLPBackbone` plus `Projector`
built after the same seed, whenever the same heads exist.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from pnn_ssl.models.cnn import ConvAdapter, ConvBlock
from pnn_ssl.models.mlp import Projector


class DenseLayer(nn.Module):
    """Linear -> ReLU on the flattened input; (B, ...) -> (B, out_features)."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x.flatten(1)))


class Stage(nn.Module):
    """One physical layer and its local head (None when no loss is computed on this stage)."""

    def __init__(self, layer: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.layer = layer
        self.register_module("head", head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the layer's representation: (B, D) for a dense layer, (B, C, H, W) for a conv block."""
        return self.layer(x)


class StagedNetwork(nn.Module):
    """A stack of stages with `depth` and `hidden` as in `MLPBackbone`, so the probes read it unchanged."""

    def __init__(self, stages: list[Stage]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)

    @property
    def depth(self) -> int:
        return len(self.stages)

    @property
    def head_stages(self) -> tuple[int, ...]:
        """The 1-based numbers of the stages that have a head."""
        return tuple(number for number, stage in enumerate(self.stages, start=1) if stage.head is not None)

    def stage(self, number: int) -> Stage:
        """Return the stage with 1-based `number`."""
        return self.stages[number - 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last stage's representation, unflattened."""
        for stage in self.stages:
            x = stage(x)
        return x

    def hidden(self, x: torch.Tensor, layers: tuple[int, ...]) -> dict[int, torch.Tensor]:
        """Return the flattened representations (B, D_k) of the requested 1-based layers, stopping after the deepest."""
        wanted = set(layers)
        result: dict[int, torch.Tensor] = {}
        for number, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if number in wanted:
                result[number] = x.flatten(1)
            if number >= max(wanted):
                break
        return result


def mlp_network(
    in_features: int,
    widths: tuple[int, ...],
    projector_widths: tuple[int, ...],
    *,
    head_stages: tuple[int, ...],
    bias: bool = True,
    projector_bias: bool = True,
    projector_batchnorm: bool = False,
    make_layer: Callable[[int, int], nn.Module] | None = None,
) -> StagedNetwork:
    """Build Linear -> ReLU stages of `widths`, with a projector on each stage in `head_stages`.

    `make_layer(in_features, out_features)` builds each layer in place of `DenseLayer`, for
    physical layers.
    """
    _check_head_stages(head_stages, len(widths))
    sizes = (in_features, *widths)
    make_layer = make_layer or (lambda a, b: DenseLayer(a, b, bias=bias))
    layers = [make_layer(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    heads = {
        number: Projector(widths[number - 1], projector_widths, bias=projector_bias, batchnorm=projector_batchnorm)
        for number in sorted(head_stages)
    }
    return _assemble(layers, heads)


def cnn_network(
    in_channels: int,
    channels: tuple[int, ...],
    projector_widths: tuple[int, ...],
    *,
    head_stages: tuple[int, ...],
    kernel_size: int = 5,
    bias: bool = True,
    batchnorm: str = "train",
    adapter_width: int = 0,
    adapter_pool: str = "mean",
    projector_bias: bool = True,
    projector_batchnorm: bool = False,
) -> StagedNetwork:
    """Build conv-block stages of `channels`, with an adapter and a projector on each stage in `head_stages`.

    The adapter maps the block output to `adapter_width` channels (0: `projector_widths[0]`), and
    the projector's Linear layers of `projector_widths` follow it, with no ReLU in between.
    """
    _check_head_stages(head_stages, len(channels))
    sizes = (in_channels, *channels)
    layers = [
        ConvBlock(a, b, kernel_size=kernel_size, bias=bias, batchnorm=batchnorm) for a, b in zip(sizes[:-1], sizes[1:])
    ]
    width = adapter_width or projector_widths[0]
    heads = {
        number: nn.Sequential(
            ConvAdapter(channels[number - 1], width, pool=adapter_pool),
            Projector(width, projector_widths, bias=projector_bias, batchnorm=projector_batchnorm),
        )
        for number in sorted(head_stages)
    }
    return _assemble(layers, heads)


def _check_head_stages(head_stages: tuple[int, ...], depth: int) -> None:
    unknown = sorted(set(head_stages) - set(range(1, depth + 1)))
    if unknown:
        raise ValueError(f"head stages {unknown} do not exist; the network has stages 1..{depth}")


def _assemble(layers: list[nn.Module], heads: dict[int, nn.Module]) -> StagedNetwork:
    return StagedNetwork([Stage(layer, heads.get(number)) for number, layer in enumerate(layers, start=1)])
