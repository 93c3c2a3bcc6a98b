"""Probe a saved checkpoint of a run folder again, with the run's config and new probe settings."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pnn_ssl import config as config_module
from pnn_ssl import runs
from pnn_ssl.training.end_to_end import build_model, load_checkpoint, load_data, make_prepare
from pnn_ssl.training.probing import probe_backbone
from pnn_ssl.training.runtime import seed_everything, setup_runtime


def reprobe(folder: Path, checkpoint: str = "last.pt", overrides: list[str] | None = None, *, log: Callable[[str], None] = print) -> dict:
    """Run the probes on `folder/checkpoints/checkpoint`; only probe.* fields may be overridden."""
    config = runs.read_config(folder)
    for text in overrides or []:
        if not text.strip().startswith("probe."):
            raise config_module.ConfigError(f"invalid override {text!r} for probe; only probe.* fields can change here")
    values = config_module.to_dict(config)
    for text in overrides or []:
        values = config_module.merge(values, config_module.parse_override(text))
    config = config_module.from_dict(values)

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
    if config_module.uses_staged_trainer(config):
        from pnn_ssl.training.layerwise import build_network

        model = build_network(config, tuple(dataset.train_images.shape[1:])).to(device)
        epoch = load_checkpoint(folder, model, name=checkpoint)
        return model, epoch
    model = build_model(config, dataset.train_images[0].numel(), len(dataset.classes)).to(device)
    epoch = load_checkpoint(folder, model, name=checkpoint)
    return model.backbone, epoch
