"""SSL objectives as pure functions of two views' embeddings."""

from pnn_ssl.losses.barlow_twins import barlow_twins_loss, barlow_twins_terms, cross_correlation
from pnn_ssl.losses.vicreg import covariance, invariance, variance, vicreg_loss, vicreg_terms

__all__ = [
    "barlow_twins_loss",
    "barlow_twins_terms",
    "covariance",
    "cross_correlation",
    "invariance",
    "variance",
    "vicreg_loss",
    "vicreg_terms",
]
