"""The robustness suite end to end on a tiny trained run, and its building blocks."""

import csv
import shutil

import pytest
import torch

from pnn_ssl import cli, config, runs
from pnn_ssl.evaluation.features import Features
from pnn_ssl.evaluation.probes import fit_ridge_probe, probe_accuracy, ridge_probe, standardise, train_adam_probes
from pnn_ssl.evaluation.robustness import compact, weight_histogram

LEVELS = [
    "robustness.weight_noise=[0.0, 0.05]",
    "robustness.activation_noise=[0.0, 0.5]",
    "robustness.pre_activation_noise=[0.0, 0.5]",
    "robustness.neuron_pruning=[0.0, 0.5]",
    "robustness.weight_pruning=[0.0, 0.9]",
    "robustness.probe_epochs=2",
    "robustness.draws=2",
    "robustness.repeats=2",
    "robustness.threads=1",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_mnist):
    folder = tmp_path_factory.mktemp("robustness") / "run"
    overrides = ["model.widths=[24, 16]", "train.epochs=1", "train.batch_size=64", "probe.epochs=1", "probe.repeats=1",
                 "probe.converged=none", f"data.data_dir={tiny_mnist}", "data.download=false", "train.device=cpu"]
    args = ["train", "--preset", "supervised", "--preset", "smoke", "--run-dir", str(folder)]
    assert cli.main(args + [item for override in overrides for item in ("--set", override)]) == 0
    return folder


def _suite(folder, out, *extra):
    args = ["robustness", str(folder), "--out", str(out)]
    assert cli.main(args + [item for override in [*LEVELS, *extra] for item in ("--set", override)]) == 0
    with (out / "robustness.csv").open() as stream:
        return list(csv.DictReader(stream))


def _read(path):
    with path.open() as stream:
        return list(csv.DictReader(stream))


def test_suite_rows_and_zero_levels(trained_run, tmp_path):
    rows = _suite(trained_run, tmp_path / "out")
    counts = {}
    for row in rows:
        counts[row["perturbation"]] = counts.get(row["perturbation"], 0) + 1
    # noise: 2 levels x 2 draws x 2 repeats; pruning: 2 levels x 1 draw x 2 repeats
    assert counts == {"weight-noise": 8, "activation-noise": 8, "pre-activation-noise": 8, "neuron-pruning": 4, "weight-pruning": 4}
    for row in rows:
        assert float(row["delta"]) == pytest.approx(float(row["error"]) - float(row["clean_error"]), abs=1e-3)
        if float(row["level"]) == 0.0:
            assert float(row["delta"]) == 0.0, row
            assert row["error"] == row["clean_error"]


def test_suite_warns_on_unfinished_run(trained_run, tmp_path, capsys):
    folder = tmp_path / "unfinished"
    shutil.copytree(trained_run, folder)
    runs.update_results(folder, status="interrupted", epochs_completed=0)
    capsys.readouterr()
    _suite(folder, tmp_path / "out", "robustness.perturbations=[neuron-pruning]")
    assert ("robust unfinished: warning: the run's status is interrupted, so its last checkpoint (epoch 0) is measured, "
            "not a finished network") in capsys.readouterr().out.splitlines()


def test_suite_device_measures(trained_run, tmp_path):
    rows = _suite(trained_run, tmp_path / "out")
    weights = 784 * 24 + 24 * 16
    for row in rows:
        if row["perturbation"] == "weight-pruning":
            assert float(row["pruned_fraction"]) == pytest.approx(round(float(row["level"]) * weights) / weights, rel=1e-5)
        if row["perturbation"] == "weight-noise":
            assert (float(row["relative_change"]) > 0) == (float(row["level"]) > 0)
        if row["perturbation"] == "neuron-pruning" and float(row["level"]) == 0.0:
            assert float(row["pruned_fraction"]) == 0.0


def test_suite_writes_sparsity_and_histograms(trained_run, tmp_path):
    out = tmp_path / "out"
    _suite(trained_run, out, "robustness.perturbations=[neuron-pruning]", "robustness.histogram_bins=7")
    sparsity = _read(out / "sparsity.csv")
    assert [int(row["layer"]) for row in sparsity] == [1, 2]
    assert all(0.0 <= float(row["zero_fraction"]) <= 1.0 for row in sparsity)
    histograms = _read(out / "weight-histograms.csv")
    for layer, size in ((1, 784 * 24), (2, 24 * 16)):
        counts = [int(row["count"]) for row in histograms if int(row["layer"]) == layer]
        assert len(counts) == 7
        assert sum(counts) == size


def test_suite_repeats_exactly_with_same_seed(trained_run, tmp_path):
    extra = ["robustness.perturbations=[weight-noise, activation-noise]"]
    first = _suite(trained_run, tmp_path / "a", *extra)
    second = _suite(trained_run, tmp_path / "b", *extra)
    assert first == second
    other = _suite(trained_run, tmp_path / "c", *extra, "robustness.seed=1")
    assert [row["relative_change"] for row in other] != [row["relative_change"] for row in first]


def test_suite_probe_under_noise_and_ridge(trained_run, tmp_path):
    extra = ["robustness.perturbations=[activation-noise]", "robustness.probe_under_noise=true", "robustness.probe=ridge"]
    rows = _suite(trained_run, tmp_path / "out", *extra)
    assert len(rows) == 2 * 2 * 1  # ridge has one fit per device
    for row in rows:
        assert row["probe"] == "ridge"
        if float(row["level"]) == 0.0:
            assert float(row["delta"]) == 0.0


