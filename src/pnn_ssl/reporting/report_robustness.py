"""The robustness part of the reproduction report, drawn from OUT/robustness/*.csv only.

Each claim of figure 1 compares the SSL model with both supervised models by one number per model:
the change in test error averaged over all levels of a perturbation (each level first averaged over
its draws and probe repeats), unless the SSL model is undertrained (see UNDERTRAINED_FACTOR). Sparsity compares the fraction of exactly-zero activations averaged
over the layers.
"""

from __future__ import annotations

from pathlib import Path

from pnn_ssl import runs
from pnn_ssl.reporting.figures import mean_std

SSL = "vicreg-mlp"
SUPERVISED = ("supervised", "supervised-aug")
# An SSL model whose unperturbed error is more than this multiple of the supervised models' is not
# compared: a perturbation can move an undertrained network's features towards better random ones.
UNDERTRAINED_FACTOR = 2.0
# perturbation -> (figure panel, claim as Laydevant et al. (2023) state it, whether SSL is claimed to be better)
CLAIMS = {
    "weight-noise": ("1b", "SSL tolerates weight noise at programming time a bit better", True),
    "activation-noise": ("1c", "SSL tolerates activation noise much better", True),
    "pre-activation-noise": ("1d", "SSL tolerates pre-activation noise much better", True),
    "neuron-pruning": ("1e", "SSL tolerates neuron pruning much better", True),
    "weight-pruning": ("1f", "SSL brings no benefit under weight-magnitude pruning", False),
}
FIGURES = (
    "robustness-weight-noise", "robustness-activation-noise", "robustness-pre-activation-noise",
    "robustness-neuron-pruning", "robustness-weight-pruning", "robustness-sparsity",
    "robustness-relative-change", "robustness-weight-histograms",
)


def experiment_of(model: str) -> str:
    """Return the experiment key of a reproduction run folder name such as `vicreg-mlp-seed0`."""
    return model.rsplit("-seed", 1)[0]


def level_table(rows: list[dict], kind: str) -> dict[str, dict[float, tuple[float, float, int]]]:
    """Return {experiment: {level: (mean delta, sample std, n)}} for one perturbation."""
    groups: dict[tuple[str, float], list[float]] = {}
    for row in rows:
        if row["perturbation"] == kind:
            groups.setdefault((experiment_of(row["model"]), float(row["level"])), []).append(float(row["delta"]))
    table: dict[str, dict[float, tuple[float, float, int]]] = {}
    for (experiment, level), deltas in sorted(groups.items()):
        table.setdefault(experiment, {})[level] = (*mean_std(deltas), len(deltas))
    return table


def mean_over_levels(levels: dict[float, tuple[float, float, int]]) -> float:
    return sum(mean for mean, _, _ in levels.values()) / len(levels)


def robustness_section(out: Path) -> str:
    """Return the report's robustness section, or a line saying why it is missing."""
    lines = ["## Figures 1 and 3: robustness of the figure-1 models", ""]
    folder = out / "robustness"
    if not (folder / "robustness.csv").exists():
        return "\n".join(lines + ["The robustness suite has not run: it needs the supervised, supervised-aug and vicreg-mlp runs."])

    rows = runs.TidyCSV(folder / "robustness.csv", ()).read()
    sparsity = runs.TidyCSV(folder / "sparsity.csv", ()).read() if (folder / "sparsity.csv").exists() else []
    lines += [
        "Change in test error (percentage points) of a linear probe on the last hidden layer, against the",
        "unperturbed network probed the same way: mean ± sample std over simulated devices × probe repeats",
        "(n). Settings: `robustness/robustness-config.yaml`; definitions: the README's robustness section.",
        "",
        "### Verdicts",
        "",
        *_claim_lines(rows, sparsity),
        "",
        "A claim is compared by the change in test error averaged over all levels of the perturbation; it is",
        f"not decided when the SSL model's clean error is more than {UNDERTRAINED_FACTOR:g}x that of both supervised models.",
    ]
    for kind in CLAIMS:
        lines += _kind_table(rows, kind)
    lines += ["", "### Figures", ""]
    lines += [f"![{stem}](robustness/figures/{stem}.png)" for stem in FIGURES if (folder / "figures" / f"{stem}.png").exists()]
    return "\n".join(lines)


