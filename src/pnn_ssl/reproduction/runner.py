"""Run a reproduction: train every planned run, reuse finished ones, then write the report.

Output folder layout:

- `reproduce.json`: the request (budget, settings, dataset, seeds, overrides) and each run's state;
- `runs/<experiment>-seed<k>/`: ordinary run folders, usable with `pnn-ssl probe` and `pnn-ssl plot`;
- `robustness/`: the robustness suite's CSV files and figures, for the first seed of the models that
  the plan names (the supervised and end-to-end SSL MLPs of figure 1);
- `figures/` and `report.md`: redrawn from the run folders at the end of every invocation.

Running the same command again continues: a completed run whose config is unchanged is reused, an
interrupted one resumes from its last checkpoint, and one that stopped before its first checkpoint is
moved aside and started again.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from pathlib import Path
from typing import Callable

from pnn_ssl import config as config_module
from pnn_ssl import runs
from pnn_ssl.config import ConfigError, RobustnessConfig
from pnn_ssl.reproduction.plan import PlannedRun, plan_runs, read_plan, robustness_plan, select_experiments, split_overrides
from pnn_ssl.training import train_run

# Fields that may differ between a finished run and the plan without making the run stale. The labels
# are among them, so a run trained with `pnn-ssl train` and copied into `runs/` is reused when its
# settings match the plan. Snapshot intervals change which checkpoints exist, not what is trained.
IGNORED_FIELDS = ("name", "description", "train.threads", "train.device", "train.checkpoint_every", "train.keep_every")


@dataclasses.dataclass(frozen=True)
class Request:
    """The options of one `pnn-ssl reproduce` invocation."""

    budget: str = "quick"
    settings: str = "paper"
    dataset: str = "mnist"
    seeds: int = 1
    only: tuple[str, ...] = ()
    include_cifar10: bool = False
    overrides: tuple[str, ...] = ()


def reproduce(request: Request, out: Path, *, log: Callable[[str], None] = print) -> Path:
    """Train or reuse every planned run of `request` under `out`, then write `out/report.md`; return its path."""
    planned = planned_runs(request)
    _, robustness_overrides = split_overrides(list(request.overrides))
    robustness_models, robustness_config = robustness_plan(
        request.budget, robustness_overrides, threads=planned[0].config.train.threads if planned else 0
    )
    state = _open_state(out, request)
    invocation_started = time.perf_counter()
    wall_before = state.get("wall_seconds", 0.0)
    log(f"reproduce  {out}  budget {request.budget}, {request.settings} settings, {request.dataset}, "
        f"{request.seeds} seed(s): {len(planned)} run{'' if len(planned) == 1 else 's'}")

    try:
        for index, run in enumerate(planned, start=1):
            left = [other.name for other in planned[index:]]
            log(f"reproduce  [{index}/{len(planned)}] {run.name}" + (f"  (then: {', '.join(left)})" if left else ""))
            folder = out / "runs" / run.name
            started = time.perf_counter()
            status = _train_or_reuse(run, folder, log)
            if run.experiment.probe_untrained:
                _probe_untrained(run, folder, log)
            # The request is recorded with its first finished run, so one that fails its checks changes nothing.
            state.update(seeds=request.seeds, only=list(request.only), overrides=list(request.overrides))
            state["runs"][run.name] = {"folder": str(folder.relative_to(out)), "status": status,
                                       "seconds_this_invocation": round(time.perf_counter() - started, 1)}
            state["wall_seconds"] = round(wall_before + time.perf_counter() - invocation_started, 1)
            _write_state(out, state)

        measured = [run for run in planned if run.seed == 0 and run.experiment.key in robustness_models]
        if measured:
            _robustness_or_reuse(out, measured, robustness_config, state, log)
    finally:  # an interrupted invocation's time counts too
        state["wall_seconds"] = round(wall_before + time.perf_counter() - invocation_started, 1)
        if (out / "reproduce.json").exists() or state["runs"]:
            _write_state(out, state)

    from pnn_ssl.reporting.report import write_report

    report = write_report(out, planned, log=log)
    log(f"reproduce  report {report}")
    return report


def planned_runs(request: Request) -> list[PlannedRun]:
    """Resolve the runs that `request` trains, in the order they run."""
    _, experiments = read_plan()
    selected = select_experiments(experiments, list(request.only), include_cifar10=request.include_cifar10)
    training_overrides, _ = split_overrides(list(request.overrides))
    return plan_runs(
        selected,
        budget=request.budget,
        settings=request.settings,
        dataset=request.dataset,
        seeds=request.seeds,
        overrides=training_overrides,
    )


def describe_plan(request: Request, out: Path) -> list[str]:
    """Return, per planned run, its state in `out` and the command that trains it alone.

    The command is `pnn-ssl train` with the plan's settings, or `pnn-ssl train --resume` for a run that
    has a checkpoint. A run trained with that command can be copied into `out/runs/` (or trained there
    directly with the command's --run-dir), and `reproduce` reuses it. Nothing is written. Raises
    ConfigError where `out` contains a reproduction with another budget, settings or dataset.
    """
    _read_state(out, request)
    lines = []
    for run in planned_runs(request):
        state, command = _describe_run_folder(run, out)
        lines += [f"{run.name}  ({state})", f"    {command}"]
    return lines


def _describe_run_folder(run: PlannedRun, out: Path) -> tuple[str, str]:
    """Return the state of the run's folder in `out` and the command that brings it to completion."""
    folder = out / "runs" / run.name
    if not folder.exists() or not any(folder.iterdir()):
        return "not started", run.train_command(out)

    results = runs.read_json(folder / "results.json")
    state = results.get("status", "unknown")
    has_checkpoint = (folder / "checkpoints" / "last.pt").exists()
    if state != "completed" and has_checkpoint and "epochs_completed" in results:
        state += f", checkpoint of epoch {results['epochs_completed']}"

    differences = _config_differences(run, folder) if (folder / "config.yaml").exists() else []
    if differences:
        state += f"; trained with another config ({', '.join(differences)}), so reproduce rejects it"
    elif state == "completed":
        return state, run.train_command(out)
    elif has_checkpoint:
        return state, shlex.join(["pnn-ssl", "train", "--resume", str(folder)])
    else:
        state += "; stopped before its first checkpoint, so reproduce moves it aside and starts again"
    # The train command needs an empty --run-dir.
    return state, f"move {folder} away, then: {run.train_command(out)}"


def _train_or_reuse(run: PlannedRun, folder: Path, log: Callable[[str], None]) -> str:
    """Bring one run folder to completion; return 'reused', 'resumed' or 'trained'."""
    results = runs.read_json(folder / "results.json")
    if results.get("status") == "completed":
        _check_unchanged(run, folder)
        log(f"reproduce  {run.name}: completed earlier, reused")
        return "reused"

    if (folder / "checkpoints" / "last.pt").exists():
        _check_unchanged(run, folder)
        checkpoint = results.get("epochs_completed", 0)
        log(f"reproduce  {run.name}: resuming from the checkpoint of epoch {checkpoint}; later epochs are trained again")
        _train(run, folder, resume=True, log=log)
        return "resumed"

    if folder.exists() and any(folder.iterdir()):
        aside = _free_name(folder.with_name(folder.name + ".incomplete"))
        folder.rename(aside)  # kept, not deleted: it may contain metrics the user wants to read
        log(f"reproduce  {run.name}: stopped before its first checkpoint; moved to {aside.name} and starting again")
    _train(run, runs.claim_run_folder(folder), resume=False, log=log)
    return "trained"


def _probe_untrained(run: PlannedRun, folder: Path, log: Callable[[str], None]) -> None:
    """Probe the run's epoch-0 snapshot once, as the baseline that training is compared with."""
    if "epoch-0" in runs.read_json(folder / "results.json").get("probes", {}):
        return
    from pnn_ssl.training.reprobe import reprobe

    if not (folder / "checkpoints" / "epoch-0000.pt").exists():  # trained before the plan kept it
        log(f"reproduce  {run.name}: no checkpoints/epoch-0000.pt, so the untrained network is not probed")
        return
    log(f"reproduce  {run.name}: probing the untrained network (checkpoints/epoch-0000.pt)")
    reprobe(folder, "epoch-0000.pt", log=log)


def _train(run: PlannedRun, folder: Path, *, resume: bool, log: Callable[[str], None]) -> None:
    try:
        train_run(run.config, folder, resume=resume, log=log)
    except KeyboardInterrupt:
        runs.update_results(folder, status="interrupted")
        raise


def _robustness_or_reuse(out: Path, measured: list[PlannedRun], config: RobustnessConfig, state: dict, log: Callable[[str], None]) -> None:
    """Run the robustness suite on the first seed of the measured experiments, unless done with the same inputs."""
    from pnn_ssl.evaluation.robustness import run_robustness
    from pnn_ssl.reporting.robustness_figures import plot_robustness

    folders = [out / "runs" / run.name for run in measured]
    key = {"models": [folder.name for folder in folders], "config": config_module.to_dict(config)}
    previous = state.get("robustness", {})
    if previous.get("status") == "completed" and {k: previous.get(k) for k in key} == key:
        log("reproduce  robustness: completed earlier with the same models and settings, reused")
        return

    log(f"reproduce  robustness suite on {', '.join(key['models'])}")
    started = time.perf_counter()
    state["robustness"] = {**key, "status": "running"}
    run_robustness(folders, config, out / "robustness", log=log)
    plot_robustness(out / "robustness")
    state["robustness"] = {**key, "status": "completed", "seconds": round(time.perf_counter() - started, 1)}


def _check_unchanged(run: PlannedRun, folder: Path) -> None:
    """Reject a run folder trained with another config than the plan's, naming the fields that differ."""
    differences = _config_differences(run, folder)
    if differences:
        raise ConfigError(
            f"run folder {folder} was trained with another config ({', '.join(differences)}); "
            "move it away or give reproduce another --out folder"
        )


def _config_differences(run: PlannedRun, folder: Path, limit: int = 8) -> list[str]:
    """Describe the config fields in which the run folder differs from the plan, the first `limit` in full."""
    stored = _comparable(config_module.to_dict(runs.read_config(folder)))
    planned = _comparable(config_module.to_dict(run.config))
    differing = sorted(key for key in stored.keys() | planned.keys() if stored.get(key) != planned.get(key))
    described = [f"{key}: {stored.get(key)!r} there, {planned.get(key)!r} planned" for key in differing[:limit]]
    if len(differing) > limit:
        described.append(f"and {len(differing) - limit} more: {', '.join(differing[limit:])}")
    return described


def _comparable(values: dict, prefix: str = "") -> dict:
    """Flatten nested config values to dotted keys, without the fields in IGNORED_FIELDS."""
    flat = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_comparable(value, dotted + "."))
        elif dotted not in IGNORED_FIELDS:
            flat[dotted] = value
    return flat


