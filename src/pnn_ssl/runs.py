"""Run folders: a self-describing directory per training run.

Layout of a run folder:

    config.yaml        resolved experiment config (`pnn_ssl.config.load` reads it back)
    environment.json   command line, versions, git revision, device, start time
    metrics.csv        training metrics, one observation per row (epoch, split, metric, value)
    probes.csv         linear-probe metrics, one observation per row
    results.json       status and final numbers
    checkpoints/       last.pt (rewritten atomically) and optional epoch-NNNN.pt snapshots
    figures/           figures drawn from the files above
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch

from pnn_ssl import __version__
from pnn_ssl import config as config_module


class RunFolderError(RuntimeError):
    """A run folder that is missing, incomplete or would be overwritten."""


def create_run_folder(root: str | Path, name: str) -> Path:
    """Create a new, empty run folder `root/name-YYYYmmdd-HHMMSS[-k]` and never reuse an existing one."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        suffix = "" if attempt == 0 else f"-{attempt + 1}"
        path = root / f"{name}-{stamp}{suffix}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        (path / "checkpoints").mkdir()
        return path
    raise RunFolderError(f"could not create a new run folder under {root}; too many runs named {name}-{stamp}")


def claim_run_folder(path: str | Path) -> Path:
    """Create the explicitly named run folder; an existing, non-empty folder is rejected."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise RunFolderError(
            f"run folder {path} already exists and is not empty; choose another --run-dir, or use --resume {path}"
        )
    path.mkdir(parents=True, exist_ok=True)
    (path / "checkpoints").mkdir(exist_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the new content, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(obj, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_config(folder: Path, config: config_module.ExperimentConfig) -> None:
    atomic_write_text(folder / "config.yaml", config_module.dump(config))


def read_config(folder: str | Path) -> config_module.ExperimentConfig:
    """Load the resolved config of a run folder."""
    path = Path(folder) / "config.yaml"
    if not path.exists():
        raise RunFolderError(f"{folder} is not a run folder: {path.name} is missing")
    return config_module.load(path)


def _git_revision() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _cpu_model() -> str | None:
    """Return the CPU model name from /proc/cpuinfo (Linux), or None where it is not available."""
    try:
        with open("/proc/cpuinfo") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def describe_environment(device: torch.device) -> dict[str, Any]:
    """Return the facts needed to reproduce or cite a run."""
    import numpy

    return {
        "command": sys.argv,
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "pnn_ssl": __version__,
        "git_revision": _git_revision(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def write_environment(folder: Path, device: torch.device) -> None:
    environment = describe_environment(device)
    path = folder / "environment.json"
    if path.exists():  # a resumed run keeps the first start and records each later one
        previous = json.loads(path.read_text())
        environment = {**previous, "resumed": previous.get("resumed", []) + [environment]}
    atomic_write_text(path, json.dumps(environment, indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def update_results(folder: Path, **values: Any) -> dict[str, Any]:
    """Merge `values` into results.json, keeping every key that is not named."""
    path = folder / "results.json"
    results = read_json(path)
    results.update(values)
    atomic_write_text(path, json.dumps(results, indent=2, sort_keys=False) + "\n")
    return results


class TidyCSV:
    """An append-only CSV of observations with a fixed header."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path = path
        self.columns = columns
        if not path.exists():
            atomic_write_text(path, ",".join(columns) + "\n")

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        with self.path.open("a", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=self.columns, lineterminator="\n")
            for row in rows:
                writer.writerow({key: _format(row.get(key)) for key in self.columns})

    def read(self) -> list[dict[str, str]]:
        with self.path.open(newline="") as stream:
            return list(csv.DictReader(stream))

    def keep(self, predicate) -> None:
        """Rewrite the file atomically with only the rows for which `predicate(row)` is true."""
        self.write([row for row in self.read() if predicate(row)])

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace the file's rows with `rows`, atomically."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: _format(row.get(key)) for key in self.columns} for row in rows)
        atomic_write_text(self.path, buffer.getvalue())


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


METRIC_COLUMNS = ("epoch", "split", "metric", "value")
PROBE_COLUMNS = ("checkpoint_epoch", "layer", "probe", "repeat", "probe_epoch", "split", "metric", "value")


def metrics_csv(folder: Path) -> TidyCSV:
    return TidyCSV(folder / "metrics.csv", METRIC_COLUMNS)


def probes_csv(folder: Path) -> TidyCSV:
    return TidyCSV(folder / "probes.csv", PROBE_COLUMNS)
