"""The robustness verdicts of the reproduction report, from hand-written suite results."""

import csv

from pnn_ssl.reporting.report_robustness import robustness_section

FIELDS = ("model", "run_name", "layer", "perturbation", "level", "draw", "repeat", "probe", "error", "clean_error",
          "delta", "relative_change", "pruned_fraction", "threshold")


def _write_suite(folder, clean_errors, deltas):
    """Write one weight-noise row per model and level, with the changes in `deltas[model]` at levels 0.01 and 0.04."""
    (folder / "robustness").mkdir(parents=True)
    with open(folder / "robustness" / "robustness.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        for model, clean in clean_errors.items():
            for level, delta in zip((0.01, 0.04), deltas[model]):
                writer.writerow({"model": f"{model}-seed0", "run_name": model, "layer": 4, "perturbation": "weight-noise",
                                 "level": level, "draw": 0, "repeat": 0, "probe": "adam", "error": clean + delta,
                                 "clean_error": clean, "delta": delta, "relative_change": "", "pruned_fraction": "",
                                 "threshold": ""})


def test_verdict_mean_over_levels(tmp_path):
    # Mean change: SSL (0.2 + 0.6) / 2 = 0.4 points, supervised (0.5 + 1.5) / 2 = 1.0, with augmentation 0.5.
    _write_suite(tmp_path, {"vicreg-mlp": 1.5, "supervised": 1.8, "supervised-aug": 1.0},
                 {"vicreg-mlp": (0.2, 0.6), "supervised": (0.5, 1.5), "supervised-aug": (0.25, 0.75)})
    section = robustness_section(tmp_path)
    assert ('- Fig. 1b, "SSL tolerates weight noise at programming time a bit better": holds '
            "(mean change over levels: SSL +0.40, supervised +1.00, supervised-aug +0.50 points).") in section


def test_verdict_undertrained_ssl_model(tmp_path):
    # Clean error 21.6 % against 1.9 % and 1.1 %: noise lowers the error, which would otherwise "hold".
    _write_suite(tmp_path, {"vicreg-mlp": 21.6, "supervised": 1.9, "supervised-aug": 1.1},
                 {"vicreg-mlp": (-4.0, -16.0), "supervised": (0.5, 3.0), "supervised-aug": (0.4, 2.4)})
    section = robustness_section(tmp_path)
    assert ("not decided: the SSL model's clean error (21.60 %) is more than 2x the supervised models' "
            "(1.90 %, 1.10 %), so it is undertrained") in section
    assert ": holds" not in section
