"""Layer-wise training: equivalence with end to end, exact freezing, local gradients, coefficients, CIFAR CNN."""

import re

import numpy as np
import pytest
import torch

from helpers.datafiles import write_cifar_batches
from pnn_ssl import config as config_module
from pnn_ssl import runs
from pnn_ssl.config import LossConfig
from pnn_ssl.models import mlp_network
from pnn_ssl.training import end_to_end, layerwise
from pnn_ssl.training.layerwise import Phase, layer_coefficients, plan_phases, stage_embeddings
from pnn_ssl.training.runtime import setup_runtime

TINY_CNN = ["model.architecture=cnn", "model.channels=[4, 8]", "model.projector_widths=[16, 16]"]


def _quiet(_line: str) -> None:
    pass


def _model_state(folder, name="last.pt"):
    return torch.load(folder / "checkpoints" / name, weights_only=True)["model"]


def _metric_values(folder):
    return [(row["epoch"], row["metric"], row["value"]) for row in runs.metrics_csv(folder).read() if row["metric"] != "seconds"]


# ---------------------------------------------------------------------------------------------
# Depth-dependent coefficients.


def _sigmoid(layer, scale, slope, threshold, bias):
    return scale / (1.0 + np.exp(-slope * (layer - threshold))) + bias


def test_sigmoid_coefficients_match_mlp_values():
    coefficients = layer_coefficients(LossConfig(coefficient_schedule="sigmoid"), 4)
    sim, std, cov = (np.round([row[term] for row in coefficients], 2) for term in range(3))
    # The values printed by the authors' layer-wise MLP run, and the formula written out here.
    assert sim.tolist() == [10.44, 11.90, 17.30, 30.00]
    assert std.tolist() == [25.0, 25.0, 25.0, 25.0]
    assert cov.tolist() == [0.12, 0.50, 0.88, 0.98]
    layers = np.arange(1, 5)
    assert np.allclose(sim, np.round(_sigmoid(layers, 40, 1.5, 4, 10), 2))
    assert np.allclose(cov, np.round(_sigmoid(layers, 1, 2, 2, 0), 2))


def test_sigmoid_coefficients_cnn_mnist_parameters():
    loss = LossConfig(
        coefficient_schedule="sigmoid",
        sigmoid_scale=(20, 20, 1),
        sigmoid_slope=(3, 0, 2),
        sigmoid_threshold=(1, 3, 2),
        sigmoid_bias=(10, 15, 0),
    )
    (sim_1, std_1, cov_1), (sim_2, std_2, cov_2) = layer_coefficients(loss, 2)
    assert round(sim_1, 2) == 20.00
    assert round(sim_2, 2) == 29.05
    assert std_1 == std_2 == 25.0
    assert round(cov_1, 3) == 0.119
    assert cov_2 == 0.5


def test_constant_coefficients_are_the_config_values():
    assert layer_coefficients(LossConfig(sim_coeff=3.0, std_coeff=4.0, cov_coeff=5.0), 3) == [(3.0, 4.0, 5.0)] * 3


# ---------------------------------------------------------------------------------------------
# Phases and gradients.


def test_phases_of_each_mode():
    sequential = plan_phases("sequential", 3, 5)
    assert [(p.first_epoch, p.last_epoch, p.trained, p.losses, p.detach) for p in sequential] == [
        (1, 5, (1,), (1,), True),
        (6, 10, (2,), (2,), True),
        (11, 15, (3,), (3,), True),
    ]
    (simultaneous,) = plan_phases("simultaneous", 3, 5)
    assert (simultaneous.last_epoch, simultaneous.trained, simultaneous.losses, simultaneous.detach) == (5, (1, 2, 3), (1, 2, 3), True)
    (end_to_end,) = plan_phases("end-to-end", 3, 5)
    assert (end_to_end.trained, end_to_end.losses, end_to_end.detach) == ((1, 2, 3), (3,), False)


def _three_stage_network():
    torch.manual_seed(0)
    return mlp_network(784, (16, 16, 16), (8, 8), head_stages=(1, 2, 3))


def _grads(network, number):
    return [parameter.grad for parameter in network.stage(number).layer.parameters()]


def test_simultaneous_loss_gives_no_gradient_to_earlier_stages():
    network = _three_stage_network()
    phase = Phase("stages 1-3", 1, 1, (1, 2, 3), (1, 2, 3), True)
    embeddings = stage_embeddings(network, torch.rand(6, 1, 28, 28), phase)
    embeddings[3].square().sum().backward()
    assert all(grad is None for grad in _grads(network, 1))
    assert all(grad is None for grad in _grads(network, 2))
    assert all(grad is not None for grad in _grads(network, 3))


def test_end_to_end_loss_reaches_every_stage():
    network = _three_stage_network()
    phase = Phase("end-to-end", 1, 1, (1, 2, 3), (3,), False)
    stage_embeddings(network, torch.rand(6, 1, 28, 28), phase)[3].square().sum().backward()
    assert all(grad is not None for grad in _grads(network, 1))


