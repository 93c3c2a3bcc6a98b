"""Fully connected backbone, projector and supervised head.

The three parts stay separate so that every experiment reads the same quantities. The backbone maps
an image to a representation `h`, and any hidden layer can be read. The projector maps `h` to the
embedding `z` that the SSL loss takes, and a head or a linear probe maps `h` to class logits.
"""

from __future__ import annotations

import torch
from torch import nn


class MLPBackbone(nn.Module):
    """A stack of Linear -> ReLU layers; the representation of layer k is its ReLU output."""

    def __init__(self, in_features: int, widths: tuple[int, ...], *, bias: bool = True) -> None:
        super().__init__()
        sizes = (in_features, *widths)
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(sizes[:-1], sizes[1:]))
        self.in_features = in_features
        self.widths = tuple(widths)

    @property
    def depth(self) -> int:
        return len(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last hidden layer's representation, (B, widths[-1])."""
        h = x.flatten(1)
        for layer in self.layers:
            h = torch.relu(layer(h))
        return h

    def hidden(self, x: torch.Tensor, layers: tuple[int, ...]) -> dict[int, torch.Tensor]:
        """Return the representations of the requested 1-based layers, stopping after the deepest."""
        wanted = set(layers)
        result: dict[int, torch.Tensor] = {}
        h = x.flatten(1)
        for index, layer in enumerate(self.layers, start=1):
            h = torch.relu(layer(h))
            if index in wanted:
                result[index] = h
            if index >= max(wanted):
                break
        return result


class Projector(nn.Module):
    """Linear layers with ReLU (and optionally BatchNorm) between them and nothing after the last."""

    def __init__(
        self, in_features: int, widths: tuple[int, ...], *, bias: bool = True, batchnorm: bool = False
    ) -> None:
        super().__init__()
        sizes = (in_features, *widths)
        modules: list[nn.Module] = []
        for index, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            modules.append(nn.Linear(a, b, bias=bias))
            if index < len(widths) - 1:
                if batchnorm:
                    modules.append(nn.BatchNorm1d(b))
                modules.append(nn.ReLU())
        self.net = nn.Sequential(*modules)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class SSLModel(nn.Module):
    """Backbone plus projector, trained end to end on an SSL objective."""

    def __init__(self, backbone: MLPBackbone, projector: Projector) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the embedding z, (B, projector width)."""
        return self.projector(self.backbone(x))


class SupervisedModel(nn.Module):
    """Backbone plus a linear classification head, trained with cross-entropy."""

    def __init__(self, backbone: MLPBackbone, num_classes: int, *, bias: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.widths[-1], num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits, (B, num_classes)."""
        return self.head(self.backbone(x))
