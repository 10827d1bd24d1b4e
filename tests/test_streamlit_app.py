"""The results dashboard (streamlit_app.py), run headless with Streamlit's AppTest.

The fixture under tests/fixtures/results_demo/ is real trainer output (timm's test_resnet trained for a
few epochs on the committed samples): a 4-class and a 3-class two-fold cross-validation run, without
their weights. Every number the dashboard shows is checked against those files.
"""

from __future__ import annotations

import base64
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from streamlit_app import SECTIONS

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "streamlit_app.py"
DEMO = Path(__file__).resolve().parent / "fixtures" / "results_demo"


def _metrics(run: str, root: Path = DEMO) -> dict:
    return json.loads((root / run / "metrics.json").read_text(encoding="utf-8"))


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def _specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def _array(value) -> list:
    """A data array of a plotly figure spec: plotly sends numpy data as a base64 typed array."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)


def _title(spec: dict) -> str:
    return spec["layout"]["title"]["text"]


def _texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


def _downloads(at: AppTest) -> list[str]:
    return [button.proto.label for button in at.get("download_button")]


@pytest.fixture
def app(monkeypatch):
    """An AppTest on the demo results (and no bundled models unless a test sets them)."""

    def make(root: Path = DEMO, models: Path | None = None) -> AppTest:
        monkeypatch.setenv("TUMORLIB_RESULTS", str(root))
        monkeypatch.setenv("TUMORLIB_MODELS", str(models or root / "no-bundled-models-here"))
        # The first run imports torch through tumorlib: allow for a slow, shared machine.
        return AppTest.from_file(str(APP), default_timeout=120)

    return make


def _show(at: AppTest, section: str) -> AppTest:
    at.sidebar.radio(key="section").set_value(section).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


# --------------------------------------------------------------------------- overview and runs


def test_overview_cards_show_the_metrics_files_numbers(app):
    at = app().run()
    assert not at.exception
    metrics = _metrics("tiny-cv")
    assert at.sidebar.selectbox(key="run").options == ["tiny-cv", "tiny3-cv"]
    cards = {metric.label: metric for metric in at.metric}
    assert list(cards) == ["Accuracy", "Macro F1", "Macro specificity", "Macro AUC", "Evaluated"]
    lo, hi = metrics["accuracy_ci"]
    assert cards["Accuracy"].value == _pct(metrics["accuracy"])
    assert cards["Accuracy"].delta == f"95% CI {lo * 100:.1f}–{hi * 100:.1f}"
    lo, hi = metrics["macro"]["f1_ci"]
    assert cards["Macro F1"].value == _pct(metrics["macro"]["f1"])
    assert cards["Macro F1"].delta == f"95% CI {lo * 100:.1f}–{hi * 100:.1f}"
    assert cards["Macro specificity"].value == _pct(metrics["macro"]["specificity"])
    assert cards["Macro AUC"].value == f"{metrics['macro_auc']:.3f}"
    assert cards["Evaluated"].value == f"{metrics['n_groups']} patients · {metrics['n']} slices"

    # Ours next to the paper's Tables 1 and 2 as printed (results/paper/), with the note on them.
    table1 = at.dataframe[0].value
    with (ROOT / "results" / "paper" / "table1.csv").open(encoding="utf-8") as handle:
        printed = {row["metric"]: row for row in csv.DictReader(handle)}
    assert list(table1["Paper: ResNet-50"]) == [f"{float(row['dnn_with_resnet50']):.1f}%" for row in printed.values()]
    assert table1.loc[0, "Metric"] == "Accuracy"
    assert table1.loc[0, "Ours (95% CI)"].startswith(_pct(metrics["accuracy"]))
    assert table1.loc[0, "Ours, mean ± std over folds"].startswith(
        f"{metrics['cv_summary']['accuracy']['mean'] * 100:.1f} ± "
    )
    table2 = at.dataframe[1].value
    assert list(table2["Class"]) == metrics["labels"]
    with (ROOT / "results" / "paper" / "table2.csv").open(encoding="utf-8") as handle:
        per_class = {row["class"]: float(row["validation_accuracy"]) for row in csv.DictReader(handle)}
    shown = dict(zip(table2["Class"], table2["Paper (validation accuracy)"], strict=True))
    assert shown == {label: _pct(per_class[label]) if label in per_class else "—" for label in metrics["labels"]}
    assert "unstated" in _texts(at.caption) and "disagree with each other" in _texts(at.caption)
    # The 4-class run shows no_tumor figures, so the scanner caveat is there.
    assert "other scanners, sequences" in _texts(at.warning)
    titles = [_title(spec) for spec in _specs(at)]
    assert titles == ["Confusion matrix (share of each true class)", "Per-class metrics"]


def test_switching_runs_updates_every_number(app):
    at = app().run()
    at.sidebar.selectbox(key="run").set_value("tiny3-cv").run()
    assert not at.exception
    metrics = _metrics("tiny3-cv")
    cards = {metric.label: metric.value for metric in at.metric}
    assert cards["Accuracy"] == _pct(metrics["accuracy"])
    assert cards["Evaluated"] == f"{metrics['n_groups']} patients · {metrics['n']} slices"
    # Table 2 as the paper printed it: its no-tumour row too, where this 3-class run has no figure.
    table2 = at.dataframe[1].value
    assert list(table2["Class"]) == ["glioma", "meningioma", "pituitary", "no_tumor"]
    assert table2.iloc[3, 1] == "—" and table2.iloc[0, 1].startswith(_pct(metrics["per_class"]["glioma"]["accuracy"]))
    # No no_tumor class, so no scanner caveat.
    assert not at.warning
    assert "tiny3-cv" in at.markdown[0].value and "3 classes" in at.markdown[0].value


# --------------------------------------------------------------------------- sections


def test_confusion_matrices_pooled_and_per_fold(app):
    at = _show(app().run(), "Confusion matrices")
    metrics = _metrics("tiny-cv")
    scope = at.radio(key="cm_scope")
    assert scope.options == ["All folds pooled", "Fold 1", "Fold 2"]
    counts, shares = _specs(at)
    assert _title(counts) == "All folds pooled: counts"
    assert counts["data"][0]["z"] == metrics["confusion_matrix"]
    assert shares["data"][0]["z"] == [pytest.approx(row) for row in metrics["confusion_matrix_normalized"]]
    assert "other scanners" in _texts(at.warning)

    scope.set_value("Fold 2").run()
    counts, _ = _specs(at)
    assert _title(counts) == "Fold 2: counts"
    assert counts["data"][0]["z"] == metrics["folds"][1]["confusion_matrix"]


def test_per_class_table_is_numeric_and_matches(app):
    at = _show(app().run(), "Per-class metrics")
    metrics = _metrics("tiny-cv")
    table = at.dataframe[0].value
    assert list(table["Class"]) == metrics["labels"]
    for _, row in table.iterrows():
        stats = metrics["per_class"][row["Class"]]
        # Sortable numbers (percent), with the interval text from tumorlib.tables beside them.
        assert row["Recall"] == pytest.approx(stats["recall"] * 100)
        assert row["Specificity"] == pytest.approx(stats["specificity"] * 100)
        lo, hi = stats["f1_ci"]
        assert row["F1 CI"] == f"{lo * 100:.1f}–{hi * 100:.1f}"
        assert row["Support"] == stats["support"]
        assert row["AUC"] == pytest.approx(metrics["roc"][row["Class"]]["auc"])
    assert pd.api.types.is_float_dtype(table["Precision"])
    (spec,) = _specs(at)
    assert [trace["name"].split(" (")[0] for trace in spec["data"]] == metrics["labels"]
    assert "other scanners" in _texts(at.warning)


def test_cross_validation_folds_and_curves(app):
    at = _show(app().run(), "Cross-validation")
    metrics = _metrics("tiny-cv")
    table = at.dataframe[0].value
    assert list(table["Fold"]) == ["1", "2", "Mean ± std"]
    assert list(table["Accuracy"][:2]) == [_pct(fold["accuracy"]) for fold in metrics["folds"]]
    summary = metrics["cv_summary"]["accuracy"]
    assert table.loc[2, "Accuracy"] == f"{summary['mean'] * 100:.1f} ± {summary['std'] * 100:.1f}%"
    assert [tab.label for tab in at.tabs] == ["Loss", "Accuracy", "Learning rate"]
    loss, acc, lr = _specs(at)
    assert [trace["name"] for trace in loss["data"]] == [
        "Fold 1 train",
        "Fold 1 validation",
        "Fold 2 train",
        "Fold 2 validation",
    ]
    with (DEMO / "tiny-cv" / "history.csv").open(newline="") as f:
        fold0 = [row for row in csv.DictReader(f) if row["fold"] == "fold0"]
    assert _array(acc["data"][1]["y"]) == pytest.approx([float(row["val_acc"]) for row in fold0])
    assert lr["layout"]["yaxis"]["type"] == "log"
    assert "Temperature fitted per fold" in _texts(at.caption)


def test_roc_and_calibration(app):
    at = _show(app().run(), "ROC and calibration")
    metrics = _metrics("tiny-cv")
    cards = {metric.label: metric.value for metric in at.metric}
    assert cards["ECE after calibration"] == _pct(metrics["ece"])
    assert cards["ECE before calibration"] == _pct(metrics["ece_uncalibrated"])
    assert cards["Temperature"] == f"{metrics['temperature']:.2f}"
    roc, reliability = _specs(at)
    assert len(roc["data"]) == len(metrics["labels"]) + 1
    glioma = metrics["roc"]["glioma"]
    assert roc["data"][0]["name"] == f"glioma (AUC {glioma['auc']:.3f})"
    assert _array(roc["data"][0]["x"]) == pytest.approx(glioma["fpr"])
    names = [trace["name"] for trace in reliability["data"]]
    assert f"After calibration (ECE {_pct(metrics['ece'])})" in names
    assert f"Before calibration (ECE {_pct(metrics['ece_uncalibrated'])})" in names


def test_explanations_without_exports_say_so_and_list_worst_errors(app):
    at = _show(app().run(), "Explanations")
    info = _texts(at.info)
    assert "no Grad-CAM scores" in info and "No explanations/ folder" in info
    with (DEMO / "tiny-cv" / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    wrong = [row for row in rows if row["true_label"] != row["pred_label"]]
    wrong.sort(key=lambda row: -float(row[f"prob_{row['pred_label']}"]))
    table = at.dataframe[0].value
    assert len(table) == 10
    assert list(table["id"]) == [row["id"] for row in wrong[:10]]
    assert table.loc[0, "Confidence"] == _pct(float(wrong[0][f"prob_{wrong[0]['pred_label']}"]))
    assert table.loc[0, "True class"] == wrong[0]["true_label"]
    at.slider(key="worst_n").set_value(20).run()
    assert len(at.dataframe[0].value) == 20


def test_run_comparison_with_two_runs(app):
    at = _show(app().run(), "Run comparison")
    chooser = at.multiselect(key="compare_runs")
    assert chooser.value == ["tiny-cv", "tiny3-cv"]
    table = at.dataframe[0].value
    assert list(table["Run"]) == ["tiny-cv", "tiny3-cv"]
    for run, row in zip(("tiny-cv", "tiny3-cv"), table.itertuples(), strict=True):
        metrics = _metrics(run)
        assert row.Accuracy.startswith(_pct(metrics["accuracy"]) + " (")
        assert row.n == str(metrics["n"])
    # Different class sets are flagged as not like-for-like.
    assert "do not classify the same classes" in _texts(at.warning)
    (spec,) = _specs(at)
    assert [trace["name"] for trace in spec["data"]] == ["tiny-cv", "tiny3-cv"]
    recipes = at.dataframe[1].value.set_index("Setting")
    assert recipes.loc["Epochs", "tiny-cv"] == "2" and recipes.loc["Epochs", "tiny3-cv"] == "3"
    assert "Architecture" not in recipes.index  # same in both: hidden while "only differences" is on
    at.toggle(key="recipe_diff").set_value(False).run()
    assert at.dataframe[1].value.set_index("Setting").loc["Architecture", "tiny-cv"] == "test_resnet"
    ablations = at.dataframe[2].value
    assert list(ablations["Run"]) == ["tiny-cv", "tiny3-cv"]
    assert ablations.loc[1, "Accuracy"] == _pct(_metrics("tiny3-cv")["accuracy"])

    assert "Comparison (CSV)" in _downloads(at)

    chooser.set_value(["tiny3-cv"]).run()
    assert "Pick two or more runs" in _texts(at.info)


def test_export_offers_csv_html_and_says_why_no_png(app):
    import streamlit_app

    at = _show(app().run(), "Export")
    labels = _downloads(at)
    for name in (
        "Per-class metrics",
        "Comparison with the paper (Table 1)",
        "Cross-validation folds",
        "Worst misclassifications",
        "Confusion matrix (counts)",
        "ROC curves",
        "Training loss",
        "One-page HTML report",
    ):
        assert name in labels
    if streamlit_app.png_export_problem() is not None:
        assert "PNG export is not available here" in _texts(at.info)
        assert not any(label.endswith("(PNG)") for label in labels)
    else:  # the files of python -m train.report, built on the click
        assert "Report (PDF)" in labels and "Every figure (PNG, zip)" in labels


def test_the_dashboard_opens_on_the_shipped_default_models_results(app, tmp_path):
    """The default bundle carries its results run's metrics.json: that run is the one shown first."""
    results_root, models = tmp_path / "results", tmp_path / "models"
    for run in ("tiny-cv", "tiny3-cv"):
        shutil.copytree(DEMO / run, results_root / run)
    (models / "default").mkdir(parents=True)
    shutil.copy(DEMO / "tiny3-cv" / "metrics.json", models / "default" / "metrics.json")
    at = app(results_root, models).run()
    assert not at.exception
    select = at.sidebar.selectbox(key="run")
    assert select.options[0] == "tiny-cv" and select.value == "tiny3-cv"
    # Without a default bundle the first run is shown.
    at = app(results_root).run()
    assert at.sidebar.selectbox(key="run").value == "tiny-cv"


