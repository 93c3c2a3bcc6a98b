"""SPSA: gradient estimates from forward passes only, written into `.grad` for the usual optimisers.

Simultaneous perturbation stochastic approximation (Spall, IEEE Trans. Automatic Control 37(3),
1992) estimates the gradient of a loss L(theta) from loss values alone. Step k (0-based within a
stage) does the following:

- draw n directions delta_1..delta_n with independent Rademacher entries (+1 or -1 with
  probability 1/2), one entry per trained parameter element;
- evaluate L+_i = L(theta + c_k delta_i) and L-_i = L(theta - c_k delta_i) on the same views
  (common random numbers), with c_k = c / (k + 1)^gamma;
- estimate g = (1/n) sum_i (L+_i - L-_i) / (kappa c_k) * delta_i, using 1/delta = delta for +-1
  entries. kappa = 2 is Spall's estimator, whose mean is the gradient up to O(c_k^2). kappa = 1
  is the authors' code, whose estimates are twice as large;
- write g into `.grad` and let the optimiser step with learning rate a_k = lr ((A + 1) / (A + k + 1))^alpha,
  which is Spall's a / (A + k + 1)^alpha with a chosen so that a_0 = lr.

Loss evaluations per step: 2n. Each one is a forward pass of both views of the batch (2B images)
through the trained layer and its fixed projector. The frozen layers below run once per set of views
(once with shared views, n times with a fresh pair per direction), because they are not perturbed.

With `spsa.evaluation=batched` the 2n parameter settings are stacked, (2n, *shape), and evaluated
in one forward: `torch.func.vmap` over a digital layer, or `PhysicalLayer.run_batched` for a
physical one. The projector and the loss run on the (2n, 2B, D) stack at once.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, vmap

from pnn_ssl.config import LossConfig, SPSAConfig
from pnn_ssl.physics.layer import PhysicalLayer

Evaluation = tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]  # totals (P,), terms {name: (P,)}, embedding std (P,)

# Denominator factor kappa of each estimator convention.
ESTIMATOR_FACTORS = {"spall": 2.0, "reference-code": 1.0}


# ---------------------------------------------------------------------------------------------
# Gain schedules and the estimator.


def perturbation_size(spsa: SPSAConfig, step: int) -> float:
    """Return c_k = c / (k + 1)^gamma for the 0-based step k."""
    return spsa.perturbation / (step + 1) ** spsa.perturbation_decay


def learning_rate(lr: float, spsa: SPSAConfig, step: int) -> float:
    """Return a_k = lr ((A + 1) / (A + k + 1))^alpha for the 0-based step k, so that a_0 = lr."""
    return lr * ((spsa.stability + 1) / (spsa.stability + step + 1)) ** spsa.step_decay


def rademacher(count: int, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Return `count` tensors of `shape` with entries +1 or -1, each with probability 1/2; (count, *shape) int8.

    int8 keeps the draw and the memory small: int64 draws took 3x longer for a 1000x784 layer.
    """
    bits = torch.randint(0, 2, (count, *shape), generator=generator, device=generator.device, dtype=torch.int8)
    return bits.mul_(2).sub_(1)


def spsa_gradient(losses: torch.Tensor, directions: torch.Tensor, size: float, estimator: str) -> torch.Tensor:
    """Average the n two-sided estimates; losses (2n,) as [L+_1..L+_n, L-_1..L-_n], directions (n, *shape).

    Returns a float32 tensor of the directions' shape.
    """
    n = directions.shape[0]
    if losses.shape != (2 * n,):
        raise ValueError(f"expected {2 * n} losses (n = {n} directions, two signs each), got shape {tuple(losses.shape)}")
    scale = 1.0 / (n * ESTIMATOR_FACTORS[estimator] * size)
    differences = (losses[:n] - losses[n:]).double().tolist()
    gradient = torch.zeros(directions.shape[1:], device=directions.device)
    for difference, direction in zip(differences, directions):
        gradient.add_(direction, alpha=difference * scale)
    return gradient


