"""`pnn-ssl plot | probe | robustness | train --resume` on a run folder with a damaged checkpoint or results.json.

Each command must exit with status 2 and print one `pnn-ssl: error:` line that names the file, and
must leave the damaged file as it was.
"""

import os
import shutil

import pytest
import torch

from pnn_ssl import cli, runs
from pnn_ssl import config as config_module
from pnn_ssl.training import reprobe


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_mnist):
    """A completed 1-epoch end-to-end MLP run with checkpoints last.pt, epoch-0000.pt and epoch-0001.pt."""
    folder = tmp_path_factory.mktemp("damaged") / "run"
    overrides = ["model.widths=[24, 16]", "model.projector_widths=[16, 16]", "train.epochs=1", "train.batch_size=64",
                 "train.keep_every=1", "probe.epochs=1", "probe.repeats=1", "probe.converged=none",
                 f"data.data_dir={tiny_mnist}", "data.download=false", "train.device=cpu"]
    args = ["train", "--preset", "smoke", "--run-dir", str(folder)]
    assert cli.main(args + [item for override in overrides for item in ("--set", override)]) == 0
    return folder


@pytest.fixture
def run(trained_run, tmp_path):
    """A copy of the trained run that a test may damage."""
    return shutil.copytree(trained_run, tmp_path / "run")


def _cnn_state():
    """The state dict of a small staged CNN, which does not fit the MLP run."""
    config = config_module.resolve(["layerwise-cnn-mnist"], ["model.channels=[4, 8]", "model.projector_widths=[8]"])
    return reprobe.build_run_network(config, (1, 28, 28), 10).state_dict()


def _damage(path, kind):
    good = torch.load(path, weights_only=True)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif kind == "random bytes":
        path.write_bytes(os.urandom(4096))
    elif kind == "no model entry":
        torch.save({"epoch": good["epoch"], "optimizer": good["optimizer"]}, path)
    elif kind == "cnn state":
        torch.save({**good, "model": _cnn_state()}, path)
    elif kind == "other widths":
        model = dict(good["model"])
        model["backbone.layers.0.weight"] = torch.zeros(50, 784)
        torch.save({**good, "model": model}, path)


DAMAGE = [
    ("empty", "is empty (0 bytes); "),
    ("truncated", "is unreadable (truncated, or not a file written by torch.save); "),
    ("random bytes", "is unreadable (truncated, or not a file written by torch.save); "),
    ("no model entry", "is not a pnn-ssl checkpoint: it has no 'model' entry"),
    ("cnn state", "does not match the run's config (missing keys backbone.layers.0.weight"),
    ("other widths", "does not match the run's config (shapes backbone.layers.0.weight (50, 784) where the config needs (24, 784))"),
]
COMMANDS = ["plot", "probe", "robustness", "resume"]


def _command(name, folder, tmp_path):
    if name == "resume":
        runs.update_results(folder, status="interrupted")
        return ["train", "--resume", str(folder)]
    if name == "robustness":
        return ["robustness", str(folder), "--out", str(tmp_path / "robustness")]
    return [name, str(folder)]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("kind", "problem"), DAMAGE, ids=[kind for kind, _ in DAMAGE])
def test_damaged_checkpoint_gives_one_line(run, tmp_path, capsys, command, kind, problem):
    path = run / "checkpoints" / "last.pt"
    _damage(path, kind)
    damaged = path.read_bytes()
    args = _command(command, run, tmp_path)
    capsys.readouterr()

    assert cli.main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"pnn-ssl: error: checkpoint {path} {problem}")
    assert error.rstrip("\n").endswith(
        f"restore it from a copy, copy one of the snapshots in {path.parent} (epoch-0000.pt, epoch-0001.pt) over it, "
        f"or train the run again"
    )
    assert error.count("\n") == 1
    assert path.read_bytes() == damaged
    assert sorted(runs.list_checkpoints(run)) == ["epoch-0000.pt", "epoch-0001.pt", "last.pt"]


