"""The reproduction report: `report.md` and its figures, drawn from the run folders' files only.

Accuracies are those of the linear probe on the last probed layer at the latest probed checkpoint.
With one seed, the spread is the sample std over the probe's repeats; with several seeds, it is the
sample std over the seeds' mean accuracies, and n counts seeds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pnn_ssl import __version__, runs
from pnn_ssl.reporting.figures import mean_std, plot_runs, read_depth_errors
from pnn_ssl.reporting.report_robustness import robustness_section
from pnn_ssl.training.progress import format_duration

if TYPE_CHECKING:
    from pnn_ssl.reproduction.plan import PlannedRun

# An accuracy "matches" the paper when it is within this many points, or within twice its spread.
MATCH_TOLERANCE = 0.2
# Layer-wise training is "close" to end-to-end training when the accuracies differ by at most this.
CLOSE_TOLERANCE = 0.5


@dataclass(frozen=True)
class Accuracy:
    """A test accuracy (%) with its sample std and the number of values behind it."""

    mean: float
    std: float
    n: int
    over: str  # "probe repeats" or "seeds"

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f} (n={self.n} {self.over})"


def last_layer_accuracies(folder: Path, probe: str, epoch: int | None = None) -> list[float]:
    """Return the per-repeat test accuracies of `probe` on the deepest probed layer (empty if none).

    The probes of checkpoint `epoch` are read, by default those of the latest probed checkpoint.
    """
    probes = runs.read_json(folder / "results.json").get("probes", {})
    if not probes:
        return []
    key = max(probes, key=lambda key: int(key.split("-")[1])) if epoch is None else f"epoch-{epoch}"
    if key not in probes:
        return []
    deepest = max(probes[key], key=lambda key: int(key.split("-")[1]))
    return list(probes[key][deepest].get(probe, {}).get("test_accuracy", []))


def experiment_accuracy(folders: list[Path], probe: str, epoch: int | None = None) -> Accuracy | None:
    """Combine the runs (seeds) of one experiment into one accuracy, as the module docstring describes."""
    per_run = [values for values in (last_layer_accuracies(folder, probe, epoch) for folder in folders) if values]
    if not per_run:
        return None
    if len(per_run) == 1:
        return Accuracy(*mean_std(per_run[0]), n=len(per_run[0]), over="probe repeats")
    return Accuracy(*mean_std([mean_std(values)[0] for values in per_run]), n=len(per_run), over="seeds")


def write_report(out: Path, planned: list[PlannedRun], *, log: Callable[[str], None] = print) -> Path:
    """Draw the figures and write `out/report.md` for the planned runs that have finished."""
    folders = {run.name: out / "runs" / run.name for run in planned}
    finished = {name: folder for name, folder in folders.items() if _status(folder) == "completed"}
    by_experiment: dict[str, list[Path]] = {}
    for run in planned:
        if run.name in finished:
            by_experiment.setdefault(run.experiment.key, []).append(finished[run.name])
    experiments = {run.experiment.key: run.experiment for run in planned}
    figures = _draw_figures(out, by_experiment, log)

    sections = [
        _header(out, planned, finished),
        _verdicts(experiments, by_experiment, planned[0].config.data.dataset if planned else "mnist"),
        _accuracy_table(experiments, by_experiment, planned),
        _depth_section(by_experiment, out),
        _weights_section(figures, out),
        robustness_section(out),
        _runs_table(planned, folders, out),
    ]
    path = out / "report.md"
    runs.atomic_write_text(path, "\n\n".join(sections) + "\n")
    return path


def _status(folder: Path) -> str:
    return runs.read_json(folder / "results.json").get("status", "not started")


def _draw_figures(out: Path, by_experiment: dict[str, list[Path]], log: Callable[[str], None]) -> dict[str, Path]:
    """Draw each run's figures, and the layer-wise vs end-to-end comparison of the first seed's MLPs."""
    figures: dict[str, Path] = {}
    target = out / "figures"
    target.mkdir(parents=True, exist_ok=True)
    for folders in by_experiment.values():
        for folder in folders:
            plot_runs([folder])
    pair = [by_experiment[key][0] for key in ("layerwise-mlp", "vicreg-mlp") if by_experiment.get(key)]
    if len(pair) == 2:
        for path in plot_runs(pair, target):
            if path.parent == target:
                figures[path.stem] = path
                log(f"figure {path}")
    return figures


def _header(out: Path, planned: list[PlannedRun], finished: dict[str, Path]) -> str:
    state = runs.read_json(out / "reproduce.json")
    environment = next((runs.read_json(folder / "environment.json") for folder in finished.values()), {})
    machine = environment.get("cuda_device") or environment.get("cpu_model") or "unknown"
    seconds = sum(runs.read_json(folder / "results.json").get("train_seconds", 0.0) for folder in finished.values())
    lines = [
        f"# Reproduction report: {state.get('budget')} budget, {state.get('settings')} settings, {state.get('dataset')}",
        "",
        "Compared with Laydevant, Lott, Venturelli and McMahon, *The Benefits of Self-Supervised Learning for "
        "Training Physical Neural Networks* (NeurIPS 2023 workshop).",
        "",
        f"- Written {dt.datetime.now().astimezone().isoformat(timespec='seconds')} by pnn-ssl {__version__}; "
        f"the first run was trained at git {environment.get('git_revision') or 'unknown'} with torch "
        f"{environment.get('torch', 'unknown')}.",
        f"- Machine: {machine}, {environment.get('cpu_count', '?')} CPU cores, device {environment.get('device', '?')}.",
        f"- Runs finished: {len(finished)} of {len(planned)}; training time {format_duration(seconds)} in all"
        f" (probes not included); wall time of the reproduction so far, all invocations, before this report: {format_duration(state.get('wall_seconds', 0.0))}.",
        f"- Extra overrides: {', '.join(state.get('overrides', [])) or 'none'}.",
    ]
    if state.get("budget") == "smoke":
        lines.append("- The smoke budget only checks that every step runs: its accuracies and verdicts mean little.")
    return "\n".join(lines)


def _accuracy_table(experiments: dict, by_experiment: dict[str, list[Path]], planned: list[PlannedRun]) -> str:
    probe = planned[0].config.probe if planned else None
    protocol = f"{probe.epochs} epochs, {probe.repeats} repeats" if probe else "no runs planned"
    lines = [
        "## Table 1 and section 3: test accuracy of the last layer's linear probe",
        "",
        f"Adam probe: the paper's protocol is 20 epochs and 3 repeats; this budget ran {protocol} "
        "(mean ± sample std). L-BFGS: a converged probe, when run.",
        "",
        "| Experiment | Feeds | Paper (%) | Ours, Adam probe (%) | Ours, L-BFGS (%) | Ours − paper | Training time |",
        "|---|---|---|---|---|---|---|",
    ]
    dataset = planned[0].config.data.dataset if planned else "mnist"
    for key, experiment in experiments.items():
        folders = by_experiment.get(key, [])
        adam = experiment_accuracy(folders, "adam")
        lbfgs = experiment_accuracy(folders, "lbfgs")
        paper = _paper_accuracy(experiment, dataset)
        difference = f"{adam.mean - paper:+.2f}" if adam and paper is not None else "–"
        seconds = sum(runs.read_json(folder / "results.json").get("train_seconds", 0.0) for folder in folders)
        lines.append(
            f"| {experiment.title} | {experiment.role} | {_paper_text(paper)} | {adam or 'not run'} | "
            f"{lbfgs or '–'} | {difference} | {format_duration(seconds)} |"
        )
    return "\n".join(lines)


def _paper_accuracy(experiment, dataset: str) -> float | None:
    """Return the paper's number, or None where the paper did not run this dataset."""
    if experiment.needs == "cifar10" or dataset == "mnist":
        return experiment.paper_accuracy
    return None


