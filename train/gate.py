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
    """The gate input (pooled stages and features), class indices and stage widths of ``records``
    through the serving transform."""
    ds = SliceDataset(records, labels, transform, cache=False)
    feats, ys, widths = [], [], []
    for batch in DataLoader(ds, batch_size=batch_size):
        x, widths = gate.model_input(model, batch["image"])
        feats.append(x)
        ys.append(batch["label"].numpy())
    return np.concatenate(feats), np.concatenate(ys), widths


def fit_bundle_gate(
    bundle_dir, train_records: list[Record], heldout_records: list[Record] | None, quantile: float = 0.99
) -> dict:
    """Write ``gate.safetensors`` and the thresholds into the bundle; return the settings.

    Without held-out slices (a model trained on everything) the thresholds come from two
    patient-grouped halves, each scored against statistics fitted on the other half.
    """
    bundle = load_bundle(bundle_dir)
    transform = create_transform(bundle.data_config)
    labels = bundle.labels
    train_x, train_y, widths = features_of(bundle.model, train_records, labels, transform)
    stats = gate.fit_stages(train_x, train_y, widths)
    if heldout_records:
        held_x, _, _ = features_of(bundle.model, heldout_records, labels, transform)
        values = gate.stage_statistics(stats, held_x, widths)
        half = train_val_split(heldout_records, 0.5, seed=0)
        how = "held-out patients"
    else:
        half = train_val_split(train_records, 0.5, seed=0)
        values = np.empty((len(train_x), 2 * len(widths)))
        for h in (half, ~half):
            values[h] = gate.stage_statistics(gate.fit_stages(train_x[~h], train_y[~h], widths), train_x[h], widths)
        how = "two patient-grouped halves of the training slices, cross-fitted"
    settings = gate.thresholds(values, widths, quantile)
    # The share refused of the very slices that set the thresholds is the quantile by construction;
    # the honest figure sets them on one half of the patients and counts refusals on the other.
    refused = sum(
        int(gate.refuses(gate.scores(gate.thresholds(values[~h], widths, quantile), values[h])).sum())
        for h in (half, ~half)
    )
    settings.update(
        n_fit=len(train_x),
        thresholds_from=how,
        mri_refused_crossfit=refused / len(values),
    )
    save_extra(bundle_dir, gate.GATE_NAME, stats)
    update_config(bundle_dir, gate=settings)
    return settings


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Fit the not-an-MRI gate of a model bundle.", add_help=add_help)
    p.add_argument("model", help="bundle folder")
    p.add_argument("--data", action="append", required=True, help="the training data of the model; repeatable")
    p.add_argument(
        "--val-fraction", type=float, default=0.2, help="as given to the trainer; 0: trained on all of --data"
    )
    p.add_argument("--seed", type=int, default=0, help="as given to the trainer")
    p.add_argument("--quantile", type=float, default=0.99, help="share of held-out slices to accept")
    p.add_argument("--threads", type=int, default=None)
    return p


def main(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    records = read_datasets(args.data)
    if args.val_fraction == 0:  # a model trained on every slice (``--final``): cross-fitted halves
        train_r, held_r = records, []
    else:
        val = train_val_split(records, args.val_fraction, args.seed)
        train_r = [r for r, v in zip(records, val, strict=True) if not v]
        held_r = [r for r, v in zip(records, val, strict=True) if v]
    settings = fit_bundle_gate(args.model, train_r, held_r, args.quantile)
    where = settings["thresholds_from"]
    print(f"gate fitted on {len(train_r)} slices, thresholds from {where}: {settings}", file=sys.stderr)
    return settings


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args())
    except TumorlibError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
