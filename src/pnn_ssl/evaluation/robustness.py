"""Robustness of trained networks to noise and pruning, measured with linear probes.

For each run folder, the suite builds simulated devices: copies of the trained backbone with one
perturbation at one level (`pnn_ssl.physics`). A linear probe reads layer `layer` of each device.
The change in test error against the unperturbed network, probed the same way, is the measurement
of Laydevant et al. (2023), Fig. 1b-f and Fig. 3a-b. Two measurements need no probe: the fraction
of ReLU outputs that are exactly 0 on the test set (Fig. 1g) and per-layer weight histograms on
shared bins (Fig. 3c).

Protocol choices the paper leaves open, and the ones made here:
- Perturbations act on every physical layer up to the probed one (layers after it cannot change
  its representation), and never on the probe.
- Weight noise and pruning are applied before the probe is trained, and the probe is retrained on
  each device. Activation noise acts on the test set only unless `probe_under_noise` is set.
- Probe repeat r uses the same initialisation and mini-batch order on every device and on the
  unperturbed network, and its delta is taken against clean repeat r. The deltas therefore hold
  no probe-to-probe noise at level 0, and a zero level gives a delta of exactly 0.
- Neuron pruning ranks neurons by their mean ReLU output over the training set of the
  unperturbed network. One threshold applies to every layer.
- A noise draw depends only on the seed, the perturbation, the level and the draw number, so
  runs whose layers have the same shapes receive the same weight noise samples.

Outputs, all tidy CSV in the output folder: robustness.csv (one row per model, perturbation,
level, draw and repeat), sparsity.csv and weight-histograms.csv, plus robustness.json (timings and
clean errors) and robustness-config.yaml.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import yaml

from pnn_ssl import config as config_module
from pnn_ssl import runs
from pnn_ssl.config import RobustnessConfig
from pnn_ssl.data.sources import ImageDataset
from pnn_ssl.evaluation.perturbed import ActivationStatistics, PerturbedNetwork, physical_layers, read_network, with_weights
from pnn_ssl.evaluation.probes import fit_ridge_probe, probe_accuracy, train_adam_probes
from pnn_ssl.physics import ActivationNoise, WeightNoise, magnitude_keep_masks, neuron_keep_mask, relative_change
from pnn_ssl.training.end_to_end import load_data, make_prepare
from pnn_ssl.training.reprobe import load_backbone, read_run_checkpoint
from pnn_ssl.training.runtime import Runtime, derive_seed, seed_everything, setup_runtime

ROBUSTNESS_COLUMNS = (
    "model",
    "run_name",
    "layer",
    "perturbation",
    "level",
    "draw",
    "repeat",
    "probe",
    "error",
    "clean_error",
    "delta",
    "relative_change",
    "pruned_fraction",
    "threshold",
)
SPARSITY_COLUMNS = ("model", "run_name", "layer", "neurons", "zero_fraction")
HISTOGRAM_COLUMNS = ("model", "run_name", "layer", "bin_left", "bin_right", "count", "density")


@dataclass
class Device:
    """One simulated device: a perturbation at one level and draw, built when its group is probed."""

    level: float
    draw: int
    build: Callable[[], PerturbedNetwork]
    measures: dict  # relative_change, pruned_fraction, threshold where they apply


@dataclass
class RunUnderTest:
    """A trained run loaded for the suite: its backbone, data and clean measurements at `layer`."""

    folder: Path
    name: str
    backbone: torch.nn.Module
    dataset: ImageDataset
    prepare: Callable
    runtime: Runtime
    layer: int
    train_statistics: ActivationStatistics  # layers 1..layer, for neuron pruning
    test_statistics: ActivationStatistics  # every layer, for the sparsity measurement
    clean_probe: tuple[torch.Tensor, torch.Tensor]  # weight (1, R, D, C), bias (1, R, C)
    clean_errors: list[float]  # test error in % per probe repeat


# ---------------------------------------------------------------------------------------------
# The suite.


def run_robustness(
    folders: list[Path], config: RobustnessConfig, output: Path, *, log: Callable[[str], None] = print
) -> dict:
    """Measure every configured perturbation on every run and write the CSV files into `output`."""
    for folder in folders:  # a bad layer or checkpoint fails before any data loads or output is written
        run_config = runs.read_config(folder)
        resolve_layer(config.layer, config_module.model_depth(run_config.model), folder)
        read_run_checkpoint(folder, run_config)
        _warn_if_unfinished(folder, log)
    output.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_text(output / "robustness-config.yaml", yaml.safe_dump(config_module.to_dict(config), sort_keys=False))
    rows: list[dict] = []
    sparsity: list[dict] = []
    weights: dict[Path, tuple[str, list[torch.Tensor]]] = {}
    summary: dict = {"runs": {}}
    environment_written = False

    for folder in folders:
        started = time.perf_counter()
        run = load_run(folder, config, log=log)
        if not environment_written:
            runs.atomic_write_text(output / "environment.json", json.dumps(runs.describe_environment(run.runtime.device), indent=2) + "\n")
            environment_written = True
        sparsity.extend(sparsity_rows(run))
        weights[folder] = (run.name, [part.affine.weight.detach().float().cpu() for part in physical_layers(run.backbone)])
        for kind in config.perturbations:
            kind_started = time.perf_counter()
            kind_rows = measure(run, kind, config)
            rows.extend(kind_rows)
            log_kind(run, kind, kind_rows, time.perf_counter() - kind_started, log)
        seconds = time.perf_counter() - started
        summary["runs"][folder.name] = {"run_name": run.name, "layer": run.layer, "clean_error": run.clean_errors, "seconds": round(seconds, 1)}
        log(f"robust {folder.name}  done in {seconds:.0f} s")
        write_table(output / "robustness.csv", ROBUSTNESS_COLUMNS, rows)
        write_table(output / "sparsity.csv", SPARSITY_COLUMNS, sparsity)
        runs.atomic_write_text(output / "robustness.json", json.dumps(summary, indent=2) + "\n")

    write_table(output / "weight-histograms.csv", HISTOGRAM_COLUMNS, histogram_rows(weights, config.histogram_bins))
    return summary


def _warn_if_unfinished(folder: Path, log: Callable[[str], None]) -> None:
    """Log a warning for a run whose training has not completed, because its last checkpoint is what gets measured."""
    results = runs.read_json(folder / "results.json")
    status = results.get("status", "unknown")
    if status != "completed":
        log(f"robust {folder.name}: warning: the run's status is {status}, so its last checkpoint "
            f"(epoch {results.get('epochs_completed', '?')}) is measured, not a finished network")


def resolve_layer(layer: int, depth: int, folder: Path) -> int:
    """Return the 1-based hidden layer that `robustness.layer` names (negative counts from the last)."""
    resolved = depth + 1 + layer if layer < 0 else layer
    if not 1 <= resolved <= depth:
        raise config_module.ConfigError(f"invalid robustness.layer={layer}; {folder} has hidden layers 1..{depth}")
    return resolved


def load_run(folder: Path, config: RobustnessConfig, *, log: Callable[[str], None] = print) -> RunUnderTest:
    """Load a run's backbone and data, read the clean representations and train the clean probes."""
    run_config = runs.read_config(folder)
    device = run_config.train.device if config.device == "auto" else config.device
    runtime = setup_runtime(device, run_config.train.precision, config.threads)
    seed_everything(config.seed)
    dataset = load_data(run_config, runtime.device)
    backbone, epoch = load_backbone(folder, run_config, dataset, runtime.device)
    backbone.eval()
    depth = len(physical_layers(backbone))
    layer = resolve_layer(config.layer, depth, folder)
    prepare = make_prepare(dataset, run_config.data.normalize, runtime.device)
    log(f"robust {folder.name}  ({run_config.name}, epoch {epoch}, layer {layer} of {depth}, {config.probe} probe)")

    clean = PerturbedNetwork(backbone)
    train, train_statistics = read_network(clean, dataset.train_images, layer, prepare=prepare, autocast=runtime.autocast, statistics_depth=layer)
    test, test_statistics = read_network(clean, dataset.test_images, layer, prepare=prepare, autocast=runtime.autocast, statistics_depth=depth)
    weight, bias = fit_probes(compact(train).unsqueeze(0), dataset, runtime, config)
    clean_errors = (100.0 - probe_accuracy(test.unsqueeze(0), dataset.test_labels, weight, bias)[0]).tolist()
    log(f"robust {folder.name}  clean test error % per repeat: " + ", ".join(f"{error:.2f}" for error in clean_errors))
    return RunUnderTest(
        folder, run_config.name, backbone, dataset, prepare, runtime, layer, train_statistics, test_statistics, (weight, bias), clean_errors
    )


