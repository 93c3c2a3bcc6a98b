"""`pnn-ssl reproduce` end to end on tiny MNIST-format files, and the report's statistics."""

import dataclasses
import json
import shlex

import pytest

from pnn_ssl import cli, runs
from pnn_ssl.config import ConfigError
from pnn_ssl.reporting.report import experiment_accuracy
from pnn_ssl.reproduction import plan as plan_module
from pnn_ssl.reproduction.runner import Request, describe_plan, planned_runs, reproduce

REPORT_SECTIONS = (
    "# Reproduction report: smoke budget, paper settings, mnist",
    "## Verdicts",
    "## Table 1 and section 3: test accuracy of the last layer's linear probe",
    "## Figure 2b: error against depth",
    "## Figure 2c: first-layer weights, layer-wise against end-to-end",
    "## Figures 1 and 3: robustness of the figure-1 models",
    "### Verdicts",
    "- Fig. 1g, \"SSL networks are much sparser\":",
    "- Fig. 1b,",
    "- Fig. 1f,",
    "- SPSA layer against its untrained start (a check the paper does not report):",
    "### neuron-pruning",
    "## Runs",
)
MNIST_EXPERIMENTS = ("supervised", "supervised-aug", "vicreg-mlp", "layerwise-mlp", "layerwise-cnn", "spsa-mlp")


@pytest.fixture
def tiny_data(tiny_mnist):
    return (f"data.data_dir={tiny_mnist}", "data.download=false", "train.device=cpu", "model.projector_widths=[32, 32]")


def test_smoke_reproduction_writes_every_section(tmp_path, tiny_data, capsys):
    out = tmp_path / "out"
    args = ["reproduce", "--budget", "smoke", "--out", str(out)]
    assert cli.main([*args, *[item for override in tiny_data for item in ("--set", override)]]) == 0

    report = (out / "report.md").read_text()
    for section in REPORT_SECTIONS:
        assert section in report
    for key in MNIST_EXPERIMENTS:
        assert f"| {key}-seed0 | completed |" in report
    assert (out / "figures" / "compare-first-layer-weights.png").exists()
    state = json.loads((out / "reproduce.json").read_text())
    assert set(state["runs"]) == {f"{key}-seed0" for key in MNIST_EXPERIMENTS}
    output = capsys.readouterr().out
    assert "reproduce  [6/6] spsa-mlp-seed0" in output
    assert "reproduce  spsa-mlp-seed0: probing the untrained network (checkpoints/epoch-0000.pt)" in output
    spsa_probes = runs.read_json(out / "runs" / "spsa-mlp-seed0" / "results.json")["probes"]
    assert {"epoch-0", "epoch-1"} <= set(spsa_probes)


def test_interrupted_reproduction_continues(tmp_path, tiny_data):
    out = tmp_path / "out"
    request = Request(budget="smoke", only=("supervised", "vicreg-mlp"), overrides=tiny_data)
    lines = []

    def interrupt_second_run(line):
        lines.append(line)
        if line.startswith("epoch    2/2"):  # the SSL run trains 2 epochs, checkpointing each
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reproduce(request, out, log=interrupt_second_run)
    first = out / "runs" / "supervised-seed0"
    metrics_before = (first / "metrics.csv").read_text()
    assert runs.read_json(out / "runs" / "vicreg-mlp-seed0" / "results.json")["status"] == "interrupted"
    plan_lines = describe_plan(request, out)
    assert plan_lines[2] == "vicreg-mlp-seed0  (interrupted, checkpoint of epoch 1)"
    assert plan_lines[3] == f"    pnn-ssl train --resume {out / 'runs' / 'vicreg-mlp-seed0'}"

    lines.clear()
    reproduce(request, out, log=lines.append)
    assert "reproduce  supervised-seed0: completed earlier, reused" in lines
    assert any(line.startswith("reproduce  vicreg-mlp-seed0: resuming from the checkpoint of epoch 1;") for line in lines)
    assert (first / "metrics.csv").read_text() == metrics_before
    assert runs.read_json(out / "runs" / "vicreg-mlp-seed0" / "results.json")["status"] == "completed"
    assert (out / "report.md").exists()


