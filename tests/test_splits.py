"""Folds keep every patient (and every near-duplicate cluster) on one side, and balance the classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tumorlib.data import Record, read_datasets
from tumorlib.errors import DatasetError
from tumorlib.splits import check_folds, make_folds, stratified_group_kfold, train_val_split

from .conftest import FIGSHARE, FOLDERS


def _synthetic(n_groups: int = 170, seed: int = 1) -> list[Record]:
    """Patients with 1-20 slices each and one class each, as in the figshare data."""
    rng = np.random.default_rng(seed)
    records = []
    for g in range(n_groups):
        label = ["glioma", "meningioma", "pituitary"][rng.choice(3, p=[0.45, 0.25, 0.30])]
        for s in range(rng.integers(1, 21)):
            records.append(Record(id=f"x/{g}/{s}", label=label, group=f"p{g}", path=Path("unused")))
    return records


@pytest.mark.parametrize("k", [2, 5, 10])
def test_groups_never_straddle_folds(k):
    records = _synthetic()
    folds = make_folds(records, k, seed=0)
    check_folds(records, folds)  # raises if a patient is in two folds
    assert set(folds) == set(range(k))
    for g in {r.group for r in records}:
        assert len({f for r, f in zip(records, folds, strict=True) if r.group == g}) == 1


def test_folds_are_stratified_and_balanced():
    records = _synthetic()
    folds = make_folds(records, 5, seed=0)
    labels = np.array([r.label for r in records])
    overall = {c: np.mean(labels == c) for c in set(labels)}
    for f in range(5):
        in_fold = labels[folds == f]
        assert abs(len(in_fold) - len(records) / 5) < 0.1 * len(records)
        for c, share in overall.items():
            assert abs(np.mean(in_fold == c) - share) < 0.06


def test_deterministic_and_seeded():
    records = _synthetic()
    a, b = make_folds(records, 5, seed=3), make_folds(records, 5, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, make_folds(records, 5, seed=4))


def test_published_folds_are_used_when_present():
    records = [
        Record(id=str(i), label="glioma", group=f"p{i // 2}", path=Path("x"), fold=(i // 2) % 5) for i in range(20)
    ]
    np.testing.assert_array_equal(make_folds(records, 5), [r.fold for r in records])
    bad = [*records[:-1], Record(id="19", label="glioma", group="p0", path=Path("x"), fold=4)]
    with pytest.raises(DatasetError, match="two folds|folds"):
        make_folds(bad, 5)


def test_real_samples_keep_patients_and_duplicates_apart():
    records = read_datasets([FIGSHARE, FOLDERS])
    folds = make_folds(records, 2, seed=0)
    check_folds(records, folds)
    val = train_val_split(records, 0.5, seed=0)
    assert not (
        {r.group for r, v in zip(records, val, strict=True) if v}
        & {r.group for r, v in zip(records, val, strict=True) if not v}
    )


def test_too_few_groups():
    with pytest.raises(DatasetError, match="Only 2"):
        stratified_group_kfold(["a", "b", "a"], ["g1", "g2", "g1"], 5)
