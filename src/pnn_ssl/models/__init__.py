"""Backbones, projectors and heads."""

from pnn_ssl.models.mlp import MLPBackbone, Projector, SSLModel, SupervisedModel

__all__ = ["MLPBackbone", "Projector", "SSLModel", "SupervisedModel"]
