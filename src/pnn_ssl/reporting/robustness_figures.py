"""Robustness figures drawn from the CSV files of `pnn-ssl robustness` only.

Into DIR/figures/, one line per model, with the run's config name in the legend:

- `robustness-weight-noise.png` (Fig. 1b, 3b): change in test error against the weight noise std.
- `robustness-activation-noise.png`, `robustness-pre-activation-noise.png` (Fig. 1c, 1d).
- `robustness-neuron-pruning.png` (Fig. 1e): against the fraction of neurons pruned and against
  the threshold.
- `robustness-weight-pruning.png` (Fig. 1f): against the fraction of weights removed.
- `robustness-relative-change.png` (Fig. 3a): weight noise against the mean relative change of
  the weights, in %.
- `robustness-sparsity.png` (Fig. 1g): fraction of exactly-zero ReLU outputs per layer.
- `robustness-weight-histograms.png` (Fig. 3c): one panel per layer, shared bins.

Points are the mean over all draws and probe repeats of a level, error bars the sample std, and
the legend gives n. Every curve starts at (0, 0): the unperturbed network, against which the
deltas are taken.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from pnn_ssl import runs
from pnn_ssl.reporting.figures import mean_std

# Perturbation -> (file stem, title, x column, x label).
NOISE_FIGURES = {
    "weight-noise": ("robustness-weight-noise", "Weight noise (static, drawn once per device)", "level", "noise std (weight units)"),
    "activation-noise": ("robustness-activation-noise", "Activation noise (after ReLU, every pass)", "level", "noise std (activation units)"),
    "pre-activation-noise": ("robustness-pre-activation-noise", "Pre-activation noise (before ReLU, every pass)", "level", "noise std (activation units)"),
    "weight-pruning": ("robustness-weight-pruning", "Weight magnitude pruning", "pruned_fraction", "fraction of weights removed"),
}


def plot_robustness(folder: Path) -> list[Path]:
    """Draw every robustness figure whose data is in `folder`; return the paths written."""
    path = folder / "robustness.csv"
    if not path.exists():
        raise runs.RunFolderError(f"{path} not found; run pnn-ssl robustness first")
    rows = runs.TidyCSV(path, ()).read()
    stamp = provenance(folder)
    target = folder / "figures"
    target.mkdir(exist_ok=True)
    written = []
    kinds = {row["perturbation"] for row in rows}
    for kind, (stem, title, x_column, x_label) in NOISE_FIGURES.items():
        if kind in kinds:
            figure = delta_figure([summarise(rows, kind, x_column)], [x_label], f"{title}\n{_probe_text(rows)}")
            written.append(_save_stamped(figure, target / f"{stem}.png", stamp))
    if "neuron-pruning" in kinds:
        tables = [summarise(rows, "neuron-pruning", "pruned_fraction"), summarise(rows, "neuron-pruning", "threshold")]
        labels = ["fraction of neurons pruned", "threshold on mean activation"]
        figure = delta_figure(tables, labels, f"Neuron pruning by mean training activation\n{_probe_text(rows)}")
        written.append(_save_stamped(figure, target / "robustness-neuron-pruning.png", stamp))
    if "weight-noise" in kinds:
        table = summarise(rows, "weight-noise", "relative_change")
        figure = delta_figure([table], ["mean relative change of the weights (%)"], f"Weight noise against relative weight change\n{_probe_text(rows)}")
        written.append(_save_stamped(figure, target / "robustness-relative-change.png", stamp))
    if (folder / "sparsity.csv").exists():
        written.append(_save_stamped(sparsity_figure(runs.TidyCSV(folder / "sparsity.csv", ()).read()), target / "robustness-sparsity.png", stamp))
    if (folder / "weight-histograms.csv").exists():
        histograms = runs.TidyCSV(folder / "weight-histograms.csv", ()).read()
        written.append(_save_stamped(histogram_figure(histograms), target / "robustness-weight-histograms.png", stamp))
    return written


def summarise(rows: list[dict], kind: str, x_column: str) -> dict[str, list[tuple[float, float, float, int]]]:
    """Return {model label: [(x, mean delta, sample std, n), ...]} for one perturbation, sorted by x.

    Rows are grouped by level. The x value is the level's mean of `x_column` (deterministic for
    the pruning measures, averaged over draws for the relative weight change).
    """
    groups: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        if row["perturbation"] == kind:
            groups.setdefault((model_label(row), float(row["level"])), []).append(row)
    table: dict[str, list[tuple[float, float, float, int]]] = {}
    for (label, _), members in sorted(groups.items()):
        x = sum(float(row[x_column]) for row in members) / len(members)
        mean, std = mean_std([float(row["delta"]) for row in members])
        table.setdefault(label, []).append((x, mean, std, len(members)))
    return {label: sorted(points) for label, points in table.items()}


def model_label(row: dict) -> str:
    return f"{row['run_name']} ({row['model']})"


def delta_figure(tables: list[dict], x_labels: list[str], title: str) -> Figure:
    """Plot the change in test error against one x quantity per panel, one line per model, starting at (0, 0)."""
    figure = Figure(figsize=(6.0 * len(tables), 4.4), layout="constrained")
    panels = figure.subplots(1, len(tables), squeeze=False)[0]
    for axes, table, x_label in zip(panels, tables, x_labels):
        for index, (label, points) in enumerate(table.items()):
            xs, means, stds, counts = zip(*[(0.0, 0.0, 0.0, 0), *points])
            axes.errorbar(xs, means, yerr=stds, fmt="o-", color=f"C{index}", capsize=3, label=f"{label}, n={max(counts)}")
        axes.axhline(0.0, color="gray", linewidth=0.8)
        axes.set_xlabel(x_label)
        axes.set_ylabel("change in test error (percentage points)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    return figure


def _probe_text(rows: list[dict]) -> str:
    probe = rows[0]["probe"]
    layer = rows[0]["layer"]
    return f"{probe} probe on layer {layer}, mean ± std over draws x repeats"


def sparsity_figure(rows: list[dict]) -> Figure:
    """Draw grouped bars of the fraction of exactly-zero ReLU outputs per layer, one colour per model."""
    figure = Figure(figsize=(6.5, 4.2), layout="constrained")
    axes = figure.subplots()
    labels = sorted({model_label(row) for row in rows})  # the order, and so the colours, of `summarise`
    width = 0.8 / len(labels)
    for index, label in enumerate(labels):
        points = sorted((int(row["layer"]), float(row["zero_fraction"])) for row in rows if model_label(row) == label)
        layers, fractions = zip(*points)
        axes.bar([layer + (index - (len(labels) - 1) / 2) * width for layer in layers], fractions, width, color=f"C{index}", label=label)
        axes.set_xticks(layers)
    axes.set_xlabel("layer")
    axes.set_ylabel("fraction of ReLU outputs exactly 0 (test set)")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=7)
    axes.set_title("Activation sparsity", fontsize=9)
    return figure


def histogram_figure(rows: list[dict]) -> Figure:
    """Draw per-layer weight densities as step lines on the shared bins, one panel per layer."""
    layers = sorted({int(row["layer"]) for row in rows})
    figure = Figure(figsize=(4.0 * len(layers), 3.8), layout="constrained")
    panels = figure.subplots(1, len(layers), squeeze=False)[0]
    labels = sorted({model_label(row) for row in rows})  # the order, and so the colours, of `summarise`
    for axes, layer in zip(panels, layers):
        for index, label in enumerate(labels):
            points = [row for row in rows if int(row["layer"]) == layer and model_label(row) == label]
            edges = [float(row["bin_left"]) for row in points] + [float(points[-1]["bin_right"])]
            densities = [float(row["density"]) for row in points]
            axes.stairs(densities, edges, color=f"C{index}", label=label)
        axes.set_yscale("log")
        axes.set_xlabel("weight")
        axes.set_title(f"layer {layer}", fontsize=9)
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("density (log scale)")
    panels[0].legend(fontsize=6)
    figure.suptitle("Weight distributions on shared bins", fontsize=9)
    return figure


def provenance(folder: Path) -> str:
    """Name the machine and the run time of the suite whose files are in `folder`, for a figure's footer."""
    environment = runs.read_json(folder / "environment.json")
    machine = environment.get("cuda_device") or environment.get("cpu_model") or "unknown machine"
    seconds = sum(run.get("seconds", 0.0) for run in runs.read_json(folder / "robustness.json").get("runs", {}).values())
    return f"{folder.name}: measured on {machine}, torch {environment.get('torch', '?')}, {seconds / 60:.1f} min for the suite"


def _save_stamped(figure: Figure, path: Path, stamp: str) -> Path:
    figure.get_layout_engine().set(rect=(0, 0.04, 1, 0.96))  # a band at the bottom for the footer
    figure.text(0.005, 0.005, stamp, fontsize=6, color="gray", ha="left", va="bottom")
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=120)
    return path