def test_changed_config_of_finished_run_is_rejected(tmp_path, tiny_data):
    out = tmp_path / "out"
    reproduce(Request(budget="smoke", only=("supervised",), overrides=tiny_data), out, log=lambda line: None)
    changed = Request(budget="smoke", only=("supervised",), overrides=(*tiny_data, "train.lr=0.5"))
    with pytest.raises(ConfigError, match=r"train.lr: 0.0001 there, 0.5 planned"):
        reproduce(changed, out, log=lambda line: None)
    state, command = describe_plan(changed, out)
    assert state == (
        "supervised-seed0  (completed; trained with another config (train.lr: 0.0001 there, 0.5 planned), "
        "so reproduce rejects it)"
    )
    (run,) = planned_runs(changed)
    assert command == f"    move {out / 'runs' / 'supervised-seed0'} away, then: {run.train_command(out)}"


def test_plan_of_run_without_checkpoint(tmp_path, tiny_data):
    out = tmp_path / "out"
    folder = out / "runs" / "supervised-seed0"
    (folder / "checkpoints").mkdir(parents=True)
    runs.update_results(folder, status="interrupted")
    request = Request(budget="smoke", only=("supervised",), overrides=tiny_data)
    state, command = describe_plan(request, out)
    assert state == ("supervised-seed0  (interrupted; stopped before its first checkpoint, so reproduce moves it "
                     "aside and starts again)")
    assert command.startswith(f"    move {folder} away, then: pnn-ssl train --preset supervised ")


def test_reuse_of_run_trained_elsewhere(tmp_path, tiny_data):
    out = tmp_path / "out"
    reproduce(Request(budget="smoke", only=("supervised",), overrides=tiny_data), out, log=lambda line: None)
    config_path = out / "runs" / "supervised-seed0" / "config.yaml"
    text = config_path.read_text()
    assert text.startswith("name: ")
    config_path.write_text("name: trained-with-pnn-ssl-train\n" + text.split("\n", 1)[1])

    lines = []
    reproduce(Request(budget="smoke", only=("supervised",), overrides=tiny_data), out, log=lines.append)
    assert "reproduce  supervised-seed0: completed earlier, reused" in lines


@pytest.mark.parametrize("budget", plan_module.BUDGETS)
@pytest.mark.parametrize("settings", plan_module.SETTINGS)
def test_train_command_resolves_planned_config(tmp_path, settings, budget):
    _, experiments = plan_module.read_plan()
    planned = plan_module.plan_runs(list(experiments.values()), budget=budget, settings=settings, seeds=2)
    for run in planned:
        words = shlex.split(run.train_command(tmp_path / "out"))
        assert words[:2] == ["pnn-ssl", "train"]
        keys = [words[index + 1].split("=", 1)[0] for index, word in enumerate(words) if word == "--set"]
        assert len(keys) == len(set(keys)), keys
        args = cli.build_parser().parse_args(words[1:])
        assert args.run_dir == str(tmp_path / "out" / "runs" / run.name)
        assert cli._resolve(args) == dataclasses.replace(run.config, name=cli._resolve(args).name)


