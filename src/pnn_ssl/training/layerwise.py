"""Layer-wise SSL training of staged MLPs and CNNs, and end-to-end training of CNNs.

A network is a stack of stages (`pnn_ssl.models.stages`): a physical layer plus its local head.
Three modes (`train.mode`) share one loop:

- sequential: stage 1 for `train.epochs` epochs, then stage 2, and so on. Each stage gets a fresh
  Adam optimiser over its own parameters. A finished stage is frozen exactly: requires_grad is
  off, it stays in eval mode (so BatchNorm's running statistics stop changing), and later stages
  run it under no_grad. Stages after the current one are not computed.
- simultaneous: every stage's local loss on every step, summed, one optimiser step. Each stage's
  input is detached, so no gradient crosses stages.
- end-to-end: one loss on the last stage, with gradients through every layer.

Epochs are numbered globally: a sequential run has L * `train.epochs` of them, and epoch t belongs
to stage (t - 1) // `train.epochs` + 1. The shuffle and the augmentations of epoch t come from
generators seeded by (seed, t), as in the end-to-end trainer. The first stage of a sequential run
therefore gets exactly the batches of an end-to-end run with the same seed, and a resumed run
repeats what an uninterrupted one would have done.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import itertools
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pnn_ssl import runs
from pnn_ssl.config import AugmentConfig, ConfigError, ExperimentConfig, LossConfig, model_depth
from pnn_ssl.data.augment import augment
from pnn_ssl.data.sources import ImageDataset
from pnn_ssl.models.stages import StagedNetwork, cnn_network, mlp_network
from pnn_ssl.physics import AnalogMatVec, PhysicalLayer
from pnn_ssl.training.end_to_end import (
    Objective,
    TrainingStopped,
    batch_progress,
    check_health,
    load_checkpoint,
    load_data,
    make_objective,
    make_optimizer,
    make_prepare,
    save_checkpoint,
)
from pnn_ssl.training.probing import probe_backbone, resolve_layers
from pnn_ssl.training.progress import EpochTimer
from pnn_ssl.training.runtime import Runtime, derive_seed, seed_everything, setup_runtime
from pnn_ssl.training.zeroth_order import spsa_step, steps_per_epoch, term_weights

# The trainer warns above this many parameters. The authors' 8192-wide CIFAR-10 projectors reach 0.5 billion.
LARGE_MODEL_PARAMETERS = 100_000_000


# ---------------------------------------------------------------------------------------------
# Network, phases and per-stage objectives.


def build_network(config: ExperimentConfig, image_shape: tuple[int, int, int]) -> StagedNetwork:
    """Build the staged network of `config.model` for images of shape (C, H, W).

    Every stage gets a head in the layer-wise modes, but in end-to-end mode only the last one does.
    """
    model = config.model
    depth = model_depth(model)
    heads = (depth,) if config.train.mode == "end-to-end" else tuple(range(1, depth + 1))
    if model.architecture == "cnn":
        return cnn_network(
            image_shape[0],
            model.channels,
            model.projector_widths,
            head_stages=heads,
            kernel_size=model.kernel_size,
            bias=model.bias,
            batchnorm=model.batchnorm,
            adapter_width=model.adapter_width,
            adapter_pool=model.adapter_pool,
            projector_bias=model.projector_bias,
            projector_batchnorm=model.projector_batchnorm,
        )
    return mlp_network(
        math.prod(image_shape),
        model.widths,
        model.projector_widths,
        head_stages=heads,
        bias=model.bias,
        projector_bias=model.projector_bias,
        projector_batchnorm=model.projector_batchnorm,
        make_layer=None if config.physical.layer == "digital" else _physical_layer_factory(config),
    )


def _physical_layer_factory(config: ExperimentConfig) -> Callable[[int, int], nn.Module]:
    """Return a builder of physical layers; layer k's noise generator is seeded from (seed, "device", k)."""
    physical = config.physical
    layer_numbers = itertools.count(1)
    if physical.layer == "custom":
        build = _import_factory(physical.factory)
    else:
        build = functools.partial(
            AnalogMatVec, bias=config.model.bias, weight_range=physical.weight_range, levels=physical.levels,
            programming_noise=physical.programming_noise, read_noise=physical.read_noise,
        )

    def make_layer(in_features: int, out_features: int) -> nn.Module:
        layer = build(in_features, out_features, seed=derive_seed(config.seed, "device", next(layer_numbers)))
        if not isinstance(layer, PhysicalLayer):
            raise ConfigError(f"physical.factory={physical.factory!r} returned {type(layer).__name__}, not a PhysicalLayer")
        return layer

    return make_layer


