"""Classification metrics, computed once at evaluation time and saved as JSON for the apps to draw.

Everything here is plain numpy so the apps can read the results without scikit-learn or torch. The
definitions follow scikit-learn (``zero_division=0`` for precision, recall and F-scores, one-vs-rest
ROC curves identical to ``sklearn.metrics.roc_curve``), and the tests check that they agree.

All rates are fractions in ``[0, 1]``. :func:`compute_metrics` returns only JSON-ready values: Python
ints, floats, lists, dicts, and ``None`` where a metric is undefined (e.g. the AUC of a class that never
occurs in ``y_true``). Confidence intervals are percentile bootstrap intervals; with patient ids they
resample whole patients, because slices of one patient are not independent.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import numpy as np

from .fileio import load_json, save_json

__all__ = [
    "auc",
    "bootstrap_ci",
    "bootstrap_confusion_matrices",
    "compute_metrics",
    "confusion_matrix",
    "expected_calibration_error",
    "f_beta",
    "load_json",
    "per_class_metrics",
    "roc_curve_ovr",
    "save_json",
    "summarize_folds",
]

#: Metric names reported per class and as macro / weighted averages.
AVERAGED = ("precision", "recall", "specificity", "f1", "f_beta")
#: Per-class metrics that get a bootstrap interval.
PER_CLASS_CI = ("precision", "recall", "specificity", "f1", "accuracy")

CI_LEVEL = 0.95
# Upper bound on the number of index cells one bootstrap chunk holds, so memory stays ~tens of MB
# however large the evaluation set is.
_CHUNK_CELLS = 4_000_000


# ---------------------------------------------------------------------------------------------------
# Confusion-matrix metrics
# ---------------------------------------------------------------------------------------------------


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class, shape ``(n_classes, n_classes)``."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} items but y_pred has {y_pred.size}")
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            raise ValueError(f"{name} holds class indices outside 0..{n_classes - 1}")
    counts = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0.0 where ``den == 0`` (scikit-learn's ``zero_division=0``)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast_shapes(num.shape, den.shape))
    np.divide(num, den, out=out, where=den != 0)
    return out


def per_class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class one-vs-rest metrics from a confusion matrix.

    Works on one matrix ``(C, C)`` or a stack ``(..., C, C)`` (one per bootstrap resample); every
    result has the shape ``(..., C)``. Undefined ratios are 0.0, as with ``zero_division=0``.
    """
    cm = np.asarray(cm)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)  # true items of the class
    predicted = cm.sum(axis=-2)  # items predicted as the class
    n = cm.sum(axis=(-2, -1))[..., None]
    fp = predicted - tp
    fn = support - tp
    tn = n - tp - fp - fn
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    return {
        "precision": precision,
        "recall": recall,
        "specificity": _safe_div(tn, tn + fp),
        "f1": f_beta(precision, recall, 1.0),
        "support": support.astype(np.int64),
        "accuracy": _safe_div(tp + tn, n),
    }


def f_beta(precision: Any, recall: Any, beta: float) -> np.ndarray | float:
    """F-beta score, ``(1 + b²) P R / (b² P + R)``; 0.0 where both are 0. ``beta > 1`` favours recall."""
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    b2 = beta * beta
    out = _safe_div((1 + b2) * p * r, b2 * p + r)
    return float(out) if out.ndim == 0 else out


def _summary(cm: np.ndarray, beta: float) -> dict[str, np.ndarray]:
    """Everything derived from confusion matrices ``(..., C, C)``: per-class arrays and their averages."""
    pc = per_class_metrics(cm)
    pc["f_beta"] = f_beta(pc["precision"], pc["recall"], beta)
    n = cm.sum(axis=(-2, -1))
    accuracy = _safe_div(np.trace(cm, axis1=-2, axis2=-1), n)
    # Like sklearn.metrics.balanced_accuracy_score: classes absent from y_true are left out of the mean.
    present = pc["support"] > 0
    balanced = _safe_div((pc["recall"] * present).sum(axis=-1), present.sum(axis=-1))
    out = {"accuracy": accuracy, "error_rate": 1.0 - accuracy, "balanced_accuracy": balanced}
    out.update({f"class_{name}": value for name, value in pc.items()})
    for name in AVERAGED:
        out[f"macro_{name}"] = pc[name].mean(axis=-1)
        out[f"weighted_{name}"] = _safe_div((pc[name] * pc["support"]).sum(axis=-1), pc["support"].sum(axis=-1))
    return out


