"""SPSA: the estimator against known gradients, gain schedules, batched evaluation, fixed projectors, black boxes."""

import math

import pytest
import torch
from torch import nn

from pnn_ssl import config as config_module
from pnn_ssl import runs
from pnn_ssl.config import LossConfig, SPSAConfig
from pnn_ssl.models import mlp_network
from pnn_ssl.physics import AnalogMatVec, PhysicalLayer
from pnn_ssl.training import layerwise
from pnn_ssl.training.end_to_end import load_data, make_objective, make_prepare
from pnn_ssl.training.runtime import Runtime, setup_runtime
from pnn_ssl.training.zeroth_order import (
    batched_losses,
    estimate_gradient,
    learning_rate,
    looped_losses,
    perturbation_size,
    perturbed_settings,
    rademacher,
    spsa_gradient,
    term_weights,
)

SPSA_OVERRIDES = ["train.mode=sequential", "train.optimizer_rule=spsa", "loss.objective=barlow-twins",
                  "spsa.perturbations=4", "train.precision=fp32"]


def _quiet(_line: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------
# The estimator.


def test_gradient_of_hand_computed_case():
    directions = torch.tensor([[1, -1], [1, 1]], dtype=torch.int8)  # n = 2 directions of a 2-vector
    losses = torch.tensor([5.0, 2.0, 3.0, 1.0])  # L+_1, L+_2, L-_1, L-_2
    # Spall: ((5 - 3) [1, -1] + (2 - 1) [1, 1]) / (2 * 2 * 0.5) = [3, -1] / 2.
    assert torch.equal(spsa_gradient(losses, directions, 0.5, "spall"), torch.tensor([1.5, -0.5]))
    assert torch.equal(spsa_gradient(losses, directions, 0.5, "reference-code"), torch.tensor([3.0, -1.0]))


def test_gradient_rejects_wrong_loss_count():
    with pytest.raises(ValueError, match="expected 4 losses"):
        spsa_gradient(torch.zeros(3), torch.ones(2, 5, dtype=torch.int8), 0.1, "spall")


def test_rademacher_entries_are_signs():
    directions = rademacher(50, torch.Size([40]), torch.Generator().manual_seed(0))
    assert set(directions.unique().tolist()) == {-1, 1}
    assert abs(directions.float().mean().item()) < 0.05  # 2000 draws: std of the mean is 0.022


def test_settings_are_plus_then_minus():
    value = torch.tensor([1.0, 2.0])
    directions = torch.tensor([[1, -1], [-1, -1]], dtype=torch.int8)
    settings = perturbed_settings(value, directions, 0.25)
    assert settings.tolist() == [[1.25, 1.75], [0.75, 1.75], [0.75, 2.25], [1.25, 2.25]]


def _quadratic():
    generator = torch.Generator().manual_seed(0)
    root = torch.randn(6, 6, generator=generator)
    hessian = root @ root.T + torch.eye(6)
    offset = torch.randn(6, generator=generator)
    theta = nn.Parameter(torch.randn(6, generator=generator))

    def losses_of(settings):
        t = settings["theta"]  # (2n, 6)
        return 0.5 * torch.einsum("pi,ij,pj->p", t, hessian, t) + t @ offset

    return theta, losses_of, (hessian @ theta + offset).detach()


@pytest.mark.parametrize("estimator, factor", [("spall", 1.0), ("reference-code", 2.0)])
def test_mean_estimate_matches_quadratic_gradient(estimator, factor):
    theta, losses_of, gradient = _quadratic()
    generator = torch.Generator().manual_seed(1)
    samples, n = 4000, 2
    estimates = []
    for _ in range(samples):
        estimate_gradient({"theta": theta}, losses_of, perturbations=n, size=0.3, estimator=estimator, generator=generator)
        estimates.append(theta.grad.clone())
    mean = torch.stack(estimates).mean(0)

    # On a quadratic the two-sided difference is exact, so one direction gives delta delta^T g.
    # Component j is then g_j plus noise of variance sum_{k != j} g_k^2, divided by n and by the sample count.
    noise_std = torch.sqrt((gradient.square().sum() - gradient.square()) / (n * samples))
    assert torch.all((mean - factor * gradient).abs() <= 5 * factor * noise_std), (mean, factor * gradient)


def test_optimiser_descends_on_quadratic():
    theta, losses_of, _ = _quadratic()
    optimum = theta.detach() - torch.linalg.solve(*_quadratic_system(theta, losses_of))
    optimiser = torch.optim.Adam([theta], lr=0.02)
    generator = torch.Generator().manual_seed(2)
    for _ in range(1500):
        optimiser.zero_grad()
        estimate_gradient({"theta": theta}, losses_of, perturbations=2, size=0.1, estimator="spall", generator=generator)
        optimiser.step()
    assert torch.allclose(theta.detach(), optimum, atol=0.05)


def _quadratic_system(theta, losses_of):
    """Return (H, g) of the quadratic at theta, from torch.func derivatives of the same loss."""
    single = lambda t: losses_of({"theta": t.unsqueeze(0)})[0]  # noqa: E731
    return torch.func.hessian(single)(theta.detach()), torch.func.grad(single)(theta.detach())


# ---------------------------------------------------------------------------------------------
# Gain schedules.


def test_schedules_match_spall_formulas():
    spsa = SPSAConfig(perturbation=0.01, perturbation_decay=0.101, step_decay=0.602, stability=10.0)
    assert perturbation_size(spsa, 0) == 0.01
    assert perturbation_size(spsa, 9) == pytest.approx(0.01 / 10**0.101)  # 0.0079250
    assert learning_rate(1e-3, spsa, 0) == 1e-3
    assert learning_rate(1e-3, spsa, 11) == pytest.approx(1e-3 * 0.5**0.602)  # 6.5881e-4


def test_default_schedules_are_constant():
    spsa = SPSAConfig()
    assert {perturbation_size(spsa, step) for step in (0, 10, 1000)} == {0.01}
    assert {learning_rate(1e-4, spsa, step) for step in (0, 10, 1000)} == {1e-4}


def test_schedules_take_effect_in_training(tmp_path, small_overrides):
    schedule = ["spsa.perturbation_decay=0.101", "spsa.step_decay=0.602", "spsa.stability=2.0"]
    config = config_module.resolve(["paper"], [*small_overrides, *SPSA_OVERRIDES, *schedule, "model.widths=[16]",
                                               "probe.layers=[1]", "train.epochs=2"])
    folder = runs.claim_run_folder(tmp_path / "run")
    layerwise.train(config, folder, log=_quiet)

    # 256 images in batches of 64: 4 steps per epoch, k = 0..7, weighted equally.
    rows = {(int(row["epoch"]), row["metric"]): float(row["value"]) for row in runs.metrics_csv(folder).read()}
    for epoch, steps in ((1, range(0, 4)), (2, range(4, 8))):
        expected_lr = sum(learning_rate(config.train.lr, config.spsa, k) for k in steps) / 4
        expected_size = sum(perturbation_size(config.spsa, k) for k in steps) / 4
        assert rows[(epoch, "learning_rate")] == pytest.approx(expected_lr, rel=1e-5)
        assert rows[(epoch, "perturbation_size")] == pytest.approx(expected_size, rel=1e-5)
    optimiser = torch.load(folder / "checkpoints" / "last.pt", weights_only=True)["optimizer"]
    assert optimiser["param_groups"][0]["lr"] == pytest.approx(learning_rate(config.train.lr, config.spsa, 7))


# ---------------------------------------------------------------------------------------------
# Batched evaluation.


def _stage_inputs(layer_weight_shape, stacked, count=6):
    generator = torch.Generator().manual_seed(3)
    x = torch.rand((count, 16, 1, 28, 28) if stacked else (16, 1, 28, 28), generator=generator)
    weight = torch.rand(layer_weight_shape, generator=generator) * 0.1 - 0.05
    directions = rademacher(count // 2, weight.shape, generator)
    return x, weight, directions


@pytest.mark.parametrize("stacked", [False, True])
@pytest.mark.parametrize("objective", ["barlow-twins", "vicreg"])
def test_batched_losses_equal_loop_for_digital_layer(stacked, objective):
    torch.manual_seed(0)
    stage = mlp_network(784, (24,), (8, 8), head_stages=(1,), bias=True).stage(1)
    x, _, directions = _stage_inputs((24, 784), stacked)
    settings = {name: perturbed_settings(p.detach(), rademacher(3, p.shape, torch.Generator().manual_seed(4)), 0.01)
                for name, p in stage.layer.named_parameters()}
    arguments = dict(x=x, settings=settings, stacked_input=stacked, autocast=Runtime(torch.device("cpu"), "fp32").autocast)
    loss = make_objective(LossConfig(objective=objective))
    batched = batched_losses(stage.layer, stage.head, loss, **arguments)
    looped = looped_losses(stage.layer, stage.head, loss, **arguments)
    assert torch.allclose(batched[0], looped[0], rtol=1e-5, atol=1e-6)
    for name in looped[1]:
        assert torch.allclose(batched[1][name], looped[1][name], rtol=1e-5, atol=1e-7), name
    assert torch.allclose(batched[2], looped[2], rtol=1e-5)
    assert len(set(batched[0].tolist())) == 6  # the settings really differ


@pytest.mark.parametrize("stacked", [False, True])
def test_batched_losses_equal_loop_for_analog_device(stacked):
    torch.manual_seed(0)
    device = AnalogMatVec(784, 24, bias=True, programming_noise=0.0, read_noise=0.0)
    head = mlp_network(784, (24,), (8, 8), head_stages=(1,)).stage(1).head
    x, _, _ = _stage_inputs((24, 784), stacked)
    generator = torch.Generator().manual_seed(4)
    settings = {name: perturbed_settings(p.detach(), rademacher(3, p.shape, generator), 0.01)
                for name, p in device.named_parameters()}
    arguments = dict(x=x, settings=settings, stacked_input=stacked, autocast=Runtime(torch.device("cpu"), "fp32").autocast)
    loss = make_objective(LossConfig(objective="barlow-twins"))
    batched = batched_losses(device, head, loss, **arguments)
    looped = looped_losses(device, head, loss, **arguments)
    assert torch.allclose(batched[0], looped[0], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Objectives and training runs.


def test_term_weights_of_each_objective():
    assert term_weights(LossConfig(objective="vicreg"), (15.0, 25.0, 1.5)) == {
        "invariance": 15.0, "variance": 25.0, "covariance": 1.5
    }
    assert term_weights(LossConfig(objective="barlow-twins", bt_lambda=5e-3), (25.0, 25.0, 1.0)) == {
        "on_diagonal": 1.0, "off_diagonal": 5e-3
    }


def _state(folder, name):
    return torch.load(folder / "checkpoints" / name, weights_only=True)["model"]


@pytest.mark.parametrize("extra", [
    [],
    ["loss.objective=vicreg", "spsa.terms=one-random", "train.optimizer=sgd", "train.momentum=0.9"],
    ["spsa.views=shared", "spsa.evaluation=loop", "spsa.estimator=reference-code"],
])
def test_projectors_stay_bit_identical(tmp_path, small_overrides, extra):
    config = config_module.resolve(["paper"], [*small_overrides, *SPSA_OVERRIDES, *extra, "train.keep_every=3"])
    folder = runs.claim_run_folder(tmp_path / "run")
    layerwise.train(config, folder, log=_quiet)
    before, after = _state(folder, "epoch-0000.pt"), _state(folder, "last.pt")
    heads = [name for name in before if ".head." in name]
    layers = [name for name in before if ".layer." in name]
    assert heads and layers
    for name in heads:
        assert torch.equal(before[name], after[name]), name
    for name in layers:
        assert not torch.equal(before[name], after[name]), name  # every layer was trained


def test_spsa_phase_optimises_layer_only(small_overrides):
    config = config_module.resolve(["paper"], [*small_overrides, *SPSA_OVERRIDES])
    network = mlp_network(784, (16, 16), (8, 8), head_stages=(1, 2))
    optimiser = layerwise.begin_phase(network, layerwise.plan_phases("sequential", 2, 1)[1], config, setup_runtime("cpu", "fp32"))
    optimised = {id(p) for group in optimiser.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in network.stage(2).layer.parameters()}
    assert not any(p.requires_grad for p in network.stage(2).head.parameters())


def test_sgd_optimiser_with_momentum(small_overrides):
    config = config_module.resolve(["paper"], [*small_overrides, *SPSA_OVERRIDES, "train.optimizer=sgd", "train.momentum=0.9"])
    network = mlp_network(784, (16,), (8, 8), head_stages=(1,))
    optimiser = layerwise.begin_phase(network, layerwise.plan_phases("sequential", 1, 1)[0], config, setup_runtime("cpu", "fp32"))
    assert isinstance(optimiser, torch.optim.SGD)
    assert optimiser.param_groups[0]["momentum"] == 0.9


# ---------------------------------------------------------------------------------------------
# Black-box layers.


class _GradientForbidden(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise AssertionError("a gradient was requested from the black-box layer")


class _SpyLayer(PhysicalLayer):
    """A black box that raises if autograd touches it and records how it was called."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / math.sqrt(in_features))
        self.weight.register_hook(self._forbid)
        self.calls: list[tuple[bool, bool]] = []  # (grad enabled, any input requires grad)

    @staticmethod
    def _forbid(grad):
        raise AssertionError("autograd computed a gradient for the black-box layer's weight")

    def run(self, x, parameters):
        self.calls.append((torch.is_grad_enabled(), any(value.requires_grad for value in parameters.values())))
        return torch.relu(_GradientForbidden.apply(x.flatten(1) @ parameters["weight"].T))


def test_black_box_gradient_is_never_requested(small_overrides):
    config = config_module.resolve(["paper"], [*small_overrides, *SPSA_OVERRIDES, "spsa.evaluation=loop"])
    runtime = setup_runtime("cpu", "fp32")
    dataset = load_data(config, runtime.device)
    torch.manual_seed(0)
    network = mlp_network(784, (16,), (8, 8), head_stages=(1,), make_layer=_SpyLayer)
    layer = network.stage(1).layer
    before = layer.weight.detach().clone()
    phase = layerwise.plan_phases("sequential", 1, 1)[0]
    optimiser = layerwise.begin_phase(network, phase, config, runtime)
    prepare = make_prepare(dataset, False, runtime.device)
    stats = layerwise.run_stage_epoch(network, optimiser, phase, layerwise.stage_objectives(config.loss, 1),
                                      dataset, config, runtime, prepare, 1)

    # 256 images in batches of 64 and n = 4: 4 steps of 8 calls each.
    assert len(layer.calls) == 32
    assert set(layer.calls) == {(False, False)}
    assert not torch.equal(layer.weight.detach(), before)
    assert math.isfinite(stats["loss"])
    assert not network(torch.rand(2, 1, 28, 28)).requires_grad


def test_looped_default_of_physical_layer_matches_run():
    torch.manual_seed(0)
    layer = _SpyLayer(5, 3)
    x = torch.rand(4, 5)
    settings = {"weight": torch.randn(2, 3, 5)}
    stacked = PhysicalLayer.run_batched(layer, x, settings, stacked_input=False)
    assert stacked.shape == (2, 4, 3)
    assert torch.equal(stacked[1], layer.run(x, {"weight": settings["weight"][1]}))


def test_custom_device_factory_trains(tmp_path, small_overrides):
    custom = ["physical.layer=custom", "physical.factory=helpers.devices:make_square_law_layer", "train.keep_every=3"]
    config = config_module.resolve(["paper"], [*small_overrides, *SPSA_OVERRIDES, *custom])
    folder = runs.claim_run_folder(tmp_path / "run")
    layerwise.train(config, folder, log=_quiet)
    before, after = _state(folder, "epoch-0000.pt"), _state(folder, "last.pt")
    assert not torch.equal(before["stages.0.layer.weight"], after["stages.0.layer.weight"])
    assert not torch.equal(before["stages.1.layer.weight"], after["stages.1.layer.weight"])


def test_custom_device_factory_errors_are_named(small_overrides):
    network_shape = (1, 28, 28)
    for factory, message in (("helpers.devices:missing", "could not be imported"),
                             ("torch.nn:Identity", "returned Identity, not a PhysicalLayer")):
        config = config_module.resolve(["paper"], [*small_overrides, *SPSA_OVERRIDES, "physical.layer=custom",
                                                   f"physical.factory={factory}"])
        with pytest.raises(config_module.ConfigError, match=message):
            layerwise.build_network(config, network_shape)
    with pytest.raises(config_module.ConfigError, match="physical.layer=custom needs a factory"):
        config_module.resolve(["paper"], [*SPSA_OVERRIDES, "physical.layer=custom"])