def _import_factory(text: str) -> Callable[..., nn.Module]:
    module_name, _, name = text.partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"physical.factory={text!r} could not be imported ({error}); expected module:function") from error


@dataclass(frozen=True)
class Phase:
    """A span of epochs with one optimiser and a fixed set of trained stages."""

    label: str  # "stage 2/4", "stages 1-4" or "end-to-end"
    first_epoch: int  # global, 1-based
    epochs: int
    trained: tuple[int, ...]  # stages whose parameters the optimiser updates
    losses: tuple[int, ...]  # stages whose local loss enters the objective
    detach: bool  # detach each stage's input, so no gradient crosses stages

    @property
    def last_epoch(self) -> int:
        return self.first_epoch + self.epochs - 1


def plan_phases(mode: str, depth: int, epochs: int) -> list[Phase]:
    """Return the training phases of `mode`. `epochs` counts per stage in sequential mode and in total otherwise."""
    every = tuple(range(1, depth + 1))
    if mode == "sequential":
        return [
            Phase(f"stage {number}/{depth}", (number - 1) * epochs + 1, epochs, (number,), (number,), True)
            for number in every
        ]
    if mode == "simultaneous":
        return [Phase(f"stages 1-{depth}", 1, epochs, every, every, True)]
    if mode == "end-to-end":
        return [Phase("end-to-end", 1, epochs, every, (depth,), False)]
    raise ValueError(f"invalid train.mode {mode!r}; expected end-to-end, sequential or simultaneous")


def layer_coefficients(loss: LossConfig, depth: int) -> list[tuple[float, float, float]]:
    """Return VICReg's (sim, std, cov) coefficients for layers 1..depth under `loss.coefficient_schedule`."""
    if loss.coefficient_schedule == "constant":
        return [(loss.sim_coeff, loss.std_coeff, loss.cov_coeff)] * depth
    parameters = list(zip(loss.sigmoid_scale, loss.sigmoid_slope, loss.sigmoid_threshold, loss.sigmoid_bias))
    return [
        tuple(scale / (1.0 + math.exp(-slope * (layer - threshold))) + bias for scale, slope, threshold, bias in parameters)
        for layer in range(1, depth + 1)
    ]


def stage_objectives(loss: LossConfig, depth: int) -> dict[int, Objective]:
    """Bind each stage's loss, with its own coefficients, into a function of two embeddings."""
    objectives = {}
    for number, (sim, std, cov) in enumerate(layer_coefficients(loss, depth), start=1):
        objectives[number] = make_objective(dataclasses.replace(loss, sim_coeff=sim, std_coeff=std, cov_coeff=cov))
    return objectives


def stage_embeddings(network: StagedNetwork, x: torch.Tensor, phase: Phase) -> dict[int, torch.Tensor]:
    """Run the stages up to the deepest loss stage of `phase` and return {stage: embedding (N, D)}.

    Stages before the first trained one run under no_grad, so they build no graph.
    """
    first_trained = min(phase.trained)
    embeddings: dict[int, torch.Tensor] = {}
    h = x
    for number in range(1, max(phase.losses) + 1):
        stage = network.stage(number)
        if number < first_trained:
            with torch.no_grad():  # a frozen prefix, whose output is a constant input of this phase
                h = stage(h)
            continue
        h = stage(h.detach() if phase.detach else h)
        if number in phase.losses:
            embeddings[number] = stage.head(h)
    return embeddings


def begin_phase(network: StagedNetwork, phase: Phase, config: ExperimentConfig, runtime: Runtime) -> torch.optim.Optimizer:
    """Freeze every stage outside `phase.trained` and return a fresh optimiser over the trained ones.

    With SPSA the projectors stay at their random initialisation, so only the layers are trained.
    """
    for number in range(1, network.depth + 1):
        network.stage(number).requires_grad_(number in phase.trained)
    if config.train.optimizer_rule == "spsa":
        for number in phase.trained:
            network.stage(number).head.requires_grad_(False)
        trained = nn.ModuleList(network.stage(number).layer for number in phase.trained)
    else:
        trained = nn.ModuleList(network.stage(number) for number in phase.trained)
    return make_optimizer(trained, config, runtime)


