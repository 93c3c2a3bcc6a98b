"""Physical non-idealities and physical layers: noise, pruning, the black-box layer interface and simulated devices."""

from pnn_ssl.physics.analog import AnalogMatVec
from pnn_ssl.physics.layer import FunctionLayer, PhysicalLayer
from pnn_ssl.physics.noise import ActivationNoise, WeightNoise, relative_change
from pnn_ssl.physics.pruning import magnitude_keep_masks, neuron_keep_mask

__all__ = [
    "ActivationNoise",
    "AnalogMatVec",
    "FunctionLayer",
    "PhysicalLayer",
    "WeightNoise",
    "magnitude_keep_masks",
    "neuron_keep_mask",
    "relative_change",
]