def _paper_text(paper: float | None) -> str:
    return "not reported" if paper is None else f"{paper:.2f}"


def _verdicts(experiments: dict, by_experiment: dict[str, list[Path]], dataset: str) -> str:
    lines = ["## Verdicts", ""]
    for key, experiment in experiments.items():
        lines.append(f"- {experiment.title}: {_accuracy_verdict(experiment, by_experiment.get(key, []), dataset)}")
    lines.extend(_claim_verdicts(by_experiment))
    lines += [
        "",
        f"An accuracy matches the paper when it is within {MATCH_TOLERANCE} points or within twice its spread; "
        f"layer-wise training is close to end-to-end training within {CLOSE_TOLERANCE} points.",
    ]
    return "\n".join(lines)


def _accuracy_verdict(experiment, folders: list[Path], dataset: str) -> str:
    adam = experiment_accuracy(folders, "adam")
    if adam is None:
        return "not run."
    paper = _paper_accuracy(experiment, dataset)
    if paper is None:
        return f"{adam.mean:.2f} %, a new result (the paper reports no {dataset} number)."
    difference = adam.mean - paper
    if abs(difference) <= max(MATCH_TOLERANCE, 2 * adam.std):
        return f"matches the paper ({adam.mean:.2f} % against {paper:.2f} %, {experiment.source})."
    word = "short of" if difference < 0 else "above"
    return f"{abs(difference):.2f} points {word} the paper ({adam.mean:.2f} % against {paper:.2f} %, {experiment.source})."