def _claim_lines(rows: list[dict], sparsity: list[dict]) -> list[str]:
    lines = [_sparsity_claim(sparsity)] if sparsity else []
    for kind, (panel, claim, ssl_better) in CLAIMS.items():
        table = level_table(rows, kind)
        if SSL not in table or not all(name in table for name in SUPERVISED):
            continue
        ssl = mean_over_levels(table[SSL])
        supervised = {name: mean_over_levels(table[name]) for name in SUPERVISED}
        ssl_lowest = ssl < min(supervised.values())
        holds = ssl_lowest if ssl_better else not ssl_lowest
        numbers = ", ".join(f"{name} {value:+.2f}" for name, value in supervised.items())
        clean = _clean_errors(rows, kind)
        if clean[SSL] > UNDERTRAINED_FACTOR * max(clean[name] for name in SUPERVISED):
            verdict = (f"not decided: the SSL model's clean error ({clean[SSL]:.2f} %) is more than "
                       f"{UNDERTRAINED_FACTOR:g}x the supervised models' "
                       f"({', '.join(f'{clean[name]:.2f} %' for name in SUPERVISED)}), so it is undertrained")
        else:
            verdict = "holds" if holds else "does not hold"
        lines.append(f"- Fig. {panel}, \"{claim}\": {verdict} "
                     f"(mean change over levels: SSL {ssl:+.2f}, {numbers} points).")
    return lines


def _clean_errors(rows: list[dict], kind: str) -> dict[str, float]:
    """Return each experiment's unperturbed test error (%) for one perturbation, averaged over its rows."""
    errors: dict[str, list[float]] = {}
    for row in rows:
        if row["perturbation"] == kind:
            errors.setdefault(experiment_of(row["model"]), []).append(float(row["clean_error"]))
    return {name: sum(values) / len(values) for name, values in errors.items()}


def _sparsity_claim(sparsity: list[dict]) -> str:
    fractions: dict[str, list[float]] = {}
    for row in sparsity:
        fractions.setdefault(experiment_of(row["model"]), []).append(float(row["zero_fraction"]))
    means = {name: sum(values) / len(values) for name, values in fractions.items()}
    if SSL not in means or not all(name in means for name in SUPERVISED):
        return "- Fig. 1g, \"SSL networks are much sparser\": not measured (a figure-1 model is missing)."
    holds = means[SSL] > max(means[name] for name in SUPERVISED)
    numbers = ", ".join(f"{name} {means[name]:.3f}" for name in SUPERVISED)
    return (f"- Fig. 1g, \"SSL networks are much sparser\": {'holds' if holds else 'does not hold'} "
            f"(fraction of exactly-zero activations on the test set, mean over layers: SSL {means[SSL]:.3f}, {numbers}).")


def _kind_table(rows: list[dict], kind: str) -> list[str]:
    table = level_table(rows, kind)
    if not table:
        return []
    models = list(table)
    levels = sorted({level for by_level in table.values() for level in by_level})
    lines = ["", f"### {kind}", "", "| level | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    pruned = _pruned_fractions(rows) if kind == "neuron-pruning" else {}
    for level in levels:
        cells = []
        for model in models:
            mean, std, n = table[model].get(level, (float("nan"), float("nan"), 0))
            fraction = f", {100 * pruned[model, level]:.0f} % of neurons pruned" if (model, level) in pruned else ""
            cells.append(f"{mean:+.2f} ± {std:.2f} (n={n}{fraction})")
        lines.append(f"| {level:g} | " + " | ".join(cells) + " |")
    return lines


def _pruned_fractions(rows: list[dict]) -> dict[tuple[str, float], float]:
    """Return {(experiment, threshold): fraction of neurons pruned} for neuron pruning."""
    return {
        (experiment_of(row["model"]), float(row["level"])): float(row["pruned_fraction"])
        for row in rows
        if row["perturbation"] == "neuron-pruning" and row["pruned_fraction"]
    }
