"""Evaluate a saved model on any data in the supported layouts, exactly as the apps serve it.

    python -m train.evaluate --data ../shared/data/figshare --out metrics.json --predictions predictions.csv

Without ``--model`` it evaluates the bundled model (``models/default``). The model runs through
:class:`tumorlib.Classifier` (the apps' decoder, transform, precision and temperature), so these
numbers describe what a user gets.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from tumorlib import metrics as M
from tumorlib.calibration import softmax
from tumorlib.data import read_datasets
from tumorlib.errors import DatasetError, TumorlibError
from tumorlib.fileio import save_json
from tumorlib.inference import DEFAULT_MODEL_DIR, Classifier
from tumorlib.torchdata import SliceDataset

from .train import write_predictions


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate a tumorlib model bundle on labelled data.", add_help=add_help)
    p.add_argument("--model", default=None, help=f"bundle folder or Hub repo id (default: {DEFAULT_MODEL_DIR})")
    p.add_argument("--data", action="append", required=True, help="dataset folder; repeatable")
    p.add_argument("--classes", nargs="+", help="keep only these classes of the data")
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.add_argument("--predictions", help="CSV of per-image predictions to write")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--no-progress", action="store_true")
    return p


def evaluate_model(clf: Classifier, records, batch_size: int = 32, progress: bool = False) -> dict:
    """Raw logits and labels of every record, in record order; raises if any image cannot be read."""
    unknown = sorted({r.label for r in records} - set(clf.labels))
    if unknown:
        raise DatasetError(
            f"The data holds class(es) {', '.join(unknown)} that the model does not know ({clf.labels})."
        )
    ds = SliceDataset(records, clf.labels, clf.transform, cache=False)
    loader = DataLoader(ds, batch_size=batch_size)
    logits, labels = [], []
    for batch in tqdm(loader, desc="evaluate", disable=not progress, dynamic_ncols=True):
        logits.append(clf.logits(batch["image"]))
        labels.append(batch["label"])
    return {"logits": torch.cat(logits).numpy(), "labels": torch.cat(labels).numpy()}


def main(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    clf = Classifier.from_pretrained(args.model, precision=args.precision)
    records = read_datasets(args.data, args.classes)
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
    metrics["model"] = str(args.model or DEFAULT_MODEL_DIR)
    metrics["data"] = [str(d) for d in args.data]
    metrics["temperature"] = clf.temperature
    metrics["precision"] = clf.precision
    metrics["seconds"] = time.perf_counter() - start
    save_json(metrics, args.out)
    if args.predictions:
        write_predictions(Path(args.predictions), records, clf.labels, out["logits"], probs, out["labels"])
    print(
        f"{metrics['n']} images: accuracy {metrics['accuracy']:.4f} "
        f"(95% CI {metrics['accuracy_ci'][0]:.4f}-{metrics['accuracy_ci'][1]:.4f}), "
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