# ---------------------------------------------------------------------------------------------------
# ROC
# ---------------------------------------------------------------------------------------------------


def roc_curve_ovr(y_true: Any, probs: Any, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of class ``k`` against the rest: ``(fpr, tpr, thresholds)``.

    Same points as ``sklearn.metrics.roc_curve(y_true == k, probs[:, k], drop_intermediate=True)``,
    including a first point at threshold ``inf``. ``fpr`` (``tpr``) is all NaN when there are no
    negatives (positives), as in scikit-learn.
    """
    positive = np.asarray(y_true).ravel() == k
    score = np.asarray(probs)[:, k]
    order = np.argsort(score, kind="stable")[::-1]
    score = score[order]
    positive = positive[order]
    # One curve point per distinct score: ties cannot be separated by any threshold.
    last_of_run = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]
    tps = np.cumsum(positive, dtype=np.float64)[last_of_run]
    fps = 1.0 + last_of_run - tps
    thresholds = score[last_of_run].astype(np.float64)
    if fps.size > 2:
        # Drop points collinear with their neighbours: they are not corners of the curve.
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    tps = np.r_[0.0, tps]
    fps = np.r_[0.0, fps]
    thresholds = np.r_[np.inf, thresholds]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thresholds


def auc(fpr: Any, tpr: Any) -> float:
    """Area under a curve by the trapezoid rule (x = ``fpr``, y = ``tpr``); x must be monotonic."""
    x = np.asarray(fpr, dtype=np.float64)
    y = np.asarray(tpr, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError("auc needs two 1-D arrays of the same length with at least 2 points")
    dx = np.diff(x)
    direction = 1.0
    if np.any(dx < 0):
        if not np.all(dx <= 0):
            raise ValueError("x (fpr) is neither increasing nor decreasing")
        direction = -1.0
    return float(direction * np.trapezoid(y, x))


# ---------------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------------


def expected_calibration_error(probs: Any, y_true: Any, n_bins: int = 15) -> tuple[float, list[dict[str, Any]]]:
    """Top-label expected calibration error and its reliability-diagram bins.

    Confidence is the top probability, correct means its class is the true one. Bins are equal-width,
    ``(lower, upper]`` on ``(0, 1]`` (a confidence of exactly 0 joins the first bin).
    ECE = sum over bins of ``(n_b / N) * |accuracy_b - confidence_b|``. Empty bins have ``None``
    confidence and accuracy.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true).ravel()
    if probs.ndim != 2 or probs.shape[0] != y_true.size or y_true.size == 0:
        raise ValueError("probs must be (N, C) with N == len(y_true) > 0")
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    n_bins = int(n_bins)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted(side="left") puts a value equal to an edge in the bin that edge closes.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(which, weights=correct, minlength=n_bins)
    n = y_true.size
    ece = 0.0
    bins = []
    for b in range(n_bins):
        c = int(count[b])
        conf = conf_sum[b] / c if c else None
        acc = acc_sum[b] / c if c else None
        if c:
            ece += c / n * abs(acc - conf)
        bins.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": c,
                "confidence": None if conf is None else float(conf),
                "accuracy": None if acc is None else float(acc),
            }
        )
    return float(ece), bins


# ---------------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------------


def _group_codes(groups: Any, n: int) -> tuple[np.ndarray, int]:
    """Map group ids (any hashable values) to codes ``0..G-1`` in order of first appearance."""
    if isinstance(groups, np.ndarray) and groups.ndim != 1:
        raise ValueError(f"groups must be 1-D, got shape {groups.shape}")
    groups = list(groups)
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} items but there are {n} predictions")
    seen: dict[Hashable, int] = {}
    codes = np.fromiter((seen.setdefault(g, len(seen)) for g in groups), dtype=np.int64, count=n)
    return codes, len(seen)


