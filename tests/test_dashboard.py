"""Tests for tumorlib.dashboard: runs in a results folder, their exports, and the sections' cards and captions.

The Streamlit page itself is tested in test_streamlit_app.py; these call the UI-free pieces directly, on
the real trainer output under tests/fixtures/results_demo/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tumorlib import dashboard

DEMO = Path(__file__).resolve().parent / "fixtures" / "results_demo"


def _metrics(run: str) -> dict:
    return json.loads((DEMO / run / "metrics.json").read_text(encoding="utf-8"))


def test_discover_runs_skips_folds_and_finds_nested_ablations(tmp_path):
    for folder in ("cv", "cv/fold0", "cv/final", "ablations/no-crop", "ablations/224px", ".hidden", "empty"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    for folder in ("cv", "cv/fold0", "cv/final", "ablations/no-crop", "ablations/224px", ".hidden"):
        (tmp_path / folder / "metrics.json").write_text("{}")
    runs = dashboard.discover_runs(tmp_path)
    assert [run.key for run in runs] == ["ablations/224px", "ablations/no-crop", "cv"]
    assert runs[2].path == tmp_path / "cv" and not runs[2].bundled
    assert dashboard.discover_runs(tmp_path / "missing") == []


def test_export_builders_produce_offline_files():
    metrics = _metrics("tiny-cv")
    history = pd.read_csv(DEMO / "tiny-cv" / "history.csv")
    charts = dashboard.run_figures(metrics, history)
    page = dashboard.figure_html(charts["ROC curves"]())
    assert page.lstrip().lower().startswith("<!doctype html>") and "Plotly.newPlot" in page
    assert "<script src=" not in page  # plotly.js inline: opens without a network
    tables = dashboard.run_tables(metrics, None)
    per_class = pd.read_csv(pd.io.common.StringIO(dashboard.table_csv(tables["Per-class metrics"])))
    assert per_class.loc[0, "precision"] == pytest.approx(metrics["per_class"]["glioma"]["precision"])


def test_pending_runs_and_the_missing_results_message(tmp_path):
    (tmp_path / "resnet50-cv").mkdir()
    (tmp_path / "resnet50-cv" / "status.json").write_text('{"state": "running"}')
    assert dashboard.pending_runs(tmp_path) == ["resnet50-cv (running)"]
    message = dashboard.missing_results_message(tmp_path, "TUMORLIB_RESULTS")
    assert message.startswith(f"No runs in **{tmp_path}**") and "resnet50-cv (running)" in message
    assert "set $TUMORLIB_RESULTS" in message
    assert "does not exist" in dashboard.missing_results_message(tmp_path / "nowhere", "X")


def test_run_summary_names_model_folds_classes_and_intervals():
    metrics = _metrics("tiny-cv")
    config = dashboard.read_config(DEMO / "tiny-cv" / "config.yaml")
    summary = dashboard.run_summary(metrics, config)
    assert summary.startswith("**test_resnet**")
    assert f"{metrics['cv_summary']['n_folds']}-fold cross-validation, grouped by patient" in summary
    assert f"{len(metrics['labels'])} classes ({', '.join(metrics['labels'])})" in summary
    assert f"intervals: 95% {metrics['ci']['method']} over {metrics['ci']['unit']}s" in summary


def test_calibration_cards_and_fold_temperatures():
    metrics = _metrics("tiny-cv")
    cards = {label: value for label, value, _ in dashboard.calibration_cards(metrics)}
    assert cards["Macro AUC"] == f"{metrics['macro_auc']:.3f}"
    assert cards["ECE after calibration"] == f"{metrics['ece'] * 100:.1f}%"
    assert cards["Temperature"] == f"{metrics['temperature']:.2f}"
    temps = metrics["calibration"]["fold_temperatures"]
    assert dashboard.fold_temperatures_caption(metrics) == (
        f"Temperature fitted per fold (cross-fitted calibration): {', '.join(f'{t:.2f}' for t in temps)}."
    )
    assert dashboard.fold_temperatures_caption({}) == ""


def test_explanation_cards_and_captions_only_with_stored_checks():
    assert dashboard.explanation_cards({}) == [] and dashboard.cam_caption({}) == ""
    assert dashboard.localiser_cards({}) == []
    cam = {"pointing_game": 0.8125, "energy_in_mask": 0.634, "n": 16}
    assert [label for label, _, _ in dashboard.explanation_cards({"cam": cam})] == ["Pointing game", "Energy in mask"]
    assert dashboard.cam_caption({"cam": cam}) == ""  # no chance levels stored: no caption
    gate = {"refused_fraction": 0.027, "n": 620}
    assert dashboard.explanation_cards({"gate": gate}) == [
        ("Input gate refused", "2.7%", "Share of inputs the out-of-distribution gate refused to classify.")
    ]


def test_label_set_warning_only_for_different_classes():
    four, three = _metrics("tiny-cv"), _metrics("tiny3-cv")
    assert dashboard.label_set_warning({"a": four, "b": four}) == ""
    assert dashboard.label_set_warning({"a": four, "b": three}).startswith(
        "These runs do not classify the same classes (a: 4 classes; b: 3 classes)"
    )


def test_gallery_filter_and_overlay_paths(tmp_path):
    index = pd.DataFrame(
        {"file": ["a.png", "b.png", "../c.png"], "true_label": ["glioma", "pituitary", "glioma"],
         "pred_label": ["glioma", "meningioma", "glioma"]}
    )  # fmt: skip
    assert list(dashboard.filter_gallery(index, "Misclassified", ["glioma", "pituitary"])["file"]) == ["b.png"]
    assert list(dashboard.filter_gallery(index, "Correct", ["glioma"])["file"]) == ["a.png", "../c.png"]
    assert len(dashboard.filter_gallery(index, "All", ["pituitary"])) == 1
    (tmp_path / "a.png").write_bytes(b"png")
    (tmp_path.parent / "c.png").write_bytes(b"png")
    assert dashboard.overlay_path(tmp_path, "a.png") == (tmp_path / "a.png").resolve()
    assert dashboard.overlay_path(tmp_path, "../c.png") is None  # outside the explanations folder
    assert dashboard.overlay_path(tmp_path, "missing.png") is None


def test_prediction_set_charts_and_caption_only_where_measured():
    root = Path(__file__).resolve().parent.parent
    stored = json.loads((root / "models" / "default" / "metrics.json").read_text(encoding="utf-8"))
    charts = dashboard.run_figures(stored, None)
    assert {"Prediction-set coverage", "Prediction-set size"} <= set(charts)
    assert charts["Prediction-set coverage"]().data
    caption = dashboard.conformal_caption(stored)
    assert "Cross-fitted" in caption and caption.endswith("classes on average.")
    without = {k: v for k, v in stored.items() if k != "conformal"}
    assert "Prediction-set coverage" not in dashboard.run_figures(without, None)
    assert dashboard.conformal_caption(without) == ""


def test_confusion_scopes_add_the_patients_where_stored():
    root = Path(__file__).resolve().parent.parent
    stored = json.loads((root / "models" / "default" / "metrics.json").read_text(encoding="utf-8"))
    scopes = dashboard.confusion_scopes(stored)
    assert list(scopes) == ["All folds pooled", "Per patient", *(f"Fold {k}" for k in range(1, 6))]
    counts = scopes["Per patient"](False)
    assert counts.layout.title.text == "Per patient: counts"
    assert [list(row) for row in counts.data[0].z] == stored["patient_level"]["confusion_matrix"][:3]
    assert scopes["Fold 2"](True).layout.title.text == "Fold 2: share of each true class"
    assert [list(row) for row in scopes["Fold 2"](False).data[0].z] == stored["folds"][1]["confusion_matrix"]
    caption = dashboard.confusion_caption(stored, "Per patient")
    assert "One answer per patient." in caption and dashboard.patient_caption(stored) in caption
    assert "Pooled: every slice" in dashboard.confusion_caption(stored, "Fold 1")
    assert "Confusion matrix per patient" in dashboard.run_figures(stored, None)
    table = dashboard.run_tables(stored, None)["Per patient"]
    assert list(table["Class"]) == ["glioma", "meningioma", "pituitary"]
    assert list(table["Patients"]) == [stored["patient_level"]["per_class"][c]["support"] for c in table["Class"]]
    # A run without answers per patient offers the slices and the folds only.
    demo = _metrics("tiny-cv")
    assert list(dashboard.confusion_scopes(demo)) == ["All folds pooled", "Fold 1", "Fold 2"]
    assert "Per patient" not in dashboard.run_tables(demo, None) and dashboard.patient_caption(demo) == ""


def test_the_default_run_is_the_one_the_default_bundle_carries(tmp_path):
    results_root, models = tmp_path / "results", tmp_path / "models"
    for run in ("tiny-cv", "tiny3-cv"):
        (results_root / run).mkdir(parents=True)
        (results_root / run / "metrics.json").write_bytes((DEMO / run / "metrics.json").read_bytes())
    (models / "default").mkdir(parents=True)
    # The same metrics, written differently (as a re-saved bundle would be): still that run.
    (models / "default" / "metrics.json").write_text(json.dumps(_metrics("tiny3-cv"), indent=4), encoding="utf-8")
    runs = dashboard.discover_runs(results_root) + dashboard.discover_runs(models, bundled=True)
    assert [run.key for run in runs] == ["tiny-cv", "tiny3-cv", "default"]
    assert dashboard.default_run(runs, models).key == "tiny3-cv"
    # A bundle whose results are not in the folder: the bundle itself; no bundle: the first run.
    (models / "default" / "metrics.json").write_text(json.dumps({**_metrics("tiny3-cv"), "n": 1}), encoding="utf-8")
    assert dashboard.default_run(runs, models) == runs[2]
    assert dashboard.default_run(runs[:2], tmp_path / "no-models") == runs[0]
    assert dashboard.default_run([], models) is None


def test_the_export_problem_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chrome"))
    problem = dashboard.png_export_problem()
    assert "no Chrome or Chromium" in problem and "apt-get install -y chromium" in problem
    assert f"BROWSER_PATH={tmp_path / 'no-chrome'} is not an executable" in problem
