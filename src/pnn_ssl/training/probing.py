"""Probe a backbone's layers and record the results in its run folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from pnn_ssl import runs
from pnn_ssl.config import ExperimentConfig
from pnn_ssl.evaluation.features import backbone_features
from pnn_ssl.evaluation.probes import ProbeResult, run_probes
from pnn_ssl.models import MLPBackbone, StagedNetwork
from pnn_ssl.training.runtime import Runtime


def resolve_layers(layers: tuple[int, ...], depth: int) -> tuple[int, ...]:
    """Turn 1-based layer numbers, where -1 means the last layer, into sorted unique layer numbers."""
    return tuple(sorted({depth + 1 + layer if layer < 0 else layer for layer in layers}))


def probe_backbone(
    backbone: MLPBackbone | StagedNetwork,
    dataset,
    config: ExperimentConfig,
    runtime: Runtime,
    prepare: Callable,
    *,
    checkpoint_epoch: int,
    folder: Path,
    log: Callable[[str], None] = print,
) -> dict:
    """Cache the representations of the configured layers, run every probe, write probes.csv and results.json."""
    probe = config.probe
    layers = resolve_layers(probe.layers, backbone.depth)
    if not layers:
        log("probe  skipped: probe.layers is empty")
        return {}
    started = time.perf_counter()
    features = backbone_features(backbone, dataset, layers, prepare=prepare, autocast=runtime.autocast)
    feature_seconds = time.perf_counter() - started

    results = {}
    for layer in layers:  # one layer at a time, so the console shows progress
        # A generator per layer keeps a layer's numbers independent of which other layers are probed.
        generator = runtime.generator(config.seed, "probe", checkpoint_epoch, layer)
        results.update(
            run_probes(
                {layer: features[layer]},
                repeats=probe.repeats,
                epochs=probe.epochs,
                batch_size=probe.batch_size,
                lr=probe.lr,
                converged=probe.converged,
                lbfgs_max_iter=probe.lbfgs_max_iter,
                l2=probe.l2,
                ridge_alpha=probe.ridge_alpha,
                generator=generator,
                num_classes=len(dataset.classes),
            )
        )
        log(_summary_line(checkpoint_epoch, layer, results[layer]))

    _record(folder, results, checkpoint_epoch)
    summary = {f"layer-{layer}": {r.probe: _summarise(r) for r in layer_results} for layer, layer_results in results.items()}
    existing = runs.read_json(folder / "results.json").get("probes", {})
    by_layer = existing.setdefault(f"epoch-{checkpoint_epoch}", {})
    for layer_key, by_probe in summary.items():  # probes of another kind stay
        by_layer[layer_key] = {**by_layer.get(layer_key, {}), **by_probe}
    runs.update_results(folder, probes=existing)
    probe_seconds = sum(r.seconds for layer_results in results.values() for r in layer_results)
    log(f"probe  features {feature_seconds:.1f} s, probes {probe_seconds:.1f} s")
    return summary


def _record(folder: Path, results: dict[int, list[ProbeResult]], checkpoint_epoch: int) -> None:
    """Append the probe rows to probes.csv, replacing earlier rows of the same checkpoint, layer and probe."""
    table = runs.probes_csv(folder)
    replaced = {(str(checkpoint_epoch), str(layer), r.probe) for layer, layer_results in results.items() for r in layer_results}
    if any((row["checkpoint_epoch"], row["layer"], row["probe"]) in replaced for row in table.read()):
        table.keep(lambda row: (row["checkpoint_epoch"], row["layer"], row["probe"]) not in replaced)
    table.append(_rows(results, checkpoint_epoch))


def _summary_line(checkpoint_epoch: int, layer: int, layer_results: list[ProbeResult]) -> str:
    parts = []
    for result in layer_results:
        spread = f" ± {result.std:.2f} (n={len(result.test_accuracy)})" if len(result.test_accuracy) > 1 else ""
        parts.append(f"{result.probe} {result.mean:.2f}{spread}")
    return f"probe  epoch {checkpoint_epoch:4d}  layer {layer}  test accuracy %: " + ", ".join(parts)


def _summarise(result: ProbeResult) -> dict:
    return {
        "test_accuracy_mean": round(result.mean, 4),
        "test_accuracy_std": round(result.std, 4),
        "n": len(result.test_accuracy),
        "test_accuracy": [round(a, 4) for a in result.test_accuracy],
        "train_accuracy": [round(a, 4) for a in result.train_accuracy],
        "seconds": round(result.seconds, 2),
    }


def _rows(results: dict[int, list[ProbeResult]], checkpoint_epoch: int):
    for layer, layer_results in results.items():
        for result in layer_results:
            for repeat, (test, train) in enumerate(zip(result.test_accuracy, result.train_accuracy)):
                common = {"checkpoint_epoch": checkpoint_epoch, "layer": layer, "probe": result.probe, "repeat": repeat}
                final_epoch = len(result.curves[repeat]) if result.curves else ""
                yield {**common, "probe_epoch": final_epoch, "split": "test", "metric": "accuracy", "value": test}
                yield {**common, "probe_epoch": final_epoch, "split": "train", "metric": "accuracy", "value": train}
                if result.curves:
                    for probe_epoch, value in enumerate(result.curves[repeat][:-1], start=1):
                        yield {**common, "probe_epoch": probe_epoch, "split": "test", "metric": "accuracy", "value": value}
