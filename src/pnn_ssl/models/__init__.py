"""Backbones, projectors and heads."""

from pnn_ssl.models.cnn import ConvAdapter, ConvBlock, FrozenStatsBatchNorm2d
from pnn_ssl.models.mlp import MLPBackbone, Projector, SSLModel, SupervisedModel
from pnn_ssl.models.stages import DenseLayer, Stage, StagedNetwork, cnn_network, mlp_network

__all__ = [
    "ConvAdapter",
    "ConvBlock",
    "DenseLayer",
    "FrozenStatsBatchNorm2d",
    "MLPBackbone",
    "Projector",
    "SSLModel",
    "Stage",
    "StagedNetwork",
    "SupervisedModel",
    "cnn_network",
    "mlp_network",
]
