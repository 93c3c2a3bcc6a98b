"""A simulated analog matrix-vector multiplier (an in-memory computing crossbar) as a physical layer.

The device computes y = ReLU(G x + b + read noise), where G contains the programmed conductances. The
three non-idealities act as follows. Weights and outputs share the units of the digital layer that
the device replaces: a weight of 0.03 means the conductance that multiplies an input by 0.03.

- Limited range and precision (acts on the weights): each target weight is clipped to
  [-w_max, w_max] and rounded to the nearest of `levels` evenly spaced conductances in that range.
  This is deterministic.
- Programming noise (acts on the weights): each programmed conductance gets an independent Gaussian
  error with std `programming_noise * w_max`. It is drawn each time a weight setting is written:
  once per setting in every `run` or `run_batched` call, and in `forward` once after every change
  of the stored weights. This models a device that stays as programmed until it is written again.
- Read noise (acts on the pre-activations): every output element of every read gets an independent
  Gaussian with the absolute std `read_noise`, in output units, drawn at every evaluation.

A bias, when present, is stored as one more column of G with a constant input of 1, so it goes
through the same quantisation and programming noise.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pnn_ssl.physics.layer import PhysicalLayer


class AnalogMatVec(PhysicalLayer):
    """Analog matrix-vector multiplier with a ReLU readout, (B, ...) -> (B, out_features).

    `weight` (out, in) and `bias` (out,) are the target values that a trainer updates. They are
    initialised like `nn.Linear`, U(-1/sqrt(in), 1/sqrt(in)). Noise comes from a generator seeded
    with `seed` and created on the device of the first input.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = False,
        weight_range: float = 0.1,
        levels: int = 64,
        programming_noise: float = 0.02,
        read_noise: float = 0.01,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if weight_range <= 0 or levels == 1 or levels < 0 or programming_noise < 0 or read_noise < 0:
            raise ValueError(
                f"invalid analog device settings: weight_range={weight_range} (must be > 0), levels={levels} "
                f"(0 or at least 2), programming_noise={programming_noise} and read_noise={read_noise} (must be >= 0)"
            )
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.register_parameter("bias", nn.Parameter(torch.empty(out_features).uniform_(-bound, bound)) if bias else None)
        self.weight_range = weight_range
        self.levels = levels
        self.programming_noise = programming_noise
        self.read_noise = read_noise
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._programmed: tuple[tuple, torch.Tensor] | None = None  # (parameter versions, conductances)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}, bias={self.bias is not None}, "
            f"weight_range={self.weight_range}, levels={self.levels}, programming_noise={self.programming_noise}, "
            f"read_noise={self.read_noise}"
        )

    def generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    def quantise(self, target: torch.Tensor) -> torch.Tensor:
        """Clip to [-w_max, w_max] and round to the nearest of `levels` evenly spaced values (0 levels: clip only)."""
        clipped = target.clamp(-self.weight_range, self.weight_range)
        if self.levels == 0:
            return clipped
        step = 2 * self.weight_range / (self.levels - 1)
        return torch.round((clipped + self.weight_range) / step) * step - self.weight_range

    def program(self, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        """Return the conductances written for (..., out, in) weights, with the bias as a last column."""
        target = parameters["weight"]
        if self.bias is not None:
            target = torch.cat([target, parameters["bias"].unsqueeze(-1)], dim=-1)
        if target.ndim == 2:
            return self._program_one(target)
        # One setting at a time: the whole stack at once runs several times slower on a CPU,
        # because each elementwise step then streams tens of MB through memory.
        conductances = torch.empty(target.shape, device=target.device)
        for index, setting in enumerate(target.flatten(0, -3)):
            conductances.view(-1, *target.shape[-2:])[index] = self._program_one(setting)
        return conductances

    def _program_one(self, target: torch.Tensor) -> torch.Tensor:
        conductances = self.quantise(target.float())
        if self.programming_noise:
            noise = torch.randn(conductances.shape, generator=self.generator(conductances.device), device=conductances.device)
            conductances.add_(noise.mul_(self.programming_noise * self.weight_range))
        return conductances

    def read(self, x: torch.Tensor, conductances: torch.Tensor) -> torch.Tensor:
        """Multiply x (..., B, in) by conductances (..., out, in), add read noise and apply the ReLU.

        Leading dimensions broadcast, so one input batch can pass through a stack of settings.
        """
        x = x.flatten(-3) if x.ndim >= 4 else x  # images (..., C, H, W) become vectors
        if self.bias is not None:
            x = torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)
        y = torch.matmul(x, conductances.to(x.dtype).transpose(-1, -2)).float()
        if self.read_noise:
            y = y + torch.randn(y.shape, generator=self.generator(y.device), device=y.device) * self.read_noise
        return torch.relu(y)

    def run(self, x: torch.Tensor, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.read(x, self.program(parameters))

    def run_batched(self, x: torch.Tensor, parameters: dict[str, torch.Tensor], *, stacked_input: bool) -> torch.Tensor:
        return self.read(x, self.program(parameters))  # (P, B, in) or a shared (B, in) broadcasts over P

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Read the device as it was last programmed, and program it again only when the weights changed."""
        with torch.no_grad():
            versions = tuple((p.data_ptr(), p._version) for p in self.parameters())
            if self._programmed is None or self._programmed[0] != versions:
                self._programmed = (versions, self.program(self.current_parameters()))
            return self.read(x, self._programmed[1])
