"""Tests for tumorlib.figures: the plotly figures built from stored evaluation results."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from tumorlib import figures, results

from .results_data import LABELS, make_history, make_metrics


@pytest.fixture(scope="module")
def metrics() -> dict:
    return make_metrics()


@pytest.fixture
def history() -> pd.DataFrame:
    return make_history()


def test_confusion_matrix_figure_counts(metrics):
    fig = figures.confusion_matrix_figure(metrics)
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
            assert f"<b>{cm[i][j]}</b>" in text and results.format_pct(shares[i][j]) in text
    assert f"Count: {cm[0][1]}" in heatmap.text[0][1]
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.xaxis.title.text == "Predicted class"


def test_confusion_matrix_figure_normalized(metrics):
    fig = figures.confusion_matrix_figure(metrics, normalized=True, title="Test set")
    assert np.array(fig.data[0].z).tolist() == pytest.approx(np.array(metrics["confusion_matrix_normalized"]))
    assert fig.layout.title.text == "Test set"
    # Counts stay visible even when the colour shows shares.
    assert f"<b>{metrics['confusion_matrix'][2][2]}</b>" in fig.layout.annotations[8].text


def test_roc_figure(metrics):
    fig = figures.roc_figure(metrics)
    assert len(fig.data) == len(LABELS) + 1
    for trace, label in zip(fig.data[:3], LABELS, strict=True):
        assert trace.name == f"{label} (AUC {metrics['roc'][label]['auc']:.3f})"
        assert list(trace.x) == pytest.approx(metrics["roc"][label]["fpr"])
    assert fig.data[-1].name == "Chance" and list(fig.data[-1].x) == [0, 1]
    data = copy.deepcopy(metrics)
    data["roc"]["glioma"]["auc"] = None
    assert figures.roc_figure(data).data[0].name == "glioma (AUC n/a)"


def test_reliability_figure_with_and_without_uncalibrated(metrics):
    fig = figures.reliability_figure(metrics)
    assert len(fig.data) == 3
    bars = fig.data[0]
    assert bars.type == "bar"
    assert list(bars.y) == [b["count"] for b in metrics["reliability"]]
    assert f"ECE {results.format_pct(metrics['ece'])}" in fig.data[1].name
    filled = [b for b in metrics["reliability"] if b["count"]]
    assert len(fig.data[1].x) == len(filled)
    assert str(filled[0]["count"]) in fig.data[1].text[0]

    data = copy.deepcopy(metrics)
    data["ece_uncalibrated"] = 0.0812
    data["reliability_uncalibrated"] = make_metrics(seed=3)["reliability"]
    fig = figures.reliability_figure(data)
    assert len(fig.data) == 4
    assert fig.data[1].name.startswith("After calibration")
    assert fig.data[2].name == "Before calibration (ECE 8.1%)"
    assert fig.data[3].name == "Perfect calibration"


def test_history_figure_per_fold_and_split(history):
    fig = figures.history_figure(history, "loss")
    names = [trace.name for trace in fig.data]
    assert len(names) == 6
    assert names[:2] == ["Fold 1 train", "Fold 1 validation"]
    assert list(fig.data[1].y) == pytest.approx(history.loc[history["fold"] == 1, "val_loss"].tolist())
    assert fig.data[1].line.dash == "dash"
    assert figures.history_figure(history, "acc").layout.yaxis.tickformat == ".0%"
    lr = figures.history_figure(history, "lr")
    assert len(lr.data) == 3 and lr.layout.yaxis.type == "log"
    with pytest.raises(ValueError, match="metric"):
        figures.history_figure(history, "f1")


def test_history_single_run_from_csv(tmp_path, history):
    path = tmp_path / "history.csv"
    single = history[history["fold"] == 1].assign(fold=np.nan)
    single.to_csv(path, index=False)
    loaded = results.load_history(path)
    assert loaded["fold"].isna().all()
    fig = figures.history_figure(loaded, "acc")
    assert [trace.name for trace in fig.data] == ["Run train", "Run validation"]


def test_history_names_the_trainers_fold_tags_from_one():
    # The trainer tags folds 0-based ("fold0"); the fold table numbers them from 1, so must the curves.
    rows = [
        {"epoch": epoch, "fold": f"fold{fold}", "train_loss": 1.0, "val_loss": 1.1, "train_acc": 0.5, "val_acc": 0.4}
        for fold in (10, 2, 0, 1)
        for epoch in (1, 2)
    ]
    names = [trace.name for trace in figures.history_figure(pd.DataFrame(rows), "acc").data]
    assert names[::2] == ["Fold 1 train", "Fold 2 train", "Fold 3 train", "Fold 11 train"]
    odd = pd.DataFrame([{"epoch": 1, "fold": "single", "train_loss": 1.0}, {"epoch": 1, "fold": "x", "train_loss": 2}])
    assert [trace.name for trace in figures.history_figure(odd).data] == ["Run train", "Fold x train"]


def test_per_class_figure_bars_and_intervals(metrics):
    fig = figures.per_class_figure(metrics)
    assert [trace.type for trace in fig.data] == ["bar"] * 3
    assert list(fig.data[0].x) == ["Precision", "Recall", "Specificity", "F1"]
    glioma = metrics["per_class"]["glioma"]
    assert list(fig.data[0].y) == pytest.approx([glioma[k] for k in ("precision", "recall", "specificity", "f1")])
    assert fig.data[0].error_y.array[1] == pytest.approx(glioma["recall_ci"][1] - glioma["recall"])
    assert fig.data[0].error_y.arrayminus[1] == pytest.approx(glioma["recall"] - glioma["recall_ci"][0])
    assert fig.data[0].marker.color == figures.class_colour("glioma")
    assert f"n = {glioma['support']}" in fig.data[0].name
    assert results.format_interval(glioma["f1"], glioma["f1_ci"]) in fig.data[0].text[3]
    assert tuple(fig.layout.yaxis.range) == (0, 1.05)
    bare = {"labels": ["a", "b"], "per_class": {"a": {"precision": 0.5}}}
    fig = figures.per_class_figure(bare)
    assert len(fig.data) == 1 and fig.data[0].error_y.array is None
    assert len(figures.per_class_figure({"labels": []}).data) == 0


def test_comparison_figure_one_trace_per_run(metrics):
    other = make_metrics(seed=5)
    fig = figures.comparison_figure({"a <b>": metrics, "b": other})
    assert [trace.name for trace in fig.data] == ["a <b>", "b"]
    assert fig.data[1].y[0] == pytest.approx(other["accuracy"])
    assert fig.data[1].y[2] == pytest.approx(other["macro"]["f1"])
    assert "a &lt;b&gt;" in fig.data[0].text[0]
    assert fig.data[0].marker.color != fig.data[1].marker.color
    assert len(figures.comparison_figure({}).data) == 0


def test_prediction_set_figures_from_the_stored_levels():
    import json

    from .conftest import ROOT

    stored = json.loads((ROOT / "models" / "default" / "metrics.json").read_text())
    coverage = figures.coverage_figure(stored)
    names = [trace.name for trace in coverage.data]
    assert names[:2] == ["All classes, per-class thresholds", "All classes, one threshold"]
    assert list(coverage.data[0].x) == [0.9, 0.95, 0.99]
    assert list(coverage.data[0].y) == [e["mondrian"]["coverage"] for e in stored["conformal"]]
    assert list(coverage.data[1].y) == [e["coverage"] for e in stored["conformal"]]
    hidden = [t for t in coverage.data if t.name.endswith("one threshold") and t.name != "All classes, one threshold"]
    assert len(hidden) == 4 and all(t.visible == "legendonly" for t in hidden)
    sizes = figures.set_size_figure(stored)
    assert [t.name for t in sizes.data] == ["90% sets", "95% sets", "99% sets"]
    entry = stored["conformal"][1]["mondrian"]
    assert list(sizes.data[1].y) == [entry["mean_set_size"], *entry["per_class_set_size"].values()]
    for empty in (figures.coverage_figure({}), figures.set_size_figure({"labels": LABELS})):
        assert not empty.data and "No prediction sets" in empty.layout.annotations[0].text


def test_patient_confusion_figure_has_rows_only_for_classes_with_patients():
    import json

    from .conftest import ROOT

    stored = json.loads((ROOT / "models" / "default" / "metrics.json").read_text(encoding="utf-8"))
    counts = stored["patient_level"]["confusion_matrix"]
    fig = figures.patient_confusion_figure(stored)
    heatmap = fig.data[0]
    # no_tumor images carry no patient id: no row of their own, but a column (a patient called no tumour).
    assert list(heatmap.y) == ["glioma", "meningioma", "pituitary"] and list(heatmap.x) == stored["labels"]
    assert np.array(heatmap.z).tolist() == counts[:3]
    assert fig.layout.title.text == "Confusion matrix per patient (patients)"
    assert fig.data[0].colorbar.title.text == "Patients" and len(fig.layout.annotations) == 12
    shares = figures.patient_confusion_figure(stored, normalized=True, title="Per patient: shares")
    expected = np.array([[c / sum(row) for c in row] for row in counts[:3]])
    assert np.array(shares.data[0].z) == pytest.approx(expected)
    assert shares.layout.title.text == "Per patient: shares"
    assert len(figures.patient_confusion_figure(make_metrics()).data) == 0  # no answers per patient: says so


def test_fold_figure_one_bar_per_fold_and_metric():
    from .results_data import make_cv_metrics

    cv = make_cv_metrics(folds=3)
    fig = figures.fold_figure(cv)
    assert [trace.name.split(" (")[0] for trace in fig.data] == ["Accuracy", "Macro F1"]  # no per-patient folds
    assert list(fig.data[0].x) == ["Fold 1", "Fold 2", "Fold 3"]
    assert list(fig.data[0].y) == [fold["accuracy"] for fold in cv["folds"]]
    assert list(fig.data[1].y) == [fold["macro"]["f1"] for fold in cv["folds"]]
    assert "mean ± std 95.0 ± 1.2%" in fig.data[0].name
    assert list(fig.layout.yaxis.range) == [0, 1.1]  # bars from zero

    import json

    from .conftest import ROOT

    stored = json.loads((ROOT / "models" / "default" / "metrics.json").read_text())
    per_patient = figures.fold_figure(stored).data[2]
    assert per_patient.name.startswith("Accuracy per patient")
    assert list(per_patient.y) == [fold["patient_level"]["accuracy"] for fold in stored["folds"]]
    single = figures.fold_figure(make_metrics())
    assert not single.data and "Not a cross-validation run" in single.layout.annotations[0].text
