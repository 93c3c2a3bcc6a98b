"""Convolutional blocks and the adapter that feeds a block's feature map to a projector.

A block is one physical layer of the CNNs of Laydevant et al. (2023), appendix C.2 and C.3: a
convolution with stride 1 and same padding, then ReLU, then BatchNorm2d, then 2x2 max-pooling. The adapter is a
trainable 1x1 convolution followed by a spatial mean (the paper) or sum (the authors' code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrozenStatsBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that always normalises with its running statistics and never updates them.

    Freshly built, the running mean is 0 and the running variance 1, so the layer computes
    gamma * x / sqrt(1 + eps) + beta in training and evaluation alike: a learned per-channel affine
    map. This is what the authors' code effectively trained, because it kept every model in eval mode.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, momentum=0.0, eps=self.eps
        )


def make_batchnorm(channels: int, mode: str) -> nn.BatchNorm2d:
    """Return a BatchNorm2d for `mode` "train" (batch statistics in training) or "frozen" (initial statistics)."""
    if mode == "train":
        return nn.BatchNorm2d(channels)
    if mode == "frozen":
        return FrozenStatsBatchNorm2d(channels)
    raise ValueError(f"invalid batchnorm mode {mode!r}; expected train or frozen")


class ConvBlock(nn.Module):
    """Conv2d (stride 1, same padding) -> ReLU -> BatchNorm2d -> MaxPool2d(2); (B, C, H, W) -> (B, C', H/2, W/2)."""

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel_size: int = 5, bias: bool = True, batchnorm: str = "train"
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.norm = make_batchnorm(out_channels, batchnorm)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(torch.relu(self.conv(x)))  # (B, C', H, W)
        return F.max_pool2d(h, 2)  # (B, C', H // 2, W // 2)


class ConvAdapter(nn.Module):
    """A trainable 1x1 convolution to `width` channels, then a spatial mean or sum; (B, C, H, W) -> (B, width).

    The reduction is applied first and the 1x1 convolution's weights second, as one Linear layer on
    the reduced map. Both steps are linear, so the result equals conv-then-reduce up to rounding,
    at 1/(H*W) of the cost. For the authors' 8192-wide CIFAR-10 adapter on the first block (16x16
    maps, 512 images per step) that saves 1.4e11 multiply-adds per forward pass. With `pool="sum"`
    the bias is added H*W times, as a summed convolution output would have it.
    """

    def __init__(self, in_channels: int, width: int, *, pool: str = "mean") -> None:
        super().__init__()
        if pool not in ("mean", "sum"):
            raise ValueError(f"invalid adapter pool {pool!r}; expected mean or sum")
        # The authors' code gives the 1x1 convolution a bias. The paper's text does not specify one.
        self.conv = nn.Conv2d(in_channels, width, 1, bias=True)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2] * x.shape[-1]
        reduced = x.sum(dim=(2, 3)) if self.pool == "sum" else x.mean(dim=(2, 3))  # (B, C)
        bias = self.conv.bias * size if self.pool == "sum" else self.conv.bias
        return F.linear(reduced, self.conv.weight.flatten(1), bias)  # (B, width)
