"""Evaluate a saved model on any data in the supported layouts, exactly as the apps serve it.

    python -m train.evaluate --data ../shared/data/figshare --out metrics.json --predictions predictions.csv

Without ``--model`` it evaluates the bundled model (``models/default``). The model runs through
:class:`tumorlib.Classifier` (the apps' decoder, transform, precision and temperature), so these
numbers describe what a user gets. Where the data carries patient ids, ``patient_level`` gives one
answer per patient (:mod:`tumorlib.patients`, over the slices the check accepts). For a bundle with
conformal thresholds, the ``conformal`` section measures its prediction sets' coverage with those
thresholds (``"thresholds": "bundle"``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tumorlib import conformal, explain, localise, pipeline
from tumorlib import metrics as M
from tumorlib.calibration import softmax
from tumorlib.data import read_datasets
from tumorlib.decode import decode_image
from tumorlib.errors import DatasetError, NotBrainMRIError, TumorlibError
from tumorlib.fileio import atomic_write_text, save_json
from tumorlib.gate import has_gate
from tumorlib.inference import DEFAULT_MODEL_DIR, Classifier
from tumorlib.patients import patient_level
from tumorlib.runtime import VARIANTS
from tumorlib.splits import train_val_split

from .runfiles import write_predictions


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate a tumorlib model bundle on labelled data.", add_help=add_help)
    p.add_argument("--model", default=None, help=f"bundle folder or Hub repo id (default: {DEFAULT_MODEL_DIR})")
    p.add_argument("--data", action="append", required=True, help="dataset folder; repeatable")
    p.add_argument("--classes", nargs="+", help="keep only these classes of the data")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="evaluate only the patient-grouped validation share the trainer held out (same --seed)",
    )
    p.add_argument("--seed", type=int, default=0, help="the trainer's seed, with --val-fraction")
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.add_argument("--predictions", help="CSV of per-image predictions to write")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--variant",
        default="auto",
        choices=["auto", *VARIANTS],
        help="how the forward pass runs; auto: the fastest that gives fp32's answers on a few of the images",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument(
        "--no-cam", action="store_true", help="skip the Grad-CAM and tumour-localiser checks against tumour masks"
    )
    p.add_argument("--cam-max", type=int, default=0, help="check at most this many masked images (0: all)")
    p.add_argument("--cam-method", default="gradcam", choices=["gradcam", "gradcam++"])
    p.add_argument("--explanations", help="folder to export overlay PNGs and index.csv for the dashboard")
    p.add_argument("--n-explanations", type=int, default=24)
    p.add_argument("--no-progress", action="store_true")
    return p


def evaluate_model(clf: Classifier, records, batch_size: int = 32, progress: bool = False) -> dict:
    """Raw logits, labels and the not-an-MRI check's verdict of every record, in record order, through the
    apps' pipeline (one forward pass each); raises if any image cannot be read."""
    unknown = sorted({r.label for r in records} - set(clf.labels))
    if unknown:
        raise DatasetError(
            f"The data holds class(es) {', '.join(unknown)} that the model does not know ({clf.labels})."
        )
    logits, refused, checked = [], [], []
    starts = range(0, len(records), batch_size)
    for start in tqdm(starts, desc="evaluate", disable=not progress, dynamic_ncols=True):
        images = [decode_image(r.load_image()) for r in records[start : start + batch_size]]
        answers, outputs = pipeline.classify_batch(clf, images, check=True)
        logits.append(outputs.logits.float().numpy())
        refused += [isinstance(a, NotBrainMRIError) for a in answers]
        checked += [isinstance(a, NotBrainMRIError) or a.checked for a in answers]
    return {
        "logits": np.concatenate(logits) if logits else np.zeros((0, len(clf.labels)), np.float32),
        "labels": np.array([clf.labels.index(r.label) for r in records], dtype=np.int64),
        "refused": np.array(refused, dtype=bool),
        "checked": np.array(checked, dtype=bool),
    }


def gate_report(refused: np.ndarray) -> dict:
    """Share of the data the not-an-MRI check refuses, as the apps decide it (classification metrics ignore
    the check: every slice is scored)."""
    n = len(refused)
    return {
        "refused_fraction": int(refused.sum()) / max(n, 1),
        "n": n,
        "checks": "blank, colour, and feature distance and residual per stage",
    }


