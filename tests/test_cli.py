"""The command line end to end, on tiny MNIST-format files in a temporary folder."""

import json

import pytest

from pnn_ssl import cli, runs


@pytest.fixture
def tiny_args(small_overrides):
    return [item for override in small_overrides for item in ("--set", override)]


def test_smoke_preset_trains_and_probes(tmp_path, tiny_args, capsys):
    folder = tmp_path / "run"
    code = cli.main(["train", "--preset", "smoke", *tiny_args, "--set", "train.epochs=1", "--run-dir", str(folder)])
    assert code == 0
    output = capsys.readouterr().out
    assert "epoch    1/1" in output
    assert "probe  epoch    1  layer 2  test accuracy %: adam" in output
    results = json.loads((folder / "results.json").read_text())
    assert results["status"] == "completed"
    assert runs.read_config(folder).name == "vicreg-mlp-paper-smoke"


def test_two_smoke_runs_give_identical_metrics(tmp_path, tiny_args):
    for name in ("a", "b"):
        assert cli.main(["train", "--preset", "smoke", *tiny_args, "--run-dir", str(tmp_path / name)]) == 0
    for file_name in ("metrics.csv", "probes.csv"):
        rows = [
            [row for row in runs.TidyCSV(tmp_path / name / file_name, ()).read() if row.get("metric") != "seconds"]
            for name in ("a", "b")
        ]
        assert rows[0] == rows[1], file_name


def test_probe_command_adds_layers(tmp_path, tiny_args):
    folder = tmp_path / "run"
    assert cli.main(["train", "--preset", "smoke", *tiny_args, "--set", "train.epochs=1", "--run-dir", str(folder)]) == 0
    assert cli.main(["probe", str(folder), "--set", "probe.layers=[1]", "--set", "probe.converged=ridge"]) == 0
    probes = json.loads((folder / "results.json").read_text())["probes"]["epoch-1"]
    assert "ridge" in probes["layer-1"]
    assert "lbfgs" in probes["layer-2"]  # earlier results are kept


def test_train_without_probe_layers_skips_probes(tmp_path, tiny_args, capsys):
    folder = tmp_path / "run"
    args = ["train", "--preset", "smoke", *tiny_args, "--set", "train.epochs=1", "--set", "probe.layers=[]"]
    assert cli.main([*args, "--run-dir", str(folder)]) == 0
    assert "probe  skipped: probe.layers is empty" in capsys.readouterr().out
    results = json.loads((folder / "results.json").read_text())
    assert results["status"] == "completed"
    assert not results.get("probes")


def test_probe_command_rejects_training_overrides(tmp_path, tiny_args, capsys):
    folder = tmp_path / "run"
    assert cli.main(["train", "--preset", "smoke", *tiny_args, "--set", "train.epochs=1", "--run-dir", str(folder)]) == 0
    assert cli.main(["probe", str(folder), "--set", "train.epochs=5"]) == 2
    assert "only probe.* fields and train.threads, train.device can change here" in capsys.readouterr().err
    assert cli.main(["probe", str(folder), "--set", "train.threads=1", "--set", "probe.converged=ridge"]) == 0