# --------------------------------------------------------------------------- missing and partial results


def test_empty_or_missing_results_folder_explains_itself(app, tmp_path):
    at = app(tmp_path).run()
    assert not at.exception
    assert "No runs in" in at.error[0].value and "metrics.json" in at.error[0].value
    assert not at.metric
    # A run still training (status.json, no metrics.json yet) is named.
    (tmp_path / "resnet50-cv").mkdir()
    (tmp_path / "resnet50-cv" / "status.json").write_text('{"state": "running"}')
    at.run()
    assert "resnet50-cv (running)" in at.error[0].value

    at.sidebar.text_input(key="results_root").input(str(tmp_path / "nowhere")).run()
    assert not at.exception
    assert "does not exist" in at.error[0].value


def test_results_folder_can_be_chosen_in_the_sidebar(app, tmp_path):
    at = app(tmp_path).run()
    assert at.error
    at.sidebar.text_input(key="results_root").input(str(DEMO)).run()
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="run").options == ["tiny-cv", "tiny3-cv"]


def test_partial_run_renders_every_section(app, tmp_path):
    (tmp_path / "bare").mkdir()
    shutil.copy(DEMO / "tiny3-cv" / "metrics.json", tmp_path / "bare" / "metrics.json")
    at = app(tmp_path).run()
    for section in SECTIONS:
        _show(at, section)
    _show(at, "Cross-validation")
    assert "No history.csv" in _texts(at.info)
    _show(at, "Explanations")
    assert "No predictions.csv" in _texts(at.info)
    _show(at, "Run comparison")
    assert "Only one run was found" in _texts(at.info)
    _show(at, "Export")
    assert "Training loss" not in _downloads(at) and "One-page HTML report" in _downloads(at)


