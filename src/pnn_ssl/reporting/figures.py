"""Figures drawn from a run folder's files only, so that they can be redrawn at any time.

Per run, into RUN/figures/:

- `error-vs-depth.png`: train and test error (100 - accuracy, %) of each probe against the layer
  it reads, at the latest probed checkpoint in results.json. Points are the mean over the probe's
  repeats, error bars the sample std.
- `accuracy-vs-epoch.png`, when checkpoints of two or more epochs were probed (snapshots probed
  with `pnn-ssl probe RUN --checkpoint epoch-NNNN.pt`): each probe's test accuracy on each layer
  against the training epoch, mean ± sample std over its repeats.
- `first-layer-weights.png`: the first physical layer's weights from checkpoints/last.pt. For an
  MLP, the first 100 rows reshaped to the input image; for a CNN, the first 64 filters. Each tile
  is scaled to its own range.

For several runs, `compare-error-vs-depth.png` and `compare-first-layer-weights.png` set them side
by side, for example layer-wise against end-to-end. Every figure names its runs (config name and
folder) in its title or legend. Matplotlib's object API with the Agg renderer is used, so no
display and no pyplot state are involved.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from pnn_ssl import runs

# State-dict keys of the first physical layer's weight: end-to-end MLP, staged MLP, staged CNN.
FIRST_LAYER_KEYS = ("backbone.layers.0.weight", "stages.0.layer.linear.weight", "stages.0.layer.conv.weight")
MLP_TILES = 100
CNN_TILES = 64


def plot_runs(folders: list[Path], output: Path | None = None) -> list[Path]:
    """Draw each run's figures into its figures/ folder, and comparison figures when there are several runs.

    The comparison figures go to `output`, by default the first run's figures/ folder. Returns the
    paths written.
    """
    written = [path for folder in folders for path in plot_run(folder)]
    if len(folders) > 1:
        target = output or folders[0] / "figures"
        target.mkdir(parents=True, exist_ok=True)
        errors = {folder: read_depth_errors(folder) for folder in folders}
        errors = {folder: table for folder, table in errors.items() if table}
        if errors:
            written.append(_save(compare_error_vs_depth(errors), target / "compare-error-vs-depth.png"))
        weights = [folder for folder in folders if _checkpoint(folder).exists()]
        if weights:
            written.append(_save(compare_first_layer_weights(weights), target / "compare-first-layer-weights.png"))
    return written


def plot_run(folder: Path) -> list[Path]:
    """Draw the error-vs-depth and first-layer-weight figures of one run; return the paths written."""
    runs.read_config(folder)  # raises RunFolderError when folder is not a run folder
    errors = read_depth_errors(folder)
    has_checkpoint = _checkpoint(folder).exists()
    if not errors and not has_checkpoint:
        raise runs.RunFolderError(
            f"nothing to plot in {folder}: results.json has no probe results and checkpoints/last.pt is missing"
        )
    target = folder / "figures"
    target.mkdir(exist_ok=True)
    written = []
    if errors:
        written.append(_save(error_vs_depth_figure(folder, errors), target / "error-vs-depth.png"))
    curves = read_epoch_accuracies(folder)
    if any(len(points) > 1 for points in curves.values()):
        written.append(_save(accuracy_vs_epoch_figure(folder, curves), target / "accuracy-vs-epoch.png"))
    if has_checkpoint:
        written.append(_save(first_layer_figure(folder), target / "first-layer-weights.png"))
    return written


# ---------------------------------------------------------------------------------------------
# Error against depth.


def read_depth_errors(folder: Path) -> dict[str, dict[str, list[tuple[int, float, float, int]]]]:
    """Read {probe: {split: [(layer, mean error %, std, n), ...]}} at the latest probed checkpoint.

    Returns an empty dictionary when results.json contains no probe results.
    """
    probes = runs.read_json(folder / "results.json").get("probes", {})
    if not probes:
        return {}
    latest = max(probes, key=lambda key: int(key.split("-")[1]))  # keys are "epoch-N"
    table: dict[str, dict[str, list[tuple[int, float, float, int]]]] = {}
    for layer_key, by_probe in sorted(probes[latest].items(), key=lambda item: int(item[0].split("-")[1])):
        layer = int(layer_key.split("-")[1])  # keys are "layer-K"
        for probe, summary in by_probe.items():
            for split in ("train", "test"):
                errors = [100.0 - accuracy for accuracy in summary[f"{split}_accuracy"]]
                table.setdefault(probe, {}).setdefault(split, []).append((layer, *mean_std(errors), len(errors)))
    return table


def read_epoch_accuracies(folder: Path) -> dict[tuple[str, int], list[tuple[int, float, float, int]]]:
    """Read {(probe, layer): [(epoch, mean test accuracy %, std, n), ...]} over every probed checkpoint."""
    probes = runs.read_json(folder / "results.json").get("probes", {})
    curves: dict[tuple[str, int], list[tuple[int, float, float, int]]] = {}
    for epoch_key in sorted(probes, key=lambda key: int(key.split("-")[1])):
        for layer_key, by_probe in probes[epoch_key].items():
            for probe, summary in by_probe.items():
                accuracies = summary["test_accuracy"]
                point = (int(epoch_key.split("-")[1]), *mean_std(accuracies), len(accuracies))
                curves.setdefault((probe, int(layer_key.split("-")[1])), []).append(point)
    return dict(sorted(curves.items()))


def accuracy_vs_epoch_figure(folder: Path, curves: dict) -> Figure:
    """Plot each probe's test accuracy on each layer against the epoch of the probed checkpoint."""
    figure = Figure(figsize=(6.0, 4.2), layout="constrained")
    axes = figure.subplots()
    layers = sorted({layer for _, layer in curves})
    for (probe, layer), points in curves.items():
        epochs, means, stds, counts = zip(*points)
        style = {"adam": "-", "lbfgs": "--"}.get(probe, ":")
        label = f"layer {layer}, {probe} probe (n≤{max(counts)})"
        axes.errorbar(epochs, means, yerr=stds, fmt=f"o{style}", color=f"C{layers.index(layer)}", capsize=3, label=label)
    axes.set_xlabel("training epoch of the probed checkpoint")
    axes.set_ylabel("test accuracy (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    axes.set_title(f"Probe test accuracy vs training epoch\n{run_title(folder, detail=True)}", fontsize=8)
    return figure


def mean_std(values: list[float]) -> tuple[float, float]:
    """Return the mean and the sample std (0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))


def error_vs_depth_figure(folder: Path, errors: dict) -> Figure:
    """Plot train (dashed) and test (solid) error of each probe against the layer, with ± std error bars."""
    figure = Figure(figsize=(6.0, 4.2), layout="constrained")
    axes = figure.subplots()
    for index, (probe, splits) in enumerate(errors.items()):
        for split, style in (("test", "-"), ("train", "--")):
            layers, means, stds, counts = zip(*splits[split])
            label = f"{probe} probe, {split} (n={max(counts)})"
            axes.errorbar(layers, means, yerr=stds, fmt=f"o{style}", color=f"C{index}", capsize=3, label=label)
    _label_depth_axes(axes, errors)
    axes.legend(fontsize=8)
    axes.set_title(f"Probe error vs depth\n{run_title(folder, detail=True)}", fontsize=8)
    return figure


def compare_error_vs_depth(errors_by_run: dict[Path, dict]) -> Figure:
    """Plot each run's probe error against the layer, using the Adam probe (Adam 1e-3, batch 64) when a run has it."""
    figure = Figure(figsize=(7.0, 4.6), layout="constrained")
    axes = figure.subplots()
    for index, (folder, errors) in enumerate(errors_by_run.items()):
        probe = "adam" if "adam" in errors else next(iter(errors))
        for split, style in (("test", "-"), ("train", "--")):
            layers, means, stds, _ = zip(*errors[probe][split])
            label = f"{run_title(folder)}: {probe} {split}"
            axes.errorbar(layers, means, yerr=stds, fmt=f"o{style}", color=f"C{index}", capsize=3, label=label)
    _label_depth_axes(axes, *errors_by_run.values())
    axes.legend(fontsize=7)
    axes.set_title("Probe error vs depth (solid: test, dashed: train; mean ± std over probe repeats)", fontsize=9)
    return figure


def _label_depth_axes(axes, *tables: dict) -> None:
    layers = sorted({layer for table in tables for splits in table.values() for layer, *_ in splits["test"]})
    axes.set_xticks(layers)
    axes.set_xlabel("layer (depth)")
    axes.set_ylabel("error (%)")
    axes.grid(alpha=0.3)


# ---------------------------------------------------------------------------------------------
# First-layer weights.


def first_layer_weight(folder: Path) -> torch.Tensor:
    """Load the first physical layer's weight from checkpoints/last.pt: (out, in) for an MLP, (C', C, k, k) for a CNN."""
    from pnn_ssl.training.reprobe import read_run_checkpoint  # imported here because only this figure needs the training code

    path = _checkpoint(folder)
    # mmap avoids reading a multi-gigabyte checkpoint just for its first layer.
    state = read_run_checkpoint(folder, runs.read_config(folder), path.name, mmap=True)["model"]
    for key in FIRST_LAYER_KEYS:
        if key in state:
            return state[key].float()
    raise runs.RunFolderError(f"{path} has none of the first-layer weights {', '.join(FIRST_LAYER_KEYS)}")


def weight_tiles(weight: torch.Tensor) -> list[np.ndarray]:
    """Turn first-layer weights into image tiles, each scaled to [0, 1]: (H, W) gray or (H, W, 3) colour."""
    if weight.ndim == 4:  # conv filters (C', C, k, k)
        images = weight[:CNN_TILES]
    else:  # Linear rows (out, C*H*W), reshaped to the input image
        images = weight[:MLP_TILES].reshape(-1, *_image_shape(weight.shape[1]))
    tiles = []
    for image in images:
        low, high = image.min(), image.max()
        scaled = ((image - low) / (high - low).clamp_min(1e-12)).numpy()
        tiles.append(scaled[0] if scaled.shape[0] == 1 else scaled[:3].transpose(1, 2, 0))
    return tiles


def _image_shape(features: int) -> tuple[int, int, int]:
    """Return (C, H, W) of square 1- or 3-channel images with `features` values (no integer is both)."""
    for channels in (1, 3):
        side = math.isqrt(features // channels)
        if features % channels == 0 and side * side * channels == features:
            return channels, side, side
    raise ValueError(f"cannot show first-layer rows of {features} inputs as square 1- or 3-channel images")


def mosaic(tiles: list[np.ndarray], gap: int = 1) -> np.ndarray:
    """Arrange tiles in a near-square grid, separated by `gap` white pixels."""
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    height, width = tiles[0].shape[:2]
    grid = np.ones((rows * (height + gap) - gap, columns * (width + gap) - gap, *tiles[0].shape[2:]))
    for index, tile in enumerate(tiles):
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        grid[top : top + height, left : left + width] = tile
    return grid


def _draw_weights(axes, folder: Path) -> None:
    weight = first_layer_weight(folder)
    tiles = weight_tiles(weight)
    axes.imshow(mosaic(tiles), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    kind = "filters" if weight.ndim == 4 else "rows"
    axes.set_title(f"{run_title(folder, detail=True)}\nfirst {len(tiles)} of {weight.shape[0]} {kind}", fontsize=7)
    axes.set_axis_off()


def first_layer_figure(folder: Path) -> Figure:
    """Show the first layer's weights of one run as a grid of tiles."""
    figure = Figure(figsize=(6.0, 6.4), layout="constrained")
    _draw_weights(figure.subplots(), folder)
    return figure


def compare_first_layer_weights(folders: list[Path]) -> Figure:
    """Show the first layer's weights of several runs side by side."""
    figure = Figure(figsize=(5.0 * len(folders), 6.0), layout="constrained")
    panels = figure.subplots(1, len(folders), squeeze=False)[0]
    for axes, folder in zip(panels, folders):
        _draw_weights(axes, folder)
    return figure


# ---------------------------------------------------------------------------------------------
# Shared pieces.


def run_title(folder: Path, *, detail: bool = False) -> str:
    """Name a run by its config name, mode and architecture; with `detail`, add its folder, machine and training time."""
    config = runs.read_config(folder)
    title = f"{config.name} ({config.train.mode} {config.model.architecture})"
    if not detail:
        return title
    environment = runs.read_json(folder / "environment.json")
    machine = environment.get("cuda_device") or environment.get("cpu_model") or environment.get("processor", "unknown machine")
    seconds = runs.read_json(folder / "results.json").get("train_seconds")
    timing = f", {seconds / 60:.0f} min of training" if seconds else ""
    return f"{title}\n{folder.name}, {machine}{timing}"


def _checkpoint(folder: Path) -> Path:
    return folder / "checkpoints" / "last.pt"


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=120)
    return path