def test_plan_option_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["reproduce", "--budget", "smoke", "--only", "supervised", "vicreg-mlp", "--out", str(out), "--plan"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "supervised-seed0  (not started)"
    assert lines[1].startswith("    pnn-ssl train --preset supervised --set ")
    assert lines[2] == "vicreg-mlp-seed0  (not started)"
    assert lines[3].endswith(f"--run-dir {out / 'runs' / 'vicreg-mlp-seed0'}")
    assert len(lines) == 4
    assert not out.exists()


def test_planned_train_command_is_reused(tmp_path, tiny_data):
    out = tmp_path / "out"
    request = Request(budget="smoke", only=("supervised",), overrides=tiny_data)
    (run,) = planned_runs(request)
    assert cli.main(shlex.split(run.train_command(out))[1:]) == 0

    lines = []
    reproduce(request, out, log=lines.append)
    assert "reproduce  supervised-seed0: completed earlier, reused" in lines
    assert describe_plan(request, out)[0] == "supervised-seed0  (completed)"


def test_other_budget_in_same_folder_is_rejected(tmp_path, tiny_data):
    out = tmp_path / "out"
    reproduce(Request(budget="smoke", only=("supervised",), overrides=tiny_data), out, log=lambda line: None)
    with pytest.raises(ConfigError, match=r"contains a reproduction with budget smoke, not budget quick; give another --out folder"):
        reproduce(Request(budget="quick", only=("supervised",), overrides=tiny_data), out, log=lambda line: None)


def test_plan_of_other_budget_folder_is_rejected(tmp_path, tiny_data):
    out = tmp_path / "out"
    reproduce(Request(budget="smoke", only=("supervised",), overrides=tiny_data), out, log=lambda line: None)
    with pytest.raises(ConfigError, match=r"contains a reproduction with budget smoke, not budget paper; give another --out folder"):
        describe_plan(Request(budget="paper", only=("supervised",), overrides=tiny_data), out)


def test_unknown_experiment_is_rejected():
    _, experiments = plan_module.read_plan()
    with pytest.raises(ConfigError, match=r"unknown experiment\(s\) \['mlp'\]"):
        plan_module.select_experiments(experiments, ["mlp"], include_cifar10=False)


def test_cifar10_runs_only_when_included():
    _, experiments = plan_module.read_plan()
    default = plan_module.select_experiments(experiments, [], include_cifar10=False)
    assert all(experiment.needs != "cifar10" for experiment in default)
    named = plan_module.select_experiments(experiments, ["layerwise-cnn-cifar10"], include_cifar10=False)
    assert [experiment.key for experiment in named] == ["layerwise-cnn-cifar10"]


@pytest.mark.parametrize("budget", plan_module.BUDGETS)
@pytest.mark.parametrize("settings", plan_module.SETTINGS)
def test_every_planned_config_resolves(budget, settings):
    _, experiments = plan_module.read_plan()
    planned = plan_module.plan_runs(list(experiments.values()), budget=budget, settings=settings, seeds=2)
    assert len(planned) == 2 * len(experiments)
    assert {run.config.seed for run in planned} == {0, 1}


def test_fashion_mnist_leaves_cifar10_runs_alone():
    _, experiments = plan_module.read_plan()
    planned = plan_module.plan_runs(list(experiments.values()), budget="smoke", dataset="fashion-mnist")
    datasets = {run.experiment.key: run.config.data.dataset for run in planned}
    assert datasets["vicreg-mlp"] == "fashion-mnist"
    assert datasets["layerwise-cnn-cifar10"] == "cifar10"


def _write_probe_results(folder, accuracies):
    folder.mkdir(parents=True)
    summary = {"adam": {"test_accuracy": accuracies}}
    runs.update_results(folder, status="completed", probes={"epoch-5": {"layer-1": {"adam": {"test_accuracy": [0.0]}}, "layer-4": summary}})


def test_accuracy_over_repeats_and_seeds(tmp_path):
    _write_probe_results(tmp_path / "a", [98.0, 99.0, 97.0])
    _write_probe_results(tmp_path / "b", [96.0, 96.0, 96.0])

    one = experiment_accuracy([tmp_path / "a"], "adam")
    assert (one.mean, one.std, one.n, one.over) == (98.0, 1.0, 3, "probe repeats")

    two = experiment_accuracy([tmp_path / "a", tmp_path / "b"], "adam")
    assert two.mean == 97.0
    assert two.std == pytest.approx(2**0.5)  # sample std of the seed means 98 and 96
    assert (two.n, two.over) == (2, "seeds")
    assert experiment_accuracy([tmp_path / "a"], "lbfgs") is None
