"""Patient-level, label-stratified k-fold splits.

Slices of one patient are strongly correlated, so a split that lets a patient sit on both sides
measures memory, not generalisation. Every split here keeps a ``group`` (patient, or near-duplicate
cluster) inside one fold, and balances the class mix across folds as well as whole groups allow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .data import Record
from .errors import DatasetError


def stratified_group_kfold(labels: Sequence[str], groups: Sequence[str], k: int, seed: int = 0) -> np.ndarray:
    """Assign each item a fold in ``0..k-1``; groups never straddle folds; deterministic for a seed.

    Greedy, as scikit-learn's StratifiedGroupKFold: groups are visited from the most class-skewed
    (ties broken by a seeded shuffle) and each goes to the fold where the per-class fold shares stay
    most even, preferring the smallest fold on ties.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if len(labels) != len(groups):
        raise ValueError("labels and groups must have the same length")
    if k < 2:
        raise ValueError("k must be at least 2")
    classes, y = np.unique(labels, return_inverse=True)
    names, g = np.unique(groups, return_inverse=True)
    if len(names) < k:
        raise DatasetError(f"Only {len(names)} patients/groups: cannot make {k} folds that keep them apart.")
    counts = np.zeros((len(names), len(classes)))
    np.add.at(counts, (g, y), 1)
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-np.std(counts[order], axis=1), kind="stable")]
    per_fold = np.zeros((k, len(classes)))
    totals = counts.sum(axis=0)
    fold_of_group = np.empty(len(names), dtype=int)
    for gi in order:
        best, best_key = 0, None
        for f in range(k):
            per_fold[f] += counts[gi]
            spread = np.mean(np.std(per_fold / totals, axis=0))
            per_fold[f] -= counts[gi]
            key = (spread, per_fold[f].sum())
            if best_key is None or key < best_key:
                best, best_key = f, key
        per_fold[best] += counts[gi]
        fold_of_group[gi] = best
    return fold_of_group[g]


def make_folds(records: Sequence[Record], k: int = 5, seed: int = 0) -> np.ndarray:
    """Folds for ``records``: the published ones (``cvind.mat``) when every record has one and k matches."""
    published = [r.fold for r in records]
    if all(f is not None for f in published) and len(set(published)) == k:
        folds = np.asarray(published, dtype=int)
        check_folds(records, folds)
        return folds
    return stratified_group_kfold([r.label for r in records], [r.group for r in records], k, seed)


def check_folds(records: Sequence[Record], folds: Sequence[int]) -> None:
    """Raise DatasetError if any group (patient or duplicate cluster) appears in two folds."""
    seen: dict[str, int] = {}
    for rec, f in zip(records, folds, strict=True):
        if seen.setdefault(rec.group, int(f)) != int(f):
            raise DatasetError(f"Group {rec.group} appears in folds {seen[rec.group]} and {int(f)}.")


def train_val_split(records: Sequence[Record], val_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """A boolean mask of validation items: one patient-grouped fold of about ``val_fraction``."""
    k = max(2, round(1 / val_fraction))
    return make_folds(records, k, seed) == 0