def test_minimal_metrics_file_renders_with_dashes(app, tmp_path):
    (tmp_path / "minimal").mkdir()
    (tmp_path / "minimal" / "metrics.json").write_text('{"labels": ["glioma", "no_tumor"], "accuracy": 0.5, "n": 4}')
    (tmp_path / "minimal" / "predictions.csv").write_text("id,true_label,pred_label\n0001,glioma,no_tumor\n")
    at = app(tmp_path).run()
    for section in SECTIONS:
        _show(at, section)
    _show(at, "Overview")
    cards = {metric.label: metric.value for metric in at.metric}
    assert cards["Accuracy"] == "50.0%" and cards["Macro F1"] == "—" and cards["Evaluated"] == "4 slices"
    _show(at, "Explanations")
    worst = at.dataframe[0].value
    assert list(worst["id"]) == ["0001"] and worst.loc[0, "Confidence"] == "—"


def test_malformed_metrics_content_shows_an_error_not_a_traceback(app, tmp_path):
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "metrics.json").write_text('{"labels": ["glioma"], "per_class": {"glioma": 3}}')
    at = app(tmp_path).run()
    assert not at.exception
    assert "The Overview section cannot be drawn" in at.error[0].value


def test_unreadable_metrics_show_an_error_not_a_traceback(app, tmp_path):
    shutil.copytree(DEMO / "tiny3-cv", tmp_path / "good")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{not json")
    at = app(tmp_path).run()
    assert not at.exception
    assert "broken" in at.error[0].value and "not valid JSON" in at.error[0].value
    at.sidebar.selectbox(key="run").set_value("good").run()
    assert not at.exception and not at.error
    assert at.metric[0].value == _pct(_metrics("good", tmp_path)["accuracy"])


def test_gallery_and_cam_scores_when_evaluation_exported_them(app, tmp_path):
    run = tmp_path / "tiny-cv"
    shutil.copytree(DEMO / "tiny-cv", run)
    metrics = _metrics("tiny-cv")
    metrics["cam"] = {"pointing_game": 0.8125, "energy_in_mask": 0.634, "n": 16,
                      "baseline": {"pointing_game": 0.3125, "energy_in_mask": 0.041},
                      "ceiling": {"pointing_game": 0.409, "grid": [4, 4]}}  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics))
    folder = run / "explanations"
    folder.mkdir()
    rows = [
        ("a.png", "figshare/1", "glioma", "glioma", "glioma", "True", "0.7"),
        ("b.png", "figshare/2", "pituitary", "meningioma", "meningioma", "False", "0.2"),
        ("c.png", "figshare/3", "meningioma", "meningioma", "meningioma", "True", "0.5"),
    ]
    for row in rows:
        Image.new("RGB", (24, 24), (200, 40, 40)).save(folder / row[0])
    header = "file,id,true_label,pred_label,target,pointing_hit,energy_in_mask\n"
    (folder / "index.csv").write_text(header + "".join(",".join(row) + "\n" for row in rows))

    at = _show(app(tmp_path).run(), "Explanations")
    cards = {metric.label: metric.value for metric in at.metric}
    assert cards == {"Pointing game": "81.2%", "Energy in mask": "63.4%"}
    assert "image centre scores 31.2%" in _texts(at.caption) and "puts 4.1% of its energy" in _texts(at.caption)
    assert "4 x 4 feature grid: no heatmap of this model could point inside the tumour on more than 40.9%" in _texts(
        at.caption
    )
    assert len(at.image) == 3
    assert "No explanations/ folder" not in _texts(at.info)
    assert "Tumour map (the mask head)" not in [s.value for s in at.subheader]

    at.radio(key="gallery_filter").set_value("Misclassified").run()
    assert len(at.image) == 1
    # Overview lists the stored CAM scores under "Other checks".
    _show(at, "Overview")
    checks = at.dataframe[2].value
    assert list(checks["Value"]) == ["81.2%", "63.4%", "31.2%", "4.1%", "40.9%"]
    metrics["localiser"] = {"pointing_game": 0.6614, "energy_in_mask": 0.152, "soft_dice": 0.091, "peak": 0.4321,
                            "n": 16,
                            "baseline": {"pointing_game": 0.3125}, "no_tumor": {"peak": 0.0712, "n": 8}}  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics))
    at = _show(app(tmp_path).run(), "Explanations")
    assert "Tumour map (the mask head)" in [s.value for s in at.subheader]
    assert [(m.label, m.value) for m in at.metric][2:] == [
        ("Pointing game", "66.1%"), ("Energy in mask", "15.2%"), ("Soft Dice", "9.1%")
    ]  # fmt: skip
    assert "centre scores 31.2%" in _texts(at.caption) and "0.43 on tumour slices and 0.07 on 8 no-tumour" in _texts(
        at.caption
    )
    _show(at, "Overview")
    assert list(at.dataframe[2].value["Value"])[5:] == ["66.1%", "15.2%", "9.1%", "0.43 / 0.07"]


