"""Fit the not-an-MRI gate of a bundle: feature statistics from training slices, thresholds from held-out ones.

    python -m train.gate runs/NAME --data ../shared/data/figshare --data ../shared/data/br35h_sartaj --val-fraction 0.2

The split is rebuilt exactly as the trainer built it (same data, fraction and seed), so the held-out
slices that set the thresholds are ones the model never trained on.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader

from tumorlib import gate
from tumorlib.bundle import load_bundle, save_extra, update_config
from tumorlib.data import Record, read_datasets
from tumorlib.errors import TumorlibError
from tumorlib.splits import train_val_split
from tumorlib.torchdata import SliceDataset
from tumorlib.transforms import create_transform


def features_of(model: torch.nn.Module, records: list[Record], labels: list[str], transform, batch_size: int = 64):
    """Pooled features and class indices of ``records`` through the serving transform."""
    ds = SliceDataset(records, labels, transform, cache=False)
    feats, ys = [], []
    for batch in DataLoader(ds, batch_size=batch_size):
        feats.append(gate.pooled_features(model, batch["image"]))
        ys.append(batch["label"].numpy())
    return np.concatenate(feats), np.concatenate(ys)


def fit_bundle_gate(
    bundle_dir, train_records: list[Record], heldout_records: list[Record] | None, quantile: float = 0.995
) -> dict:
    """Write ``gate.safetensors`` and the thresholds into the bundle; return the settings.

    Without held-out slices (a model trained on everything) the thresholds come from two
    patient-grouped halves, each scored against statistics fitted on the other half.
    """
    bundle = load_bundle(bundle_dir)
    transform = create_transform(bundle.data_config)
    labels = bundle.labels
    train_x, train_y = features_of(bundle.model, train_records, labels, transform)
    stats = gate.fit(train_x, train_y)
    if heldout_records:
        held_x, _ = features_of(bundle.model, heldout_records, labels, transform)
        settings = gate.thresholds(stats, held_x, quantile)
        how = "held-out patients"
    else:
        half = train_val_split(train_records, 0.5, seed=0)
        parts = [gate.thresholds(gate.fit(train_x[~h], train_y[~h]), train_x[h], quantile) for h in (half, ~half)]
        settings = {k: max(p[k] for p in parts) if "threshold" in k else parts[0][k] for k in parts[0]}
        settings["n_heldout"] = len(train_x)
        how = "two patient-grouped halves of the training slices, cross-fitted"
    settings.update(n_fit=len(train_x), method="mahalanobis+residual", thresholds_from=how)
    save_extra(bundle_dir, gate.GATE_NAME, stats)
    update_config(bundle_dir, gate=settings)
    return settings


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Fit the not-an-MRI gate of a model bundle.", add_help=add_help)
    p.add_argument("model", help="bundle folder")
    p.add_argument("--data", action="append", required=True, help="the training data of the model; repeatable")
    p.add_argument("--val-fraction", type=float, default=0.2, help="as given to the trainer")
    p.add_argument("--seed", type=int, default=0, help="as given to the trainer")
    p.add_argument("--quantile", type=float, default=0.995, help="share of held-out slices to accept")
    p.add_argument("--threads", type=int, default=None)
    return p


def main(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    records = read_datasets(args.data)
    val = train_val_split(records, args.val_fraction, args.seed)
    train_r = [r for r, v in zip(records, val, strict=True) if not v]
    held_r = [r for r, v in zip(records, val, strict=True) if v]
    settings = fit_bundle_gate(args.model, train_r, held_r, args.quantile)
    print(f"gate fitted on {len(train_r)} slices, thresholds from {len(held_r)} held-out: {settings}", file=sys.stderr)
    return settings


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args())
    except TumorlibError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