def _units(n: int, groups: Any) -> tuple[np.ndarray | None, int]:
    """Resampling units: ``(None, n)`` for items, ``(codes, G)`` for groups."""
    if groups is None:
        return None, n
    return _group_codes(groups, n)


def _draws(n_units: int, n_items: int, n_resamples: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, draws)`` chunks: ``draws[r]`` are the units picked (with replacement) by resample
    ``start + r``. The chunk size depends only on the sizes, so a seed always gives the same resamples."""
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // max(n_units, n_items))
    for start in range(0, n_resamples, rows):
        size = min(rows, n_resamples - start)
        yield start, rng.integers(0, n_units, size=(size, n_units))


def _check_bootstrap_args(n: int, n_resamples: int, alpha: float) -> None:
    if n < 1:
        raise ValueError("cannot bootstrap an empty set")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _percentile_interval(stats: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along axis 0, ignoring NaN resamples (all-NaN -> NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: NaN is the answer we want
        lo, hi = np.nanquantile(np.asarray(stats, dtype=np.float64), [alpha / 2, 1 - alpha / 2], axis=0)
    return lo, hi


def bootstrap_ci(
    fn: Callable[[np.ndarray], Any],
    n: int,
    groups: Any = None,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[Any, Any]:
    """Percentile bootstrap interval ``(lo, hi)`` of the statistic ``fn(idx)``.

    ``fn`` receives the item indices of one resample (repeats included). With ``groups`` (e.g. patient
    ids, one per item) whole groups are drawn with replacement, so all items of a group move together;
    otherwise items are drawn. ``fn`` may return a scalar (floats come back) or an array (arrays come
    back). NaN statistics are ignored. Same seed, same interval.
    """
    _check_bootstrap_args(n, n_resamples, alpha)
    codes, n_units = _units(n, groups)
    if codes is not None:
        order = np.argsort(codes, kind="stable")  # items of group g are order[start[g]:start[g] + size[g]]
        size = np.bincount(codes, minlength=n_units)
        start = np.r_[0, np.cumsum(size)[:-1]]
    stats = []
    for _, draws in _draws(n_units, n, n_resamples, seed):
        for row in draws:
            if codes is None:
                idx = row
            else:
                lengths = size[row]
                # Position within the concatenation of the drawn groups -> position in `order`.
                shift = np.repeat(start[row] - (np.cumsum(lengths) - lengths), lengths)
                idx = order[np.arange(lengths.sum()) + shift]
            stats.append(np.asarray(fn(idx), dtype=np.float64))
    lo, hi = _percentile_interval(np.stack(stats), alpha)
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


def bootstrap_confusion_matrices(
    y_true: Any,
    y_pred: Any,
    n_classes: int,
    groups: Any = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Confusion matrices of every bootstrap resample at once, shape ``(n_resamples, C, C)``.

    Uses the same resamples as :func:`bootstrap_ci` for the same ``seed`` and ``groups``, but counts
    them with one ``bincount`` per chunk instead of a Python call per resample.
    """
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    n = y_true.size
    _check_bootstrap_args(n, n_resamples, 0.05)
    if y_pred.size != n:
        raise ValueError(f"y_true has {n} items but y_pred has {y_pred.size}")
    n_cells = n_classes * n_classes
    cell = y_true * n_classes + y_pred  # which confusion-matrix cell each item lands in
    codes, n_units = _units(n, groups)
    out = np.empty((n_resamples, n_cells), dtype=np.int64)
    for start, draws in _draws(n_units, n, n_resamples, seed):
        rows = draws.shape[0]
        offset = (np.arange(rows) * n_cells)[:, None]
        if codes is None:
            flat = (offset + cell[draws]).ravel()
            counts = np.bincount(flat, minlength=rows * n_cells)
        else:
            # How often each group was drawn, then each item weighs as often as its group was drawn.
            picked = np.bincount((np.arange(rows)[:, None] * n_units + draws).ravel(), minlength=rows * n_units)
            weight = picked.reshape(rows, n_units)[:, codes]
            flat = (offset + cell[None, :]).ravel()
            counts = np.rint(np.bincount(flat, weights=weight.ravel(), minlength=rows * n_cells))
        out[start : start + rows] = counts.reshape(rows, n_cells)
    return out.reshape(n_resamples, n_classes, n_classes)