def perturbed_settings(value: torch.Tensor, directions: torch.Tensor, size: float) -> torch.Tensor:
    """Return the 2n settings value + size * delta_i, then value - size * delta_i; (2n, *shape)."""
    n = directions.shape[0]
    settings = torch.empty((2 * n, *value.shape), dtype=value.dtype, device=value.device)
    torch.add(value, directions, alpha=size, out=settings[:n])
    torch.sub(value, directions, alpha=size, out=settings[n:])
    return settings


def estimate_gradient(
    parameters: dict[str, nn.Parameter],
    losses_of: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    *,
    perturbations: int,
    size: float,
    estimator: str,
    generator: torch.Generator,
) -> torch.Tensor:
    """Fill each parameter's `.grad` with an SPSA estimate and return the 2n losses.

    `losses_of` takes {name: (2n, *shape)} settings, theta + c delta_i for i = 1..n and then
    theta - c delta_i, and returns their losses, (2n,). One direction perturbs all parameters
    together, so the entries of every parameter are drawn for each direction.
    """
    directions = {name: rademacher(perturbations, p.shape, generator) for name, p in parameters.items()}
    with torch.no_grad():
        settings = {name: perturbed_settings(p.detach(), directions[name], size) for name, p in parameters.items()}
        losses = losses_of(settings).float()
    for name, p in parameters.items():
        p.grad = spsa_gradient(losses, directions[name], size, estimator).to(p.dtype)
    return losses


# ---------------------------------------------------------------------------------------------
# Losses of a stage at stacked parameter settings.


def term_weights(loss: LossConfig, coefficients: tuple[float, float, float]) -> dict[str, float]:
    """Return each loss term's coefficient; `coefficients` are the stage's VICReg (sim, std, cov)."""
    if loss.objective == "vicreg":
        sim, std, cov = coefficients
        return {"invariance": sim, "variance": std, "covariance": cov}
    if loss.objective == "barlow-twins":
        return {"on_diagonal": 1.0, "off_diagonal": loss.bt_lambda}
    raise ValueError(f"{loss.objective!r} is not an SSL objective")