def test_sequential_prefix_builds_no_graph():
    network = _three_stage_network()
    phase = Phase("stage 3/3", 1, 1, (3,), (3,), True)
    embeddings = stage_embeddings(network, torch.rand(6, 1, 28, 28), phase)
    assert set(embeddings) == {3}
    embeddings[3].square().sum().backward()
    assert all(grad is None for grad in _grads(network, 1) + _grads(network, 2))


def test_begin_phase_freezes_other_stages(small_overrides):
    config = config_module.resolve(["paper"], [*small_overrides, "train.mode=sequential"])
    network = _three_stage_network()
    runtime = setup_runtime("cpu", "fp32")
    optimizer = layerwise.begin_phase(network, plan_phases("sequential", 3, 1)[1], config, runtime)
    optimised = {id(parameter) for group in optimizer.param_groups for parameter in group["params"]}
    assert optimised == {id(parameter) for parameter in network.stage(2).parameters()}
    assert not any(parameter.requires_grad for parameter in network.stage(1).parameters())
    assert all(parameter.requires_grad for parameter in network.stage(2).parameters())


# ---------------------------------------------------------------------------------------------
# Whole runs on tiny MNIST-format files.


def test_one_stage_layerwise_equals_end_to_end(tmp_path, small_overrides):
    overrides = [*small_overrides, "model.widths=[32]", "probe.layers=[1]", "train.epochs=2"]
    end_to_end.train(config_module.resolve(["paper"], overrides), runs.claim_run_folder(tmp_path / "e2e"), log=_quiet)
    sequential = config_module.resolve(["paper"], [*overrides, "train.mode=sequential"])
    layerwise.train(sequential, runs.claim_run_folder(tmp_path / "layerwise"), log=_quiet)

    expected = list(_model_state(tmp_path / "e2e").values())
    actual = list(_model_state(tmp_path / "layerwise").values())
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        assert torch.equal(a, b)


def test_staged_end_to_end_equals_core(tmp_path, small_overrides):
    overrides = [*small_overrides, "train.epochs=2"]
    end_to_end.train(config_module.resolve(["paper"], overrides), runs.claim_run_folder(tmp_path / "e2e"), log=_quiet)
    # The CLI sends an end-to-end MLP to the core trainer, so this calls the staged trainer directly.
    layerwise.train(config_module.resolve(["paper"], overrides), runs.claim_run_folder(tmp_path / "staged"), log=_quiet)

    expected = list(_model_state(tmp_path / "e2e").values())
    actual = list(_model_state(tmp_path / "staged").values())
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        assert torch.equal(a, b)


def test_finished_stage_stays_fixed(tmp_path, small_overrides):
    overrides = [*small_overrides, *TINY_CNN, "train.mode=sequential", "train.epochs=2", "train.keep_every=1"]
    folder = runs.claim_run_folder(tmp_path / "run")
    layerwise.train(config_module.resolve(["paper"], overrides), folder, log=_quiet)

    after_stage_1 = _model_state(folder, "epoch-0002.pt")
    after_stage_2 = _model_state(folder, "epoch-0004.pt")
    first_stage = [key for key in after_stage_1 if key.startswith("stages.0.")]
    assert "stages.0.layer.norm.running_mean" in first_stage  # BatchNorm statistics are covered too
    for key in first_stage:
        assert torch.equal(after_stage_1[key], after_stage_2[key]), key
    assert not torch.equal(after_stage_1["stages.1.layer.conv.weight"], after_stage_2["stages.1.layer.conv.weight"])
    assert not torch.equal(_model_state(folder, "epoch-0000.pt")["stages.0.layer.conv.weight"], after_stage_1["stages.0.layer.conv.weight"])


def test_sequential_interval_probes_read_current_stage(tmp_path, small_overrides):
    overrides = [*small_overrides, "train.mode=sequential", "train.epochs=2", "train.probe_every=1"]
    results = layerwise.train(config_module.resolve(["paper"], overrides), runs.claim_run_folder(tmp_path / "run"), log=_quiet)

    assert set(results["probes"]) == {"epoch-1", "epoch-3", "epoch-4"}
    assert set(results["probes"]["epoch-1"]) == {"layer-1"}
    assert set(results["probes"]["epoch-3"]) == {"layer-2"}
    assert set(results["probes"]["epoch-4"]) == {"layer-1", "layer-2"}
    assert set(results["seconds_per_epoch"]) == {"stage-1", "stage-2"}