# ---------------------------------------------------------------------------------------------------
# The evaluation report
# ---------------------------------------------------------------------------------------------------


def _as_class_indices(y_true: Any) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D class indices, got shape {y.shape}")
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    raise ValueError(f"y_true must hold integer class indices, got dtype {y.dtype}")


def _as_probs(probs: Any, n: int, n_classes: int, name: str) -> np.ndarray:
    try:
        p = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric (N, C) array") from err
    if p.ndim != 2 or p.shape[1] != n_classes:
        raise ValueError(f"{name} must have shape (N, {n_classes}) to match {n_classes} labels, got {p.shape}")
    if p.shape[0] != n:
        raise ValueError(f"{name} has {p.shape[0]} rows but y_true has {n} items")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} holds NaN or infinite values")
    # Small tolerance: float32 softmax outputs can overshoot 1 by an ulp.
    if p.min() < -1e-6 or p.max() > 1 + 1e-6:
        raise ValueError(f"{name} must be probabilities in [0, 1]")
    return np.clip(p, 0.0, 1.0)


def _ci(lo: Any, hi: Any) -> list[float | None]:
    return [_num(lo), _num(hi)]


def _num(x: Any) -> float | None:
    """A plain float, or None for NaN / inf."""
    x = float(x)
    return x if math.isfinite(x) else None


