"""The answers per patient of committed results, from their predictions (see :mod:`tumorlib.patients`).

    python -m train.patients results/r50-4c-cv --bundle models/default
    python -m train.patients results/mnv2-4c-cv --bundle models/mobilenetv2
    python -m train.patients results/r50-4c-val
    python -m train.patients results/studies/ensemble-4c-cv

Reads the results folder's ``predictions.csv`` (its ``prob_*`` columns: a cross-validation's pooled file
holds the cross-fitted calibrated probabilities, an evaluation's the served ones) and writes the
``patient_level`` section into its ``metrics.json``; for a cross-validation also each fold's, from
``fold*/predictions.csv``, and their mean ± std under ``cv_summary``. An ensemble study (no
predictions.csv, its ``members`` listed) is recomputed from its members' fold predictions as
``train.ensemble`` does. With ``--bundle``: the same sections go into the bundle's ``metrics.json``
(which must be this evaluation's) and a generated model card is written afresh. Nothing is trained and
no image is read, so it runs on the committed results alone.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tumorlib.errors import TumorlibError
from tumorlib.fileio import atomic_write_text, load_json, save_json
from tumorlib.modelcard import is_generated, model_card
from tumorlib.patients import OUT_OF_FOLD, fold_summary, patient_level
from tumorlib.results.names import METRICS_JSON, PREDICTIONS_CSV

from .ensemble import ensemble

#: An evaluation's predictions.csv holds no verdicts of the not-an-MRI check, so every slice is pooled.
NO_VERDICTS = "every slice (predictions.csv records no verdicts of the not-an-MRI check)"


def from_predictions(path: Path, labels: list[str], accepted_note: str, n_bootstrap: int = 1000) -> dict | None:
    """The ``patient_level`` section of a predictions.csv's ``prob_*`` columns (None without patient ids)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in ("patient", "true_label", *(f"prob_{c}" for c in labels)) if rows and c not in rows[0]]
    if missing:
        raise TumorlibError(f"{path} lacks column(s) {', '.join(missing)}")
    y = np.array([labels.index(r["true_label"]) for r in rows], dtype=np.int64)
    probs = np.array([[float(r[f"prob_{c}"]) for c in labels] for r in rows], dtype=np.float64).reshape(-1, len(labels))
    groups = [r["patient"] for r in rows]
    return patient_level(y, probs, labels, groups, accepted_note=accepted_note, n_bootstrap=n_bootstrap)


def _resamples(metrics: Mapping) -> int:
    """The bootstrap resamples the file's other intervals used (1000 when not stored)."""
    stored = (metrics.get("ci") or {}).get("resamples")
    return int(stored) if isinstance(stored, int) and not isinstance(stored, bool) and stored > 0 else 1000


def sections(results_dir: Path) -> dict:
    """What :func:`backfill` writes: ``patient_level`` (None without patient ids) and, for a
    cross-validation, ``folds`` (fold number -> its section) and ``summary`` (their mean ± std)."""
    metrics = load_json(results_dir / METRICS_JSON)
    labels = [str(label) for label in metrics["labels"]]
    resamples = _resamples(metrics)
    pooled = results_dir / PREDICTIONS_CSV
    if pooled.is_file():
        # Held-out predictions of training (folds, a validation split) were scored before any check was
        # fitted; an evaluation of a bundle (it records the "model" it ran) had one, unrecorded in the csv.
        note = NO_VERDICTS if "model" in metrics and not metrics.get("folds") else OUT_OF_FOLD
        found: dict = {"patient_level": from_predictions(pooled, labels, note, resamples), "folds": {}}
        for path in sorted(results_dir.glob("fold*/predictions.csv")):
            k = int(path.parent.name.removeprefix("fold"))
            found["folds"][k] = from_predictions(path, labels, OUT_OF_FOLD, resamples)
        if found["folds"]:
            found["summary"] = fold_summary([{"patient_level": found["folds"][k]} for k in sorted(found["folds"])])
        return found
    members = metrics.get("members")
    if isinstance(members, list) and len(members) > 1:
        return {"patient_level": ensemble([Path(m) for m in members]).get("patient_level"), "folds": {}}
    raise TumorlibError(f"{results_dir} has no predictions.csv and lists no ensemble members")


def _apply(metrics: dict, found: Mapping) -> dict:
    """``metrics`` with the sections of :func:`sections` in place (a section that is None is removed)."""
    if found["patient_level"] is None:
        metrics.pop("patient_level", None)
    else:
        metrics["patient_level"] = found["patient_level"]
    folds = metrics.get("folds")
    for index, entry in enumerate(folds if isinstance(folds, list) else []):
        k = entry.get("fold", index) if isinstance(entry, dict) else None
        if k in found["folds"]:
            _put(entry, found["folds"][k])
    if isinstance(metrics.get("cv_summary"), dict) and "summary" in found:
        _put(metrics["cv_summary"], found["summary"])
    return metrics


def _put(target: dict, section: dict | None) -> None:
    if section is None:
        target.pop("patient_level", None)
    else:
        target["patient_level"] = section


def backfill(results_dir: Path, bundle: Path | None = None) -> dict:
    """Write the sections into the results' metrics.json (and each fold's), and with ``bundle`` into its
    metrics.json, then regenerate its card if generated; returns the results' metrics."""
    found = sections(results_dir)
    path = results_dir / METRICS_JSON
    metrics = load_json(path)
    bundle_metrics = None
    if bundle is not None:
        # Refuse before anything is written: the bundle must carry this very evaluation's figures.
        bundle_metrics = load_json(bundle / METRICS_JSON)
        if any(bundle_metrics.get(key) != metrics.get(key) for key in ("labels", "n", "accuracy", "confusion_matrix")):
            raise TumorlibError(f"{bundle}/metrics.json does not hold the figures of {results_dir}")
    save_json(_apply(metrics, found), path)
    for k, section in found["folds"].items():
        fold_path = results_dir / f"fold{k}" / METRICS_JSON
        if fold_path.is_file():
            fold = load_json(fold_path)
            _put(fold, section)
            save_json(fold, fold_path)
    if bundle is not None and bundle_metrics is not None:
        bundle_metrics = _apply(bundle_metrics, found)
        save_json(bundle_metrics, bundle / METRICS_JSON)
        card = bundle / "README.md"
        if not card.is_file() or is_generated(card.read_text(encoding="utf-8")):
            atomic_write_text(card, model_card(load_json(bundle / "config.json"), bundle_metrics))
    return metrics


def summary_text(metrics: Mapping) -> str:
    """One line: slice accuracy beside patient accuracy, vote and mixed patients."""
    section = metrics.get("patient_level")
    if not section:
        return f"{metrics.get('n')} slices: no patient ids, no answers per patient"
    lo, hi = section["accuracy_ci"]
    interval = f" ({lo:.4f}-{hi:.4f})" if lo is not None else ""
    return (
        f"{metrics.get('n')} slices: accuracy {metrics.get('accuracy'):.4f}; {section['n']} patients: accuracy "
        f"{section['accuracy']:.4f}{interval}, vote {section['vote']['accuracy']:.4f}, mixed {section['mixed']}"
    )


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", help="results folder (metrics.json with predictions.csv, or an ensemble study)")
    p.add_argument("--bundle", help="model folder that carries these figures: write its metrics and card")
    return p


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        metrics = backfill(Path(args.results), Path(args.bundle) if args.bundle else None)
    except (TumorlibError, OSError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.results}: {summary_text(metrics)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
