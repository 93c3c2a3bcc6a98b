"""End-to-end training of an MLP: supervised (cross-entropy) or self-supervised (VICReg, Barlow Twins).

The whole dataset stays on the device as uint8; every step gathers a batch, augments it on the
device with per-sample random parameters and runs one optimiser step. The shuffle and the
augmentations of epoch e come from generators seeded by (seed, e), so a run resumed from the
checkpoint after epoch e repeats exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pnn_ssl import runs
from pnn_ssl.config import AugmentConfig, ExperimentConfig, LossConfig
from pnn_ssl.data.augment import augment
from pnn_ssl.data.sources import DataError, ImageDataset, load_dataset
from pnn_ssl.losses import barlow_twins_loss, vicreg_loss
from pnn_ssl.models import MLPBackbone, Projector, SSLModel, SupervisedModel
from pnn_ssl.training.probing import probe_backbone
from pnn_ssl.training.progress import EpochTimer
from pnn_ssl.training.runtime import Runtime, seed_everything, setup_runtime

Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


class TrainingStopped(RuntimeError):
    """Training stopped because the loss became NaN or infinite, or the embedding collapsed."""


def load_data(config: ExperimentConfig, device: torch.device) -> ImageDataset:
    """Load the configured dataset onto `device`, cut to the configured train and test limits."""
    data = config.data
    if data.data_dir is not None and not Path(data.data_dir).is_dir():
        raise DataError(f"data.data_dir={data.data_dir!r} is not a folder; give the folder with the {data.dataset} files")
    dataset = load_dataset(data.dataset, data.data_dir, download=data.download, device=device)
    folder_names = (str(Path(data.data_dir).resolve()), str(data.data_dir)) if data.data_dir is not None else ()
    if folder_names and not any(name in dataset.source for name in folder_names):
        # An explicit folder without the files is a mistake, not a request for another source.
        raise DataError(
            f"no {data.dataset} files found in data.data_dir={data.data_dir!r}, though {dataset.source} has them; "
            f"put the standard files in that folder, or drop data.data_dir to use the offline packages"
        )
    changes = {}
    if data.train_limit:
        changes.update(train_images=dataset.train_images[: data.train_limit], train_labels=dataset.train_labels[: data.train_limit])
    if data.test_limit:
        changes.update(test_images=dataset.test_images[: data.test_limit], test_labels=dataset.test_labels[: data.test_limit])
    return dataclasses.replace(dataset, **changes)


def build_model(config: ExperimentConfig, in_features: int, num_classes: int) -> nn.Module:
    """Build the supervised or SSL model described by `config.model` and `config.loss`."""
    model = config.model
    backbone = MLPBackbone(in_features, model.widths, bias=model.bias)
    if config.loss.objective == "cross-entropy":
        return SupervisedModel(backbone, num_classes, bias=model.head_bias)
    projector = Projector(
        backbone.widths[-1], model.projector_widths, bias=model.projector_bias, batchnorm=model.projector_batchnorm
    )
    return SSLModel(backbone, projector)


def make_objective(loss: LossConfig) -> Objective:
    """Bind the configured SSL loss and its coefficients into a function of two embeddings."""
    if loss.objective == "vicreg":
        return lambda z_a, z_b: vicreg_loss(
            z_a, z_b, sim_coeff=loss.sim_coeff, std_coeff=loss.std_coeff, cov_coeff=loss.cov_coeff
        )
    if loss.objective == "barlow-twins":
        return lambda z_a, z_b: barlow_twins_loss(
            z_a,
            z_b,
            lambda_off_diagonal=loss.bt_lambda,
            off_diagonal_power=loss.bt_off_diagonal_power,
            std=loss.bt_std,
        )
    raise ValueError(f"{loss.objective!r} is not an SSL objective")


def make_optimizer(model: nn.Module, config: ExperimentConfig, runtime: Runtime) -> torch.optim.Optimizer:
    train = config.train
    if train.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    fused = train.fused_adam and runtime.device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay, fused=fused)


def make_prepare(dataset: ImageDataset, normalize: bool, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return the uint8 -> float conversion used by training and probes alike."""
    mean = torch.tensor(dataset.mean, device=device).view(1, -1, 1, 1) if normalize else None
    std = torch.tensor(dataset.std, device=device).view(1, -1, 1, 1) if normalize else None

    def prepare(images: torch.Tensor, view: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        x = images.float().div_(255.0)  # (B, C, H, W) in [0, 1]
        if view is not None:
            x = view(x)
        if mean is not None:
            x = (x - mean) / std
        return x

    return prepare


# ---------------------------------------------------------------------------------------------
# One epoch.


class _EpochContext:
    """Model, optimiser, generators and running totals shared by the steps of one epoch."""

    def __init__(self, model, optimizer, config: ExperimentConfig, runtime: Runtime, prepare, epoch: int) -> None:
        self.model = model
        self.optimizer = optimizer
        self.config = config
        self.runtime = runtime
        self.prepare = prepare
        self.augment_generator = runtime.generator(config.seed, "augment", epoch)
        self.augmenting = config.augment != AugmentConfig()
        self.objective = None if config.loss.objective == "cross-entropy" else make_objective(config.loss)
        self.totals: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=runtime.device))

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return augment(x, self.config.augment, self.augment_generator) if self.augmenting else x

    def optimise(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def _ssl_step(context: _EpochContext, images: torch.Tensor) -> None:
    view_a = context.prepare(images, context.view)  # (B, C, H, W), independent augmentations
    view_b = context.prepare(images, context.view)
    with context.runtime.autocast():
        z = context.model(torch.cat([view_a, view_b]))  # (2B, D): one forward for both views
    z_a, z_b = z.float().chunk(2)
    loss, terms = context.objective(z_a, z_b)
    context.optimise(loss)

    batch = images.shape[0]
    context.totals["loss"] += loss.detach() * batch
    for name, value in terms.items():
        context.totals[f"loss_{name}"] += value.detach() * batch
    context.totals["embedding_std"] += z_a.detach().std(0).mean() * batch


def _supervised_step(context: _EpochContext, images: torch.Tensor, labels: torch.Tensor) -> None:
    x = context.prepare(images, context.view)
    with context.runtime.autocast():
        logits = context.model(x)
    loss = F.cross_entropy(logits.float(), labels)
    context.optimise(loss)

    context.totals["loss"] += loss.detach() * images.shape[0]
    context.totals["accuracy"] += (logits.argmax(1) == labels).sum() * 100.0


def run_epoch(model, optimizer, dataset: ImageDataset, config: ExperimentConfig, runtime: Runtime, prepare, epoch: int) -> dict[str, float]:
    """Train for one epoch and return its mean metrics (training set, with augmentation)."""
    model.train()
    context = _EpochContext(model, optimizer, config, runtime, prepare, epoch)
    order_generator = runtime.generator(config.seed, "order", epoch)
    n = dataset.train_images.shape[0]
    batch_size = config.train.batch_size
    order = torch.randperm(n, generator=order_generator, device=runtime.device)
    stop = n - n % batch_size if config.train.drop_last else n
    if stop == 0:
        raise ValueError(f"train.batch_size={batch_size} is larger than the {n} training images with train.drop_last=true")

    for start in batch_progress(range(0, stop, batch_size), epoch):
        index = order[start : start + batch_size]
        if context.objective is None:
            _supervised_step(context, dataset.train_images[index], dataset.train_labels[index])
        else:
            _ssl_step(context, dataset.train_images[index])

    return {name: float(total) / stop for name, total in context.totals.items()}


def batch_progress(batches: range, epoch: int):
    """Wrap the batch loop in a tqdm bar only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return batches
    from tqdm import tqdm

    return tqdm(batches, desc=f"epoch {epoch}", leave=False, unit="batch")


@torch.inference_mode()
def evaluate_classifier(model, dataset: ImageDataset, runtime: Runtime, prepare) -> float:
    """Test accuracy in % of a supervised model's own head."""
    model.eval()
    correct = 0
    for start in range(0, dataset.test_images.shape[0], 1024):
        with runtime.autocast():
            logits = model(prepare(dataset.test_images[start : start + 1024]))
        correct += int((logits.argmax(1) == dataset.test_labels[start : start + 1024]).sum())
    return 100.0 * correct / dataset.test_images.shape[0]


def check_health(stats: dict[str, float], epoch: int, config: ExperimentConfig, last_saved: int) -> None:
    """Raise TrainingStopped when the loss is not finite or the SSL embedding has collapsed."""
    loss = stats["loss"]
    if loss != loss or loss in (float("inf"), float("-inf")):
        raise TrainingStopped(
            f"the training loss became {loss} in epoch {epoch}; checkpoints/last.pt contains epoch {last_saved}. "
            f"Start a new run with a smaller learning rate (--set train.lr={config.train.lr / 10:g}, now "
            f"{config.train.lr:g}) or with --set train.precision=fp32, because --resume keeps the run's config."
        )
    std = stats.get("embedding_std")
    if std is not None and std < config.train.collapse_std:
        raise TrainingStopped(
            f"the embedding collapsed in epoch {epoch}: mean per-feature std {std:.3g} < train.collapse_std="
            f"{config.train.collapse_std}; checkpoints/last.pt contains epoch {last_saved}. Start a new run with "
            f"a larger loss.std_coeff (now {config.loss.std_coeff}), a smaller train.lr (now {config.train.lr:g}) "
            "or stronger augmentation, because --resume keeps the run's config."
        )


# ---------------------------------------------------------------------------------------------
# The whole run.


def save_checkpoint(folder: Path, name: str, model: nn.Module, optimizer, epoch: int) -> None:
    state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
    runs.atomic_torch_save(state, folder / "checkpoints" / name)


def load_checkpoint(folder: Path, model: nn.Module, optimizer=None, name: str = "last.pt") -> int:
    """Restore model (and optimizer) state from a checkpoint; return the number of completed epochs.

    Raises RunFolderError, with one line that names the file, when the checkpoint is missing,
    unreadable, or saved for another network or optimizer.
    """
    path = runs.checkpoint_path(folder, name)
    state = runs.read_checkpoint(path, map_location=next(model.parameters()).device)
    runs.check_model_state(path, model.state_dict(), state["model"])
    model.load_state_dict(state["model"])
    if optimizer is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError, IndexError) as error:  # torch raises these for mismatched state
            reason = f"no entry {error}" if isinstance(error, KeyError) else str(error)
            raise runs.RunFolderError(
                f"checkpoint {path} has optimizer state that does not match the run's optimizer ({reason}); "
                "restore the run's own checkpoint from a copy, or train the run again"
            ) from error
    return state["epoch"]