def test_gallery_without_index_pages_through_the_pngs(app, tmp_path):
    run = tmp_path / "tiny3-cv"
    shutil.copytree(DEMO / "tiny3-cv", run)
    (run / "explanations").mkdir()
    for number in range(26):
        Image.new("RGB", (8, 8), (number * 9, 0, 0)).save(run / "explanations" / f"{number:03d}.png")
    at = _show(app(tmp_path).run(), "Explanations")
    assert "No explanations/index.csv" in _texts(at.caption)
    assert len(at.image) == 24
    at.number_input(key="gallery_page").set_value(2).run()
    assert len(at.image) == 2
    assert "Overlays 25–26 of 26." in _texts(at.caption)


def test_bundled_models_are_listed_and_can_be_hidden(app, tmp_path):
    models = tmp_path / "models"
    (models / "demo-4class").mkdir(parents=True)
    shutil.copy(DEMO / "tiny-cv" / "metrics.json", models / "demo-4class" / "metrics.json")
    (models / "demo-4class" / "config.json").write_text(
        json.dumps({"architecture": "test_resnet", "tumorlib": {"training": {"model": "test_resnet"}}})
    )
    at = app(DEMO, models).run()
    select = at.sidebar.selectbox(key="run")
    assert select.options == ["tiny-cv", "tiny3-cv", "demo-4class (bundled model)"]
    select.set_value("demo-4class").run()
    assert not at.exception
    assert "demo-4class (bundled model)" in at.markdown[0].value and "test_resnet" in at.markdown[0].value
    at.sidebar.toggle(key="include_bundled").set_value(False).run()
    assert at.sidebar.selectbox(key="run").options == ["tiny-cv", "tiny3-cv"]


