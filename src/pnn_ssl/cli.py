"""Command-line interface: `pnn-ssl train | probe | robustness | plot | reproduce | status | presets | config`.

Each subcommand parses its arguments, builds a config and calls one library function.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import signal
import sys
from pathlib import Path

from pnn_ssl import config as config_module
from pnn_ssl import runs

log = functools.partial(print, flush=True)


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        action="append",
        default=[],
        metavar="NAME",
        help="preset name or YAML file; repeat to layer a budget over an experiment (e.g. --preset supervised --preset smoke)",
    )
    _add_set_argument(parser, "KEY=VALUE", "override one config field, e.g. --set train.epochs=20 --set probe.layers=[1,2,3,4]")


def _add_set_argument(parser: argparse.ArgumentParser, metavar: str, help: str) -> None:
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar=metavar, help=help)


def _resolve(args: argparse.Namespace) -> config_module.ExperimentConfig:
    return config_module.resolve(args.preset or ["paper"], args.overrides)


def _setting(text: str) -> str:
    """Return the dotted key of a `key=value` override."""
    return text.split("=", 1)[0].strip()


def command_train(args: argparse.Namespace) -> int:
    if args.resume:
        folder = Path(args.resume)
        if not folder.is_dir():
            raise runs.RunFolderError(f"run folder {folder} not found")
        if args.preset:
            raise config_module.ConfigError("--resume continues a run with its saved config; drop --preset")
        unchangeable = [_setting(text) for text in args.overrides if _setting(text) not in config_module.RUNTIME_FIELDS]
        if unchangeable:
            raise config_module.ConfigError(
                f"--resume continues a run with its saved config, so --set {', '.join(unchangeable)} cannot change; "
                f"--set works here only for {', '.join(config_module.RUNTIME_FIELDS)}. "
                "Start a new run to change the others"
            )
        config = runs.read_config(folder)
        results = runs.read_json(folder / "results.json")
        if results.get("status") == "completed":
            completed = results.get("epochs_completed")
            log(f"run    {folder} is already completed ({completed} epoch{'' if completed == 1 else 's'}); nothing to resume")
            return 0
        # A missing or damaged checkpoint is reported before the dataset loads. With mmap, no weights are read.
        runs.read_checkpoint(runs.checkpoint_path(folder, "last.pt"), mmap=True)
        for text in args.overrides:
            config = config_module.from_dict(config_module.merge(config_module.to_dict(config), config_module.parse_override(text)))
    else:
        config = _resolve(args)
        folder = runs.claim_run_folder(args.run_dir) if args.run_dir else runs.create_run_folder(args.runs_dir, config.name)
    from pnn_ssl.training import train_run

    try:
        results = train_run(config, folder, resume=bool(args.resume), log=log)
    except Exception:
        if not args.resume:
            _remove_if_empty(folder)  # a run that failed before writing anything leaves no folder behind
        raise
    except KeyboardInterrupt:
        runs.update_results(folder, status="interrupted")
        print(f"pnn-ssl: interrupted; continue with: pnn-ssl train --resume {folder}", file=sys.stderr)
        return 130
    log(f"done   {folder}  status {results['status']}, {results.get('train_seconds', 0):.0f} s of training")
    return 0


def _remove_if_empty(folder: Path) -> None:
    """Delete a run folder that contains no files (empty sub-folders only)."""
    if folder.is_dir() and not any(path.is_file() for path in folder.rglob("*")):
        shutil.rmtree(folder)


def command_probe(args: argparse.Namespace) -> int:
    from pnn_ssl.training.reprobe import reprobe

    reprobe(Path(args.run), args.checkpoint, args.overrides, log=log)
    return 0


def command_plot(args: argparse.Namespace) -> int:
    from pnn_ssl.reporting.figures import plot_runs

    if not args.runs and not args.robustness:
        raise config_module.ConfigError("nothing to plot; give run folders, --robustness DIR, or both")
    if args.robustness:
        from pnn_ssl.reporting.robustness_figures import plot_robustness

        for path in plot_robustness(Path(args.robustness)):
            log(f"figure {path}")
    if args.runs:
        for path in plot_runs([Path(run) for run in args.runs], Path(args.output) if args.output else None):
            log(f"figure {path}")
    return 0


def command_robustness(args: argparse.Namespace) -> int:
    from pnn_ssl.evaluation.robustness import default_output, run_robustness

    config = config_module.resolve_robustness(args.overrides)
    folders = [Path(run) for run in args.runs]
    for folder in folders:
        runs.read_config(folder)  # fail before any work when a folder is not a run folder
    output = default_output(folders, Path(args.out) if args.out else None)
    if (output / "robustness.csv").exists():
        raise runs.RunFolderError(
            f"{output} already contains robustness results; give another --out folder, or move that one away"
        )
    run_robustness(folders, config, output, log=log)
    log(f"done   {output}: robustness.csv, sparsity.csv, weight-histograms.csv; draw them with pnn-ssl plot --robustness {output}")
    return 0


def command_reproduce(args: argparse.Namespace) -> int:
    from pnn_ssl.reproduction.runner import Request, reproduce

    request = Request(
        budget=args.budget,
        settings=args.settings,
        dataset=args.dataset,
        seeds=args.seeds,
        only=tuple(args.only),
        include_cifar10=args.include_cifar10,
        overrides=tuple(args.overrides),
    )
    out = Path(args.out or f"reproduction-{args.budget}-{args.settings}-{args.dataset}")
    if out.exists() and not out.is_dir():
        raise runs.RunFolderError(f"--out {out} is a file, not a folder; give a folder path")
    if (out / "config.yaml").exists():
        raise runs.RunFolderError(f"--out {out} is a run folder; give a new folder for the reproduction")
    if args.plan:
        from pnn_ssl.reproduction.runner import describe_plan

        for line in describe_plan(request, out):
            log(line)
        return 0
    # A new reproduction may start from run folders copied into OUT/runs/, but nothing else is overwritten.
    other = sorted(path.name for path in out.iterdir() if path.name != "runs") if out.is_dir() else []
    if other and not (out / "reproduce.json").exists():
        raise runs.RunFolderError(
            f"--out {out} contains {', '.join(other[:3])} but no reproduce.json; give a new folder, one with "
            "only runs/ in it, or the folder of an earlier reproduction to continue it"
        )
    try:
        reproduce(request, out, log=log)
    except KeyboardInterrupt:
        print(f"pnn-ssl: interrupted; run the same command again to continue in {out}", file=sys.stderr)
        return 130
    return 0


def command_status(args: argparse.Namespace) -> int:
    from pnn_ssl.training.progress import describe_run, find_run_folders

    failed = False
    for folder in find_run_folders([Path(path) for path in args.runs]):
        try:
            log(describe_run(folder))
        except (config_module.ConfigError, runs.RunFolderError) as error:  # the other folders are still listed
            print(f"pnn-ssl: error: {error}", file=sys.stderr)
            failed = True
    return 2 if failed else 0


def command_presets(args: argparse.Namespace) -> int:
    for name in config_module.preset_names():
        values = config_module.read_preset(name)
        log(f"{name}\n    {values.get('description', '').strip()}")
    return 0


def command_config(args: argparse.Namespace) -> int:
    log(config_module.dump(_resolve(args)), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pnn-ssl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and probe it; writes a new run folder")
    _add_config_arguments(train)
    train.add_argument("--runs-dir", default="runs", help="folder under which a new run folder is created (default: runs)")
    train.add_argument("--run-dir", help="exact run folder to create; it must not exist or be empty")
    train.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its last checkpoint")
    train.set_defaults(handler=command_train)

    probe = commands.add_parser("probe", help="probe a trained run again, e.g. on other layers")
    probe.add_argument("run", help="run folder")
    probe.add_argument("--checkpoint", default="last.pt", help="file in RUN/checkpoints (default: last.pt)")
    _add_set_argument(probe, "probe.KEY=VALUE", "override a probe.* field, e.g. --set probe.layers=[1,2,3,4]")
    probe.set_defaults(handler=command_probe)

    plot = commands.add_parser(
        "plot", help="draw a run's figures from its files into RUN/figures/: error vs depth, first-layer weights"
    )
    plot.add_argument("runs", nargs="*", metavar="RUN", help="run folder; give several to also draw comparison figures")
    plot.add_argument(
        "--robustness", metavar="DIR", help="also draw the robustness figures from the CSV files in DIR into DIR/figures/"
    )
    plot.add_argument(
        "--output", metavar="DIR", help="folder for the comparison figures of several runs (default: the first RUN's figures/)"
    )
    plot.set_defaults(handler=command_plot)

    robustness = commands.add_parser(
        "robustness", help="measure the change in probe error under weight and activation noise and pruning"
    )
    robustness.add_argument("runs", nargs="+", metavar="RUN", help="trained run folder; several runs are compared")
    _add_set_argument(
        robustness, "robustness.KEY=VALUE", "override a robustness.* field, e.g. --set robustness.draws=3 --set robustness.probe=ridge"
    )
    robustness.add_argument("--out", metavar="DIR", help="output folder (default: RUN/robustness for a single run)")
    robustness.set_defaults(handler=command_robustness)

    reproduce = commands.add_parser(
        "reproduce", help="train every model of the paper, probe it and write OUT/report.md comparing it with the paper"
    )
    reproduce.add_argument(
        "--budget",
        choices=("smoke", "quick", "paper"),
        default="quick",
        help="smoke: about a minute, checks that all runs; quick: under an hour on a 2-core CPU; paper: each preset's full epochs",
    )
    reproduce.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist", help="dataset of the MNIST models")
    reproduce.add_argument(
        "--settings",
        choices=("paper", "reference-code"),
        default="paper",
        help="the paper's stated hyperparameters, or those its authors' code ran",
    )
    reproduce.add_argument("--seeds", type=int, default=1, help="training seeds per experiment (0..N-1)")
    reproduce.add_argument("--only", nargs="+", default=[], metavar="EXPERIMENT", help="run only these experiments")
    reproduce.add_argument(
        "--include-cifar10", action="store_true", help="also run the CIFAR-10 CNNs (GPU-sized; needs the CIFAR-10 data)"
    )
    reproduce.add_argument("--out", metavar="DIR", help="output folder (default: reproduction-BUDGET-SETTINGS-DATASET)")
    reproduce.add_argument(
        "--plan",
        action="store_true",
        help="print each planned run, its state in OUT and the 'pnn-ssl train' command that trains it alone; run nothing",
    )
    _add_set_argument(reproduce, "KEY=VALUE", "override a config field in every run, e.g. --set train.threads=1")
    reproduce.set_defaults(handler=command_reproduce)

    status = commands.add_parser(
        "status", help="print each run's progress: epoch, seconds per epoch, time left, last probe; safe while it trains"
    )
    status.add_argument("runs", nargs="+", metavar="RUN", help="run folder, or a folder of run folders such as runs/")
    status.set_defaults(handler=command_status)

    presets = commands.add_parser("presets", help="list the shipped presets with their expected results and run times")
    presets.set_defaults(handler=command_presets)

    show = commands.add_parser("config", help="print the resolved config of presets and overrides")
    _add_config_arguments(show)
    show.set_defaults(handler=command_config)
    return parser


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # a batch scheduler's time limit stops the run like Ctrl-C
    from pnn_ssl.data.sources import DataError
    from pnn_ssl.training.end_to_end import TrainingStopped

    try:
        return args.handler(args)
    except (config_module.ConfigError, runs.RunFolderError, DataError, TrainingStopped) as error:
        print(f"pnn-ssl: error: {error}", file=sys.stderr)
        return 2
    except (FileExistsError, NotADirectoryError, FileNotFoundError, PermissionError) as error:
        # These are mostly output paths: a file where a folder is needed, or a missing or read-only parent.
        print(f"pnn-ssl: error: {error.filename}: {error.strerror}; check the path or give another one", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pnn-ssl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
