"""Representations of a frozen backbone, computed once per checkpoint and reused by every probe."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class Features:
    """Representations of one layer for the train and test images, (N, D) float32 each."""

    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor
    test_labels: torch.Tensor


@torch.inference_mode()
def extract(
    hidden: Callable[[torch.Tensor, tuple[int, ...]], dict[int, torch.Tensor]],
    images: torch.Tensor,
    layers: tuple[int, ...],
    *,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    batch_size: int = 1024,
) -> dict[int, torch.Tensor]:
    """Run `hidden` over `images` in batches and return {layer: (N, D) float32} for each layer."""
    chunks: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, images.shape[0], batch_size):
        x = prepare(images[start : start + batch_size])
        with autocast():
            outputs = hidden(x, layers)
        for layer in layers:
            chunks[layer].append(outputs[layer].float())
    return {layer: torch.cat(parts) for layer, parts in chunks.items()}


def backbone_features(
    backbone: nn.Module,
    dataset,
    layers: tuple[int, ...],
    *,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[int, Features]:
    """Compute train and test representations of `layers` with the backbone in eval mode."""
    was_training = backbone.training
    backbone.eval()
    try:
        train = extract(backbone.hidden, dataset.train_images, layers, prepare=prepare, autocast=autocast)
        test = extract(backbone.hidden, dataset.test_images, layers, prepare=prepare, autocast=autocast)
    finally:
        backbone.train(was_training)
    return {
        layer: Features(train[layer], test[layer], dataset.train_labels, dataset.test_labels) for layer in layers
    }