def _claim_verdicts(by_experiment: dict[str, list[Path]]) -> list[str]:
    lines = []
    accuracies = {key: experiment_accuracy(by_experiment.get(key, []), "adam")
                  for key in ("supervised", "supervised-aug", "vicreg-mlp", "layerwise-mlp")}
    baselines = [accuracies[key] for key in ("supervised", "supervised-aug")]
    if accuracies["vicreg-mlp"] and all(baselines):
        best = max(baseline.mean for baseline in baselines)
        holds = accuracies["vicreg-mlp"].mean > best
        lines.append(
            f"- Claim \"SSL gives the lowest test error of the three figure-1 models\": "
            f"{'holds' if holds else 'does not hold'} (last-layer probe accuracy: SSL {accuracies['vicreg-mlp'].mean:.2f} %, best supervised {best:.2f} %)."
        )
    if accuracies["vicreg-mlp"] and accuracies["layerwise-mlp"]:
        difference = accuracies["layerwise-mlp"].mean - accuracies["vicreg-mlp"].mean
        verdict = "holds" if abs(difference) <= CLOSE_TOLERANCE else "does not hold"
        lines.append(f"- Claim \"layer-wise SSL is close to end-to-end SSL (MLP)\": {verdict} (difference {difference:+.2f} points).")
    trained, untrained = (experiment_accuracy(by_experiment.get("spsa-mlp", []), "adam", epoch) for epoch in (None, 0))
    if trained and untrained:
        difference = trained.mean - untrained.mean
        if abs(difference) <= 2 * max(trained.std, untrained.std):
            verdict = "no difference beyond the probes' spread"
        else:
            verdict = "training helps" if difference > 0 else "training makes the layer worse"
        # The paper reports the SPSA accuracy without this baseline, so this line is ours, not a claim of it.
        lines.append(f"- SPSA layer against its untrained start (a check the paper does not report): {verdict} "
                     f"(trained {trained}, untrained {untrained}).")
    for key, name in (("layerwise-mlp", "MLP"), ("layerwise-cnn", "CNN")):
        if by_experiment.get(key):
            lines.append(f"- Claim \"stacking layers improves test accuracy ({name})\": {_stacking_verdict(by_experiment[key][0])}")
    return lines


def _stacking_verdict(folder: Path) -> str:
    """Compare the first and the last probed layer's Adam-probe test error of one run."""
    test = read_depth_errors(folder).get("adam", {}).get("test", [])
    if len(test) < 2:
        return "not measured (fewer than two layers probed)."
    (first, first_error, first_std, _), (last, last_error, last_std, _) = test[0], test[-1]
    margin = first_std + last_std
    if last_error < first_error - margin:
        verdict = "holds"
    elif last_error > first_error + margin:
        verdict = "does not hold: the deeper layer is worse"
    else:
        verdict = "not resolved: the difference is within the probes' spread"
    return (f"{verdict} (seed {runs.read_config(folder).seed}: layer {first} {first_error:.2f} ± {first_std:.2f} % error, "
            f"layer {last} {last_error:.2f} ± {last_std:.2f} %).")


def _depth_section(by_experiment: dict[str, list[Path]], out: Path) -> str:
    lines = ["## Figure 2b: error against depth", ""]
    staged = [(key, folder) for key in ("layerwise-mlp", "layerwise-cnn", "layerwise-cnn-cifar10")
              for folder in by_experiment.get(key, [])[:1]]
    if not staged:
        return "\n".join(lines + ["No layer-wise run has finished."])
    for key, folder in staged:
        lines += [f"### {key} ({folder.name})", "", "| Layer | Train error (%) | Test error (%) |", "|---|---|---|"]
        table = read_depth_errors(folder).get("adam", {})
        for (layer, train, train_std, n), (_, test, test_std, _) in zip(table.get("train", []), table.get("test", [])):
            lines.append(f"| {layer} | {train:.2f} ± {train_std:.2f} | {test:.2f} ± {test_std:.2f} (n={n}) |")
        figure = folder / "figures" / "error-vs-depth.png"
        if figure.exists():
            lines += ["", f"![error against depth, {key}]({figure.relative_to(out)})"]
        lines.append("")
    return "\n".join(lines).rstrip()


def _weights_section(figures: dict[str, Path], out: Path) -> str:
    lines = ["## Figure 2c: first-layer weights, layer-wise against end-to-end", ""]
    figure = figures.get("compare-first-layer-weights")
    if figure is None:
        return "\n".join(lines + ["Needs both the layer-wise and the end-to-end VICReg MLP."])
    lines.append(f"![first-layer weights]({figure.relative_to(out)})")
    if "compare-error-vs-depth" in figures:
        lines += ["", "Error against depth of the same two runs:", "",
                  f"![error against depth, layer-wise and end-to-end]({figures['compare-error-vs-depth'].relative_to(out)})"]
    return "\n".join(lines)


def _runs_table(planned: list[PlannedRun], folders: dict[str, Path], out: Path) -> str:
    lines = ["## Runs", "", "| Run | Status | Epochs | Training time | Folder |", "|---|---|---|---|---|"]
    for run in planned:
        folder = folders[run.name]
        results = runs.read_json(folder / "results.json")
        seconds = results.get("train_seconds", 0.0)
        lines.append(
            f"| {run.name} | {results.get('status', 'not started')} | {results.get('epochs_completed', 0)} | "
            f"{format_duration(seconds)} | {folder.relative_to(out)} |"
        )
    return "\n".join(lines)