def set_train_modes(network: StagedNetwork, phase: Phase) -> None:
    """Put the trained stages in train mode and every other stage in eval mode."""
    for number in range(1, network.depth + 1):
        network.stage(number).train(number in phase.trained)


# ---------------------------------------------------------------------------------------------
# One epoch.


class _StagedEpoch:
    """State shared by the steps of one epoch, bundled to keep the step function short."""

    def __init__(self, network, optimizer, phase: Phase, objectives, config: ExperimentConfig, runtime: Runtime, prepare, epoch: int) -> None:
        self.network = network
        self.optimizer = optimizer
        self.phase = phase
        self.objectives = objectives
        self.config = config
        self.runtime = runtime
        self.prepare = prepare
        self.augment_config = config.augment
        self.augment_generator = runtime.generator(config.seed, "augment", epoch)
        # SPSA's directions and drawn loss terms, with the coefficients of every stage's terms.
        self.perturbation_generator = runtime.generator(config.seed, "perturbation", epoch)
        self.term_generator = runtime.generator(config.seed, "term", epoch)
        self.term_weights = {
            number: term_weights(config.loss, coefficients)
            for number, coefficients in enumerate(layer_coefficients(config.loss, network.depth), start=1)
        }
        self.augmenting = config.augment != AugmentConfig()
        self.totals: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=runtime.device))

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return augment(x, self.augment_config, self.augment_generator) if self.augmenting else x

    def record(self, number: int, loss: torch.Tensor, terms: dict[str, torch.Tensor], embedding_std: torch.Tensor, batch: int) -> None:
        self.totals[f"stage{number}_loss"] += loss.detach() * batch
        for name, value in terms.items():
            self.totals[f"stage{number}_loss_{name}"] += value.detach() * batch
        self.totals[f"stage{number}_embedding_std"] += embedding_std.detach() * batch


def _step(context: _StagedEpoch, images: torch.Tensor) -> None:
    view_a = context.prepare(images, context.view)  # (B, C, H, W), independent augmentations
    view_b = context.prepare(images, context.view)
    with context.runtime.autocast():
        embeddings = stage_embeddings(context.network, torch.cat([view_a, view_b]), context.phase)  # (2B, D) each

    # The losses run outside autocast, in float32, as in the end-to-end trainer.
    batch = images.shape[0]
    total = None
    for number, z in embeddings.items():
        z_a, z_b = z.float().chunk(2)
        loss, terms = context.objectives[number](z_a, z_b)
        total = loss if total is None else total + loss
        context.record(number, loss, terms, z_a.detach().std(0).mean(), batch)

    context.optimizer.zero_grad(set_to_none=True)
    total.backward()
    context.optimizer.step()
    context.totals["loss"] += total.detach() * batch


def run_stage_epoch(network, optimizer, phase: Phase, objectives, dataset: ImageDataset, config: ExperimentConfig, runtime: Runtime, prepare, epoch: int) -> dict[str, float]:
    """Train the stages of `phase` for one epoch and return its mean metrics (training set, with augmentation).

    `loss` is the summed objective, `embedding_std` the smallest stage's mean per-feature std. With
    SPSA both are means over the 2n perturbed evaluations of each step.
    """
    set_train_modes(network, phase)
    context = _StagedEpoch(network, optimizer, phase, objectives, config, runtime, prepare, epoch)
    n = dataset.train_images.shape[0]
    batch_size = config.train.batch_size
    order = torch.randperm(n, generator=runtime.generator(config.seed, "order", epoch), device=runtime.device)
    stop = n - n % batch_size if config.train.drop_last else n
    if stop == 0:
        raise ValueError(f"train.batch_size={batch_size} is larger than the {n} training images with train.drop_last=true")

    spsa = config.train.optimizer_rule == "spsa"
    first_step = (epoch - phase.first_epoch) * steps_per_epoch(n, batch_size, config.train.drop_last)
    for index, start in enumerate(batch_progress(range(0, stop, batch_size), epoch)):
        images = dataset.train_images[order[start : start + batch_size]]
        if spsa:
            spsa_step(context, images, first_step + index)
        else:
            _step(context, images)

    stats = {name: float(total) / stop for name, total in context.totals.items()}
    stats["embedding_std"] = min(stats[f"stage{number}_embedding_std"] for number in phase.losses)
    return stats


