"""Tests for tumorlib.report: figures and tables built from stored evaluation results."""

from __future__ import annotations

import copy
import html
import itertools
import json
import math
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from tumorlib import report
from tumorlib.errors import TumorlibError

LABELS = ["glioma", "meningioma", "pituitary"]
ROOT = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="module")
def metrics() -> dict:
    return make_metrics()


@pytest.fixture
def history() -> pd.DataFrame:
    rows = []
    for fold in (1, 2, 3):
        for epoch in range(1, 6):
            rows.append(
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
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- formatting and the paper


def test_formatting_of_rates_and_intervals():
    assert report.format_pct(0.9534) == "95.3%"
    assert report.format_interval(0.953, [0.941, 0.964]) == "95.3% (94.1–96.4)"
    assert report.format_interval(0.953, None) == "95.3%"
    assert report.format_pct(None) == report.format_pct(float("nan")) == "—"


def test_paper_holds_only_the_verified_accuracy():
    assert report.PAPER["metrics"] == {"accuracy": 0.953}
    assert report.PAPER["per_class"] == {}
    assert "unstated" in report.PAPER_CAVEAT and "patient-level" in report.PAPER_CAVEAT


# --------------------------------------------------------------------------- tables


def test_headline_cards_format_the_stored_values(metrics):
    data = copy.deepcopy(metrics)
    data["accuracy"], data["accuracy_ci"] = 0.9534, [0.941, 0.964]
    cards = report.headline(data)
    assert [card["label"] for card in cards] == [
        "Accuracy",
        "Macro F1",
        "Macro specificity",
        "Macro AUC",
        "Evaluated",
    ]
    assert all(set(card) == {"label", "value", "ci", "help"} for card in cards)
    assert cards[0]["value"] == "95.3%" and cards[0]["ci"] == "95% CI 94.1–96.4"
    assert cards[1]["value"] == report.format_pct(metrics["macro"]["f1"])
    assert cards[3]["value"] == f"{metrics['macro_auc']:.3f}"
    assert cards[4]["value"] == "40 patients · 240 slices"
    data["n_groups"] = None
    assert report.headline(data)[4]["value"] == "240 slices"


def test_paper_table1_single_run(metrics):
    table = report.paper_table1(metrics)
    assert list(table.columns) == ["Metric", "Ours (95% CI)", "Paper"]
    assert list(table["Metric"]) == [
        "Accuracy",
        "Specificity (macro)",
        "Precision (macro)",
        "Recall (macro)",
        "F1 (macro)",
    ]
    assert table.loc[0, "Paper"] == "95.3%"
    assert (table.loc[1:, "Paper"] == "not transcribed").all()
    macro = metrics["macro"]
    assert table.loc[1, "Ours (95% CI)"] == report.format_interval(macro["specificity"], macro["specificity_ci"])
    assert table.loc[0, "Ours (95% CI)"].startswith(report.format_pct(metrics["accuracy"]) + " (")


def test_paper_tables_with_cross_validation():
    table = report.paper_table1(make_cv_metrics())
    assert list(table.columns) == ["Metric", "Ours (95% CI)", "Ours, mean ± std over folds", "Paper"]
    assert table.loc[0, "Ours, mean ± std over folds"] == "95.0 ± 1.2%"
    assert table.loc[4, "Ours, mean ± std over folds"] == "90.0 ± 2.0%"
    table2 = report.paper_table2(make_cv_metrics())
    assert list(table2["Ours, mean ± std over folds"]) == ["96.0 ± 1.0%"] * 3


def test_paper_table2_per_class_accuracy(metrics):
    table = report.paper_table2(metrics)
    assert list(table.columns) == ["Class", "Ours (95% CI)", "Paper"]
    assert list(table["Class"]) == LABELS
    for row, label in zip(table.itertuples(index=False), LABELS, strict=True):
        stats = metrics["per_class"][label]
        assert row[1] == report.format_interval(stats["accuracy"], stats["accuracy_ci"])
        assert row[2] == "not transcribed"


def test_per_class_table_formatted_and_numeric(metrics):
    table = report.per_class_table(metrics)
    assert list(table.columns) == [
        "Class",
        "Precision",
        "Precision CI",
        "Recall",
        "Recall CI",
        "Specificity",
        "Specificity CI",
        "F1",
        "F1 CI",
        "AUC",
        "Support",
    ]
    stats = metrics["per_class"]["meningioma"]
    row = table.set_index("Class").loc["meningioma"]
    assert row["Recall"] == report.format_pct(stats["recall"])
    lo, hi = stats["recall_ci"]
    assert row["Recall CI"] == f"{lo * 100:.1f}–{hi * 100:.1f}"
    assert row["AUC"] == f"{metrics['roc']['meningioma']['auc']:.3f}"
    assert row["Support"] == str(stats["support"])

    numeric = report.per_class_table(metrics, formatted=False)
    assert list(numeric["class"]) == LABELS
    assert numeric["f1"].tolist() == pytest.approx([metrics["per_class"][label]["f1"] for label in LABELS])
    assert numeric["precision_ci_high"].tolist() == pytest.approx(
        [metrics["per_class"][label]["precision_ci"][1] for label in LABELS]
    )
    assert numeric["support"].sum() == metrics["n"]
    assert numeric.sort_values("auc")["auc"].is_monotonic_increasing


def test_fold_table(metrics):
    assert report.fold_table(metrics) is None
    cv = make_cv_metrics(folds=3)
    table = report.fold_table(cv)
    assert list(table["Fold"]) == ["1", "2", "3", "Mean ± std"]
    assert list(table.columns) == [
        "Fold",
        "Accuracy",
        "Macro F1",
        "Macro precision",
        "Macro recall",
        "Macro specificity",
        "ECE",
        "n",
    ]
    assert table.loc[1, "Accuracy"] == report.format_pct(cv["folds"][1]["accuracy"])
    assert table.loc[2, "Macro F1"] == report.format_pct(cv["folds"][2]["macro"]["f1"])
    assert table.loc[0, "n"] == "80"
    assert table.loc[3, "Accuracy"] == "95.0 ± 1.2%"
    assert table.loc[3, "ECE"] == "3.1 ± 0.4%"


def test_comparison_table(metrics):
    other = make_metrics(seed=7)
    table = report.comparison_table({"full": metrics, "no augmentation": other})
    assert list(table["Run"]) == ["full", "no augmentation"]
    assert "Macro F1" in table.columns and "Macro AUC" in table.columns
    assert table.loc[1, "Accuracy"] == report.format_interval(other["accuracy"], other["accuracy_ci"])
    numeric = report.comparison_table({"full": metrics}, formatted=False)
    assert numeric.loc[0, "Macro F1"] == pytest.approx(metrics["macro"]["f1"])


# --------------------------------------------------------------------------- figures


def test_confusion_matrix_figure_counts(metrics):
    fig = report.confusion_matrix_figure(metrics)
    assert len(fig.data) == 1
    heatmap = fig.data[0]
    assert np.array(heatmap.z).tolist() == metrics["confusion_matrix"]
    assert list(heatmap.x) == LABELS and list(heatmap.y) == LABELS
    texts = [annotation.text for annotation in fig.layout.annotations]
    assert len(texts) == 9
    cm, shares = metrics["confusion_matrix"], metrics["confusion_matrix_normalized"]
    # Annotations go row by row: true class, then predicted class.
    for i in range(3):
        for j in range(3):
            text = texts[i * 3 + j]
            assert f"<b>{cm[i][j]}</b>" in text and report.format_pct(shares[i][j]) in text
    assert f"Count: {cm[0][1]}" in heatmap.text[0][1]
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.xaxis.title.text == "Predicted class"


def test_confusion_matrix_figure_normalized(metrics):
    fig = report.confusion_matrix_figure(metrics, normalized=True, title="Test set")
    assert np.array(fig.data[0].z).tolist() == pytest.approx(np.array(metrics["confusion_matrix_normalized"]))
    assert fig.layout.title.text == "Test set"
    # Counts stay visible even when the colour shows shares.
    assert f"<b>{metrics['confusion_matrix'][2][2]}</b>" in fig.layout.annotations[8].text


def test_roc_figure(metrics):
    fig = report.roc_figure(metrics)
    assert len(fig.data) == len(LABELS) + 1
    for trace, label in zip(fig.data[:3], LABELS, strict=True):
        assert trace.name == f"{label} (AUC {metrics['roc'][label]['auc']:.3f})"
        assert list(trace.x) == pytest.approx(metrics["roc"][label]["fpr"])
    assert fig.data[-1].name == "Chance" and list(fig.data[-1].x) == [0, 1]
    data = copy.deepcopy(metrics)
    data["roc"]["glioma"]["auc"] = None
    assert report.roc_figure(data).data[0].name == "glioma (AUC n/a)"


def test_reliability_figure_with_and_without_uncalibrated(metrics):
    fig = report.reliability_figure(metrics)
    assert len(fig.data) == 3
    bars = fig.data[0]
    assert bars.type == "bar"
    assert list(bars.y) == [b["count"] for b in metrics["reliability"]]
    assert f"ECE {report.format_pct(metrics['ece'])}" in fig.data[1].name
    filled = [b for b in metrics["reliability"] if b["count"]]
    assert len(fig.data[1].x) == len(filled)
    assert str(filled[0]["count"]) in fig.data[1].text[0]

    data = copy.deepcopy(metrics)
    data["ece_uncalibrated"] = 0.0812
    data["reliability_uncalibrated"] = make_metrics(seed=3)["reliability"]
    fig = report.reliability_figure(data)
    assert len(fig.data) == 4
    assert fig.data[1].name.startswith("After calibration")
    assert fig.data[2].name == "Before calibration (ECE 8.1%)"
    assert fig.data[3].name == "Perfect calibration"


def test_history_figure_per_fold_and_split(history):
    fig = report.history_figure(history, "loss")
    names = [trace.name for trace in fig.data]
    assert len(names) == 6
    assert names[:2] == ["Fold 1 train", "Fold 1 validation"]
    assert list(fig.data[1].y) == pytest.approx(history.loc[history["fold"] == 1, "val_loss"].tolist())
    assert fig.data[1].line.dash == "dash"
    assert report.history_figure(history, "acc").layout.yaxis.tickformat == ".0%"
    lr = report.history_figure(history, "lr")
    assert len(lr.data) == 3 and lr.layout.yaxis.type == "log"
    with pytest.raises(ValueError, match="metric"):
        report.history_figure(history, "f1")


def test_history_single_run_from_csv(tmp_path, history):
    path = tmp_path / "history.csv"
    single = history[history["fold"] == 1].assign(fold=np.nan)
    single.to_csv(path, index=False)
    loaded = report.load_history(path)
    assert loaded["fold"].isna().all()
    fig = report.history_figure(loaded, "acc")
    assert [trace.name for trace in fig.data] == ["Run train", "Run validation"]


# --------------------------------------------------------------------------- degrading gracefully


def test_missing_optional_keys_do_not_crash(metrics):
    bare = {
        "n": 10,
        "labels": ["glioma", "pituitary"],
        "accuracy": 0.9,
        "confusion_matrix": [[5, 1], [0, 4]],
    }
    assert report.headline(bare)[0]["ci"] == ""
    assert report.headline(bare)[3]["value"] == "—"
    assert report.paper_table1(bare).loc[1, "Ours (95% CI)"] == "—"
    assert report.per_class_table(bare)["Precision"].tolist() == ["—", "—"]
    assert report.per_class_table(bare, formatted=False)["precision"].isna().all()
    assert report.fold_table(bare) is None
    assert report.comparison_table({"bare": bare}).loc[0, "ECE"] == "—"
    fig = report.confusion_matrix_figure(bare)
    # The row shares are derived for display when the normalised matrix was not stored.
    assert "83.3%" in fig.layout.annotations[0].text
    assert len(report.roc_figure(bare).data) == 0
    assert len(report.reliability_figure(bare).data) == 0
    assert len(report.confusion_matrix_figure({"labels": []}).data) == 0
    page = report.html_report(bare, "Bare run")
    assert "Bare run" in page

    partial = copy.deepcopy(metrics)
    for key in ("n_groups", "ci", "macro_auc", "weighted"):
        partial.pop(key)
    partial["per_class"].pop("pituitary")
    partial["roc"].pop("pituitary")
    assert len(report.roc_figure(partial).data) == 3
    assert report.per_class_table(partial).loc[2, "Support"] == "—"


# --------------------------------------------------------------------------- HTML report


def test_html_report_is_self_contained(metrics, history):
    data = copy.deepcopy(make_cv_metrics())
    data["cam"] = {"pointing_game": 0.84, "energy_in_mask": 0.61, "n": 50}
    data["gate"] = {"refused_fraction": 0.02, "n": 300}
    page = report.html_report(data, "ResNet-50 <patient split>", history=history)
    bundle = get_plotlyjs()
    assert page.count(bundle[:2000]) == 1 and bundle[-2000:] in page
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert "<title>ResNet-50 &lt;patient split&gt;</title>" in page
    assert "<h1>ResNet-50 &lt;patient split&gt;</h1>" in page
    # Counts, normalised counts, ROC, reliability, loss and accuracy curves.
    assert page.count("Plotly.newPlot(") == 6
    assert "not transcribed" in page and "patient-level" in page
    assert "Mean ± std" in page and "84.0%" in page and "Input gate" in page

    plain = report.html_report(metrics, "Single run")
    assert plain.count("Plotly.newPlot(") == 4
    assert "Cross-validation folds" not in plain and "Other checks" not in plain


def test_report_never_opens_a_socket(monkeypatch, metrics, tmp_path, history):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics))
    assert len(report.html_report(report.load_metrics(path), "Offline", history=history)) > 1_000_000


