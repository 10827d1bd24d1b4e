"""Ship a finished run as a model folder: honest figures, the non-MRI check, the card.

    python -m train.ship runs/r50-4c-val models/default --results results/r50-4c-val \\
        --data ../shared/data/figshare --data ../shared/data/br35h_sartaj --val-fraction 0.2
    python -m train.ship runs/mnv2-4c-cv models/mobilenetv2 --results results/mnv2-4c-cv
    python -m train.ship runs/r50-3c-cv --results results/r50-3c-cv
    python -m train.ship forward-pass models/default models/mobilenetv2   # re-decide the forward pass only

A single-split run (``--val-fraction``): its bundle is scored by ``train.evaluate`` on the same
held-out patients it was validated on, and never on patients it trained on. A cross-validation run
with ``--final``: the bundle was trained on every patient, so its figures are the pooled out-of-fold
ones (each slice scored by the fold model that never saw its patient) and its temperature and the
thresholds of its prediction sets (:mod:`tumorlib.conformal`) were fitted on them. The model folder
gets the bundle files, ``metrics.json`` (plus the not-an-MRI test and how the temperature was fitted)
and a model card; ``--results`` writes the dashboard's copy of the
figures, history, config and per-slice predictions (and each fold's), and works without a model
folder for a CV run that has no final model. No weights go to ``--results``.

Shipping also decides how the app runs the forward pass (:func:`tumorlib.registry.record_forward_pass`):
every start-up variant is timed on the project's real slices and the fastest that gives fp32's answers
is stored in config.json (``forward_pass``), with its evidence, so a start only rechecks it.
``forward-pass`` does that step alone, for bundles already shipped.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from tumorlib.bundle import update_config
from tumorlib.errors import TumorlibError
from tumorlib.fileio import atomic_write_text, load_json, save_json
from tumorlib.inference import Classifier
from tumorlib.modelcard import model_card
from tumorlib.registry import FORWARD_PASS, record_forward_pass
from tumorlib.results.names import HISTORY_CSV, METRICS_JSON, PREDICTIONS_CSV, RUN_CONFIG, STATUS_JSON

from . import conformal, evaluate
from .nonmri import SETS, refusal_rate

BUNDLE_FILES = ("model.safetensors", "config.json", "gate.safetensors", "localiser.safetensors")
RESULT_FILES = (RUN_CONFIG, HISTORY_CSV, STATUS_JSON)
FOLD_FILES = (METRICS_JSON, PREDICTIONS_CSV, HISTORY_CSV)


def non_mri_checks(model_dir: Path) -> dict:
    """The gate on each not-an-MRI test set of :mod:`train.nonmri` (never used to fit the gate), by key."""
    out = {}
    for key, build in SETS.items():
        rate, n, accepted = refusal_rate(str(model_dir), build())
        out[key] = {
            "refused_fraction": rate,
            "n": n,
            "accepted": accepted,
            "command": f"python -m train.nonmri {model_dir}",
        }
    return out


def mri_refusal(settings: dict) -> dict:
    """The gate's refusal of real MRI slices, cross-fitted (the share refused of the slices that set the
    thresholds would be the quantile by construction, so the evaluation's own figure is not used)."""
    out = {"thresholds_from": settings.get("thresholds_from")}
    if settings.get("mri_refused_crossfit") is not None:
        out.update(
            refused_fraction=settings["mri_refused_crossfit"],
            n=settings.get("n_heldout"),
            checks="cross-fitted: thresholds set on one half of the patients, refusals counted on the other",
        )
    return out


