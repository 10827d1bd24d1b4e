"""Conformal prediction sets from a cross-validation run's out-of-fold predictions (see :mod:`tumorlib.conformal`).

    python -m train.conformal results/r50-4c-cv --bundle models/default
    python -m train.conformal results/mnv2-4c-cv --bundle models/mobilenetv2
    python -m train.conformal results/r50-3c-cv
    python -m train.conformal results/r50-4c-cv --compare     # print the score comparison only

Reads the run's pooled ``predictions.csv`` (its logits) and each ``fold*/predictions.csv`` (which fold
held each slice out), and writes the cross-fitted ``conformal`` section (each fold's sets from a
temperature and thresholds fitted on the other folds) and the ``conformal_scores`` comparison into the
run's ``metrics.json``. With ``--bundle``: the thresholds, fitted on every out-of-fold slice at the
bundle's temperature, go into the bundle's ``config.json`` (``tumorlib.conformal``), the same two
sections into its ``metrics.json``, and a generated model card is written afresh. Nothing is trained
and no image is read, so it runs on the committed results alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tumorlib import conformal
from tumorlib.bundle import load_bundle, update_config
from tumorlib.calibration import crossfit_probabilities, softmax
from tumorlib.errors import TumorlibError
from tumorlib.fileio import atomic_write_text, load_json, save_json
from tumorlib.modelcard import is_generated, model_card
from tumorlib.results.names import METRICS_JSON, PREDICTIONS_CSV

from .runfiles import read_predictions


def read_run(run_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(labels, out-of-fold logits, true class indices, fold of each slice) of a cross-validation run folder."""
    metrics_path, pooled = run_dir / METRICS_JSON, run_dir / PREDICTIONS_CSV
    fold_files = sorted(run_dir.glob("fold*/predictions.csv"))
    if not metrics_path.is_file() or not pooled.is_file() or not fold_files:
        raise TumorlibError(
            f"{run_dir} is not a finished cross-validation run: it needs metrics.json, predictions.csv and "
            "fold*/predictions.csv"
        )
    labels = [str(label) for label in load_json(metrics_path)["labels"]]
    preds = read_predictions(pooled, labels)
    fold_of: dict[str, int] = {}
    for path in fold_files:
        k = int(path.parent.name.removeprefix("fold"))
        for slice_id in read_predictions(path, labels)["ids"]:
            if fold_of.setdefault(slice_id, k) != k:
                raise TumorlibError(f"{slice_id} is held out by two folds of {run_dir}")
    missing = [i for i in preds["ids"] if i not in fold_of]
    if missing or len(set(preds["ids"])) != len(preds["ids"]):
        raise TumorlibError(
            f"{run_dir}/predictions.csv does not match its folds (e.g. {missing[:1] or 'a repeated id'})"
        )
    folds = np.array([fold_of[i] for i in preds["ids"]])
    return labels, preds["logits"], preds["y"], folds


def conformal_metrics(logits: np.ndarray, y: np.ndarray, folds: np.ndarray, labels: list[str]) -> dict:
    """The ``conformal`` (cross-fitted) and ``conformal_scores`` sections of a run's ``metrics.json``."""
    probs, _ = crossfit_probabilities(logits, y, folds)
    return {
        "conformal": conformal.crossfit(logits, y, folds, labels),
        "conformal_scores": conformal.compare_scores(probs, y),
    }


def thresholds(
    logits: np.ndarray, y: np.ndarray, labels: list[str], temperature: float, run_name: str, n_folds: int
) -> dict:
    """The bundle's ``tumorlib.conformal`` section: thresholds on every out-of-fold slice at ``temperature``."""
    section = conformal.fit(softmax(logits, temperature), y, labels)
    section["temperature"] = temperature
    section["fitted_on"] = (
        f"the pooled out-of-fold predictions of the {run_name} cross-validation ({len(y)} slices, {n_folds} folds, "
        "each scored by the fold model that never saw its patient), at the shipped temperature"
    )
    return section


def run_thresholds(run_dir: Path, temperature: float) -> dict:
    """:func:`thresholds` of a run folder (the trainer's ``--final`` export uses it)."""
    labels, logits, y, folds = read_run(run_dir)
    return thresholds(logits, y, labels, temperature, run_dir.name, len(np.unique(folds)))


def write(run_dir: Path, bundle: Path | None = None) -> dict:
    """Write the sections into the run's metrics.json and, with ``bundle``, the thresholds, its metrics and
    card; returns the sections."""
    labels, logits, y, folds = read_run(run_dir)
    sections = conformal_metrics(logits, y, folds, labels)
    _update_metrics(run_dir / METRICS_JSON, sections)
    if bundle is None:
        return sections
    loaded = load_bundle(bundle)  # verifies the checksums before anything is written
    if loaded.labels != labels:
        raise TumorlibError(f"{bundle} classifies {loaded.labels}, the run {labels}: not this run's model")
    update_config(bundle, conformal=thresholds(logits, y, labels, loaded.temperature, run_dir.name, len(set(folds))))
    load_bundle(bundle)  # the edited config still loads, checksums included
    if (bundle / METRICS_JSON).is_file():
        metrics = _update_metrics(bundle / METRICS_JSON, sections)
        card = bundle / "README.md"
        if not card.is_file() or is_generated(card.read_text(encoding="utf-8")):
            atomic_write_text(card, model_card(load_json(bundle / "config.json"), metrics))
    return sections


def _update_metrics(path: Path, sections: dict) -> dict:
    metrics = load_json(path)
    metrics.update(sections)
    save_json(metrics, path)
    return metrics


def comparison_text(sections: dict) -> str:
    """The score comparison as lines of text."""
    rows = sections["conformal_scores"]["rows"]
    return "\n".join(
        f"{r['score']:<28} coverage {r['coverage']:.4f} (target {r['target']:g}): "
        f"mean set size {r['mean_set_size']:.3f}"
        for r in rows
    )


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", help="cross-validation results or run folder (metrics.json, predictions.csv, fold*/)")
    p.add_argument("--bundle", help="model folder trained on the same data: write its thresholds, metrics and card")
    p.add_argument("--compare", action="store_true", help="print the score comparison and write nothing")
    return p


def main(args: argparse.Namespace) -> int:
    run = Path(args.run)
    if args.compare:
        labels, logits, y, folds = read_run(run)
        print(comparison_text(conformal_metrics(logits, y, folds, labels)))
        return 0
    sections = write(run, Path(args.bundle) if args.bundle else None)
    for entry in sections["conformal"]:
        mondrian = entry["mondrian"]
        print(
            f"{entry['level']:g}: coverage {entry['coverage']:.4f}, mean set size {entry['mean_set_size']:.3f}; "
            f"per-class thresholds {mondrian['coverage']:.4f}, {mondrian['mean_set_size']:.3f} (cross-fitted)",
            file=sys.stderr,
        )
    return 0


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        return main(args)
    except (TumorlibError, OSError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