def _centre_hit(mask: np.ndarray) -> bool:
    """The pointing game of a heatmap peaked at the image centre: the chance level every heatmap is read against."""
    centre = np.zeros(mask.shape, dtype=np.float32)
    centre[mask.shape[0] // 2, mask.shape[1] // 2] = 1.0
    return explain.mask_scores(centre, mask)["pointing_hit"]


def cam_report(
    clf: Classifier, records, indices, preds, method: str, export: str | None, n_export: int, progress: bool
) -> dict:
    """Grad-CAM of the true class on every masked image: pointing game and energy inside the mask."""
    hits, energy, rows = [], [], []
    centre_hits, areas = [], []  # what a heatmap that knows nothing would score on the same slices
    reachable, grid = [], None  # what the best heatmap on the model's feature grid could score
    export_dir = Path(export) if export else None
    chosen = set(indices[:: max(1, len(indices) // max(n_export, 1))][:n_export]) if export_dir else set()
    start = time.perf_counter()
    for i in tqdm(indices, desc="grad-cam", disable=not progress, dynamic_ncols=True):
        rec = records[i]
        mask = rec.load_mask()
        if mask is None:
            continue
        decoded = decode_image(rec.load_image())
        exp = explain.gradcam(clf, decoded, target=rec.label, method=method)
        if grid is None:
            with torch.inference_mode():
                x = clf.transform(decoded)[None].to(clf.device)
                grid = tuple(clf.bundle.model.forward_features(x).shape[-2:])
        reachable.append(explain.grid_ceiling(clf, decoded, mask, grid))
        score = explain.mask_scores(exp.heatmap, mask)
        hits.append(score["pointing_hit"])
        energy.append(score["energy_in_mask"])
        centre_hits.append(_centre_hit(mask))
        areas.append(float(np.asarray(mask, dtype=bool).mean()))
        if i in chosen:
            name = f"{len(rows):03d}.png"
            export_dir.mkdir(parents=True, exist_ok=True)
            explain.overlay_with_mask(exp, mask).save(export_dir / name)
            rows.append([name, rec.id, rec.label, clf.labels[int(preds[i])], exp.target, score["pointing_hit"],
                         f"{score['energy_in_mask']:.4f}"])  # fmt: skip
    if export_dir and rows:
        lines = ["file,id,true_label,pred_label,target,pointing_hit,energy_in_mask"]
        lines += [",".join(str(c) for c in r) for r in rows]
        atomic_write_text(export_dir / "index.csv", "\n".join(lines) + "\n")
    n = len(hits)
    return {
        "pointing_game": float(np.mean(hits)) if n else None,
        "energy_in_mask": float(np.mean(energy)) if n else None,
        "n": n,
        "method": method,
        "target": "true class",
        "ms_per_image": (time.perf_counter() - start) * 1000 / max(n, 1),
        # Chance levels: tumours sit near the image centre often enough that a fixed point scores.
        "baseline": {
            "pointing_game": float(np.mean(centre_hits)) if n else None,
            "energy_in_mask": float(np.mean(areas)) if n else None,
            "how": "pointing game of a heatmap peaked at the image centre; energy of a uniform heatmap",
        },
        # The ceiling: the share of slices where some cell of the feature grid can point inside the mask.
        "ceiling": {"pointing_game": float(np.mean(reachable)) if n else None, "grid": list(grid) if grid else None},
    }


def localiser_report(clf: Classifier, records, indices, negatives=(), progress: bool = False) -> dict:
    """The tumour localiser against the masks of ``indices`` (pointing game, energy in mask, soft Dice, peak)
    and its peak on the tumour-free slices ``negatives`` (where it should stay low)."""
    hits, energy, dices, peaks, centre_hits = [], [], [], [], []
    start = time.perf_counter()
    for i in tqdm(indices, desc="localiser", disable=not progress, dynamic_ncols=True):
        mask = records[i].load_mask()
        if mask is None:
            continue
        loc = localise.localise(clf, records[i].load_image())
        score = explain.mask_scores(loc.heatmap, mask)
        hits.append(score["pointing_hit"])
        energy.append(score["energy_in_mask"])
        dices.append(localise.soft_dice(loc.heatmap, mask))
        peaks.append(loc.peak)
        centre_hits.append(_centre_hit(mask))
    n = len(hits)
    quiet = [localise.localise(clf, records[i].load_image()).peak for i in negatives]
    return {
        "pointing_game": float(np.mean(hits)) if n else None,
        "energy_in_mask": float(np.mean(energy)) if n else None,
        "soft_dice": float(np.mean(dices)) if n else None,
        "peak": float(np.mean(peaks)) if n else None,
        "n": n,
        "baseline": {
            "pointing_game": float(np.mean(centre_hits)) if n else None,
            "how": "pointing game of a heatmap peaked at the image centre",
        },
        "no_tumor": {"peak": float(np.mean(quiet)) if quiet else None, "n": len(quiet)},
        "ms_per_image": (time.perf_counter() - start) * 1000 / max(n + len(quiet), 1),
    }


def tumour_free(records) -> list[int]:
    """Indices of the records whose class is no tumour (the localiser should find nothing there)."""
    return [i for i, r in enumerate(records) if r.label == "no_tumor"]


def main(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    clf = Classifier.from_pretrained(args.model, variant=args.variant)
    records = read_datasets(args.data, args.classes)
    if args.val_fraction:
        held = train_val_split(records, args.val_fraction, args.seed)
        records = [r for r, h in zip(records, held, strict=True) if h]
    if args.variant == "auto" and records:
        # The app's rule: the fastest variant that gives fp32's answers, checked on real slices.
        clf.optimise([r.load_image() for r in records[:: max(1, len(records) // 32)][:32]])
    out = evaluate_model(clf, records, args.batch_size, progress=not args.no_progress)
    probs = softmax(out["logits"], clf.temperature)
    metrics = M.compute_metrics(
        out["labels"],
        probs,
        clf.labels,
        [r.group for r in records],
        probs_uncalibrated=softmax(out["logits"]),
        n_bootstrap=args.bootstrap,
    )
    preds = out["logits"].argmax(1)
    if clf.conformal is not None and len(records):
        # The bundle's own thresholds: an honest coverage on data they were not fitted on (an external set).
        metrics["conformal"] = conformal.evaluate(probs, out["labels"], clf.conformal, "bundle")
    gated = has_gate(clf) and out["checked"].all()
    if has_gate(clf):
        if gated:
            metrics["gate"] = gate_report(out["refused"])
        else:
            print("warning: no gate figures: this model's gate statistics could not be used", file=sys.stderr)
    # One answer per patient as the app gives it: the slices the check refuses take no part.
    per_patient = patient_level(
        out["labels"],
        probs,
        clf.labels,
        [r.group for r in records],
        ~out["refused"] if gated else None,
        accepted_note=None if gated else "every slice (no usable not-an-MRI check in this model)",
        n_bootstrap=args.bootstrap,
    )
    if per_patient is not None:
        metrics["patient_level"] = per_patient
    masked = [i for i, r in enumerate(records) if r.mask_path is not None or r.kind == "mat"]
    if masked and not args.no_cam:
        if args.cam_max:
            masked = masked[:: max(1, len(masked) // args.cam_max)][: args.cam_max]
        metrics["cam"] = cam_report(
            clf, records, masked, preds, args.cam_method, args.explanations, args.n_explanations, not args.no_progress
        )
    negatives = tumour_free(records)
    if (masked or negatives) and not args.no_cam and localise.has_localiser(clf):
        if args.cam_max:
            negatives = negatives[:: max(1, len(negatives) // args.cam_max)][: args.cam_max]
        metrics["localiser"] = localiser_report(clf, records, masked, negatives, not args.no_progress)
    metrics["model"] = str(args.model or DEFAULT_MODEL_DIR)
    metrics["data"] = [str(d) for d in args.data]
    if args.val_fraction:
        metrics["split"] = f"held-out patients: validation fraction {args.val_fraction}, seed {args.seed}"
    metrics["temperature"] = clf.temperature
    metrics["precision"] = clf.precision
    metrics["variant"] = clf.variant
    metrics["seconds"] = time.perf_counter() - start
    save_json(metrics, args.out)
    if args.predictions:
        write_predictions(Path(args.predictions), records, clf.labels, out["logits"], probs, out["labels"])
    lo, hi = metrics["accuracy_ci"]
    interval = f" (95% CI {lo:.4f}-{hi:.4f})" if lo is not None else ""
    print(
        f"{metrics['n']} images: accuracy {metrics['accuracy']:.4f}{interval}, "
        f"macro F1 {metrics['macro']['f1']:.4f}, ECE {metrics['ece']:.4f} -> {args.out}",
        file=sys.stderr,
    )
    return metrics


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        main(args)
    except TumorlibError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
