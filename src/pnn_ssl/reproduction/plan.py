"""The reproduction plan: which experiments `pnn-ssl reproduce` trains, with which presets and budget.

"The paper" here is Laydevant, Lott, Venturelli and McMahon, "The Benefits of Self-Supervised Learning
for Training Physical Neural Networks" (NeurIPS 2023 workshop).

The plan itself is data (`plan.yaml` next to this file): per experiment, the presets for the paper's
stated settings and for the authors' code settings, the overrides of each budget, and the paper's
reported accuracy. This module reads it and turns a selection into resolved experiment configs.
"""

from __future__ import annotations

import dataclasses
import shlex
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pnn_ssl import config as config_module
from pnn_ssl.config import ConfigError, ExperimentConfig, RobustnessConfig

BUDGETS = ("smoke", "quick", "paper")
SETTINGS = ("paper", "reference-code")
DATASETS = ("mnist", "fashion-mnist")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One model of the paper, as the plan describes it."""

    key: str
    title: str
    role: str  # which table or figure of the paper it feeds
    presets: dict[str, tuple[str, ...]]  # settings name -> preset names
    budgets: dict[str, tuple[str, ...]]  # budget name -> extra overrides
    paper_accuracy: float | None  # last-layer probe test accuracy (%) the paper reports
    source: str  # where in the paper that number is
    needs: str = ""  # "cifar10" for experiments that need CIFAR-10 data
    probe_untrained: bool = False  # also probe the epoch-0 checkpoint, the untrained baseline


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One training run of the reproduction: an experiment, a seed and its resolved config."""

    experiment: Experiment
    seed: int
    config: ExperimentConfig
    presets: tuple[str, ...] = ()  # the presets and overrides that `config` was resolved from, in order
    overrides: tuple[str, ...] = ()

    def train_command(self, out: Path) -> str:
        """Return the `pnn-ssl train` command that trains this run into `out/runs/NAME`, quoted for a POSIX shell."""
        words = ["pnn-ssl", "train"]
        for preset in self.presets:
            words += ["--preset", preset]
        for text in _last_per_key(self.overrides):
            words += ["--set", text]
        words += ["--run-dir", str(out / "runs" / self.name)]
        return shlex.join(words)

    @property
    def name(self) -> str:
        return f"{self.experiment.key}-seed{self.seed}"


def _last_per_key(overrides: tuple[str, ...]) -> list[str]:
    """Drop each override that a later one of the same key replaces, keeping the order of the rest."""
    keys = [text.split("=", 1)[0].strip() for text in overrides]
    return [text for index, text in enumerate(overrides) if keys[index] not in keys[index + 1 :]]


def _read_yaml() -> dict[str, Any]:
    return yaml.safe_load(resources.files("pnn_ssl.reproduction").joinpath("plan.yaml").read_text())


def read_plan() -> tuple[dict[str, dict[str, Any]], dict[str, Experiment]]:
    """Read plan.yaml; return the budgets and the experiments in the order the report lists them."""
    raw = _read_yaml()
    experiments = {}
    for key, entry in raw["experiments"].items():
        experiments[key] = Experiment(
            key=key,
            title=entry["title"],
            role=entry["role"],
            presets={name: tuple(names) for name, names in entry["presets"].items()},
            budgets={name: tuple(overrides) for name, overrides in entry["budgets"].items()},
            paper_accuracy=entry.get("paper_accuracy"),
            source=entry.get("source", ""),
            needs=entry.get("needs", ""),
            probe_untrained=entry.get("probe_untrained", False),
        )
    return raw["budgets"], experiments


def select_experiments(experiments: dict[str, Experiment], only: list[str], *, include_cifar10: bool) -> list[Experiment]:
    """Return the experiments to run: those named in `only`, or all of them (CIFAR-10 only when included)."""
    unknown = [key for key in only if key not in experiments]
    if unknown:
        raise ConfigError(f"unknown experiment(s) {unknown} in --only; choose from {list(experiments)}")
    if only:
        return [experiments[key] for key in experiments if key in only]
    return [e for e in experiments.values() if include_cifar10 or e.needs != "cifar10"]


def plan_runs(
    experiments: list[Experiment],
    *,
    budget: str,
    settings: str = "paper",
    dataset: str = "mnist",
    seeds: int = 1,
    overrides: list[str] | None = None,
) -> list[PlannedRun]:
    """Resolve every (experiment, seed) config: presets, then the budget's overrides, then the user's."""
    budgets, _ = read_plan()
    _check_choice("budget", budget, BUDGETS)
    _check_choice("settings", settings, SETTINGS)
    _check_choice("dataset", dataset, DATASETS)
    if seeds < 1:
        raise ConfigError(f"invalid --seeds {seeds}; expected at least 1")

    planned = []
    for experiment in experiments:
        dataset_overrides = [] if experiment.needs == "cifar10" else [f"data.dataset={dataset}"]
        for seed in range(seeds):
            presets = experiment.presets[settings]
            run_overrides = (
                *budgets[budget].get("overrides", []),
                *experiment.budgets.get(budget, ()),
                *dataset_overrides,
                f"seed={seed}",
                *(overrides or []),
            )
            config = config_module.resolve(list(presets), list(run_overrides))
            config = dataclasses.replace(config, name=f"{experiment.key}-{budget}")
            planned.append(PlannedRun(experiment, seed, config, presets, run_overrides))
    return planned


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Split `--set` overrides into those of the training runs and the `robustness.*` ones."""
    robustness = [text for text in overrides if text.startswith("robustness.")]
    return [text for text in overrides if not text.startswith("robustness.")], robustness


def robustness_plan(budget: str, overrides: list[str], *, threads: int = 0) -> tuple[tuple[str, ...], RobustnessConfig]:
    """Return the experiments the robustness suite measures and its config for `budget`.

    `overrides` are the user's `robustness.*` overrides; `threads` is used when they set no thread count.
    """
    _check_choice("budget", budget, BUDGETS)
    section = _read_yaml()["robustness"]
    defaults = [f"robustness.threads={threads}"] if threads else []
    config = config_module.resolve_robustness([*defaults, *section["budgets"].get(budget, []), *overrides])
    return tuple(section["models"]), config


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"invalid {name} {value!r}; expected one of {', '.join(choices)}")
