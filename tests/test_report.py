"""Tests for tumorlib.report: the one-page HTML report, its degrading gracefully, and module hygiene."""

from __future__ import annotations

import copy
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from tumorlib import figures, report, results, tables

from .results_data import make_cv_metrics, make_history, make_metrics

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def metrics() -> dict:
    return make_metrics()


@pytest.fixture
def history() -> pd.DataFrame:
    return make_history()


def test_missing_optional_keys_do_not_crash(metrics):
    bare = {
        "n": 10,
        "labels": ["glioma", "pituitary"],
        "accuracy": 0.9,
        "confusion_matrix": [[5, 1], [0, 4]],
    }
    assert results.headline(bare)[0]["ci"] == ""
    assert results.headline(bare)[3]["value"] == "—"
    assert tables.paper_table1(bare).loc[1, "Ours (95% CI)"] == "—"
    assert tables.per_class_table(bare)["Precision"].tolist() == ["—", "—"]
    assert tables.per_class_table(bare, formatted=False)["precision"].isna().all()
    assert tables.fold_table(bare) is None
    assert tables.comparison_table({"bare": bare}).loc[0, "ECE"] == "—"
    fig = figures.confusion_matrix_figure(bare)
    # The row shares are derived for display when the normalised matrix was not stored.
    assert "83.3%" in fig.layout.annotations[0].text
    assert len(figures.roc_figure(bare).data) == 0
    assert len(figures.reliability_figure(bare).data) == 0
    assert len(figures.confusion_matrix_figure({"labels": []}).data) == 0
    page = report.html_report(bare, "Bare run")
    assert "Bare run" in page

    partial = copy.deepcopy(metrics)
    for key in ("n_groups", "ci", "macro_auc", "weighted"):
        partial.pop(key)
    partial["per_class"].pop("pituitary")
    partial["roc"].pop("pituitary")
    assert len(figures.roc_figure(partial).data) == 3
    assert tables.per_class_table(partial).loc[2, "Support"] == "—"


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
    assert "Paper: ResNet-50" in page and results.format_pct(results.PAPER["metrics"]["f1"]) in page
    assert "unstated" in page and "ours is by patient" in page
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
    assert len(report.html_report(results.load_metrics(path), "Offline", history=history)) > 1_000_000


def test_import_pulls_in_neither_app_framework():
    code = (
        "import sys, tumorlib.report, tumorlib.results, tumorlib.tables, tumorlib.figures, tumorlib.results.modeltab\n"
        "bad = [m for m in ('gradio', 'streamlit') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_report_answers_per_patient_where_the_run_has_patients():
    import html

    stored = json.loads((ROOT / "models" / "default" / "metrics.json").read_text(encoding="utf-8"))
    page = report.html_report(stored, "Shipped")
    part = page.split("<h2>Per patient</h2>", 1)[1].split("<h2>", 1)[0]
    section = stored["patient_level"]
    assert f'<div class="value">{results.format_pct(section["accuracy"])}</div>' in part
    assert html.escape(results.patient_sentence(stored)) in part
    assert "Recall per patient" in part and f"<td>{section['per_class']['glioma']['support']}</td>" in part
    assert "Confusion matrix per patient (patients)" in page
    assert "<h2>Per patient</h2>" not in report.html_report(make_metrics(), "No patients")