def _epoch_line(epoch: int, epochs: int, stats: dict[str, float], seconds: float, time_left: str = "") -> str:
    parts = [f"epoch {epoch:4d}/{epochs}", f"loss {stats['loss']:.4f}"]
    for name in ("loss_invariance", "loss_variance", "loss_covariance", "loss_on_diagonal", "loss_off_diagonal"):
        if name in stats:
            parts.append(f"{name[5:8]} {stats[name]:.4f}")
    if "embedding_std" in stats:
        parts.append(f"z_std {stats['embedding_std']:.3f}")
    if "accuracy" in stats:
        parts.append(f"train_acc {stats['accuracy']:.2f}")
    if "test_accuracy" in stats:
        parts.append(f"test_acc {stats['test_accuracy']:.2f}")
    parts.append(f"{seconds:.1f} s")
    if time_left:
        parts.append(f"{time_left} left")
    return "  ".join(parts)


def train(config: ExperimentConfig, folder: Path, *, resume: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train (or resume) the run in `folder`, checkpointing and probing as configured; return results.json."""
    runtime = setup_runtime(config.train.device, config.train.precision, config.train.threads)
    seed_everything(config.seed)
    dataset = load_data(config, runtime.device)
    in_features = dataset.train_images[0].numel()
    model = build_model(config, in_features, len(dataset.classes)).to(runtime.device)
    optimizer = make_optimizer(model, config, runtime)
    prepare = make_prepare(dataset, config.data.normalize, runtime.device)

    start = load_checkpoint(folder, model, optimizer) if resume else 0
    runs.write_config(folder, config)
    runs.write_environment(folder, runtime.device)
    metrics = runs.metrics_csv(folder)
    if resume:  # epochs after the checkpoint are trained again, so drop their old rows
        metrics.keep(lambda row: int(row["epoch"]) <= start)
        runs.probes_csv(folder).keep(lambda row: int(row["checkpoint_epoch"]) <= start)
    else:
        save_checkpoint(folder, "last.pt", model, optimizer, 0)
        if config.train.keep_every:
            save_checkpoint(folder, "epoch-0000.pt", model, optimizer, 0)
    runs.update_results(folder, status="running", epochs_completed=start)
    log(f"run    {folder}  ({config.name}, {len(dataset.train_images)} training images from {dataset.source}, device {runtime.device})")

    forward = torch.compile(model) if config.train.compile else model
    epochs, last_saved = config.train.epochs, start
    train_seconds = runs.read_json(folder / "results.json").get("train_seconds", 0.0) if resume else 0.0
    timer = EpochTimer()
    for epoch in range(start + 1, epochs + 1):
        started = time.perf_counter()
        stats = run_epoch(forward, optimizer, dataset, config, runtime, prepare, epoch)
        stats["seconds"] = time.perf_counter() - started
        train_seconds += stats["seconds"]
        timer.add(stats["seconds"])
        try:
            check_health(stats, epoch, config, last_saved)
        except TrainingStopped as error:
            runs.update_results(folder, status="failed", error=str(error))
            raise
        if config.loss.objective == "cross-entropy":
            stats["test_accuracy"] = evaluate_classifier(model, dataset, runtime, prepare)

        metrics.append({"epoch": epoch, "split": "test" if name == "test_accuracy" else "train", "metric": name, "value": value} for name, value in stats.items())
        log(_epoch_line(epoch, epochs, stats, stats["seconds"], timer.time_left(epochs - epoch)))

        if epoch % config.train.checkpoint_every == 0 or epoch == epochs:
            save_checkpoint(folder, "last.pt", model, optimizer, epoch)
            last_saved = epoch
            runs.update_results(folder, epochs_completed=epoch, train_seconds=round(train_seconds, 1))
        if config.train.keep_every and epoch % config.train.keep_every == 0:
            save_checkpoint(folder, f"epoch-{epoch:04d}.pt", model, optimizer, epoch)
        if config.train.probe_every and epoch % config.train.probe_every == 0 and epoch < epochs:
            probe_backbone(model.backbone, dataset, config, runtime, prepare, checkpoint_epoch=epoch, folder=folder, log=log)

    final = {"train_seconds": round(train_seconds, 1), "epochs_completed": epochs}
    if config.loss.objective == "cross-entropy":
        final["head_test_accuracy"] = round(evaluate_classifier(model, dataset, runtime, prepare), 4)
    runs.update_results(folder, **final)
    probe_backbone(model.backbone, dataset, config, runtime, prepare, checkpoint_epoch=epochs, folder=folder, log=log)
    return runs.update_results(folder, status="completed")
