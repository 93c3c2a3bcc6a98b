"""Barlow Twins (Zbontar et al., ICML 2021) as a pure function, with the paper authors' variant.

Standard form (official code): each view is standardised per feature over the batch as a
non-affine BatchNorm would do it (biased variance, eps = 1e-5 inside the root), the
cross-correlation is C = z_a^T z_b / N, and the loss is sum_i (1 - C_ii)^2 + lambda * sum_{i!=j} C_ij^2
with lambda = 5.1e-3.

The authors' SPSA notebooks used a variant: unbiased std with 1e-6 added outside the root, the
off-diagonal entries raised to the 4th power, and lambda = 5e-3.
"""

from __future__ import annotations

import torch


def standardise(z: torch.Tensor, *, std: str = "biased") -> torch.Tensor:
    """Centre and scale each feature over the batch; `std` is "biased" (BatchNorm) or "unbiased"."""
    centred = z - z.mean(dim=0)
    if std == "biased":
        return centred / torch.sqrt(z.var(dim=0, unbiased=False) + 1e-5)
    if std == "unbiased":
        return centred / (z.std(dim=0, unbiased=True) + 1e-6)
    raise ValueError(f"invalid std={std!r}; expected 'biased' or 'unbiased'")


def cross_correlation(z_a: torch.Tensor, z_b: torch.Tensor, *, std: str = "biased") -> torch.Tensor:
    """Cross-correlation matrix of the standardised views, (N, D) x 2 -> (D, D)."""
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(
            f"expected two embeddings of the same shape (N, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}"
        )
    n = z_a.shape[0]
    return standardise(z_a, std=std).T @ standardise(z_b, std=std) / n


def barlow_twins_terms(
    z_a: torch.Tensor, z_b: torch.Tensor, *, std: str = "biased", off_diagonal_power: int = 2
) -> dict[str, torch.Tensor]:
    """Return the unweighted on-diagonal and off-diagonal terms."""
    c = cross_correlation(z_a, z_b, std=std)
    diagonal = c.diagonal()
    off_diagonal = c.abs().pow(off_diagonal_power).sum() - diagonal.abs().pow(off_diagonal_power).sum()
    return {"on_diagonal": (1 - diagonal).pow(2).sum(), "off_diagonal": off_diagonal}


def barlow_twins_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    *,
    lambda_off_diagonal: float = 5.1e-3,
    off_diagonal_power: int = 2,
    std: str = "biased",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Barlow Twins loss of two views' embeddings (N, D) each; returns (total, unweighted terms)."""
    terms = barlow_twins_terms(z_a, z_b, std=std, off_diagonal_power=off_diagonal_power)
    return terms["on_diagonal"] + lambda_off_diagonal * terms["off_diagonal"], terms
