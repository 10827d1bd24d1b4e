"""Answers per patient from answers per slice: mean of accepted slices, majority vote, refusals, apart-reporting."""

from __future__ import annotations

import numpy as np
import pytest

from tumorlib.data import has_patient_id
from tumorlib.patients import aggregate, patient_level, vote

LABELS = ["glioma", "meningioma", "pituitary"]


def test_the_mean_decides_and_the_vote_is_reported_beside_it():
    # Two slices weakly say meningioma, one strongly says glioma: the vote and the mean disagree.
    probs = [[0.1, 0.5, 0.4], [0.1, 0.5, 0.4], [0.98, 0.01, 0.01]]
    (answer,) = aggregate(probs, ["p1"] * 3)
    assert answer.probabilities == pytest.approx([0.3933, 0.3367, 0.27], abs=1e-3)
    assert answer.label == 0 and answer.vote == 1
    assert answer.agree == 1 and answer.mixed and answer.best_slice == 2


def test_a_tied_vote_goes_to_the_higher_mean_probability():
    assert vote([0, 1], np.array([0.4, 0.5, 0.1])) == 1
    assert vote([0, 1], np.array([0.5, 0.4, 0.1])) == 0
    assert vote([2, 2, 0], np.array([0.9, 0.0, 0.1])) == 2  # no tie: the majority, whatever the mean


def test_refused_slices_take_no_part():
    probs = [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]]
    a, b = aggregate(probs, ["p1", "p1", "p2"], accepted=[False, True, False])
    assert a.label == 1 and a.n_slices == 2 and a.n_accepted == 1 and not a.mixed and a.best_slice == 1
    assert b.label is None and b.probabilities is None and b.n_accepted == 0


def test_patient_level_section(tmp_path):
    groups = ["figshare/1", "figshare/1", "figshare/2", "figshare/3", "figshare/3", "nt/dup:a.jpg", "nt/dup:b.jpg"]
    y = [0, 0, 1, 2, 2, 0, 0]
    probs = [
        [0.8, 0.1, 0.1],  # patient 1: right on both slices
        [0.6, 0.3, 0.1],
        [0.2, 0.3, 0.5],  # patient 2: wrong
        [0.1, 0.1, 0.8],  # patient 3: one slice refused, the other right
        [0.9, 0.05, 0.05],
        [0.7, 0.2, 0.1],  # no patient id: apart
        [0.1, 0.8, 0.1],
    ]
    accepted = [True, True, True, True, False, True, True]
    s = patient_level(y, probs, LABELS, groups, accepted, n_bootstrap=200)
    assert s["n"] == 3 and s["n_slices"] == 5 and s["refused_slices"] == 1 and s["unanswered"] == 0
    assert s["accuracy"] == pytest.approx(2 / 3) and s["vote"]["accuracy"] == pytest.approx(2 / 3)
    assert s["mixed"] == 0
    assert s["confusion_matrix"] == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    assert s["per_class"]["meningioma"] == {"recall": 0.0, "support": 1}
    lo, hi = s["accuracy_ci"]
    assert 0 <= lo <= s["accuracy"] <= hi <= 1
    assert s["without_patient_id"]["n"] == 2 and s["without_patient_id"]["accuracy"] == pytest.approx(0.5)
    # Without any patient id there is nothing to report per patient.
    assert patient_level([0], [[1.0, 0, 0]], LABELS, ["nt/dup:x"]) is None
    assert has_patient_id("figshare/MR040240") and not has_patient_id("br35h_sartaj/dup:br35h_sartaj/no_tumor/1.jpg")


def test_the_section_says_which_slices_it_pooled_and_scores_them_one_by_one():
    from tumorlib.patients import CHECKED, EVERY_SLICE, OUT_OF_FOLD

    groups, y = ["figshare/1", "figshare/1", "figshare/2"], [0, 0, 1]
    probs = [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]]
    assert patient_level(y, probs, LABELS, groups, n_bootstrap=0)["accepted"] == EVERY_SLICE
    checked = patient_level(y, probs, LABELS, groups, [True, False, True], n_bootstrap=0)
    assert checked["accepted"] == CHECKED and checked["slice_accuracy"] == 1.0  # the refused slice is not scored
    s = patient_level(y, probs, LABELS, groups, accepted_note=OUT_OF_FOLD, n_bootstrap=0)
    assert s["accepted"] == OUT_OF_FOLD and s["slice_accuracy"] == pytest.approx(2 / 3)
    assert s["accuracy"] == 1.0 and s["accuracy_ci"] == [None, None]  # patient 1: mean [.5, .4, .1]


def test_fold_summary_needs_every_fold():
    from tumorlib.patients import fold_summary

    folds = [{"patient_level": {"accuracy": a}} for a in (0.9, 0.8, 1.0)]
    summary = fold_summary(folds)
    assert summary["n_folds"] == 3 and summary["accuracy"]["mean"] == pytest.approx(0.9)
    assert summary["accuracy"]["std"] == pytest.approx(np.std([0.9, 0.8, 1.0], ddof=1))
    assert fold_summary([*folds, {}]) is None and fold_summary([]) is None
    assert fold_summary(folds[:1])["accuracy"] == {"mean": 0.9, "std": 0.0}
