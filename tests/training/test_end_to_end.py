"""End-to-end training: determinism, resume, health checks and the run folder's files."""

import json
import re

import pytest
import torch

from pnn_ssl import config as config_module
from pnn_ssl import runs
from pnn_ssl.training.end_to_end import TrainingStopped, train


def _quiet(_line: str) -> None:
    pass


def _state(folder):
    return torch.load(folder / "checkpoints" / "last.pt", weights_only=True)


def _metric_values(folder, name="metrics.csv"):
    return [(row["epoch"], row["metric"], row["value"]) for row in runs.TidyCSV(folder / name, runs.METRIC_COLUMNS).read() if row["metric"] != "seconds"]


def test_same_seed_gives_identical_runs(tmp_path, small_overrides):
    config = config_module.resolve(["paper"], small_overrides)
    train(config, runs.claim_run_folder(tmp_path / "a"), log=_quiet)
    train(config, runs.claim_run_folder(tmp_path / "b"), log=_quiet)
    assert _metric_values(tmp_path / "a") == _metric_values(tmp_path / "b")
    first, second = _state(tmp_path / "a"), _state(tmp_path / "b")
    for key in first["model"]:
        assert torch.equal(first["model"][key], second["model"][key]), key


def test_resume_equals_uninterrupted(tmp_path, small_overrides):
    config = config_module.resolve(["paper"], small_overrides)
    lines = []
    train(config, runs.claim_run_folder(tmp_path / "whole"), log=lines.append)
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line[:12] for line in epoch_lines] == ["epoch    1/3", "epoch    2/3", "epoch    3/3"]
    assert re.search(r"  \d+s left$", epoch_lines[0])
    assert epoch_lines[2].endswith(" s")  # nothing left after the last epoch

    def interrupt_in_epoch_two(line: str) -> None:
        if line.startswith("epoch    2/"):
            raise KeyboardInterrupt

    interrupted = runs.claim_run_folder(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        train(config, interrupted, log=interrupt_in_epoch_two)
    assert _state(interrupted)["epoch"] == 1
    train(config, interrupted, resume=True, log=_quiet)

    whole, resumed = _state(tmp_path / "whole"), _state(interrupted)
    assert resumed["epoch"] == whole["epoch"] == 3
    for key in whole["model"]:
        assert torch.equal(whole["model"][key], resumed["model"][key]), key
    assert _metric_values(tmp_path / "whole") == _metric_values(interrupted)
    probe_whole = json.loads((tmp_path / "whole" / "results.json").read_text())["probes"]
    probe_resumed = json.loads((interrupted / "results.json").read_text())["probes"]
    assert probe_whole == _without_seconds(probe_resumed) or _without_seconds(probe_whole) == _without_seconds(probe_resumed)


def _without_seconds(tree):
    if isinstance(tree, dict):
        return {key: _without_seconds(value) for key, value in tree.items() if key != "seconds"}
    return tree


def test_run_folder_describes_itself(tmp_path, small_overrides):
    config = config_module.resolve(["paper"], small_overrides)
    folder = runs.claim_run_folder(tmp_path / "run")
    results = train(config, folder, log=_quiet)
    assert runs.read_config(folder) == config
    environment = json.loads((folder / "environment.json").read_text())
    assert environment["torch"] == torch.__version__
    assert results["status"] == "completed"
    assert set(results["probes"]["epoch-3"]) == {"layer-1", "layer-2"}
    assert results["probes"]["epoch-3"]["layer-2"]["adam"]["n"] == 2
    assert "lbfgs" in results["probes"]["epoch-3"]["layer-2"]


def test_supervised_run_records_head_accuracy(tmp_path, small_overrides):
    config = config_module.resolve(["supervised"], [*small_overrides, "train.epochs=2"])
    results = train(config, runs.claim_run_folder(tmp_path / "sup"), log=_quiet)
    assert 0.0 <= results["head_test_accuracy"] <= 100.0
    metrics = {(row["epoch"], row["metric"]) for row in runs.metrics_csv(tmp_path / "sup").read()}
    assert ("2", "test_accuracy") in metrics


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, small_overrides):
    config = config_module.resolve(["supervised"], [*small_overrides, "train.lr=1e30", "train.precision=fp32"])
    folder = runs.claim_run_folder(tmp_path / "nan")
    with pytest.raises(TrainingStopped, match=r"loss became nan in epoch 1; checkpoints/last.pt contains epoch 0") as stopped:
        train(config, folder, log=_quiet)
    assert "Start a new run with a smaller learning rate (--set train.lr=1e+29, now 1e+30)" in str(stopped.value)
    assert _state(folder)["epoch"] == 0
    assert json.loads((folder / "results.json").read_text())["status"] == "failed"


def test_unexpected_error_marks_run_failed(tmp_path, small_overrides, monkeypatch):
    from pnn_ssl.training import end_to_end, train_run

    def broken_epoch(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(end_to_end, "run_epoch", broken_epoch)
    folder = runs.claim_run_folder(tmp_path / "broken")
    with pytest.raises(RuntimeError, match="out of memory"):
        train_run(config_module.resolve(["paper"], small_overrides), folder, log=_quiet)
    results = json.loads((folder / "results.json").read_text())
    assert results["status"] == "failed"
    assert results["error"] == "RuntimeError: out of memory"


def test_collapse_stops_with_advice(tmp_path, small_overrides):
    config = config_module.resolve(["paper"], [*small_overrides, "train.collapse_std=1000"])
    with pytest.raises(TrainingStopped, match=r"embedding collapsed in epoch 1.*loss.std_coeff"):
        train(config, runs.claim_run_folder(tmp_path / "collapse"), log=_quiet)


def test_existing_run_folder_is_never_overwritten(tmp_path):
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "results.json").write_text("{}")
    with pytest.raises(runs.RunFolderError, match="already exists and is not empty"):
        runs.claim_run_folder(folder)
    first = runs.create_run_folder(tmp_path, "same")
    second = runs.create_run_folder(tmp_path, "same")
    assert first != second


@pytest.mark.slow
def test_compiled_model_trains(tmp_path, small_overrides):
    # torch.compile needs a C compiler and takes tens of seconds to compile, so it is opt-in.
    config = config_module.resolve(["paper"], [*small_overrides, "train.compile=true", "train.epochs=1"])
    results = train(config, runs.claim_run_folder(tmp_path / "compiled"), log=_quiet)
    assert results["status"] == "completed"