def compute_metrics(
    y_true: Any,
    probs: Any,
    labels: Sequence[str],
    groups: Any = None,
    *,
    probs_uncalibrated: Any = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    n_bins: int = 15,
    beta: float = 2.0,
) -> dict[str, Any]:
    """The full evaluation report as a JSON-ready dict (see the module docstring for conventions).

    ``y_true`` are class indices ``(N,)``, ``probs`` class probabilities ``(N, C)`` in the order of
    ``labels``; the prediction is ``argmax(probs)``. ``groups`` (patient ids, one per item) switches
    the bootstrap to resampling whole patients. ``probs_uncalibrated`` adds the calibration of the
    model before calibration, for comparison. ``n_bootstrap=0`` skips the intervals (they are None).
    """
    labels = [str(label) for label in labels]
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {labels}")
    y = _as_class_indices(y_true)
    n, n_classes = y.size, len(labels)
    if n == 0:
        raise ValueError("no predictions to evaluate (N == 0)")
    if n_classes < 1:
        raise ValueError("labels is empty")
    p = _as_probs(probs, n, n_classes, "probs")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"y_true holds class indices outside 0..{n_classes - 1} (labels: {labels})")
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap}")
    f_beta(1.0, 1.0, beta)  # validates beta
    n_groups = None
    if groups is not None:
        groups, n_groups = _group_codes(groups, n)  # codes from here on: cheaper, and iterated only once
    p_uncal = None if probs_uncalibrated is None else _as_probs(probs_uncalibrated, n, n_classes, "probs_uncalibrated")

    y_pred = p.argmax(axis=1)
    cm = confusion_matrix(y, y_pred, n_classes)
    point = _summary(cm, beta)
    if n_bootstrap:
        boot = _summary(bootstrap_confusion_matrices(y, y_pred, n_classes, groups, int(n_bootstrap), seed), beta)
        ci = {key: _percentile_interval(value, 1 - CI_LEVEL) for key, value in boot.items()}
    else:
        nan = np.full(n_classes, np.nan)
        ci = {key: (nan, nan) if key.startswith("class_") else (np.nan, np.nan) for key in point}

    out: dict[str, Any] = {"n": int(n), "n_groups": n_groups, "labels": labels}
    for key in ("accuracy", "error_rate", "balanced_accuracy"):
        out[key] = float(point[key])
        out[f"{key}_ci"] = _ci(*ci[key])
    out["macro"] = {}
    for name in AVERAGED:
        out["macro"][name] = float(point[f"macro_{name}"])
        out["macro"][f"{name}_ci"] = _ci(*ci[f"macro_{name}"])
    out["weighted"] = {name: float(point[f"weighted_{name}"]) for name in AVERAGED}

    out["per_class"] = {}
    for k, label in enumerate(labels):
        entry: dict[str, Any] = {name: float(point[f"class_{name}"][k]) for name in (*AVERAGED, "accuracy")}
        entry["support"] = int(point["class_support"][k])
        for name in PER_CLASS_CI:
            lo, hi = ci[f"class_{name}"]
            entry[f"{name}_ci"] = _ci(lo[k], hi[k])
        out["per_class"][label] = entry

    out["confusion_matrix"] = cm.tolist()
    out["confusion_matrix_normalized"] = _safe_div(cm, cm.sum(axis=1, keepdims=True)).tolist()

    out["roc"] = {}
    aucs = []
    for k, label in enumerate(labels):
        fpr, tpr, _ = roc_curve_ovr(y, p, k)
        if np.isnan(fpr).any() or np.isnan(tpr).any():
            # Class k absent from y_true, or it is all of y_true: no curve exists.
            out["roc"][label] = {"fpr": [], "tpr": [], "auc": None}
            continue
        area = auc(fpr, tpr)
        aucs.append(area)
        out["roc"][label] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": area}
    out["macro_auc"] = float(np.mean(aucs)) if aucs else None

    out["ece"], out["reliability"] = expected_calibration_error(p, y, n_bins)
    if p_uncal is not None:
        out["ece_uncalibrated"], out["reliability_uncalibrated"] = expected_calibration_error(p_uncal, y, n_bins)

    out["beta"] = float(beta)
    out["ci"] = {
        "method": "percentile bootstrap",
        "resamples": int(n_bootstrap),
        "level": CI_LEVEL,
        "unit": "patient" if groups is not None else "image",
    }
    return out


# ---------------------------------------------------------------------------------------------------
# Cross-validation summary
# ---------------------------------------------------------------------------------------------------


def _mean_std(values: Sequence[Any]) -> dict[str, float | None]:
    """Mean and sample std (ddof=1; 0.0 for one value) of the non-None values; None if there are none."""
    xs = np.array([v for v in values if v is not None], dtype=np.float64)
    if xs.size == 0:
        return {"mean": None, "std": None}
    std = float(xs.std(ddof=1)) if xs.size > 1 else 0.0
    return {"mean": _num(xs.mean()), "std": _num(std)}


def summarize_folds(fold_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std across cross-validation folds of :func:`compute_metrics` reports."""
    if not fold_metrics:
        raise ValueError("summarize_folds needs at least one fold")
    labels = fold_metrics[0]["labels"]
    if any(m["labels"] != labels for m in fold_metrics):
        raise ValueError("all folds must have the same labels in the same order")
    per_class_names = (*AVERAGED, "accuracy")
    return {
        "n_folds": len(fold_metrics),
        "labels": list(labels),
        "accuracy": _mean_std([m["accuracy"] for m in fold_metrics]),
        "balanced_accuracy": _mean_std([m["balanced_accuracy"] for m in fold_metrics]),
        "macro": {name: _mean_std([m["macro"][name] for m in fold_metrics]) for name in AVERAGED},
        "per_class": {
            label: {name: _mean_std([m["per_class"][label][name] for m in fold_metrics]) for name in per_class_names}
            for label in labels
        },
        "ece": _mean_std([m["ece"] for m in fold_metrics]),
        "macro_auc": _mean_std([m["macro_auc"] for m in fold_metrics]),
    }


# ---------------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------------
