"""Figures drawn from run folders: the numbers they read, the tiles they show, and `pnn-ssl plot`."""

import json

import pytest
import torch

from pnn_ssl import cli, runs
from pnn_ssl import config as config_module
from pnn_ssl.reporting import figures
from pnn_ssl.training import reprobe

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


SMALL_LAYERWISE_MLP = ["model.widths=[120, 32]", "model.projector_widths=[16]", "probe.layers=[1, 2]"]


def _fake_run(folder, state=None, config_overrides=SMALL_LAYERWISE_MLP):
    """A run folder with a config, hand-written probe results and a checkpoint of model state `state`.

    By default the checkpoint contains the freshly built network of the run's config.
    """
    runs.claim_run_folder(folder)
    config = config_module.resolve(["layerwise-mlp"], list(config_overrides))
    runs.write_config(folder, config)
    if state is None:
        state = reprobe.build_run_network(config, (1, 28, 28), 10).state_dict()
    probes = {
        "epoch-5": {"layer-1": {"adam": {"test_accuracy": [50.0], "train_accuracy": [50.0]}}},
        "epoch-10": {
            "layer-1": {
                "adam": {"test_accuracy": [90.0, 92.0], "train_accuracy": [95.0, 95.0]},
                "lbfgs": {"test_accuracy": [93.5], "train_accuracy": [99.0]},
            },
            "layer-2": {
                "adam": {"test_accuracy": [96.0, 97.0], "train_accuracy": [98.0, 99.0]},
                "lbfgs": {"test_accuracy": [97.5], "train_accuracy": [100.0]},
            },
        },
    }
    runs.update_results(folder, status="completed", probes=probes)
    runs.atomic_torch_save({"epoch": 10, "model": state, "optimizer": {}}, folder / "checkpoints" / "last.pt")
    return folder


def test_depth_errors_read_latest_checkpoint(tmp_path):
    folder = _fake_run(tmp_path / "run")
    errors = figures.read_depth_errors(folder)

    layer, mean, std, n = errors["adam"]["test"][0]
    assert (layer, mean, n) == (1, 9.0, 2)
    assert std == pytest.approx(2**0.5)
    assert errors["adam"]["train"][1] == (2, 1.5, pytest.approx(0.5**0.5), 2)
    assert errors["lbfgs"]["test"] == [(1, 6.5, 0.0, 1), (2, 2.5, 0.0, 1)]


def test_epoch_accuracies_every_checkpoint(tmp_path):
    curves = figures.read_epoch_accuracies(_fake_run(tmp_path / "run"))

    assert list(curves) == [("adam", 1), ("adam", 2), ("lbfgs", 1), ("lbfgs", 2)]
    assert curves[("adam", 1)] == [(5, 50.0, 0.0, 1), (10, 91.0, pytest.approx(2**0.5), 2)]
    assert curves[("lbfgs", 2)] == [(10, 97.5, 0.0, 1)]


def test_mlp_weights_become_image_tiles():
    tiles = figures.weight_tiles(torch.randn(120, 784))
    assert len(tiles) == 100
    assert tiles[0].shape == (28, 28)
    assert tiles[0].min() == 0.0
    assert tiles[0].max() == 1.0
    assert figures.mosaic(tiles).shape == (10 * 29 - 1, 10 * 29 - 1)
    assert figures.weight_tiles(torch.randn(5, 3 * 32 * 32))[0].shape == (32, 32, 3)


def test_cnn_filters_become_image_tiles():
    tiles = figures.weight_tiles(torch.randn(70, 3, 5, 5))
    assert len(tiles) == 64
    assert tiles[0].shape == (5, 5, 3)
    assert figures.mosaic(tiles).shape == (8 * 6 - 1, 8 * 6 - 1, 3)


def test_plot_run_writes_pngs_named_by_run(tmp_path):
    folder = _fake_run(tmp_path / "run")
    written = figures.plot_run(folder)

    assert [path.name for path in written] == ["error-vs-depth.png", "accuracy-vs-epoch.png", "first-layer-weights.png"]
    for path in written:
        assert path.parent == folder / "figures"
        assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert figures.run_title(folder) == "layerwise-mlp-paper (sequential mlp)"
    detailed = figures.run_title(folder, detail=True)
    assert detailed.startswith("layerwise-mlp-paper (sequential mlp)\nrun, ")


def test_first_layer_weight_reads_checkpoint(tmp_path):
    folder = _fake_run(tmp_path / "run")
    saved = torch.load(folder / "checkpoints" / "last.pt", weights_only=True)["model"]["stages.0.layer.linear.weight"]
    assert torch.equal(figures.first_layer_weight(folder), saved)


def test_first_layer_weight_rejects_other_network(tmp_path):
    folder = _fake_run(tmp_path / "run", {"stages.0.layer.conv.weight": torch.randn(8, 1, 5, 5)})
    path = folder / "checkpoints" / "last.pt"
    with pytest.raises(runs.RunFolderError) as caught:
        figures.plot_run(folder)
    message = str(caught.value)
    assert message.startswith(f"checkpoint {path} does not match the run's config (missing keys stages.0.layer.linear.weight")
    assert "unexpected keys stages.0.layer.conv.weight" in message
    assert not (folder / "figures" / "first-layer-weights.png").exists()


def test_first_layer_weight_rejects_empty_checkpoint(tmp_path):
    folder = _fake_run(tmp_path / "run")
    (folder / "checkpoints" / "last.pt").write_bytes(b"")
    with pytest.raises(runs.RunFolderError, match=r"last.pt is empty \(0 bytes\); restore it from a copy, or train the run again"):
        figures.first_layer_weight(folder)


def test_plot_run_without_results_raises(tmp_path):
    folder = runs.claim_run_folder(tmp_path / "empty")
    runs.write_config(folder, config_module.resolve(["paper"]))
    with pytest.raises(runs.RunFolderError, match="nothing to plot"):
        figures.plot_run(folder)


def test_plot_command_draws_layerwise_and_end_to_end(tmp_path, small_overrides, capsys):
    tiny = [item for override in [*small_overrides, "train.epochs=1"] for item in ("--set", override)]
    layerwise, end_to_end = tmp_path / "layerwise", tmp_path / "e2e"
    assert cli.main(["train", "--preset", "layerwise-mlp", "--preset", "smoke", *tiny, "--run-dir", str(layerwise)]) == 0
    assert cli.main(["train", "--preset", "smoke", *tiny, "--run-dir", str(end_to_end)]) == 0
    assert json.loads((layerwise / "results.json").read_text())["epochs_completed"] == 2

    assert cli.main(["plot", str(layerwise), str(end_to_end)]) == 0

    for folder in (layerwise, end_to_end):
        for name in ("error-vs-depth.png", "first-layer-weights.png"):
            assert (folder / "figures" / name).read_bytes().startswith(PNG_SIGNATURE)
    for name in ("compare-error-vs-depth.png", "compare-first-layer-weights.png"):
        assert (layerwise / "figures" / name).read_bytes().startswith(PNG_SIGNATURE)
    assert f"figure {layerwise / 'figures' / 'compare-error-vs-depth.png'}" in capsys.readouterr().out


def test_plot_command_rejects_non_run_folder(tmp_path, capsys):
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err
