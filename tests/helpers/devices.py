"""A user-style device factory, importable as `helpers.devices:make_square_law_layer` in configs."""

import math

import torch

from pnn_ssl.physics import FunctionLayer


def make_square_law_layer(in_features: int, out_features: int, *, seed: int) -> FunctionLayer:
    """Build a black box that outputs the square of (W x), with W drawn from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(in_features)
    weight = torch.rand(out_features, in_features, generator=generator) * 2 * bound - bound

    def square_law(x, parameters):
        return (x.flatten(1) @ parameters["weight"].T).square()

    return FunctionLayer(square_law, {"weight": weight})
