"""VICReg (Bardes, Ponce and LeCun, ICLR 2022) as pure functions of two batches of embeddings.

Normalisation convention: the one of the official VICReg code (facebookresearch/vicreg,
`main_vicreg.py`), which the paper's authors also used:

- invariance: mean squared error over all N*D entries;
- variance: hinge on the per-feature standard deviation, sqrt(unbiased variance + eps) with
  eps = 1e-4 inside the root, averaged over features and then **averaged** over the two views;
- covariance: squared off-diagonal entries of the (N-1)-normalised covariance, summed, divided by D,
  and **summed** over the two views.
"""

from __future__ import annotations

import torch


def _check_pair(z_a: torch.Tensor, z_b: torch.Tensor) -> None:
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(
            f"expected two embeddings of the same shape (N, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}"
        )
    if z_a.shape[0] < 2:
        raise ValueError(f"VICReg needs a batch of at least 2 samples per view, got N={z_a.shape[0]}")


def invariance(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between the two views' embeddings, (N, D) x 2 -> scalar."""
    return (z_a - z_b).pow(2).mean()


def variance(z: torch.Tensor, *, eps: float = 1e-4, target: float = 1.0) -> torch.Tensor:
    """Mean over features of relu(target - std_d), std_d = sqrt(unbiased var_d + eps); (N, D) -> scalar."""
    std = torch.sqrt(z.var(dim=0, unbiased=True) + eps)
    return torch.relu(target - std).mean()


def covariance(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariance entries divided by D; (N, D) -> scalar."""
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)  # (D, D)
    off_diagonal = cov.pow(2).sum() - cov.diagonal().pow(2).sum()
    return off_diagonal / d


def vicreg_terms(z_a: torch.Tensor, z_b: torch.Tensor) -> dict[str, torch.Tensor]:
    """Return the three unweighted terms, with the two-view conventions of the official code."""
    _check_pair(z_a, z_b)
    return {
        "invariance": invariance(z_a, z_b),
        "variance": 0.5 * (variance(z_a) + variance(z_b)),
        "covariance": covariance(z_a) + covariance(z_b),
    }


def vicreg_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    *,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg loss of two views' embeddings (N, D) each; returns (total, unweighted terms)."""
    terms = vicreg_terms(z_a, z_b)
    total = sim_coeff * terms["invariance"] + std_coeff * terms["variance"] + cov_coeff * terms["covariance"]
    return total, terms
