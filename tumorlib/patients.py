"""Answers per patient (or series) from the answers per slice, and how often they are right.

One answer per patient: the mean of the calibrated probabilities over the slices the not-an-MRI
check accepts (the class with the highest mean). The majority vote of the slices' classes is reported
beside it (ties go to the tied class with the higher mean probability). Slices the check refuses
take no part; a patient all of whose slices are refused gets no answer and is counted apart.

Out-of-fold predictions carry no verdicts of the check (it is fitted on the final model): there every
slice is pooled, and the section's ``accepted`` says which slices were.

Only real patient ids are pooled: images without one (the no-tumour collections, grouped only as
near-duplicates) are scored per image and reported apart, never as fake patients. No UI toolkit here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .labels import has_patient_id
from .metrics import bootstrap_ci, confusion_matrix

AGGREGATION = "mean of calibrated probabilities over the slices the not-an-MRI check accepts"
VOTE = "majority vote of the slices' classes (ties: the higher mean probability)"
#: How a patient's answer is drawn from the slices it pools (which slices: the section's ``accepted``).
MEAN = "mean of the slices' probabilities; the class with the highest mean"

#: The section's ``accepted``: which slices were pooled.
CHECKED = "slices the not-an-MRI check accepts"
EVERY_SLICE = "every slice"
#: Held-out predictions of training (folds, a validation split) carry no verdicts: the check is fitted
#: on the final model, after them.
OUT_OF_FOLD = "every slice (no check on out-of-fold predictions: the check is fitted on the final model)"


@dataclass
class GroupAnswer:
    """The answer for one patient or series."""

    group: str
    probabilities: np.ndarray | None  # mean over accepted slices; None when every slice was refused
    label: int | None  # argmax of ``probabilities``
    vote: int | None
    n_slices: int
    n_accepted: int
    agree: int  # accepted slices whose own class is ``label``
    best_slice: int | None  # index (into the inputs) of the accepted slice most sure of ``label``

    @property
    def mixed(self) -> bool:
        """Whether the accepted slices do not all give the same class."""
        return self.n_accepted > 0 and self.agree < self.n_accepted


def vote(preds: Sequence[int], mean_probs: np.ndarray) -> int:
    """The majority class of ``preds``; a tie goes to the tied class with the higher mean probability."""
    counts = np.bincount(np.asarray(preds, dtype=np.int64), minlength=len(mean_probs))
    tied = np.flatnonzero(counts == counts.max())
    return int(tied[np.argmax(mean_probs[tied])])


def aggregate(probs: Any, groups: Sequence[str], accepted: Any = None) -> list[GroupAnswer]:
    """One :class:`GroupAnswer` per group, in order of first appearance.

    ``probs`` (N, C) calibrated probabilities; ``accepted`` (N,) whether the check let each slice through
    (default: all).
    """
    p = np.asarray(probs, dtype=np.float64)
    ok = np.ones(len(p), dtype=bool) if accepted is None else np.asarray(accepted, dtype=bool)
    if p.ndim != 2 or len(groups) != len(p) or len(ok) != len(p):
        raise ValueError(f"probs {p.shape}, groups {len(groups)} and accepted {len(ok)} do not match")
    order: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        order.setdefault(str(g), []).append(i)
    answers = []
    for group, idx in order.items():
        kept = [i for i in idx if ok[i]]
        if not kept:
            answers.append(GroupAnswer(group, None, None, None, len(idx), 0, 0, None))
            continue
        mean = p[kept].mean(axis=0)
        label = int(np.argmax(mean))
        preds = p[kept].argmax(axis=1)
        best = kept[int(np.argmax(p[kept, label]))]
        answers.append(
            GroupAnswer(group, mean, label, vote(preds, mean), len(idx), len(kept), int((preds == label).sum()), best)
        )
    return answers


def _accuracy_with_ci(truth: np.ndarray, pred: np.ndarray, n_bootstrap: int, seed: int) -> tuple[float, list]:
    correct = (truth == pred).astype(np.float64)
    accuracy = float(correct.mean())
    if not n_bootstrap or len(correct) < 2:
        return accuracy, [None, None]
    lo, hi = bootstrap_ci(lambda idx: correct[idx].mean(), len(correct), n_resamples=n_bootstrap, seed=seed)
    return accuracy, [lo, hi]


def patient_level(
    y_true: Any,
    probs: Any,
    labels: Sequence[str],
    groups: Sequence[str],
    accepted: Any = None,
    *,
    accepted_note: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict | None:
    """The ``patient_level`` section of metrics.json, or None when no item carries a patient id.

    Accuracy with its bootstrap interval over patients, recall per class, the confusion matrix over
    patients, how many patients have mixed slice answers, the majority vote's accuracy beside the mean's,
    the accuracy of the same slices one by one (``slice_accuracy``), and the images without a patient id
    scored per image, apart. ``accepted_note`` says which slices
    were pooled (default: :data:`CHECKED` with ``accepted``, :data:`EVERY_SLICE` without).
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    ok = np.ones(len(y), dtype=bool) if accepted is None else np.asarray(accepted, dtype=bool)
    with_id = np.array([has_patient_id(g) for g in groups], dtype=bool)
    if not with_id.any():
        return None
    idx = np.flatnonzero(with_id)
    answers = aggregate(p[idx], [groups[i] for i in idx], ok[idx])
    truth_of: dict[str, list[int]] = {}
    for i in idx:
        truth_of.setdefault(str(groups[i]), []).append(int(y[i]))
    answered = [a for a in answers if a.label is not None]
    truth = np.array([np.bincount(truth_of[a.group]).argmax() for a in answered], dtype=np.int64)
    mean_pred = np.array([a.label for a in answered], dtype=np.int64)
    vote_pred = np.array([a.vote for a in answered], dtype=np.int64)
    cm = confusion_matrix(truth, mean_pred, len(labels)) if len(truth) else np.zeros((len(labels),) * 2, int)
    support = cm.sum(axis=1)
    recall = {
        str(label): {"recall": float(cm[k, k] / support[k]) if support[k] else None, "support": int(support[k])}
        for k, label in enumerate(labels)
    }
    section: dict[str, Any] = {
        "unit": "patient",
        "aggregation": MEAN,
        "accepted": accepted_note or (EVERY_SLICE if accepted is None else CHECKED),
        "n": len(answered),
        "n_slices": int(with_id.sum()),
        "refused_slices": int((~ok[idx]).sum()),
        "unanswered": len(answers) - len(answered),
        "mixed": sum(a.mixed for a in answered),
        "per_class": recall,
        "confusion_matrix": cm.tolist(),
        "ci": {"level": 0.95, "method": "percentile bootstrap", "unit": "patient", "resamples": n_bootstrap},
    }
    pooled = idx[ok[idx]]
    # The same slices scored one by one: the like-for-like figure to read the patients' accuracy against.
    section["slice_accuracy"] = float((p[pooled].argmax(axis=1) == y[pooled]).mean()) if len(pooled) else None
    if len(answered):
        section["accuracy"], section["accuracy_ci"] = _accuracy_with_ci(truth, mean_pred, n_bootstrap, seed)
        vote_acc, vote_ci = _accuracy_with_ci(truth, vote_pred, n_bootstrap, seed)
        section["vote"] = {"how": VOTE, "accuracy": vote_acc, "accuracy_ci": vote_ci}
    else:
        section["accuracy"], section["accuracy_ci"] = None, [None, None]
    if (~with_id).any():
        rest = np.flatnonzero(~with_id & ok)
        section["without_patient_id"] = {
            "n": int((~with_id).sum()),
            "accuracy": float((p[rest].argmax(axis=1) == y[rest]).mean()) if len(rest) else None,
            "how": "images without a patient id (collections of single slices), scored per image, not pooled",
        }
    return section


def fold_summary(folds: Sequence[Any]) -> dict | None:
    """Mean and sample std (ddof=1; 0 for one fold) of the folds' accuracy per patient; None unless every
    fold has one (a mean over some folds would read as one over all)."""
    values = [
        (fold.get("patient_level") or {}).get("accuracy") if isinstance(fold, Mapping) else None for fold in folds
    ]
    if not values or any(v is None for v in values):
        return None
    xs = np.asarray(values, dtype=np.float64)
    std = float(xs.std(ddof=1)) if len(xs) > 1 else 0.0
    return {"n_folds": len(xs), "accuracy": {"mean": float(xs.mean()), "std": std}}