def test_resume_inside_stage_equals_uninterrupted(tmp_path, small_overrides):
    overrides = [*small_overrides, "train.mode=sequential", "train.epochs=3", "probe.layers=[2]"]
    config = config_module.resolve(["paper"], overrides)
    layerwise.train(config, runs.claim_run_folder(tmp_path / "whole"), log=_quiet)

    def interrupt_in_second_epoch_of_stage_two(line: str) -> None:
        if line.startswith("stage 2/2  epoch    2/3"):
            raise KeyboardInterrupt

    interrupted = runs.claim_run_folder(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        layerwise.train(config, interrupted, log=interrupt_in_second_epoch_of_stage_two)
    assert torch.load(interrupted / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 4
    layerwise.train(config, interrupted, resume=True, log=_quiet)

    whole, resumed = _model_state(tmp_path / "whole"), _model_state(interrupted)
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    assert _metric_values(tmp_path / "whole") == _metric_values(interrupted)


def test_simultaneous_run_records_every_stage(tmp_path, small_overrides):
    overrides = [*small_overrides, "train.mode=simultaneous", "train.epochs=2", "train.probe_every=1",
                 "loss.coefficient_schedule=sigmoid"]
    folder = runs.claim_run_folder(tmp_path / "run")
    lines = []
    results = layerwise.train(config_module.resolve(["paper"], overrides), folder, log=lines.append)

    assert results["status"] == "completed"
    assert set(results["probes"]) == {"epoch-1", "epoch-2"}
    assert set(results["probes"]["epoch-2"]) == {"layer-1", "layer-2"}
    assert results["probes"]["epoch-2"]["layer-1"]["adam"]["n"] == 2
    metrics = {row["metric"] for row in runs.metrics_csv(folder).read()}
    assert {"loss", "stage1_loss", "stage2_loss_covariance", "stage2_embedding_std"} <= metrics
    assert any(line.startswith("stages 1-2  epoch    2/2") for line in lines)
    (first,) = [line for line in lines if line.startswith("stages 1-2  epoch    1/2")]
    assert re.search(r"  \d+s left$", first)
    (last,) = [line for line in lines if line.startswith("stages 1-2  epoch    2/2")]
    assert last.endswith(" s")


def test_cifar_cnn_runs_on_tiny_cifar_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (96, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, 96)
    write_cifar_batches(tmp_path / "cifar", images[:64], labels[:64], images[64:], labels[64:])
    overrides = [
        f"data.data_dir={tmp_path / 'cifar'}", "data.download=false", "model.channels=[4, 4, 4, 4]",
        "model.projector_widths=[16, 16]", "train.epochs=1", "train.batch_size=32", "train.device=cpu",
        "probe.epochs=1", "probe.repeats=2", "probe.lbfgs_max_iter=5",
    ]
    config = config_module.resolve(["layerwise-cnn-cifar10"], overrides)
    folder = runs.claim_run_folder(tmp_path / "run")
    results = layerwise.train(config, folder, log=_quiet)

    assert results["status"] == "completed"
    assert results["epochs_completed"] == 4
    assert set(results["probes"]["epoch-4"]) == {"layer-1", "layer-2", "layer-3", "layer-4"}
    assert set(results["seconds_per_epoch"]) == {"stage-1", "stage-2", "stage-3", "stage-4"}
    state = _model_state(folder)
    assert state["stages.0.layer.conv.weight"].shape == (4, 3, 5, 5)
    assert state["stages.3.head.0.conv.weight"].shape == (16, 4, 1, 1)


# ---------------------------------------------------------------------------------------------
# Presets and config checks.

LAYERWISE_PRESETS = (
    "layerwise-mlp",
    "layerwise-mlp-reference-code",
    "layerwise-cnn-mnist",
    "layerwise-cnn-mnist-reference-code",
    "layerwise-cnn-cifar10",
    "layerwise-cnn-cifar10-reference-code",
    "end-to-end-cnn-cifar10",
)


@pytest.mark.parametrize("name", LAYERWISE_PRESETS)
def test_layerwise_presets_resolve(name):
    config = config_module.resolve([name, "smoke"])
    assert config_module.uses_staged_trainer(config)
    assert config.train.epochs == 2


def test_reference_code_presets_match_authors_runs():
    mlp = config_module.resolve(["layerwise-mlp-reference-code"])
    assert (mlp.train.epochs, mlp.train.lr, mlp.model.bias, mlp.loss.coefficient_schedule) == (200, 1e-4, False, "sigmoid")
    cnn = config_module.resolve(["layerwise-cnn-mnist-reference-code"])
    assert (cnn.train.lr, cnn.model.adapter_pool, cnn.model.batchnorm, cnn.model.projector_widths) == (5e-4, "sum", "frozen", (256, 256))
    sim, _, _ = zip(*layer_coefficients(cnn.loss, 2))
    assert [round(value, 2) for value in sim] == [20.00, 29.05]
    cifar = config_module.resolve(["layerwise-cnn-cifar10-reference-code"])
    assert cifar.model.projector_widths == (8192, 8192)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.mode=sequential", "loss.objective=cross-entropy"], "support only vicreg and barlow-twins"),
        (["train.mode=sequential", "loss.coefficient_schedule=sigmoid", "loss.objective=barlow-twins"], "use loss.objective=vicreg"),
        (["model.architecture=cnn", "train.compile=true"], "invalid train.compile=true"),
        (["model.architecture=cnn", "model.channels=[2, 2, 2, 2, 2]"], "use at most 4 layers"),
        (["model.kernel_size=4"], "invalid model.kernel_size=4"),
        (["train.mode=greedy"], "invalid train.mode='greedy'"),
        (["model.architecture=cnn", "probe.layers=[3]"], "hidden layers are numbered 1..2"),
    ],
)
def test_invalid_layerwise_configs_raise(overrides, message):
    with pytest.raises(config_module.ConfigError, match=message):
        config_module.resolve(["paper"], overrides)

