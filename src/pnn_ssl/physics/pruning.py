"""Pruning of a physical layer: whole neurons by their mean activation, single weights by magnitude.

Pruning is deterministic: the masks depend only on the trained network and, for neurons, on the
statistics of the training set. A pruned neuron or weight is set to exactly zero, as a device would
leave out the element.
"""

from __future__ import annotations

import torch

PRUNING_SCOPES = ("global", "layer")


def neuron_keep_mask(mean_activation: torch.Tensor, threshold: float) -> torch.Tensor:
    """Return a boolean mask that keeps the neurons whose mean activation is at least `threshold`.

    Where: on a layer's neurons (for a convolutional layer, its channels). A removed neuron outputs 0.
    Scale: `threshold` is in the units of the activations, compared with the neuron's mean ReLU output
    over the training set (`mean_activation`, shape (D,)). A neuron is removed when its mean is
    strictly below the threshold, so threshold 0 removes nothing.
    When: computed once from the unperturbed network, before the probe is trained.
    """
    if not threshold >= 0:
        raise ValueError(f"invalid neuron pruning threshold {threshold!r}; it must be 0 or greater")
    return mean_activation >= threshold


def magnitude_keep_masks(weights: list[torch.Tensor], sparsity: float, scope: str = "global") -> list[torch.Tensor]:
    """Return boolean masks that remove the `sparsity` fraction of weights of smallest magnitude.

    Where: every entry of the given weight tensors (not the biases).
    Scale: `sparsity` is the fraction of entries removed, round(sparsity * n) of them. With
    `scope="global"` the n entries of all tensors are ranked together, so one magnitude threshold
    applies to every layer. With `scope="layer"` each tensor loses that fraction of its own entries.
    Ties in magnitude are broken by position, so exactly that many entries are removed.
    When: computed once from the trained weights, before the probe is trained.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"invalid weight sparsity {sparsity!r}; it must lie in [0, 1]")
    if scope not in PRUNING_SCOPES:
        raise ValueError(f"invalid pruning scope {scope!r}; expected one of {', '.join(PRUNING_SCOPES)}")
    if scope == "layer":
        return [_smallest_removed(weight.abs().flatten(), sparsity).view(weight.shape) for weight in weights]
    keep = _smallest_removed(torch.cat([weight.abs().flatten() for weight in weights]), sparsity)
    sizes = [weight.numel() for weight in weights]
    return [part.view(weight.shape) for part, weight in zip(keep.split(sizes), weights)]


def _smallest_removed(magnitudes: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Return a keep mask over the flat `magnitudes` that is False for the round(sparsity * n) smallest."""
    count = round(sparsity * magnitudes.numel())
    keep = torch.ones_like(magnitudes, dtype=torch.bool)
    if count > 0:
        order = torch.sort(magnitudes.float(), stable=True).indices
        keep[order[:count]] = False
    return keep