def test_robustness_checks_before_writing(run, tmp_path, capsys):
    _damage(run / "checkpoints" / "last.pt", "empty")
    assert cli.main(["robustness", str(run), "--out", str(tmp_path / "robustness")]) == 2
    assert not (tmp_path / "robustness").exists()


def test_robustness_layer_checked_before_writing(run, tmp_path, capsys):
    out = tmp_path / "robustness"
    capsys.readouterr()

    assert cli.main(["robustness", str(run), "--out", str(out), "--set", "robustness.layer=9"]) == 2

    error = capsys.readouterr().err
    depth = config_module.model_depth(runs.read_config(run).model)
    assert error == f"pnn-ssl: error: invalid robustness.layer=9; {run} has hidden layers 1..{depth}\n"
    assert not out.exists()


def test_resume_of_run_in_training_is_rejected(run, capsys):
    metrics = (run / "metrics.csv").read_text()
    runs.update_results(run, status="running")
    results = (run / "results.json").read_text()
    capsys.readouterr()

    with runs.training_lock(run):  # stands for a trainer in another process
        assert cli.main(["train", "--resume", str(run)]) == 2

    error = capsys.readouterr().err
    assert error.startswith(f"pnn-ssl: error: run folder {run} is in use by another process (training or probing)")
    assert (run / "results.json").read_text() == results
    assert (run / "metrics.csv").read_text() == metrics


def test_probe_of_run_in_training_is_rejected(run, capsys):
    results = (run / "results.json").read_text()
    capsys.readouterr()

    with runs.training_lock(run):  # simulates a trainer in another process
        assert cli.main(["probe", str(run)]) == 2

    error = capsys.readouterr().err
    assert error == (f"pnn-ssl: error: run folder {run} is in use by another process (training or probing); let it finish, "
                     f"or probe a copy of the folder (cp -r {run} COPY, then pnn-ssl probe COPY)\n")
    assert (run / "results.json").read_text() == results


def test_probe_missing_checkpoint_lists_files(run, capsys, monkeypatch):
    def load_data(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the checkpoint was checked")

    monkeypatch.setattr(reprobe, "load_data", load_data)
    capsys.readouterr()
    assert cli.main(["probe", str(run), "--checkpoint", "epoch-9999.pt"]) == 2
    error = capsys.readouterr().err
    assert error == (
        f"pnn-ssl: error: checkpoint {run / 'checkpoints' / 'epoch-9999.pt'} not found; "
        f"{run / 'checkpoints'} contains epoch-0000.pt, epoch-0001.pt, last.pt\n"
    )


def test_probe_damaged_checkpoint_before_data(run, capsys, monkeypatch):
    def load_data(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the checkpoint was checked")

    monkeypatch.setattr(reprobe, "load_data", load_data)
    _damage(run / "checkpoints" / "epoch-0001.pt", "cnn state")
    assert cli.main(["probe", str(run), "--checkpoint", "epoch-0001.pt"]) == 2
    assert "epoch-0001.pt does not match the run's config" in capsys.readouterr().err


def test_intact_checkpoints_still_load(run, tmp_path):
    assert cli.main(["plot", str(run)]) == 0
    assert cli.main(["probe", str(run), "--checkpoint", "epoch-0000.pt", "--set", "probe.layers=[1]"]) == 0


@pytest.mark.parametrize("command", ["plot", "resume"])
def test_damaged_results_json_gives_one_line(run, tmp_path, capsys, command):
    args = _command(command, run, tmp_path)
    path = run / "results.json"
    path.write_text('{"status": "interr')
    capsys.readouterr()

    assert cli.main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"pnn-ssl: error: {path} is not valid JSON (Unterminated string starting at: line 1 column 12")
    assert "restore it from a copy, or delete it, which loses the run's status and summary numbers" in error
    assert error.count("\n") == 1
    assert path.read_text() == '{"status": "interr'