def calibration_note(run_metrics: dict, temperature: float) -> dict:
    """How the shipped temperature was fitted, with the training run's honest (cross-fitted) ECE."""
    note = {
        "method": "temperature scaling",
        "temperature": temperature,
        "fitted_on": "the same held-out patients (their validation logits at the end of training)",
    }
    if run_metrics.get("ece") is not None:
        note["note"] = (
            "ECE after scaling is measured on the patients the temperature was fitted on; the training run's "
            f"cross-fitted estimate (each half of the held-out patients calibrated by the other) was "
            f"{run_metrics['ece']:.4f}, before scaling {run_metrics.get('ece_uncalibrated', float('nan')):.4f}."
        )
        note["ece_crossfit_training_run"] = run_metrics["ece"]
    return note


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", help="finished run folder: single split (--val-fraction) or cross-validation")
    p.add_argument("to", nargs="?", help="model folder to write, e.g. models/mobilenetv2")
    p.add_argument("--data", action="append", help="single split: the run's dataset folders; repeatable")
    p.add_argument("--val-fraction", type=float, help="single split: the run's validation fraction")
    p.add_argument("--seed", type=int, default=0, help="the run's seed")
    p.add_argument("--results", help="also write the dashboard's results folder here")
    p.add_argument("--variant", default="auto", help="forward-pass variant to score with (default: as the app)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(args: argparse.Namespace) -> int:
    run = Path(args.run)
    if not (run / METRICS_JSON).is_file():
        raise TumorlibError(f"{run} has no metrics.json: not a finished run (a CV run writes it after its last fold).")
    run_metrics = load_json(run / METRICS_JSON)
    cv = "cv_summary" in run_metrics
    has_model = (run / "model.safetensors").is_file()
    if args.to and not has_model:
        what = "a cross-validation run without --final" if cv else "not a finished run"
        raise TumorlibError(f"{run} has no model.safetensors ({what}): there is no model to ship.")
    if not cv and not args.to:
        raise TumorlibError("A single-split run ships to a model folder: give one after the run folder.")
    if not cv and (not args.data or args.val_fraction is None):
        raise TumorlibError("A single-split run is scored on its held-out patients: give --data and --val-fraction.")
    if cv:
        metrics = ship_cv(run, run_metrics, Path(args.to) if args.to else None)
    else:
        metrics = ship_single(run, run_metrics, Path(args.to), args)
    if args.results:
        write_results(run, Path(args.results), metrics, cv)
    if args.to:
        gate = (metrics.get("gate") or {}).get("non_mri_test") or {}
        print(
            f"{args.to}: accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro']['f1']:.4f}, "
            f"ECE {metrics['ece']:.4f}, non-MRI refused {gate.get('refused_fraction', float('nan')):.4f}",
            file=sys.stderr,
        )
    return 0


def ship_cv(run: Path, run_metrics: dict, to: Path | None) -> dict:
    """A CV run's pooled out-of-fold figures; with a model folder, also its final (all-data) bundle."""
    metrics = dict(run_metrics)
    n_folds = len(metrics.get("folds") or [])
    config = load_json(run / "config.json") if (run / "config.json").is_file() else {}
    split = (config.get("tumorlib") or {}).get("split") or f"{n_folds}-fold cross-validation grouped by patient"
    metrics["split"] = f"out of fold, {split}: every slice is scored by the fold model that never saw its patient" + (
        ". The shipped weights were then trained on all patients with the same recipe" if to else ""
    )
    if "conformal" not in metrics and list(run.glob("fold*/predictions.csv")):
        # A run pooled before the trainer measured prediction sets: measure them from its files now.
        labels, logits, y, folds = conformal.read_run(run)
        metrics.update(conformal.conformal_metrics(logits, y, folds, labels))
    if to is None:
        return metrics
    copy_bundle(run, to)
    if "conformal" not in (config.get("tumorlib") or {}):
        update_config(to, conformal=conformal.run_thresholds(run, metrics["temperature"]))
        config = load_json(to / "config.json")
    decide_forward_pass(to)
    config = load_json(to / "config.json")
    metrics["model"] = str(to)
    metrics["calibration"] = dict(metrics.get("calibration") or {}) | {
        "temperature": metrics["temperature"],
        "fitted_on": "the pooled out-of-fold logits of all folds",
        "note": (
            "The temperature was fitted on the pooled out-of-fold predictions, which come from the fold models, "
            "not from the shipped one. The ECE quoted is cross-fitted: each fold's slices are scaled by the "
            "temperature fitted on the other folds."
        ),
    }
    gate_cfg = (config.get("tumorlib") or {}).get("gate")  # the run's config.json is the bundle's, copied
    if gate_cfg:
        metrics["gate"] = {**mri_refusal(gate_cfg), **non_mri_checks(to)}
    save_json(metrics, to / METRICS_JSON)
    atomic_write_text(to / "README.md", model_card(config, metrics))
    return metrics


def decide_forward_pass(model_dir: Path) -> dict:
    """Time the start-up variants on this machine and record the choice in the bundle's config.json."""
    record = record_forward_pass(Classifier.from_pretrained(model_dir, device="cpu", variant="fp32"))
    update_config(model_dir, **{FORWARD_PASS: record})
    print(f"{model_dir}: forward pass {record['chosen']}", file=sys.stderr)
    return record


def copy_bundle(run: Path, to: Path) -> None:
    to.mkdir(parents=True, exist_ok=True)
    for name in BUNDLE_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, to / name)