def test_plot_draws_robustness_figures(trained_run, tmp_path, capsys):
    out = tmp_path / "out"
    _suite(trained_run, out)
    assert cli.main(["plot", "--robustness", str(out)]) == 0
    names = {path.name for path in (out / "figures").iterdir()}
    for name in ("weight-noise", "activation-noise", "pre-activation-noise", "neuron-pruning", "weight-pruning",
                 "relative-change", "sparsity", "weight-histograms"):
        assert f"robustness-{name}.png" in names


def test_robustness_rejects_bad_overrides(trained_run, tmp_path, capsys):
    assert cli.main(["robustness", str(trained_run), "--set", "robustness.draw=2"]) == 2
    assert "unknown config key 'robustness.draw'" in capsys.readouterr().err
    assert cli.main(["robustness", str(trained_run), "--set", "train.epochs=2"]) == 2
    assert "only robustness.* fields" in capsys.readouterr().err
    assert cli.main(["robustness", str(trained_run), "--set", "robustness.layer=5", "--out", str(tmp_path / "x")]) == 2
    assert "hidden layers 1..2" in capsys.readouterr().err
    assert cli.main(["robustness", str(trained_run), str(trained_run)]) == 2
    assert "--out" in capsys.readouterr().err


def test_robustness_config_validation():
    with pytest.raises(config.ConfigError, match="robustness.perturbations"):
        config.resolve_robustness(["robustness.perturbations=[heat]"])
    with pytest.raises(config.ConfigError, match="robustness.weight_pruning"):
        config.resolve_robustness(["robustness.weight_pruning=[1.5]"])
    with pytest.raises(config.ConfigError, match="robustness.draws"):
        config.resolve_robustness(["robustness.draws=0"])
    assert config.resolve_robustness(["robustness.probe=ridge"]).probe == "ridge"


# ---------------------------------------------------------------------------------------------
# Building blocks.


def _features(seed: int, n: int = 120, d: int = 6) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_stacked_probes_equal_separate_training():
    labels = torch.randint(0, 3, (120,), generator=torch.Generator().manual_seed(9))
    stack = torch.stack([_features(0), _features(1)])
    kwargs = dict(repeats=2, epochs=2, batch_size=16, lr=1e-2, num_classes=3)
    weight, bias = train_adam_probes(stack, labels, generator=torch.Generator().manual_seed(4), **kwargs)
    for member in range(2):
        alone, alone_bias = train_adam_probes(stack[member : member + 1], labels, generator=torch.Generator().manual_seed(4), **kwargs)
        assert torch.allclose(weight[member], alone[0], atol=1e-6)
        assert torch.allclose(bias[member], alone_bias[0], atol=1e-6)


def test_stacked_probes_identical_features_identical_weights():
    labels = torch.randint(0, 3, (120,), generator=torch.Generator().manual_seed(9))
    stack = torch.stack([_features(0), _features(0)])
    weight, _ = train_adam_probes(stack, labels, repeats=2, epochs=1, batch_size=16, lr=1e-2,
                                  generator=torch.Generator().manual_seed(4), num_classes=3)
    assert torch.equal(weight[0], weight[1])
    assert not torch.equal(weight[0, 0], weight[0, 1])  # repeats differ


def test_probe_accuracy_broadcasts_probes_over_matrices():
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])  # (M=2, N=2, D=2)
    labels = torch.tensor([0, 1])
    weight = torch.eye(2).view(1, 1, 2, 2)  # predicts the larger feature
    bias = torch.zeros(1, 1, 2)
    assert probe_accuracy(x, labels, weight, bias).tolist() == [[100.0], [0.0]]


def test_folded_ridge_matches_standardised_solution():
    train, labels = _features(0), torch.randint(0, 3, (120,), generator=torch.Generator().manual_seed(2))
    test = _features(1, n=40)
    weight, bias = fit_ridge_probe(train, labels, alpha=0.5, num_classes=3)

    standard_train, standard_test = standardise(train.double(), test.double())
    targets = torch.nn.functional.one_hot(labels, 3).double()
    gram = standard_train.T @ standard_train + 0.5 * torch.eye(6, dtype=torch.float64)
    reference = torch.linalg.solve(gram, standard_train.T @ (targets - targets.mean(0)))
    expected = standard_test @ reference + targets.mean(0)
    assert torch.allclose(test.double() @ weight + bias, expected, atol=1e-10)
    features = Features(train, test, labels, labels[:40])
    assert ridge_probe(features, alpha=0.5, num_classes=3).probe == "ridge"


def test_weight_histogram_hand_computed():
    edges = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    weight = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
    assert weight_histogram(weight, edges).tolist() == [2, 3]


def test_compact_keeps_values_exact():
    exact = torch.tensor([1.0, 0.5, 0.0])
    assert compact(exact).dtype == torch.bfloat16
    inexact = torch.tensor([1.0 + 2**-20])
    assert compact(inexact).dtype == torch.float32


def test_suite_on_layerwise_run(tmp_path, small_overrides):
    folder = tmp_path / "layerwise"
    args = ["train", "--preset", "layerwise-mlp", "--preset", "smoke", "--set", "train.epochs=1", "--run-dir", str(folder)]
    assert cli.main(args + [item for override in small_overrides for item in ("--set", override)]) == 0
    extra = ["robustness.layer=1", "robustness.perturbations=[weight-noise, neuron-pruning]"]
    rows = _suite(folder, tmp_path / "out", *extra)
    assert {row["layer"] for row in rows} == {"1"}
    assert len(rows) == 2 * 2 * 2 + 2 * 2
    for row in rows:
        if float(row["level"]) == 0.0:
            assert float(row["delta"]) == 0.0
    weights = _read(tmp_path / "out" / "weight-histograms.csv")
    assert {int(row["layer"]) for row in weights} == {1, 2}
