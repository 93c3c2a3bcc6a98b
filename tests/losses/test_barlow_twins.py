"""Barlow Twins, standard and the authors' variant, against hand-computed values."""

import math

import pytest
import torch

from pnn_ssl.losses import barlow_twins_loss, barlow_twins_terms, cross_correlation

# Standardised, view A is [[1, 1], [-1, -1]] / s and view B is [[1, -1], [-1, 1]] / s.
Z_A = torch.tensor([[1.0, 2.0], [-1.0, 0.0]], dtype=torch.float64)
Z_B = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)
S2 = 1 + 1e-5  # biased variance 1 plus the BatchNorm eps


def test_cross_correlation_biased_matches_hand_values():
    c = cross_correlation(Z_A, Z_B, std="biased")
    expected = torch.tensor([[1.0, -1.0], [1.0, -1.0]], dtype=torch.float64) / S2
    torch.testing.assert_close(c, expected, rtol=1e-12, atol=0)


def test_standard_loss_squares_off_diagonal():
    total, terms = barlow_twins_loss(Z_A, Z_B, lambda_off_diagonal=5.1e-3)
    on = (1 - 1 / S2) ** 2 + (1 + 1 / S2) ** 2
    off = 2 / S2**2
    assert terms["on_diagonal"].item() == pytest.approx(on, rel=1e-12)
    assert terms["off_diagonal"].item() == pytest.approx(off, rel=1e-12)
    assert total.item() == pytest.approx(on + 5.1e-3 * off, rel=1e-12)


def test_authors_variant_uses_fourth_power_and_unbiased_std():
    # Unbiased std of [1, -1] and [2, 0] is sqrt(2), so |c_ij| = 2 / 2 / (sqrt(2) + 1e-6)^2, about 1/2:
    # a perfect correlation gives (N - 1) / N with N = 2.
    scale = 1 / (math.sqrt(2) + 1e-6) ** 2
    terms = barlow_twins_terms(Z_A, Z_B, std="unbiased", off_diagonal_power=4)
    assert terms["on_diagonal"].item() == pytest.approx((1 - scale) ** 2 + (1 + scale) ** 2, rel=1e-12)
    assert terms["off_diagonal"].item() == pytest.approx(2 * scale**4, rel=1e-12)


def test_identical_views_have_near_zero_on_diagonal_term():
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(256, 4, generator=generator, dtype=torch.float64)
    terms = barlow_twins_terms(z, z)
    assert terms["on_diagonal"].item() < 1e-8


def test_invalid_std_is_rejected():
    with pytest.raises(ValueError, match="invalid std='sample'"):
        barlow_twins_loss(Z_A, Z_B, std="sample")