def test_unknown_key_exits_with_named_error(tmp_path, capsys):
    assert cli.main(["train", "--set", "train.batchsize=5", "--runs-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "unknown config key 'train.batchsize'; did you mean 'train.batch_size'" in error
    assert not any(tmp_path.iterdir())  # nothing was created


def test_existing_run_dir_is_rejected(tmp_path, tiny_args, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "results.json").write_text('{"status": "completed"}')
    assert cli.main(["train", "--preset", "smoke", *tiny_args, "--run-dir", str(folder)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (folder / "results.json").read_text() == '{"status": "completed"}'


def test_missing_data_dir_files_give_data_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["train", "--preset", "smoke", "--set", f"data.data_dir={empty}", "--set", "data.dataset=cifar10",
            "--set", "data.download=false", "--run-dir", str(tmp_path / "run")]
    assert cli.main(args) == 2
    assert "cifar10" in capsys.readouterr().err.lower()


def test_presets_command_lists_descriptions(capsys):
    assert cli.main(["presets"]) == 0
    output = capsys.readouterr().out
    for name in ("paper", "reference-code", "supervised", "supervised-aug", "smoke", "quick", "full"):
        assert f"\n{name}\n" in f"\n{output}"


def test_resume_of_completed_run_changes_nothing(tmp_path, tiny_args, capsys):
    folder = tmp_path / "run"
    assert cli.main(["train", "--preset", "smoke", *tiny_args, "--set", "train.epochs=1", "--run-dir", str(folder)]) == 0
    before = (folder / "results.json").read_text()
    assert cli.main(["train", "--resume", str(folder)]) == 0
    assert "already completed (1 epoch); nothing to resume" in capsys.readouterr().out
    assert (folder / "results.json").read_text() == before


def test_data_dir_without_files_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for data_dir in (empty, tmp_path / "missing"):
        args = ["train", "--preset", "smoke", "--set", f"data.data_dir={data_dir}", "--runs-dir", str(tmp_path / "runs")]
        assert cli.main(args) == 2
        assert f"data.data_dir='{data_dir}'" in capsys.readouterr().err


def test_broken_preset_files_are_named(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {epochs: 3\n")
    assert cli.main(["config", "--preset", str(broken)]) == 2
    assert "invalid YAML in preset" in capsys.readouterr().err
    assert cli.main(["config", "--preset", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_failed_start_leaves_no_run_folder(tmp_path):
    args = ["train", "--preset", "smoke", "--set", f"data.data_dir={tmp_path / 'missing'}", "--run-dir", str(tmp_path / "run")]
    assert cli.main(args) == 2
    assert not (tmp_path / "run").exists()


def test_probe_command_on_layerwise_run(tmp_path, tiny_args):
    folder = tmp_path / "run"
    train_args = ["train", "--preset", "layerwise-mlp", "--preset", "smoke", *tiny_args, "--set", "train.epochs=1", "--run-dir", str(folder)]
    assert cli.main(train_args) == 0
    assert cli.main(["probe", str(folder), "--set", "probe.layers=[2]", "--set", "probe.converged=ridge"]) == 0
    probes = json.loads((folder / "results.json").read_text())["probes"]
    assert any("ridge" in epoch.get("layer-2", {}) for epoch in probes.values())


@pytest.mark.parametrize("preset", ["spsa-cpu", "spsa-analog-cpu"])
def test_spsa_preset_trains_and_probes(tmp_path, tiny_args, capsys, preset):
    folder = tmp_path / "run"
    args = ["train", "--preset", preset, "--preset", "smoke", *tiny_args, "--set", "train.epochs=1",
            "--set", "train.threads=0", "--set", "probe.layers=[1, 2]", "--run-dir", str(folder)]
    assert cli.main(args) == 0
    output = capsys.readouterr().out
    assert "stage 2/2  epoch    1/1" in output
    assert "probe  epoch    2  layer 2  test accuracy %: adam" in output
    assert json.loads((folder / "results.json").read_text())["status"] == "completed"
    assert cli.main(["probe", str(folder), "--checkpoint", "epoch-0000.pt"]) == 0  # the untrained layers
    assert "epoch-0" in json.loads((folder / "results.json").read_text())["probes"]


def test_resume_accepts_thread_count(tmp_path, tiny_args, capsys):
    folder = tmp_path / "run"
    assert cli.main(["train", "--preset", "smoke", *tiny_args, "--set", "train.epochs=1", "--run-dir", str(folder)]) == 0
    runs.update_results(folder, status="interrupted")
    assert cli.main(["train", "--resume", str(folder), "--set", "train.threads=1"]) == 0
    assert runs.read_json(folder / "results.json")["status"] == "completed"
    assert runs.read_config(folder).train.threads == 1


def test_resume_damaged_checkpoint_first(tmp_path, tiny_args, tiny_mnist, capsys):
    folder = tmp_path / "run"
    assert cli.main(["train", "--preset", "smoke", *tiny_args, "--set", "train.epochs=1", "--run-dir", str(folder)]) == 0
    runs.update_results(folder, status="interrupted")
    (folder / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    config_text = (folder / "config.yaml").read_text()
    # A data folder that no longer exists would fail the data loader; the checkpoint is checked first.
    assert str(tiny_mnist) in config_text
    (folder / "config.yaml").write_text(config_text.replace(str(tiny_mnist), str(tmp_path / "gone")))
    assert cli.main(["train", "--resume", str(folder)]) == 2
    assert "last.pt is unreadable" in capsys.readouterr().err


def test_resume_rejects_other_overrides(tmp_path, tiny_args, capsys):
    folder = tmp_path / "run"
    assert cli.main(["train", "--preset", "smoke", *tiny_args, "--set", "train.epochs=1", "--run-dir", str(folder)]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(folder), "--set", "train.lr=0.5", "--set", "train.threads=1"]) == 2
    assert capsys.readouterr().err == (
        "pnn-ssl: error: --resume continues a run with its saved config, so --set train.lr cannot change; "
        "--set works here only for train.threads, train.device. Start a new run to change the others\n"
    )
    assert cli.main(["train", "--resume", str(folder), "--preset", "smoke"]) == 2
    assert capsys.readouterr().err == "pnn-ssl: error: --resume continues a run with its saved config; drop --preset\n"


def test_robustness_keeps_earlier_results(tmp_path, capsys):
    out = tmp_path / "robustness"
    out.mkdir()
    (out / "robustness.csv").write_text("model\n")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text("name: x\n")
    assert cli.main(["robustness", str(folder), "--out", str(out)]) == 2
    assert "already contains robustness results" in capsys.readouterr().err
    assert (out / "robustness.csv").read_text() == "model\n"


def test_reproduce_rejects_run_folder_as_output(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text("name: x\n")
    for plan in ([], ["--plan"]):
        assert cli.main(["reproduce", "--budget", "smoke", "--out", str(folder), *plan]) == 2
        assert capsys.readouterr().err == f"pnn-ssl: error: --out {folder} is a run folder; give a new folder for the reproduction\n"
    assert sorted(path.name for path in folder.iterdir()) == ["config.yaml"]


def test_reproduce_rejects_file_as_output(tmp_path, capsys):
    target = tmp_path / "report.log"
    target.write_text("keep me\n")
    for plan in ([], ["--plan"]):
        assert cli.main(["reproduce", "--budget", "smoke", "--out", str(target), *plan]) == 2
        assert "is a file, not a folder" in capsys.readouterr().err
    assert target.read_text() == "keep me\n"


def test_probe_again_replaces_rows_keeps_other_kinds(tmp_path, tiny_args):
    folder = tmp_path / "run"
    assert cli.main(["train", "--preset", "smoke", *tiny_args, "--set", "train.epochs=1", "--run-dir", str(folder)]) == 0
    for _ in range(2):
        assert cli.main(["probe", str(folder), "--set", "probe.layers=[2]", "--set", "probe.converged=ridge"]) == 0

    layer = json.loads((folder / "results.json").read_text())["probes"]["epoch-1"]["layer-2"]
    assert set(layer) == {"adam", "lbfgs", "ridge"}
    rows = runs.probes_csv(folder).read()
    keys = [(row["layer"], row["probe"], row["repeat"], row["probe_epoch"], row["split"]) for row in rows]
    assert len(keys) == len(set(keys))


def test_reproduce_out_with_other_results(tmp_path, capsys):
    out = tmp_path / "run1"
    (out / "robustness").mkdir(parents=True)
    (out / "robustness" / "robustness.csv").write_text("model\n")
    assert cli.main(["reproduce", "--budget", "smoke", "--out", str(out)]) == 2
    assert "contains robustness but no reproduce.json" in capsys.readouterr().err
    assert (out / "robustness" / "robustness.csv").read_text() == "model\n"


def test_output_path_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    assert cli.main(["train", "--preset", "smoke", "--runs-dir", str(blocker)]) == 2
    assert f"pnn-ssl: error: {blocker}: File exists; check the path" in capsys.readouterr().err


def test_reproduce_out_with_only_runs(tmp_path, tiny_mnist, capsys):
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    args = ["reproduce", "--budget", "smoke", "--only", "supervised", "--out", str(out), "--set", f"data.data_dir={tiny_mnist}",
            "--set", "data.download=false", "--set", "train.threads=1"]
    assert cli.main(args) == 0
    assert (out / "reproduce.json").exists()