# ---------------------------------------------------------------------------------------------
# The whole run.


@dataclass
class _Run:
    """The objects a run's phases share, and its running totals."""

    config: ExperimentConfig
    folder: Path
    runtime: Runtime
    dataset: ImageDataset
    prepare: Callable
    network: StagedNetwork
    objectives: dict[int, Objective]
    final_epoch: int
    log: Callable[[str], None]
    last_saved: int = 0
    train_seconds: float = 0.0

    def probe(self, layers: tuple[int, ...], checkpoint_epoch: int) -> None:
        """Probe each layer separately, so that only one layer's cached features are in memory at a time."""
        for layer in layers:
            probe = dataclasses.replace(self.config.probe, layers=(layer,))
            probe_backbone(
                self.network, self.dataset, dataclasses.replace(self.config, probe=probe), self.runtime,
                self.prepare, checkpoint_epoch=checkpoint_epoch, folder=self.folder, log=self.log,
            )


def train(config: ExperimentConfig, folder: Path, *, resume: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train (or resume) the staged run in `folder`, checkpointing and probing as configured; return results.json."""
    runtime = setup_runtime(config.train.device, config.train.precision, config.train.threads)
    seed_everything(config.seed)
    dataset = load_data(config, runtime.device)
    network = build_network(config, tuple(dataset.train_images.shape[1:])).to(runtime.device)
    phases = plan_phases(config.train.mode, network.depth, config.train.epochs)
    run = _Run(
        config=config,
        folder=folder,
        runtime=runtime,
        dataset=dataset,
        prepare=make_prepare(dataset, config.data.normalize, runtime.device),
        network=network,
        objectives=stage_objectives(config.loss, network.depth),
        final_epoch=phases[-1].last_epoch,
        log=log,
    )

    start = load_checkpoint(folder, network) if resume else 0
    _prepare_folder(run, resume, start)
    log(f"run    {folder}  ({config.name}, {config.train.mode} {config.model.architecture}, {network.depth} stage{'s' if network.depth != 1 else ''}, "
        f"{len(dataset.train_images)} training images from {dataset.source}, device {runtime.device})")
    _warn_if_large(network, log)

    for index, phase in enumerate(phases):
        if phase.last_epoch <= start:
            continue
        optimizer = begin_phase(network, phase, config, runtime)
        if phase.first_epoch <= start:  # resuming inside this phase, so restore its optimiser state
            load_checkpoint(folder, network, optimizer)
        elif index == 0 and not resume:
            save_checkpoint(folder, "last.pt", network, optimizer, 0)
            if config.train.keep_every:
                save_checkpoint(folder, "epoch-0000.pt", network, optimizer, 0)
        _train_phase(run, phase, optimizer, max(start + 1, phase.first_epoch))

    runs.update_results(folder, train_seconds=round(run.train_seconds, 1), epochs_completed=run.final_epoch,
                        seconds_per_epoch=_seconds_per_epoch(folder, phases))
    run.probe(resolve_layers(config.probe.layers, network.depth), run.final_epoch)
    return runs.update_results(folder, status="completed")


def _prepare_folder(run: _Run, resume: bool, start: int) -> None:
    """Write the config and environment. On resume, drop the rows of the epochs that are trained again."""
    runs.write_config(run.folder, run.config)
    runs.write_environment(run.folder, run.runtime.device)
    metrics = runs.metrics_csv(run.folder)  # creates the file with its header
    if resume:
        metrics.keep(lambda row: int(row["epoch"]) <= start)
        runs.probes_csv(run.folder).keep(lambda row: int(row["checkpoint_epoch"]) <= start)
        run.train_seconds = runs.read_json(run.folder / "results.json").get("train_seconds", 0.0)
    run.last_saved = start
    runs.update_results(run.folder, status="running", epochs_completed=start)


def _warn_if_large(network: nn.Module, log: Callable[[str], None]) -> None:
    count = sum(parameter.numel() for parameter in network.parameters())
    if count > LARGE_MODEL_PARAMETERS:
        log(f"warning: the network has {count / 1e6:.0f} M parameters ({count * 4 / 1e9:.1f} GB of float32 weights, "
            f"and Adam keeps two more copies); a smaller model.projector_widths or model.adapter_width cuts most of it")


def _train_phase(run: _Run, phase: Phase, optimizer: torch.optim.Optimizer, first: int) -> None:
    """Train epochs `first`..`phase.last_epoch`, with health checks, metrics, checkpoints and interval probes."""
    config, folder = run.config, run.folder
    metrics = runs.metrics_csv(folder)
    timer = EpochTimer()  # per phase, because deeper stages take longer per epoch
    for epoch in range(first, phase.last_epoch + 1):
        started = time.perf_counter()
        stats = run_stage_epoch(run.network, optimizer, phase, run.objectives, run.dataset, config, run.runtime, run.prepare, epoch)
        stats["seconds"] = time.perf_counter() - started
        run.train_seconds += stats["seconds"]
        timer.add(stats["seconds"])
        try:
            check_health(stats, epoch, config, run.last_saved)
        except TrainingStopped as error:
            runs.update_results(folder, status="failed", error=str(error))
            raise

        metrics.append({"epoch": epoch, "split": "train", "metric": name, "value": value} for name, value in stats.items())
        run.log(_epoch_line(phase, epoch, stats, timer.time_left(phase.last_epoch - epoch)))

        if epoch % config.train.checkpoint_every == 0 or epoch == phase.last_epoch:
            save_checkpoint(folder, "last.pt", run.network, optimizer, epoch)
            run.last_saved = epoch
            runs.update_results(folder, epochs_completed=epoch, train_seconds=round(run.train_seconds, 1))
        if config.train.keep_every and epoch % config.train.keep_every == 0:
            save_checkpoint(folder, f"epoch-{epoch:04d}.pt", run.network, optimizer, epoch)
        in_phase = epoch - phase.first_epoch + 1
        if config.train.probe_every and in_phase % config.train.probe_every == 0 and in_phase < phase.epochs:
            # A sequential phase probes only its own stage, because earlier stages no longer change.
            layers = phase.trained if len(phase.trained) == 1 else resolve_layers(config.probe.layers, run.network.depth)
            run.probe(layers, epoch)


# Loss terms in the console line, with their short labels.
TERM_LABELS = {"invariance": "inv", "variance": "var", "covariance": "cov", "on_diagonal": "on", "off_diagonal": "off"}


def _epoch_line(phase: Phase, epoch: int, stats: dict[str, float], time_left: str = "") -> str:
    parts = [phase.label, f"epoch {epoch - phase.first_epoch + 1:4d}/{phase.epochs}", f"loss {stats['loss']:.4f}"]
    for number in phase.losses:
        prefix = f"stage{number}_"
        if len(phase.losses) > 1:
            parts.append(f"| {number}: loss {stats[prefix + 'loss']:.4f}")
        for name, short in TERM_LABELS.items():
            if f"{prefix}loss_{name}" in stats:
                parts.append(f"{short} {stats[f'{prefix}loss_{name}']:.4f}")
        parts.append(f"z_std {stats[prefix + 'embedding_std']:.3f}")
    parts.append(f"{stats['seconds']:.1f} s")
    if time_left:
        in_stage = phase.label.startswith("stage ")  # a sequential stage: later stages come after it
        parts.append(f"{time_left} left in stage" if in_stage else f"{time_left} left")
    return "  ".join(parts)


def _seconds_per_epoch(folder: Path, phases: list[Phase]) -> dict[str, float]:
    """Return the mean training seconds per epoch of each phase, from metrics.csv."""
    seconds = {
        int(row["epoch"]): float(row["value"]) for row in runs.metrics_csv(folder).read() if row["metric"] == "seconds"
    }
    result = {}
    for phase in phases:
        values = [seconds[epoch] for epoch in range(phase.first_epoch, phase.last_epoch + 1) if epoch in seconds]
        if values:
            result[phase.label.split("/")[0].replace(" ", "-")] = round(sum(values) / len(values), 2)
    return result