# --------------------------------------------------------------------------- loading


def test_loaders_report_missing_and_malformed_files(tmp_path, metrics):
    with pytest.raises(report.ResultsFileError, match="not found"):
        report.load_metrics(tmp_path / "metrics.json")
    with pytest.raises(FileNotFoundError):
        report.load_history(tmp_path / "history.csv")
    with pytest.raises(TumorlibError):
        report.load_predictions(tmp_path / "predictions.csv")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(report.ResultsError, match="not valid JSON"):
        report.load_metrics(bad)
    good = tmp_path / "metrics.json"
    good.write_text(json.dumps(metrics))
    loaded = report.load_metrics(good)
    assert loaded["confusion_matrix"] == metrics["confusion_matrix"]
    assert math.isclose(loaded["accuracy"], metrics["accuracy"])


def test_load_predictions_keeps_ids_as_text(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text(
        "id,patient,true_label,pred_label,prob_glioma,prob_meningioma,prob_pituitary\n"
        "0001,007,glioma,glioma,0.9,0.05,0.05\n"
        "0002,007,pituitary,meningioma,0.1,0.6,0.3\n"
    )
    frame = report.load_predictions(path)
    assert list(frame["id"]) == ["0001", "0002"] and frame.loc[0, "patient"] == "007"
    assert frame["prob_meningioma"].tolist() == pytest.approx([0.05, 0.6])
    (tmp_path / "short.csv").write_text("id,true_label\n1,glioma\n")
    with pytest.raises(report.ResultsError, match="pred_label"):
        report.load_predictions(tmp_path / "short.csv")


def test_import_pulls_in_neither_app_framework():
    code = (
        "import sys, tumorlib.report\n"
        "bad = [m for m in ('gradio', 'streamlit') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --------------------------------------------------------------------------- dashboard tables and figures


def test_history_names_the_trainers_fold_tags_from_one():
    # The trainer tags folds 0-based ("fold0"); the fold table numbers them from 1, so must the curves.
    rows = [
        {"epoch": epoch, "fold": f"fold{fold}", "train_loss": 1.0, "val_loss": 1.1, "train_acc": 0.5, "val_acc": 0.4}
        for fold in (10, 2, 0, 1)
        for epoch in (1, 2)
    ]
    names = [trace.name for trace in report.history_figure(pd.DataFrame(rows), "acc").data]
    assert names[::2] == ["Fold 1 train", "Fold 2 train", "Fold 3 train", "Fold 11 train"]
    odd = pd.DataFrame([{"epoch": 1, "fold": "single", "train_loss": 1.0}, {"epoch": 1, "fold": "x", "train_loss": 2}])
    assert [trace.name for trace in report.history_figure(odd).data] == ["Run train", "Fold x train"]


def test_no_tumour_labels_and_caveat(metrics):
    assert report.no_tumour_labels(metrics) == []
    four = make_metrics(labels=[*LABELS, "no_tumor"])
    assert report.no_tumour_labels(four) == ["no_tumor"]
    assert report.no_tumour_labels(["glioma", "No Tumour", "healthy"]) == ["No Tumour", "healthy"]
    assert "scanners" in report.NO_TUMOUR_CAVEAT and "overstate" in report.NO_TUMOUR_CAVEAT
    assert html.escape(report.NO_TUMOUR_CAVEAT) in report.html_report(four, "Four classes")
    assert html.escape(report.NO_TUMOUR_CAVEAT) not in report.html_report(metrics, "Three classes")


def test_checks_table_only_with_stored_checks(metrics):
    assert report.checks_table(metrics) is None
    data = copy.deepcopy(metrics)
    data["cam"] = {"pointing_game": 0.8125, "energy_in_mask": 0.5, "n": 48}
    table = report.checks_table(data)
    assert list(table["Value"]) == ["81.2%", "50.0%"]
    assert "n = 48" in table.loc[0, "Check"]
    data["cam"]["baseline"] = {"pointing_game": 0.3125, "energy_in_mask": 0.041}
    table = report.checks_table(data)
    assert list(table["Value"]) == ["81.2%", "50.0%", "31.2%", "4.1%"]
    assert "image centre" in table.loc[2, "Check"] and "uniform" in table.loc[3, "Check"]
    data["cam"]["ceiling"] = {"pointing_game": 0.409, "grid": [4, 4]}
    table = report.checks_table(data)
    assert table.loc[4, "Value"] == "40.9%" and "4 x 4 feature grid" in table.loc[4, "Check"]
    data["localiser"] = {"pointing_game": 0.6614, "energy_in_mask": 0.152, "soft_dice": 0.091, "peak": 0.4321,
                         "n": 48, "no_tumor": {"peak": 0.0712, "n": 20}}  # fmt: skip
    table = report.checks_table(data)
    assert list(table["Value"][5:]) == ["66.1%", "15.2%", "9.1%", "0.43 / 0.07"]
    assert table.loc[5, "Check"] == "Tumour map pointing game (n = 48)" and "(n = 20)" in table.loc[8, "Check"]
    data["localiser"]["no_tumor"] = {"peak": None, "n": 0}  # a three-class run has no tumour-free slices
    assert len(report.checks_table(data)) == 8


def test_per_class_figure_bars_and_intervals(metrics):
    fig = report.per_class_figure(metrics)
    assert [trace.type for trace in fig.data] == ["bar"] * 3
    assert list(fig.data[0].x) == ["Precision", "Recall", "Specificity", "F1"]
    glioma = metrics["per_class"]["glioma"]
    assert list(fig.data[0].y) == pytest.approx([glioma[k] for k in ("precision", "recall", "specificity", "f1")])
    assert fig.data[0].error_y.array[1] == pytest.approx(glioma["recall_ci"][1] - glioma["recall"])
    assert fig.data[0].error_y.arrayminus[1] == pytest.approx(glioma["recall"] - glioma["recall_ci"][0])
    assert fig.data[0].marker.color == report.class_colour("glioma")
    assert f"n = {glioma['support']}" in fig.data[0].name
    assert report.format_interval(glioma["f1"], glioma["f1_ci"]) in fig.data[0].text[3]
    assert tuple(fig.layout.yaxis.range) == (0, 1.05)
    bare = {"labels": ["a", "b"], "per_class": {"a": {"precision": 0.5}}}
    fig = report.per_class_figure(bare)
    assert len(fig.data) == 1 and fig.data[0].error_y.array is None
    assert len(report.per_class_figure({"labels": []}).data) == 0


def test_comparison_figure_one_trace_per_run(metrics):
    other = make_metrics(seed=5)
    fig = report.comparison_figure({"a <b>": metrics, "b": other})
    assert [trace.name for trace in fig.data] == ["a <b>", "b"]
    assert fig.data[1].y[0] == pytest.approx(other["accuracy"])
    assert fig.data[1].y[2] == pytest.approx(other["macro"]["f1"])
    assert "a &lt;b&gt;" in fig.data[0].text[0]
    assert fig.data[0].marker.color != fig.data[1].marker.color
    assert len(report.comparison_figure({}).data) == 0


def test_worst_misclassifications_by_stored_confidence():
    predictions = pd.DataFrame(
        {
            "id": ["0001", "0002", "0003", "0004"],
            "patient": ["p1", "p1", "p2", "p3"],
            "path": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
            "true_label": ["glioma", "glioma", "pituitary", "meningioma"],
            "pred_label": ["meningioma", "glioma", "glioma", "pituitary"],
            "prob_glioma": [0.2, 0.9, 0.95, 0.1],
            "prob_meningioma": [0.7, 0.05, 0.02, 0.3],
            "prob_pituitary": [0.1, 0.05, 0.03, 0.6],
        }
    )
    table = report.worst_misclassifications(predictions, n=2)
    assert list(table["id"]) == ["0003", "0001"]
    assert list(table["Rank"]) == [1, 2]
    assert list(table["Confidence"]) == ["95.0%", "70.0%"]
    assert table.loc[0, "P(true class)"] == "3.0%" and table.loc[0, "path"] == "c.jpg"
    raw = report.worst_misclassifications(predictions, n=10, formatted=False)
    assert list(raw["Confidence"]) == pytest.approx([0.95, 0.7, 0.6])
    right = predictions[predictions["true_label"] == predictions["pred_label"]]
    assert report.worst_misclassifications(right).empty


def test_explanations_index_and_captions(tmp_path):
    path = tmp_path / "index.csv"
    path.write_text(
        "file,id,true_label,pred_label,target,pointing_hit,energy_in_mask\n"
        "0001.png,0001,glioma,glioma,glioma,True,0.634\n"
        "0002.png,0002,pituitary,meningioma,meningioma,0,\n"
    )
    index = report.load_explanations(path)
    assert list(index["id"]) == ["0001", "0002"]
    rows = index.to_dict("records")
    assert report.explanation_caption(rows[0]) == "glioma ✓ · CAM of glioma · pointing hit · 63.4% energy in mask"
    assert report.explanation_caption(rows[1]) == "pituitary → meningioma ✗ · CAM of meningioma · pointing miss"
    assert report.explanation_caption({"file": "x.png"}) == "x.png"
    (tmp_path / "bad.csv").write_text("id\n1\n")
    with pytest.raises(report.ResultsError, match="file"):
        report.load_explanations(tmp_path / "bad.csv")


def test_ablation_table_formats_rates(tmp_path):
    path = tmp_path / "ablations.csv"
    path.write_text(
        "run,recipe,epochs,input_size,init,wall_minutes,accuracy,macro_f1,notes\n"
        "r50,paper,40,224,imagenet,123.456,0.9534,0.9411,\n"
        "r50-scratch,no init,40,224,none,,0.81,0.8,from scratch\n"
    )
    table = report.ablation_table(report.load_ablations(path))
    assert list(table.columns) == [
        "Run",
        "Recipe",
        "Epochs",
        "Input size",
        "Initialisation",
        "Wall time (min)",
        "Accuracy",
        "Macro F1",
        "Notes",
    ]
    assert list(table["Accuracy"]) == ["95.3%", "81.0%"]
    assert list(table["Wall time (min)"]) == ["123.5", "—"]
    assert list(table["Epochs"]) == ["40", "40"] and table.loc[0, "Notes"] == "—"
    (tmp_path / "bad.csv").write_text("name\nx\n")
    with pytest.raises(report.ResultsError, match="run"):
        report.load_ablations(tmp_path / "bad.csv")


def test_recipe_table_from_trainer_and_bundle_configs():
    trainer = {"model": "resnet50", "input_size": 224, "crop_brain": True, "classes": None, "lr": 0.001, "seed": 0}
    bundle = {"architecture": "x", "tumorlib": {"training": {**trainer, "crop_brain": False, "input_size": 384}}}
    assert report.recipe_of(bundle)["input_size"] == 384
    assert report.recipe_of(None) == {}
    table = report.recipe_table({"a": trainer, "b": bundle, "c": None})
    assert list(table.columns) == ["Setting", "a", "b", "c"]
    row = table.set_index("Setting").loc["Crop to brain"]
    assert list(row) == ["yes", "no", "—"]
    assert table.set_index("Setting").loc["Learning rate", "a"] == "0.001"
    diff = report.recipe_table({"a": trainer, "b": bundle}, only_differences=True)
    assert list(diff["Setting"]) == ["Input size (px)", "Crop to brain"]