# --------------------------------------------------------------------------- module hygiene


def test_import_has_no_side_effects():
    # Importing must only define functions: no Streamlit element, no page config, no log output.
    code = (
        "import streamlit as st, streamlit.delta_generator as dg\n"
        "calls = []\n"
        "dg.DeltaGenerator._enqueue = lambda self, *a, **k: calls.append(a)\n"
        "st.set_page_config = lambda *a, **k: calls.append('set_page_config')\n"
        "import streamlit_app\n"
        "assert callable(streamlit_app.main)\n"
        "print('calls', len(calls))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "calls 0"
    assert "WARNING" not in result.stderr and "ScriptRunContext" not in result.stderr


def test_roc_and_calibration_plots_the_prediction_sets_where_measured(app, tmp_path):
    root = tmp_path / "results"
    (root / "r50-4c-cv").mkdir(parents=True)
    shutil.copy2(ROOT / "results" / "r50-4c-cv" / "metrics.json", root / "r50-4c-cv" / "metrics.json")
    at = _show(app(root).run(), "ROC and calibration")
    metrics = _metrics("r50-4c-cv", root)
    _, _, coverage, sizes = _specs(at)
    assert _title(coverage) == "Prediction sets: coverage against the level"
    assert _array(coverage["data"][0]["y"]) == pytest.approx([e["mondrian"]["coverage"] for e in metrics["conformal"]])
    assert [trace["name"] for trace in sizes["data"]] == ["90% sets", "95% sets", "99% sets"]
    assert "Cross-fitted" in _texts(at.caption)


def test_overview_and_confusion_matrices_answer_per_patient_where_stored(app, tmp_path):
    """The demo run with its patient_level section written by train.patients from its predictions.csv."""
    from train.patients import cli as patients_cli

    root = tmp_path / "results"
    shutil.copytree(DEMO / "tiny-cv", root / "tiny-cv")
    assert patients_cli([str(root / "tiny-cv")]) == 0
    metrics = _metrics("tiny-cv", root)
    section = metrics["patient_level"]
    at = app(root).run()
    assert not at.exception
    cards = {metric.label: metric for metric in at.metric}
    assert list(cards)[5:] == ["Accuracy per patient", "Majority vote", "Same slices, one by one", "Patients"]
    lo, hi = section["accuracy_ci"]
    assert cards["Accuracy per patient"].value == _pct(section["accuracy"])
    assert cards["Accuracy per patient"].delta == f"95% CI {lo * 100:.1f}–{hi * 100:.1f}"
    assert cards["Majority vote"].value == _pct(section["vote"]["accuracy"])
    assert cards["Patients"].value == str(section["n"])
    assert f"of {section['n']} patients" in _texts(at.caption)

    at = _show(at, "Confusion matrices")
    scope = at.radio(key="cm_scope")
    assert scope.options == ["All folds pooled", "Per patient", "Fold 1", "Fold 2"]
    scope.set_value("Per patient").run()
    counts, _ = _specs(at)
    assert _title(counts) == "Per patient: counts"
    rows = [row for row in section["confusion_matrix"] if sum(row)]
    assert [_array(row) for row in counts["data"][0]["z"]] == rows
    assert "One answer per patient." in _texts(at.caption)