def measure(run: RunUnderTest, kind: str, config: RobustnessConfig) -> list[dict]:
    """Probe every device of one perturbation kind, in groups of `config.group_size`; return the rows."""
    devices = build_devices(run, kind, config)
    retrain = kind not in ("activation-noise", "pre-activation-noise") or config.probe_under_noise
    rows: list[dict] = []
    for start in range(0, len(devices), config.group_size):
        group = devices[start : start + config.group_size]
        errors = probe_devices(run, group, retrain, config)  # (M, R)
        for device, device_errors in zip(group, errors.tolist()):
            for repeat, (error, clean) in enumerate(zip(device_errors, run.clean_errors)):
                rows.append(
                    {
                        "model": run.folder.name,
                        "run_name": run.name,
                        "layer": run.layer,
                        "perturbation": kind,
                        "level": device.level,
                        "draw": device.draw,
                        "repeat": repeat,
                        "probe": config.probe,
                        "error": error,
                        "clean_error": clean,
                        "delta": error - clean,
                        **device.measures,
                    }
                )
    return rows


def probe_devices(run: RunUnderTest, group: list[Device], retrain: bool, config: RobustnessConfig) -> torch.Tensor:
    """Return the test error in % of each device's probes, (M, R).

    With `retrain`, each device's probes are trained on that device's training representations.
    Otherwise the clean probes are tested on the devices' test representations.
    """
    train_features, test_features = [], []
    for device in group:
        network = device.build()
        if retrain:
            train_features.append(compact(_read(run, network, run.dataset.train_images)))
        test_features.append(compact(_read(run, network, run.dataset.test_images)))
        del network
    test = torch.stack(test_features)
    if retrain:
        weight, bias = fit_probes(torch.stack(train_features), run.dataset, run.runtime, config)
    else:
        weight, bias = run.clean_probe
    return 100.0 - probe_accuracy(test, run.dataset.test_labels, weight, bias)


