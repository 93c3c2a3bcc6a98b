"""The interface between a trainer and a physical layer whose forward pass is a black box.

A physical layer is an `nn.Module` whose trained values are ordinary `nn.Parameter`s: the digital
copy that an optimiser updates and that checkpoints store. The device itself is reached only through
`run`: it sets the device to the given parameter values, sends a batch through it and returns what
the device outputs. A trainer may call `run` and read its output, but never its gradient, so a
gradient-free rule such as SPSA is the only way to train it (`pnn_ssl.training.zeroth_order`).

A user plugs in their own device by subclassing `PhysicalLayer` and implementing `run`, or by
wrapping a function in `FunctionLayer`. Either can simulate the device, or send the parameters and
the inputs to an instrument and read the outputs back.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class PhysicalLayer(nn.Module):
    """A layer evaluated only forward, with its parameters passed in explicitly.

    Subclasses implement `run`. A device that can evaluate many parameter settings in one call (a
    simulation, or hardware with parallel copies) also overrides `run_batched`, whose default
    loops over the settings.

    Every call of `run` and `run_batched` made by this package happens under `torch.no_grad()`, with
    detached parameter tensors, so no autograd graph reaches the device.
    """

    def run(self, x: torch.Tensor, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        """Program `parameters` ({name: tensor shaped like the parameter}) and return the output for x, (B, ...) -> (B, D)."""
        raise NotImplementedError(f"{type(self).__name__} must implement run(x, parameters)")

    def run_batched(self, x: torch.Tensor, parameters: dict[str, torch.Tensor], *, stacked_input: bool) -> torch.Tensor:
        """Evaluate P parameter settings, {name: (P, *shape)}, and return (P, B, D).

        With `stacked_input`, x is (P, B, ...) and setting p gets x[p]. Otherwise all settings get
        the same x, (B, ...).
        """
        count = next(iter(parameters.values())).shape[0]
        outputs = []
        for index in range(count):
            setting = {name: value[index] for name, value in parameters.items()}
            outputs.append(self.run(x[index] if stacked_input else x, setting))
        return torch.stack(outputs)

    def current_parameters(self) -> dict[str, torch.Tensor]:
        """Return the stored parameter values, detached, as `run` takes them."""
        return {name: parameter.detach() for name, parameter in self.named_parameters()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the device output for the stored parameters; no gradient flows through it."""
        with torch.no_grad():
            return self.run(x, self.current_parameters())


class FunctionLayer(PhysicalLayer):
    """A physical layer around a plain function `function(x, parameters) -> output`.

    `parameters` gives the initial value of each trained tensor by name. The function may simulate
    a device, or send the parameters and the batch to an instrument and return what it measures, as
    a tensor on the device of x. It is called once per parameter setting.
    """

    def __init__(self, function: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor],
                 parameters: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.function = function
        for name, value in parameters.items():
            self.register_parameter(name, nn.Parameter(value.detach().clone()))

    def run(self, x: torch.Tensor, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.function(x, parameters)
