"""VICReg terms against values computed by hand for a 3-sample, 2-feature batch."""

import math

import pytest
import torch

from pnn_ssl.losses import covariance, invariance, variance, vicreg_loss, vicreg_terms

# Both views have per-feature unbiased variance 1/3 and an off-diagonal covariance of -1/6.
Z_A = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
Z_B = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)


def test_invariance_is_mean_over_all_entries():
    # Squared differences: 1, 0, 0, 0, 0, 1 over N * D = 6 entries.
    assert invariance(Z_A, Z_B).item() == pytest.approx(2 / 6)


def test_variance_uses_unbiased_std_with_eps_inside_root():
    expected = 1 - math.sqrt(1 / 3 + 1e-4)
    assert variance(Z_A).item() == pytest.approx(expected, rel=1e-12)
    assert variance(Z_B).item() == pytest.approx(expected, rel=1e-12)


def test_variance_hinge_is_zero_above_target():
    z = torch.tensor([[2.0, -3.0], [-2.0, 3.0]], dtype=torch.float64)
    assert variance(z).item() == 0.0


def test_covariance_sums_off_diagonal_squares_over_d():
    # Off-diagonal entries are -1/6 twice: (2 / 36) / D with D = 2.
    assert covariance(Z_A).item() == pytest.approx(1 / 36, rel=1e-12)
    assert covariance(Z_B).item() == pytest.approx(1 / 36, rel=1e-12)


def test_terms_average_variance_and_sum_covariance_over_views():
    terms = vicreg_terms(Z_A, Z_B)
    assert terms["variance"].item() == pytest.approx(1 - math.sqrt(1 / 3 + 1e-4), rel=1e-12)
    assert terms["covariance"].item() == pytest.approx(2 / 36, rel=1e-12)


def test_total_weights_terms_by_coefficients():
    total, _ = vicreg_loss(Z_A, Z_B, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0)
    expected = 25 * (2 / 6) + 25 * (1 - math.sqrt(1 / 3 + 1e-4)) + 2 / 36
    assert total.item() == pytest.approx(expected, rel=1e-12)


def test_loss_is_symmetric_in_views():
    generator = torch.Generator().manual_seed(0)
    z_a = torch.randn(16, 8, generator=generator, dtype=torch.float64)
    z_b = torch.randn(16, 8, generator=generator, dtype=torch.float64)
    assert vicreg_loss(z_a, z_b)[0].item() == pytest.approx(vicreg_loss(z_b, z_a)[0].item(), rel=1e-12)


def test_mismatched_shapes_are_rejected_with_shapes():
    with pytest.raises(ValueError, match=r"\(3, 2\) and \(3, 4\)"):
        vicreg_loss(Z_A, torch.zeros(3, 4))


def test_single_sample_batch_is_rejected():
    with pytest.raises(ValueError, match="N=1"):
        vicreg_loss(Z_A[:1], Z_B[:1])
