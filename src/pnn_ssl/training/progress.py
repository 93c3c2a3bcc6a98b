"""Progress of training: the time left on each epoch line, and a summary of a run folder."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

from pnn_ssl import runs
from pnn_ssl.config import model_depth, uses_staged_trainer

RECENT_EPOCHS = 10  # epochs in the running mean: the first epoch's warm-up drops out after this many
STALLED_AFTER_SECONDS = 600  # a running run that writes none of PROGRESS_FILES for this long has probably stopped
PROGRESS_FILES = ("metrics.csv", "probes.csv", "results.json")  # written after each epoch, checkpoint or probe


class EpochTimer:
    """Running mean of the last RECENT_EPOCHS epoch times, and the time left that it implies."""

    def __init__(self) -> None:
        self._recent: deque[float] = deque(maxlen=RECENT_EPOCHS)

    def add(self, seconds: float) -> None:
        self._recent.append(seconds)

    def time_left(self, epochs_left: int) -> str:
        """Return the time of `epochs_left` epochs at the recent mean, such as '2h05m', or '' when none are left."""
        if epochs_left <= 0 or not self._recent:
            return ""
        mean = sum(self._recent) / len(self._recent)
        return format_duration(mean * epochs_left)


def format_duration(seconds: float) -> str:
    """Format seconds as '45s', '12m05s' or '3h07m' (rounded to the unit shown last)."""
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


# ---------------------------------------------------------------------------------------------
# Progress of a run folder, read from its files while it trains or after.


def describe_run(folder: Path, *, now: float | None = None) -> str:
    """Summarise a run folder's progress in one line: status, epoch, speed, time left and last probe.

    Reads config.yaml, results.json and metrics.csv only, so it is safe while the run trains. A killed
    process cannot update its status, so a 'running' run is reported as stopped when no process
    holds its training lock, and as probably stopped when its files have not changed for a long time.
    """
    config = runs.read_config(folder)
    results = runs.read_json(folder / "results.json")
    status = results.get("status", "not started")
    seconds = _epoch_seconds(folder)
    parts = [f"{folder}: {status}"]
    if status == "completed":
        epochs = results.get("epochs_completed", 0)
        parts.append(f"{epochs} epoch{'' if epochs == 1 else 's'}, {format_duration(results.get('train_seconds', 0.0))} of training")
        probe = _last_probe(results)
        if probe:
            parts.append(probe)
        return ", ".join(parts)

    last_epoch = max(seconds, default=0)
    epochs_per_stage = config.train.epochs
    stages = model_depth(config.model) if uses_staged_trainer(config) and config.train.mode == "sequential" else 1
    stage = (last_epoch - 1) // epochs_per_stage + 1 if last_epoch else 1
    in_stage = last_epoch - (stage - 1) * epochs_per_stage
    where = f"epoch {in_stage} of {epochs_per_stage}"
    if stages > 1:
        where = f"stage {stage} of {stages}, {where} in the stage"
    parts.append(f"{where} (checkpoint at epoch {results.get('epochs_completed', 0)})")

    recent = [seconds[epoch] for epoch in sorted(seconds)[-RECENT_EPOCHS:] if epoch > (stage - 1) * epochs_per_stage]
    if recent:
        mean = sum(recent) / len(recent)
        left = format_duration(mean * (epochs_per_stage - in_stage))
        parts.append(f"{mean:.1f} s per epoch, {left} left" + (" in the stage" if stages > 1 else ""))
    if stage < stages:
        parts.append(f"{stages - stage} more stage{'s' if stages - stage > 1 else ''} after it")
    stalled = _stalled(folder, status, recent, now if now is not None else time.time())
    if stalled:
        parts.append(stalled)
    if status == "interrupted":
        parts.append(f"continue with: pnn-ssl train --resume {folder}")
    if status == "failed" and results.get("error"):
        parts.append(f"error: {results['error']}")
    return ", ".join(parts)


def find_run_folders(paths: list[Path]) -> list[Path]:
    """Return the run folders among `paths`; a folder that is not a run stands for the runs directly inside it."""
    found = []
    for path in paths:
        if (path / "config.yaml").exists() or not path.is_dir():
            found.append(path)  # a missing path or config.yaml is reported by describe_run
            continue
        inside = sorted(child for child in path.iterdir() if (child / "config.yaml").exists())
        found.extend(inside or [path])
    return found


def _epoch_seconds(folder: Path) -> dict[int, float]:
    """Return each trained epoch's seconds (global epoch numbers) from metrics.csv."""
    return {int(row["epoch"]): float(row["value"]) for row in runs.metrics_csv(folder).read() if row["metric"] == "seconds"}


def _last_probe(results: dict) -> str:
    """Return the Adam probe of the deepest layer at the latest probed epoch, such as '99.24 ± 0.05 % (layer 4, epoch 1000, Adam, n=3)'."""
    probes = results.get("probes", {})
    epochs = [key for key in probes if key.removeprefix("epoch-").isdigit()]
    if not epochs:
        return ""
    latest = max(epochs, key=lambda key: int(key.removeprefix("epoch-")))
    layers = [key for key in probes[latest] if "adam" in probes[latest][key]]
    if not layers:
        return ""
    deepest = max(layers, key=lambda key: int(key.removeprefix("layer-")))
    adam = probes[latest][deepest]["adam"]
    return (f"probe {adam['test_accuracy_mean']:.2f} ± {adam['test_accuracy_std']:.2f} % "
            f"({deepest.replace('-', ' ')}, {latest.replace('-', ' ')}, Adam, n={adam['n']})")


def _stalled(folder: Path, status: str, recent: list[float], now: float) -> str:
    """Return a note when a 'running' run has no trainer or has written nothing for 10 epoch times (at least 10 minutes)."""
    if status != "running":
        return ""
    if runs.training_lock_held(folder) is False:  # a trainer holds the lock until its process ends, even on SIGKILL
        return f"but no process is training it; continue with: pnn-ssl train --resume {folder}"
    written = [path.stat().st_mtime for path in (folder / name for name in PROGRESS_FILES) if path.exists()]
    if not written:
        return ""
    quiet = now - max(written)
    limit = max(STALLED_AFTER_SECONDS, 10 * (sum(recent) / len(recent) if recent else 0.0))
    if quiet < limit:
        return ""
    return (f"nothing written for {format_duration(quiet)}, so the process has probably stopped; "
            f"continue with: pnn-ssl train --resume {folder}")
