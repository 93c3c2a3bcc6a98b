"""Physical layers: the black-box interface and simulated devices."""

from pnn_ssl.physics.analog import AnalogMatVec
from pnn_ssl.physics.layer import FunctionLayer, PhysicalLayer

__all__ = ["AnalogMatVec", "FunctionLayer", "PhysicalLayer"]