def _read(run: RunUnderTest, network: PerturbedNetwork, images: torch.Tensor) -> torch.Tensor:
    features, _ = read_network(network, images, run.layer, prepare=run.prepare, autocast=run.runtime.autocast)
    return features


def fit_probes(train: torch.Tensor, dataset: ImageDataset, runtime: Runtime, config: RobustnessConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Train the configured probe on each of the M feature matrices (M, N, D); return weight (M, R, D, C), bias (M, R, C).

    Every call starts from the same generator, so repeat r has the same initialisation and
    mini-batch order in every call. The ridge probe has one deterministic fit (R = 1).
    """
    classes = len(dataset.classes)
    if config.probe == "ridge":
        fits = [fit_ridge_probe(matrix, dataset.train_labels, alpha=config.ridge_alpha, num_classes=classes) for matrix in train]
        return torch.stack([w for w, _ in fits]).unsqueeze(1), torch.stack([b for _, b in fits]).unsqueeze(1)
    return train_adam_probes(
        train,
        dataset.train_labels,
        repeats=config.repeats,
        epochs=config.probe_epochs,
        batch_size=config.probe_batch_size,
        lr=config.probe_lr,
        generator=runtime.generator(config.seed, "robustness-probe"),
        num_classes=classes,
    )


def compact(features: torch.Tensor) -> torch.Tensor:
    """Return `features` as bfloat16 when that is lossless (bf16 runs give bf16 values), else unchanged.

    Halving the bytes matters because the batched probe is bound by memory bandwidth on a CPU.
    """
    half = features.bfloat16()
    return half if torch.equal(half.float(), features) else features


# ---------------------------------------------------------------------------------------------
# Devices of each perturbation kind.


def build_devices(run: RunUnderTest, kind: str, config: RobustnessConfig) -> list[Device]:
    """Return the devices of one perturbation kind, at every configured level and draw."""
    if kind == "weight-noise":
        return [weight_noise_device(run, level, draw, config) for level in config.weight_noise for draw in range(config.draws)]
    if kind in ("activation-noise", "pre-activation-noise"):
        site = "activation" if kind == "activation-noise" else "pre-activation"
        levels = config.activation_noise if kind == "activation-noise" else config.pre_activation_noise
        return [activation_noise_device(run, ActivationNoise(level, site), draw, config) for level in levels for draw in range(config.draws)]
    if kind == "neuron-pruning":
        return [neuron_pruning_device(run, threshold) for threshold in config.neuron_pruning]
    if kind == "weight-pruning":
        return [weight_pruning_device(run, sparsity, config.weight_pruning_scope) for sparsity in config.weight_pruning]
    raise ValueError(f"unknown perturbation {kind!r}; expected one of {', '.join(config_module.PERTURBATIONS)}")


def _probed_weights(run: RunUnderTest) -> list[torch.Tensor]:
    """Return the weight tensors of layers 1..run.layer, the ones that can change the probed representation."""
    return [part.affine.weight.detach() for part in physical_layers(run.backbone)[: run.layer]]


def weight_noise_device(run: RunUnderTest, level: float, draw: int, config: RobustnessConfig) -> Device:
    """Build a device whose weights (layers 1..layer) carry one static draw of Gaussian noise."""
    noise = WeightNoise(level, relative=config.weight_noise_relative)
    generator = run.runtime.generator(config.seed, "weight-noise", level, draw)
    perturbed = with_weights(run.backbone, lambda number, weight: noise.draw(weight, generator) if number <= run.layer else weight)
    change = relative_change(_probed_weights(run), [part.affine.weight for part in physical_layers(perturbed)[: run.layer]])
    return Device(level, draw, lambda: PerturbedNetwork(perturbed), {"relative_change": change})


def activation_noise_device(run: RunUnderTest, noise: ActivationNoise, draw: int, config: RobustnessConfig) -> Device:
    """Build a device with Gaussian noise on every hidden layer's (pre-)activations, redrawn at each pass.

    Each device gets its own generator, built afresh when the device is built, so its training-set
    and test-set passes draw from one reproducible stream.
    """
    kind = "activation-noise" if noise.site == "activation" else "pre-activation-noise"

    def build() -> PerturbedNetwork:
        generator = run.runtime.generator(config.seed, kind, noise.std, draw)
        return PerturbedNetwork(run.backbone, activation_noise=noise, generator=generator)

    return Device(noise.std, draw, build, {})


def neuron_pruning_device(run: RunUnderTest, threshold: float) -> Device:
    """Build a device without the neurons (layers 1..layer) whose mean training-set activation is below `threshold`."""
    masks = {number: neuron_keep_mask(run.train_statistics.mean[number], threshold) for number in range(1, run.layer + 1)}
    removed = sum(int((~mask).sum()) for mask in masks.values())
    total = sum(mask.numel() for mask in masks.values())
    measures = {"pruned_fraction": removed / total, "threshold": threshold}
    return Device(threshold, 0, lambda: PerturbedNetwork(run.backbone, neuron_masks=masks), measures)


def weight_pruning_device(run: RunUnderTest, sparsity: float, scope: str) -> Device:
    """Build a device without the smallest-magnitude fraction `sparsity` of the weights of layers 1..layer."""
    weights = _probed_weights(run)
    masks = magnitude_keep_masks(weights, sparsity, scope)
    removed = [weight[~mask].abs() for weight, mask in zip(weights, masks)]
    threshold = max((float(values.max()) for values in removed if values.numel()), default=0.0)
    measures = {
        "pruned_fraction": sum(int((~mask).sum()) for mask in masks) / sum(mask.numel() for mask in masks),
        "threshold": threshold,  # the largest magnitude removed
    }
    perturbed = with_weights(run.backbone, lambda number, weight: weight * masks[number - 1] if number <= run.layer else weight)
    return Device(sparsity, 0, lambda: PerturbedNetwork(perturbed), measures)


# ---------------------------------------------------------------------------------------------
# Measurements without a probe, and output.


def sparsity_rows(run: RunUnderTest) -> list[dict]:
    """Return the fraction of exactly-zero ReLU outputs of every layer on the test set."""
    return [
        {
            "model": run.folder.name,
            "run_name": run.name,
            "layer": number,
            "neurons": int(run.test_statistics.mean[number].numel()),
            "zero_fraction": fraction,
        }
        for number, fraction in sorted(run.test_statistics.zero_fraction.items())
    ]


def histogram_rows(weights: dict[Path, tuple[str, list[torch.Tensor]]], bins: int) -> list[dict]:
    """Return per-layer weight histograms of every run on `bins` equal bins over [-m, m], m the largest |w| of all."""
    largest = max(float(weight.abs().max()) for _, layers in weights.values() for weight in layers)
    edges = torch.linspace(-largest, largest, bins + 1, dtype=torch.float64)
    rows = []
    for folder, (name, layers) in weights.items():
        for number, weight in enumerate(layers, start=1):
            counts = weight_histogram(weight, edges)
            width = float(edges[1] - edges[0])
            for left, right, count in zip(edges[:-1].tolist(), edges[1:].tolist(), counts.tolist()):
                density = count / (weight.numel() * width) if width > 0 else 0.0
                rows.append({"model": folder.name, "run_name": name, "layer": number, "bin_left": left,
                             "bin_right": right, "count": count, "density": density})
    return rows


def weight_histogram(weight: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Count the entries of `weight` in each bin [edges[i], edges[i+1]); the last bin includes its right edge."""
    values = weight.double().flatten()
    index = torch.bucketize(values, edges, right=True) - 1
    index = index.clamp(0, edges.numel() - 2)  # the largest value lands in the last bin
    inside = (values >= edges[0]) & (values <= edges[-1])
    return torch.bincount(index[inside], minlength=edges.numel() - 1)


def write_table(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    """Write `rows` as the complete content of a tidy CSV file, atomically."""
    runs.TidyCSV(path, columns).write(rows)


def log_kind(run: RunUnderTest, kind: str, rows: list[dict], seconds: float, log: Callable[[str], None]) -> None:
    """Log one line per perturbation kind: mean ± sample std of the delta at each level."""
    by_level: dict[float, list[float]] = {}
    for row in rows:
        by_level.setdefault(row["level"], []).append(row["delta"])
    parts = []
    for level, deltas in by_level.items():
        mean = sum(deltas) / len(deltas)
        std = (sum((d - mean) ** 2 for d in deltas) / (len(deltas) - 1)) ** 0.5 if len(deltas) > 1 else 0.0
        parts.append(f"{level:g}: {mean:+.2f} ± {std:.2f}")
    n = len(rows) // max(len(by_level), 1)
    log(f"robust {run.folder.name}  {kind:<20}  delta error % (n={n}) " + ", ".join(parts) + f"  ({seconds:.0f} s)")


def default_output(folders: list[Path], output: Path | None) -> Path:
    """Return the output folder: `output`, or RUN/robustness for a single run."""
    if output is not None:
        return output
    if len(folders) == 1:
        return folders[0] / "robustness"
    raise runs.RunFolderError("several runs need a shared output folder; give --out DIR")

