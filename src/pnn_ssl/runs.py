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

import contextlib
import csv
import datetime as dt
import io
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator

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


def _file_mode() -> int:
    """Return the mode that open() gives a new file under the current umask (0o644 for umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def training_lock(
    folder: Path, advice: str = "let it finish, or stop it (Ctrl-C, or kill its process) before running --resume"
) -> Iterator[None]:
    """Hold an exclusive advisory lock on `folder` while a trainer or a probe writes to it.

    A second writer on the same folder raises RunFolderError, whose message ends with `advice`,
    instead of writing duplicate metrics or overwriting results.json.
    The lock is flock(2) on the folder itself, so it ends with the process, even on SIGKILL.
    Note: where fcntl is missing (Windows), nothing is locked.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderError(f"run folder {folder} is in use by another process (training or probing); {advice}") from None
        yield
    finally:
        os.close(handle)


def training_lock_held(folder: Path) -> bool | None:
    """Return whether a process holds `folder`'s training lock, or None where fcntl is missing (Windows).

    NOTE: the check holds a shared lock for an instant, so a trainer that starts in that instant is
    rejected as if the folder were busy.
    """
    try:
        import fcntl
    except ImportError:
        return None
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(handle)  # closing the descriptor releases a lock taken here
    return False


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the new content, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, _file_mode())  # mkstemp creates files readable by the owner only
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
        os.chmod(temporary, _file_mode())
        torch.save(obj, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# Checkpoints: {"epoch": int, "model": state dict, "optimizer": optimizer state dict}, saved by torch.save.


def list_checkpoints(folder: Path) -> list[str]:
    """Return the names of the *.pt files in folder/checkpoints, sorted."""
    return sorted(path.name for path in (folder / "checkpoints").glob("*.pt") if path.is_file())


def checkpoint_path(folder: Path, name: str) -> Path:
    """Return folder/checkpoints/name, or raise RunFolderError naming the checkpoints that exist.

    `name` is a file name, not a path: results of a checkpoint are stored in `folder`, so another
    run's file is rejected.
    """
    path = folder / "checkpoints" / name
    if Path(name).name != name or name in ("", ".", ".."):
        raise RunFolderError(
            f"invalid checkpoint name {name!r}; give the name of a file in {folder / 'checkpoints'} "
            f"({_some(list_checkpoints(folder)) or 'none saved yet'}), not a path"
        )
    if path.is_file():
        return path
    names = list_checkpoints(folder)
    if not names:
        raise RunFolderError(
            f"checkpoint {path} not found, and {path.parent} contains no checkpoints, so the run has not saved one yet; "
            "train it again"
        )
    raise RunFolderError(f"checkpoint {path} not found; {path.parent} contains {', '.join(names)}")


def read_checkpoint(path: Path, *, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint saved by this package, raising RunFolderError when it is unreadable or not one.

    Only tensors and plain containers are loaded (torch.load with weights_only=True), because
    unpickling other objects can run arbitrary code. With `mmap`, tensor data stays on disk until used.
    """
    if path.stat().st_size == 0:
        raise _unusable(path, "is empty (0 bytes)")
    # torch.save writes a zip archive since PyTorch 1.6. A truncated archive has no central directory,
    # so this test also rejects truncated files, before torch.load reports them less clearly.
    if not zipfile.is_zipfile(path):
        raise _unusable(path, "is unreadable (truncated, or not a file written by torch.save)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:  # torch's weights-only unpickler rejected the data
        raise _unusable(path, "cannot be loaded as weights only: it contains objects other than tensors and plain "
                              "containers, or damaged data") from error
    except Exception as error:  # torch raises RuntimeError, EOFError and others for damaged archives
        raise _unusable(path, f"is unreadable (damaged torch file: {type(error).__name__})") from error
    _check_checkpoint_entries(path, state)
    return state


def _check_checkpoint_entries(path: Path, state: Any) -> None:
    if not isinstance(state, dict):
        raise _unusable(path, f"is not a pnn-ssl checkpoint: it contains a {type(state).__name__}, not a dict")
    missing = [key for key in ("epoch", "model", "optimizer") if key not in state]
    if missing:
        found = _some([repr(key) for key in state]) or "no entries"
        raise _unusable(path, f"is not a pnn-ssl checkpoint: it has no {' or '.join(map(repr, missing))} entry (it contains {found})")
    epoch = state["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise _unusable(path, f"is invalid: its 'epoch' entry is {epoch!r}, not a count of epochs")
    for key in ("model", "optimizer"):
        if not isinstance(state[key], dict):
            raise _unusable(path, f"is invalid: its {key!r} entry is a {type(state[key]).__name__}, not a state dict")
    bad = [str(name) for name, value in state["model"].items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise _unusable(path, f"is invalid: its model state has non-tensor entries ({_some(bad)})")


def check_model_state(path: Path, expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    """Raise RunFolderError unless `found` has exactly the keys and tensor shapes of `expected`.

    `expected` is the state dict of the network that the run's config builds, `found` the
    checkpoint's. Checking first turns load_state_dict's multi-line error into one line.
    """
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    reshaped = [
        f"{key} {tuple(found[key].shape)} where the config needs {tuple(expected[key].shape)}"
        for key in expected
        if key in found and found[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_some(unexpected)}")
    if reshaped:
        problems.append(f"shapes {_some(reshaped)}")
    if problems:
        raise RunFolderError(
            f"checkpoint {path} does not match the run's config ({'; '.join(problems)}), so it comes from another "
            f"run or config; {_checkpoint_advice(path)}"
        )


def _some(items: list[str], limit: int = 3) -> str:
    """Join the first `limit` items and count the rest, to keep an error message on one line."""
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


def _checkpoint_advice(path: Path) -> str:
    others = [name for name in list_checkpoints(path.parent.parent) if name != path.name]
    if not others:
        return "restore it from a copy, or train the run again"
    if path.name == "last.pt":  # train --resume and robustness read only last.pt, so a snapshot must take its place
        return (f"restore it from a copy, copy one of the snapshots in {path.parent} ({_some(others)}) over it, "
                f"or train the run again")
    return (f"restore it from a copy, probe another snapshot in {path.parent} ({_some(others)}) with --checkpoint, "
            f"or train the run again")


def _unusable(path: Path, problem: str) -> RunFolderError:
    return RunFolderError(f"checkpoint {path} {problem}; {_checkpoint_advice(path)}")


def write_config(folder: Path, config: config_module.ExperimentConfig) -> None:
    atomic_write_text(folder / "config.yaml", config_module.dump(config))


def read_config(folder: str | Path) -> config_module.ExperimentConfig:
    """Load the resolved config of a run folder."""
    path = Path(folder) / "config.yaml"
    if not Path(folder).is_dir():
        raise RunFolderError(f"run folder {folder} not found")
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
        previous = read_json(path)
        environment = {**previous, "resumed": previous.get("resumed", []) + [environment]}
    atomic_write_text(path, json.dumps(environment, indent=2) + "\n")


# Data lost by deleting each damaged JSON state file, named in read_json's error message.
_JSON_FILE_CONTENTS = {
    "results.json": "the run's status and summary numbers (metrics.csv, probes.csv and the checkpoints stay)",
    "environment.json": "the recorded command lines, versions and start times",
    "reproduce.json": "the recorded request, run states and wall time (the run folders under runs/ stay and are reused)",
    "robustness.json": "the per-run summary of the robustness suite (robustness.csv stays)",
}


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object from `path`; a missing file reads as {}, and an invalid one raises RunFolderError."""
    if not path.exists():
        return {}
    lost = _JSON_FILE_CONTENTS.get(path.name, "what it records")
    advice = f"restore it from a copy, or delete it, which loses {lost}"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunFolderError(
            f"{path} is not valid JSON ({error}); {advice}"
        ) from error
    except UnicodeDecodeError as error:
        raise RunFolderError(f"{path} is not valid JSON (not UTF-8 text at byte {error.start}); {advice}") from error
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
        raise RunFolderError(f"{path} is invalid: expected a JSON object, found {kind}; {advice}")
    return value


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