def layer_outputs(layer: nn.Module, x: torch.Tensor, settings: dict[str, torch.Tensor], *, stacked_input: bool) -> torch.Tensor:
    """Return the layer's outputs at P stacked settings in one call, (P, 2B, D).

    x is (P, 2B, ...) with `stacked_input`, else (2B, ...) shared by every setting.
    """
    if isinstance(layer, PhysicalLayer):
        return layer.run_batched(x, settings, stacked_input=stacked_input)

    def call(setting: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(layer, setting, (inputs,))

    return vmap(call, in_dims=(0, 0 if stacked_input else None))(settings, x)


def batched_losses(layer, head, objective, x, settings, *, stacked_input: bool, autocast) -> Evaluation:
    """Evaluate all P settings as one forward of the stacked layer, projector and loss."""
    with autocast():
        h = layer_outputs(layer, x, settings, stacked_input=stacked_input)  # (P, 2B, D)
        z = head(h)  # (P, 2B, E)
    z_a, z_b = z.float().chunk(2, dim=1)  # (P, B, E) each
    totals, terms = vmap(objective)(z_a, z_b)
    return totals, terms, z_a.std(dim=1).mean(dim=1)


def looped_losses(layer, head, objective, x, settings, *, stacked_input: bool, autocast) -> Evaluation:
    """Evaluate the P settings one after another: P forward passes, as the authors' code does."""
    count = next(iter(settings.values())).shape[0]
    totals, stds, terms = [], [], {}
    for index in range(count):
        setting = {name: value[index] for name, value in settings.items()}
        inputs = x[index] if stacked_input else x
        with autocast():
            if isinstance(layer, PhysicalLayer):
                h = layer.run(inputs, setting)
            else:
                h = functional_call(layer, setting, (inputs,))
            z = head(h)
        z_a, z_b = z.float().chunk(2)
        total, setting_terms = objective(z_a, z_b)
        totals.append(total)
        stds.append(z_a.std(dim=0).mean())
        for name, value in setting_terms.items():
            terms.setdefault(name, []).append(value)
    return torch.stack(totals), {name: torch.stack(values) for name, values in terms.items()}, torch.stack(stds)


EVALUATIONS = {"batched": batched_losses, "loop": looped_losses}


# ---------------------------------------------------------------------------------------------
# One training step of a stage.


def make_views(context, images: torch.Tensor, spsa: SPSAConfig) -> tuple[torch.Tensor, bool]:
    """Return the views of one step and whether they are stacked per direction.

    shared: (2B, C, H, W), view a then view b. per-perturbation: (n, 2B, C, H, W), a fresh pair for
    each direction, augmented in one batched call.
    """
    copies = spsa.perturbations if spsa.views == "per-perturbation" else 1
    repeated = images.repeat(copies, *([1] * (images.ndim - 1)))  # (copies B, C, H, W)
    view_a = context.prepare(repeated, context.view).unflatten(0, (copies, -1))
    view_b = context.prepare(repeated, context.view).unflatten(0, (copies, -1))
    views = torch.cat([view_a, view_b], dim=1)  # (copies, 2B, C, H, W)
    return (views, True) if copies > 1 else (views[0], False)


def frozen_prefix(network, number: int, x: torch.Tensor, stacked: bool) -> torch.Tensor:
    """Run the stages below `number` once per set of views; they are not perturbed."""
    flat = x.flatten(0, 1) if stacked else x
    for below in range(1, number):
        flat = network.stage(below)(flat)
    return flat.unflatten(0, x.shape[:2]) if stacked else flat


def spsa_step(context, images: torch.Tensor, step: int) -> None:
    """Train the single stage of `context.phase` on one batch with an SPSA estimate and the optimiser."""
    spsa, lr = context.config.spsa, context.config.train.lr
    number = context.phase.trained[0]
    stage = context.network.stage(number)
    runtime = context.runtime

    # The frozen stages see each set of views once, and direction i shares its views between both signs.
    views, stacked = make_views(context, images, spsa)
    with torch.no_grad(), runtime.autocast():
        x = frozen_prefix(context.network, number, views, stacked)
    if stacked:
        x = torch.cat([x, x])  # (2n, 2B, ...)

    # Loss of each setting: the whole objective, or one weighted term drawn for this step.
    weights = context.term_weights[number]
    term = None
    if spsa.terms == "one-random":
        names = list(weights)
        term = names[int(torch.randint(len(names), (1,), generator=context.term_generator, device=context.term_generator.device))]
    evaluate = EVALUATIONS[spsa.evaluation]
    recorded: list[Evaluation] = []

    def losses_of(settings: dict[str, torch.Tensor]) -> torch.Tensor:
        evaluation = evaluate(stage.layer, stage.head, context.objectives[number], x, settings,
                              stacked_input=stacked, autocast=runtime.autocast)
        recorded.append(evaluation)
        totals, terms, _ = evaluation
        return totals if term is None else weights[term] * terms[term]

    # Estimate, then let the optimiser step with the scheduled learning rate.
    context.optimizer.zero_grad(set_to_none=True)
    estimate_gradient(dict(stage.layer.named_parameters()), losses_of, perturbations=spsa.perturbations,
                      size=perturbation_size(spsa, step), estimator=spsa.estimator, generator=context.perturbation_generator)
    for group in context.optimizer.param_groups:
        group["lr"] = learning_rate(lr, spsa, step)
    context.optimizer.step()

    totals, terms, embedding_std = recorded[0]
    batch = images.shape[0]
    context.record(number, totals.mean(), {name: value.mean() for name, value in terms.items()}, embedding_std.mean(), batch)
    context.totals["loss"] += totals.mean() * batch
    context.totals["learning_rate"] += learning_rate(lr, spsa, step) * batch
    context.totals["perturbation_size"] += perturbation_size(spsa, step) * batch


def steps_per_epoch(train_size: int, batch_size: int, drop_last: bool) -> int:
    """Return the number of optimiser steps of one epoch."""
    return train_size // batch_size if drop_last else math.ceil(train_size / batch_size)
