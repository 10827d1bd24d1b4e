"""Metrics dicts in the evaluation schema, computed by hand from seeded random predictions, for the tests
of the results readers (tables, figures, the HTML report)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

LABELS = ["glioma", "meningioma", "pituitary"]


def _ci(value: float) -> list[float]:
    return [max(0.0, value - 0.03), min(1.0, value + 0.03)]


def _roc(truth: np.ndarray, score: np.ndarray) -> dict:
    order = np.argsort(-score, kind="stable")
    hits = truth[order]
    tpr = np.concatenate([[0.0], np.cumsum(hits) / hits.sum()])
    fpr = np.concatenate([[0.0], np.cumsum(1 - hits) / (1 - hits).sum()])
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": auc}


def _reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> tuple[list[dict], float]:
    edges = np.linspace(0, 1, bins + 1)
    out, ece = [], 0.0
    for lower, upper in itertools.pairwise(edges):
        inside = (confidence > lower) & (confidence <= upper)
        count = int(inside.sum())
        conf = float(confidence[inside].mean()) if count else None
        acc = float(correct[inside].mean()) if count else None
        if count:
            ece += count / len(confidence) * abs(acc - conf)
        out.append({"lower": float(lower), "upper": float(upper), "count": count, "confidence": conf, "accuracy": acc})
    return out, ece


def make_metrics(seed: int = 0, n: int = 240, labels: list[str] = LABELS) -> dict:
    """A metrics dict in the evaluation schema, computed by hand from seeded random predictions."""
    rng = np.random.default_rng(seed)
    k = len(labels)
    truth = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.88, truth, rng.integers(0, k, n))
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), pred] += 2.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (truth, pred), 1)
    per_class, roc = {}, {}
    for i, label in enumerate(labels):
        tp = cm[i, i]
        fp, fn = cm[:, i].sum() - tp, cm[i, :].sum() - tp
        tn = n - tp - fp - fn
        prec, rec, spec = tp / (tp + fp), tp / (tp + fn), tn / (tn + fp)
        stats = {
            "precision": prec,
            "recall": rec,
            "specificity": spec,
            "f1": 2 * prec * rec / (prec + rec),
            "f_beta": 5 * prec * rec / (4 * prec + rec),
            "accuracy": (tp + tn) / n,
            "support": int(cm[i].sum()),
        }
        stats = {key: float(value) if key != "support" else value for key, value in stats.items()}
        for key in ("precision", "recall", "specificity", "f1", "accuracy"):
            stats[f"{key}_ci"] = _ci(stats[key])
        per_class[label] = stats
        roc[label] = _roc((truth == i).astype(float), probs[:, i])
    macro = {}
    for key in ("precision", "recall", "specificity", "f1", "f_beta"):
        macro[key] = float(np.mean([per_class[label][key] for label in labels]))
        macro[f"{key}_ci"] = _ci(macro[key])
    support = np.array([per_class[label]["support"] for label in labels])
    weighted = {
        key: float(np.average([per_class[label][key] for label in labels], weights=support))
        for key in ("precision", "recall", "specificity", "f1", "f_beta")
    }
    accuracy = float(np.trace(cm) / n)
    bins, ece = _reliability(probs.max(axis=1), pred == truth)
    return {
        "n": n,
        "n_groups": 40,
        "labels": labels,
        "accuracy": accuracy,
        "accuracy_ci": _ci(accuracy),
        "error_rate": 1 - accuracy,
        "error_rate_ci": _ci(1 - accuracy),
        "balanced_accuracy": macro["recall"],
        "balanced_accuracy_ci": _ci(macro["recall"]),
        "macro": macro,
        "weighted": weighted,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": (cm / cm.sum(axis=1, keepdims=True)).tolist(),
        "roc": roc,
        "macro_auc": float(np.mean([roc[label]["auc"] for label in labels])),
        "ece": ece,
        "reliability": bins,
        "beta": 2.0,
        "ci": {"method": "bootstrap", "resamples": 1000, "level": 0.95, "unit": "patient"},
    }


def make_cv_metrics(folds: int = 3) -> dict:
    """A cross-validation metrics dict: pooled metrics, per-fold objects and a stored summary."""
    metrics = make_metrics(seed=100)
    metrics["folds"] = [make_metrics(seed=seed, n=80) for seed in range(folds)]
    metrics["cv_summary"] = {
        "accuracy": {"mean": 0.95, "std": 0.012},
        "macro": {key: {"mean": 0.9, "std": 0.02} for key in ("precision", "recall", "specificity", "f1", "f_beta")},
        "per_class": {label: {"accuracy": {"mean": 0.96, "std": 0.01}} for label in LABELS},
        "ece": {"mean": 0.031, "std": 0.004},
        "macro_auc": {"mean": 0.98, "std": 0.01},
        "n_folds": folds,
    }
    return metrics


def make_history() -> pd.DataFrame:
    """A training history of three folds of five epochs, losses falling and accuracies rising."""
    rows = [
        {
            "epoch": epoch,
            "fold": fold,
            "train_loss": 1 / epoch,
            "train_acc": 0.7 + 0.05 * epoch,
            "val_loss": 1.2 / epoch,
            "val_acc": 0.65 + 0.05 * epoch,
            "lr": 1e-3 / epoch,
            "seconds": 12.5,
        }
        for fold in (1, 2, 3)
        for epoch in range(1, 6)
    ]
    return pd.DataFrame(rows)
