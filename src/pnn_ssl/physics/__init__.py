"""Models of physical non-idealities: weight and activation noise, neuron and weight pruning."""

from pnn_ssl.physics.noise import ActivationNoise, WeightNoise, relative_change
from pnn_ssl.physics.pruning import magnitude_keep_masks, neuron_keep_mask

__all__ = ["ActivationNoise", "WeightNoise", "magnitude_keep_masks", "neuron_keep_mask", "relative_change"]
