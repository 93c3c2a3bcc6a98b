"""Trainers: end-to-end (`end_to_end`) and staged layer-wise (`layerwise`), plus probing of trained runs."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pnn_ssl import runs
from pnn_ssl.config import ExperimentConfig, uses_staged_trainer


def train_run(config: ExperimentConfig, folder: Path, *, resume: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train (or resume) the run in `folder` with the trainer that `config` needs; return results.json.

    Raises RunFolderError when another process is training the same folder.
    """
    if uses_staged_trainer(config):
        from pnn_ssl.training.layerwise import train
    else:
        from pnn_ssl.training.end_to_end import train
    folder = Path(folder)
    with runs.training_lock(folder):
        try:
            return train(config, folder, resume=resume, log=log)
        except Exception as error:
            # Without this, results.json would keep the status "running" after an unexpected error.
            if runs.read_json(folder / "results.json").get("status") == "running":
                runs.update_results(folder, status="failed", error=f"{type(error).__name__}: {error}")
            raise
