"""Probe a saved checkpoint of a run folder again, with the run's config and new probe settings."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pnn_ssl import config as config_module
from pnn_ssl import runs
from pnn_ssl.data.sources import _spec_for
from pnn_ssl.training.end_to_end import build_model, load_checkpoint, load_data, make_prepare
from pnn_ssl.training.probing import probe_backbone
from pnn_ssl.training.runtime import seed_everything, setup_runtime


def reprobe(folder: Path, checkpoint: str = "last.pt", overrides: list[str] | None = None, *, log: Callable[[str], None] = print) -> dict:
    """Run the probes on `folder/checkpoints/checkpoint`; only probe.* and runtime fields may be overridden."""
    config = runs.read_config(folder)
    for text in overrides or []:
        key = text.split("=", 1)[0].strip()
        if not key.startswith("probe.") and key not in config_module.RUNTIME_FIELDS:
            raise config_module.ConfigError(
                f"invalid override {text!r} for probe; only probe.* fields and "
                f"{', '.join(config_module.RUNTIME_FIELDS)} can change here"
            )
    values = config_module.to_dict(config)
    for text in overrides or []:
        values = config_module.merge(values, config_module.parse_override(text))
    config = config_module.from_dict(values)

    read_run_checkpoint(folder, config, checkpoint)  # a missing or unusable checkpoint fails before the data loads

    advice = f"let it finish, or probe a copy of the folder (cp -r {folder} COPY, then pnn-ssl probe COPY)"
    with runs.training_lock(Path(folder), advice):  # training rewrites results.json and probes.csv too
        runtime = setup_runtime(config.train.device, config.train.precision, config.train.threads)
        seed_everything(config.seed)
        dataset = load_data(config, runtime.device)
        backbone, epoch = load_backbone(folder, config, dataset, runtime.device, checkpoint)
        prepare = make_prepare(dataset, config.data.normalize, runtime.device)
        return probe_backbone(backbone, dataset, config, runtime, prepare, checkpoint_epoch=epoch, folder=folder, log=log)


def load_backbone(
    folder: Path, config: config_module.ExperimentConfig, dataset, device: torch.device, checkpoint: str = "last.pt"
) -> tuple[nn.Module, int]:
    """Rebuild a run's network from its config, load `checkpoint`, and return (backbone, epochs completed).

    Heads are dropped: an end-to-end run gives its MLPBackbone (without projector or classifier), a
    staged run its StagedNetwork, which reads its own representations.
    """
    model = build_run_network(config, tuple(dataset.train_images.shape[1:]), len(dataset.classes)).to(device)
    epoch = load_checkpoint(folder, model, name=checkpoint)
    return (model if config_module.uses_staged_trainer(config) else model.backbone), epoch


def build_run_network(config: config_module.ExperimentConfig, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build the network that a run with `config` trains and checkpoints, for images of shape (C, H, W)."""
    if config_module.uses_staged_trainer(config):
        from pnn_ssl.training.layerwise import build_network

        return build_network(config, image_shape)
    return build_model(config, math.prod(image_shape), num_classes)


def read_run_checkpoint(folder: Path, config: config_module.ExperimentConfig, name: str = "last.pt", *, mmap: bool = True) -> dict:
    """Read `folder/checkpoints/name` onto the CPU and check that it fits the network that `config` builds.

    The check needs no dataset: the network is built on the meta device from the dataset's standard
    image shape. Raises RunFolderError when the file is missing, unreadable or from another network.
    With `mmap`, tensor data stays on disk until it is used.
    """
    path = runs.checkpoint_path(folder, name)
    state = runs.read_checkpoint(path, mmap=mmap)
    spec = _spec_for(config.data.dataset)
    with torch.device("meta"):  # shapes only, no memory for the weights
        network = build_run_network(config, spec.image_shape, len(spec.classes))
    runs.check_model_state(path, network.state_dict(), state["model"])
    return state
