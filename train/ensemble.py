"""What an ensemble of cross-validated recipes would score, from their out-of-fold predictions alone.

    python -m train.ensemble results/r50-4c-cv results/mnv2-4c-cv --out results/studies/ensemble-4c-cv/metrics.json

The runs must hold out the same patients in every fold (the same data and ``--seed`` give that; it is
checked). Each slice's probabilities are the mean of the runs' softmax outputs from fold models that
never saw its patient, so the figures are out of fold like each run's own; the temperature of the
mean is cross-fitted across folds as the trainer does it. Nothing is trained or shipped: this prices
an ensemble before anyone builds one.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from tumorlib import metrics as M
from tumorlib.calibration import crossfit_probabilities, fit_temperature, softmax
from tumorlib.errors import TumorlibError
from tumorlib.fileio import load_json, save_json
from tumorlib.patients import OUT_OF_FOLD, patient_level
from tumorlib.results.names import METRICS_JSON, PREDICTIONS_CSV


def read_folds(run: Path) -> tuple[list[str], list[dict[str, dict]]]:
    """A CV run's labels and, fold by fold, each held-out slice's label, patient and logits by id."""
    metrics = run / METRICS_JSON
    if not metrics.is_file():
        raise TumorlibError(f"{run} has no metrics.json: not a finished cross-validation run.")
    labels = load_json(metrics)["labels"]
    folds = []
    for k in range(len(sorted(run.glob("fold*/predictions.csv")))):
        with (run / f"fold{k}" / PREDICTIONS_CSV).open(newline="") as f:
            folds.append(
                {
                    r["id"]: {
                        "label": r["true_label"],
                        "group": r["patient"],
                        "logits": [float(r[f"logit_{c}"]) for c in labels],
                    }
                    for r in csv.DictReader(f)
                }
            )
    if not folds:
        raise TumorlibError(f"{run} has no fold*/predictions.csv: not a cross-validation run.")
    return labels, folds


def ensemble(runs: list[Path]) -> dict:
    """The pooled out-of-fold report of the runs' mean probabilities (see the module docstring)."""
    read = [read_folds(run) for run in runs]
    labels, folds = read[0]
    for run, (other_labels, other_folds) in zip(runs[1:], read[1:], strict=True):
        if other_labels != labels:
            raise TumorlibError(f"{run} has classes {other_labels}, {runs[0]} has {labels}.")
        if [set(f) for f in other_folds] != [set(f) for f in folds]:
            raise TumorlibError(f"{run} and {runs[0]} do not hold out the same slices in each fold.")
    ids = [i for fold in folds for i in sorted(fold)]
    fold_of = np.array([k for k, fold in enumerate(folds) for _ in fold])
    y = np.array([labels.index(folds[k][i]["label"]) for i, k in zip(ids, fold_of, strict=True)])
    groups = [folds[k][i]["group"] for i, k in zip(ids, fold_of, strict=True)]
    mean = np.mean(
        [softmax(np.array([f[k][i]["logits"] for i, k in zip(ids, fold_of, strict=True)])) for _, f in read], axis=0
    )
    log_mean = np.log(np.clip(mean, 1e-12, None))  # softmax(log p) = p: the mean as logits, for temperature scaling
    probs, fold_temps = crossfit_probabilities(log_mean, y, fold_of)
    report = M.compute_metrics(y, probs, labels, groups, probs_uncalibrated=mean)
    report["temperature"] = fit_temperature(log_mean, y)
    report["calibration"] = {
        "method": "temperature scaling, cross-fitted across folds",
        "fold_temperatures": fold_temps,
    }
    per_patient = patient_level(y, probs, labels, groups, accepted_note=OUT_OF_FOLD)
    if per_patient is not None:
        report["patient_level"] = per_patient
    report["members"] = [str(run) for run in runs]
    report["how"] = "mean of the members' out-of-fold softmax probabilities, slice by slice"
    return report


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="finished CV run or results folders with fold*/predictions.csv")
    p.add_argument("--out", help="write the report here as JSON")
    return p


def main(args: argparse.Namespace) -> int:
    if len(args.runs) < 2:
        raise TumorlibError("An ensemble needs two runs or more.")
    report = ensemble([Path(run) for run in args.runs])
    if args.out:
        save_json(report, Path(args.out))
    recall = ", ".join(f"{label} {s['recall']:.4f}" for label, s in report["per_class"].items())
    lo, hi = report["accuracy_ci"]
    print(
        f"{len(args.runs)} runs, {report['n']} slices: accuracy {report['accuracy']:.4f} ({lo:.4f}-{hi:.4f}), "
        f"macro F1 {report['macro']['f1']:.4f}, ECE {report['ece']:.4f}; recall {recall}"
    )
    return 0


def cli(argv: list[str] | None = None) -> int:
    try:
        return main(get_args_parser().parse_args(argv))
    except (TumorlibError, OSError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
