"""Ship a finished run as a model folder: held-out evaluation as served, the non-MRI check, the card.

    python -m train.ship runs/r50-4c-val models/resnet50 --results results/r50-4c-val \\
        --data ../shared/data/figshare --data ../shared/data/br35h_sartaj --val-fraction 0.2

The run must be a single-split run (``--val-fraction``): its bundle is scored by ``train.evaluate``
on the same held-out patients it was validated on, and never on patients it trained on. The model
folder gets the bundle files, that evaluation's ``metrics.json`` (plus the not-an-MRI test and how the
temperature was fitted) and a model card; ``--results`` also copies the run's history, config and
per-slice predictions for the dashboard. Nothing else is written.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from tumorlib.errors import TumorlibError
from tumorlib.fileio import atomic_write_text, load_json, save_json
from tumorlib.modelcard import model_card

from . import evaluate

BUNDLE_FILES = ("model.safetensors", "config.json", "gate.safetensors")
RESULT_FILES = ("config.yaml", "history.csv", "status.json")


def non_mri_check(model_dir: Path) -> dict:
    """The gate on the not-an-MRI test set (built in ``tests/nonmri.py``, never used to fit the gate)."""
    from tests.nonmri import refusal_rate

    rate, n, accepted = refusal_rate(str(model_dir))
    return {
        "refused_fraction": rate,
        "n": n,
        "accepted": accepted,
        "command": f"python -m tests.nonmri {model_dir}",
    }


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
    p.add_argument("run", help="finished single-split run folder (python -m train --val-fraction ...)")
    p.add_argument("to", help="model folder to write, e.g. models/resnet50")
    p.add_argument("--data", action="append", required=True, help="the run's dataset folders; repeatable")
    p.add_argument("--val-fraction", type=float, required=True, help="the run's validation fraction")
    p.add_argument("--seed", type=int, default=0, help="the run's seed")
    p.add_argument("--results", help="also write the dashboard's results folder here")
    p.add_argument("--variant", default="auto", help="forward-pass variant to score with (default: as the app)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(args: argparse.Namespace) -> int:
    run, to = Path(args.run), Path(args.to)
    run_metrics = load_json(run / "metrics.json")
    if "cv_summary" in run_metrics or not (run / "model.safetensors").is_file():
        raise TumorlibError(f"{run} is not a finished single-split run (no model.safetensors, or a CV run).")
    eval_args = [
        "--model", str(run), "--val-fraction", str(args.val_fraction), "--seed", str(args.seed),
        "--out", str(run / "eval-heldout.json"), "--predictions", str(run / "eval-heldout.csv"),
        "--explanations", str(run / "explanations"), "--variant", args.variant,
        *(a for d in args.data for a in ("--data", d)),
        *(["--no-progress"] if args.no_progress else []),
    ]  # fmt: skip
    metrics = evaluate.main(evaluate.get_args_parser().parse_args(eval_args))

    to.mkdir(parents=True, exist_ok=True)
    for name in BUNDLE_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, to / name)
    metrics["model"] = str(to)
    if "gate" in metrics:
        metrics["gate"]["non_mri_test"] = non_mri_check(to)
    metrics["calibration"] = calibration_note(run_metrics, metrics["temperature"])
    if run_metrics.get("accuracy") is not None:
        # Older runs validated under bf16 autocast, which can differ from the served float32 model.
        metrics["training_run_validation"] = {
            "accuracy": run_metrics["accuracy"],
            "note": "the same held-out patients as scored by the training run itself; the figures above are "
            "the served model's, from train.evaluate",
        }
    save_json(metrics, to / "metrics.json")
    atomic_write_text(to / "README.md", model_card(load_json(to / "config.json"), metrics))

    if args.results:
        results = Path(args.results)
        results.mkdir(parents=True, exist_ok=True)
        save_json(metrics, results / "metrics.json")
        for name in RESULT_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, results / name)
        shutil.copy2(run / "eval-heldout.csv", results / "predictions.csv")
        if (run / "explanations").is_dir():
            shutil.copytree(run / "explanations", results / "explanations", dirs_exist_ok=True)
    gate = (metrics.get("gate") or {}).get("non_mri_test") or {}
    print(
        f"{to}: accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro']['f1']:.4f}, ECE {metrics['ece']:.4f}, "
        f"variant {metrics['variant']}, non-MRI refused {gate.get('refused_fraction', float('nan')):.4f}",
        file=sys.stderr,
    )
    return 0


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        return main(args)
    except (TumorlibError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