def write_results(run: Path, results: Path, metrics: dict, cv: bool) -> None:
    """The dashboard's copy: figures, per-slice predictions, history, config (and each fold's); no weights."""
    results.mkdir(parents=True, exist_ok=True)
    save_json(metrics, results / METRICS_JSON)
    for name in RESULT_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, results / name)
    if cv:
        shutil.copy2(run / PREDICTIONS_CSV, results / PREDICTIONS_CSV)
        for fold in sorted(run.glob("fold*")):
            if (fold / METRICS_JSON).is_file():
                (results / fold.name).mkdir(exist_ok=True)
                for name in FOLD_FILES:
                    if (fold / name).is_file():
                        shutil.copy2(fold / name, results / fold.name / name)
        return
    shutil.copy2(run / "eval-heldout.csv", results / PREDICTIONS_CSV)
    if (run / "explanations").is_dir():
        shutil.copytree(run / "explanations", results / "explanations", dirs_exist_ok=True)


def ship_single(run: Path, run_metrics: dict, to: Path, args: argparse.Namespace) -> dict:
    """A single-split run: ``train.evaluate`` of the bundle as served, on the run's held-out patients."""
    eval_args = [
        "--model", str(run), "--val-fraction", str(args.val_fraction), "--seed", str(args.seed),
        "--out", str(run / "eval-heldout.json"), "--predictions", str(run / "eval-heldout.csv"),
        "--explanations", str(run / "explanations"), "--variant", args.variant,
        *(a for d in args.data for a in ("--data", d)),
        *(["--no-progress"] if args.no_progress else []),
    ]  # fmt: skip
    metrics = evaluate.main(evaluate.get_args_parser().parse_args(eval_args))

    copy_bundle(run, to)
    decide_forward_pass(to)
    metrics["model"] = str(to)
    if "gate" in metrics:
        gate_cfg = (load_json(to / "config.json").get("tumorlib") or {}).get("gate") or {}
        metrics["gate"].update(mri_refusal(gate_cfg), **non_mri_checks(to))
    metrics["calibration"] = calibration_note(run_metrics, metrics["temperature"])
    if run_metrics.get("accuracy") is not None:
        # Older runs validated under bf16 autocast, which can differ from the served float32 model.
        metrics["training_run_validation"] = {
            "accuracy": run_metrics["accuracy"],
            "note": "the same held-out patients as scored by the training run itself; the figures above are "
            "the served model's, from train.evaluate",
        }
    save_json(metrics, to / METRICS_JSON)
    atomic_write_text(to / "README.md", model_card(load_json(to / "config.json"), metrics))
    return metrics


def cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["forward-pass"]:
            p = argparse.ArgumentParser(
                prog="python -m train.ship forward-pass", description=decide_forward_pass.__doc__
            )
            p.add_argument("models", nargs="+", help="shipped model folders")
            for folder in p.parse_args(argv[1:]).models:
                decide_forward_pass(Path(folder))
            return 0
        return main(get_args_parser().parse_args(argv))
    except (TumorlibError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