def _free_name(path: Path) -> Path:
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate


def _open_state(out: Path, request: Request) -> dict:
    """Read the state in `out/reproduce.json`, or start one; a different budget, settings or dataset is an error."""
    state = _read_state(out, request)
    if state is None:
        out.mkdir(parents=True, exist_ok=True)
        state = {**_identity(request), "runs": {}}
    return state


def _identity(request: Request) -> dict[str, str]:
    """Return the fields that one reproduction folder keeps fixed: budget, settings and dataset."""
    return {"budget": request.budget, "settings": request.settings, "dataset": request.dataset}


def _read_state(out: Path, request: Request) -> dict | None:
    """Return the state in `out/reproduce.json`, or None; raise ConfigError if it is another budget, settings or dataset."""
    path = out / "reproduce.json"
    if not path.exists():
        return None
    state = runs.read_json(path)
    requested = _identity(request)
    differing = [key for key, value in requested.items() if state.get(key) != value]
    if differing:
        found = ", ".join(f"{key} {state.get(key)}" for key in differing)
        expected = ", ".join(f"{key} {requested[key]}" for key in differing)
        raise ConfigError(f"{out} contains a reproduction with {found}, not {expected}; give another --out folder")
    return state


def _write_state(out: Path, state: dict) -> None:
    runs.atomic_write_text(out / "reproduce.json", json.dumps(state, indent=2) + "\n")
