"""Tests for tumorlib.results: loading, numbers and formatting, the sections of metrics.json, the sentences."""

from __future__ import annotations

import copy
import html
import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tumorlib import report, results
from tumorlib.errors import TumorlibError
from tumorlib.modelcard import model_card
from tumorlib.results import ModelInfo, model_facts, model_info, read_bundle_metrics

from .results_data import LABELS, make_metrics


@pytest.fixture(scope="module")
def metrics() -> dict:
    return make_metrics()


def test_formatting_of_rates_and_intervals():
    assert results.format_pct(0.9534) == "95.3%"
    assert results.format_interval(0.953, [0.941, 0.964]) == "95.3% (94.1–96.4)"
    assert results.format_interval(0.953, None) == "95.3%"
    assert results.format_pct(None) == results.format_pct(float("nan")) == "—"


def test_headline_cards_format_the_stored_values(metrics):
    data = copy.deepcopy(metrics)
    data["accuracy"], data["accuracy_ci"] = 0.9534, [0.941, 0.964]
    cards = results.headline(data)
    assert [card["label"] for card in cards] == [
        "Accuracy",
        "Macro F1",
        "Macro specificity",
        "Macro AUC",
        "Evaluated",
    ]
    assert all(set(card) == {"label", "value", "ci", "help"} for card in cards)
    assert cards[0]["value"] == "95.3%" and cards[0]["ci"] == "95% CI 94.1–96.4"
    assert cards[1]["value"] == results.format_pct(metrics["macro"]["f1"])
    assert cards[3]["value"] == f"{metrics['macro_auc']:.3f}"
    assert cards[4]["value"] == "40 patients · 240 slices"
    data["n_groups"] = None
    assert results.headline(data)[4]["value"] == "240 slices"


def test_loaders_report_missing_and_malformed_files(tmp_path, metrics):
    with pytest.raises(results.ResultsFileError, match="not found"):
        results.load_metrics(tmp_path / "metrics.json")
    with pytest.raises(FileNotFoundError):
        results.load_history(tmp_path / "history.csv")
    with pytest.raises(TumorlibError):
        results.load_predictions(tmp_path / "predictions.csv")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(results.ResultsError, match="not valid JSON"):
        results.load_metrics(bad)
    good = tmp_path / "metrics.json"
    good.write_text(json.dumps(metrics))
    loaded = results.load_metrics(good)
    assert loaded["confusion_matrix"] == metrics["confusion_matrix"]
    assert math.isclose(loaded["accuracy"], metrics["accuracy"])


def test_load_predictions_keeps_ids_as_text(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text(
        "id,patient,true_label,pred_label,prob_glioma,prob_meningioma,prob_pituitary\n"
        "0001,007,glioma,glioma,0.9,0.05,0.05\n"
        "0002,007,pituitary,meningioma,0.1,0.6,0.3\n"
    )
    frame = results.load_predictions(path)
    assert list(frame["id"]) == ["0001", "0002"] and frame.loc[0, "patient"] == "007"
    assert frame["prob_meningioma"].tolist() == pytest.approx([0.05, 0.6])
    (tmp_path / "short.csv").write_text("id,true_label\n1,glioma\n")
    with pytest.raises(results.ResultsError, match="pred_label"):
        results.load_predictions(tmp_path / "short.csv")


def test_no_tumour_labels_and_caveat(metrics):
    assert results.no_tumour_labels(metrics) == []
    four = make_metrics(labels=[*LABELS, "no_tumor"])
    assert results.no_tumour_labels(four) == ["no_tumor"]
    assert results.no_tumour_labels(["glioma", "No Tumour", "healthy"]) == ["No Tumour", "healthy"]
    assert "scanners" in results.NO_TUMOUR_CAVEAT and "overstate" in results.NO_TUMOUR_CAVEAT
    assert html.escape(results.NO_TUMOUR_CAVEAT) in report.html_report(four, "Four classes")
    assert html.escape(results.NO_TUMOUR_CAVEAT) not in report.html_report(metrics, "Three classes")


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (float("nan"), None),
        (float("inf"), None),
        (True, None),
        (False, None),
        ("0.95", None),
        ([0.5], None),
        (0, 0.0),
        (3, 3.0),
        (0.953, 0.953),
        (np.float32(0.5), 0.5),
        (np.int64(7), 7.0),
    ],
)
def test_number_is_a_finite_real_or_none(value, expected):
    got = results.number(value)
    assert got == expected and (got is None or type(got) is float)


def test_integer_takes_whole_numbers_only():
    assert results.integer(3096) == 3096 and results.integer(40.0) == 40
    assert results.integer(2.5) is None and results.integer(None) is None and results.integer(True) is None


def test_count_share_auc_and_mean_std_formats():
    assert results.format_count(3096) == "3,096" and results.format_count(None) == "—"
    assert results.format_share(0.4321) == "0.43" and results.format_share(float("nan")) == "—"
    assert results.format_auc(0.98849) == "0.988" and results.format_auc(0.9, [0.85, 0.95]) == "0.900 (0.850–0.950)"
    assert results.format_auc(None) == "—" and results.auc_ci_text([0.1, None]) == ""
    assert results.format_mean_std({"mean": 0.894, "std": 0.034}) == "89.4 ± 3.4%"
    assert results.format_mean_std({"mean": 0.894}) == "89.4%" and results.format_mean_std(None) == "—"
    assert results.interval([0.1, 0.2]) == (0.1, 0.2) and results.interval("ab") is None
    assert results.ci_text([0.941, 0.964]) == "94.1–96.4" and results.ci_text([0.9]) == ""


# --------------------------------------------------------------------------- sections


def test_sections_are_empty_when_missing_and_an_error_when_malformed(metrics):
    assert results.cam(metrics) == {} and results.gate(None) == {}
    assert results.section({"cam": None}, "cam") == {}
    assert results.per_class(metrics, "glioma") is metrics["per_class"]["glioma"]
    assert results.value(metrics, "macro", "f1") == metrics["macro"]["f1"]
    assert results.value(metrics, "no", "such", "key") is None
    with pytest.raises(results.ResultsError, match=r"per_class\.glioma is 3, not a mapping"):
        results.per_class({"per_class": {"glioma": 3}}, "glioma")
    with pytest.raises(TumorlibError, match="cam is"):
        results.baseline(results.cam({"cam": ["not", "a", "mapping"]}))


def test_interval_level_method_and_folds(metrics):
    assert results.ci_level(metrics) == 0.95 and results.ci_level_text(metrics) == "95"
    assert results.ci_level({"ci": {"level": 90}}) == 0.9 and results.ci_level_text({"ci": {"level": 90}}) == "90"
    assert results.ci_level({}) is None and results.ci_level_text({}) == "95"
    assert results.ci_method(metrics) == "bootstrap, patient, 1000 resamples"
    assert results.n_folds(metrics) is None
    assert results.n_folds({"folds": [{}, {}]}) == 2 and results.n_folds({"cv_summary": {"n_folds": 5}}) == 5
    assert results.folds({"folds": [{"n": 1}, "broken"]}) == [{"n": 1}, {}]


def test_confusion_matrix_roc_and_calibration_accessors(metrics):
    assert results.confusion_matrix(metrics) == metrics["confusion_matrix"]
    assert results.confusion_matrix(metrics, normalized=True) == metrics["confusion_matrix_normalized"]
    assert results.confusion_matrix({"labels": ["a", "b"], "confusion_matrix": [[1, 2]]}) is None
    assert results.roc_curve(metrics, "glioma")["auc"] == metrics["roc"]["glioma"]["auc"]
    assert results.class_auc(metrics, "pituitary") == metrics["roc"]["pituitary"]["auc"]
    assert results.ece(metrics) == metrics["ece"] and results.ece_before(metrics) is None
    assert results.reliability(metrics) == metrics["reliability"] and results.reliability(metrics, False) == []
    assert results.temperature({"temperature": 0.73}) == 0.73


def test_ceiling_needs_a_two_number_grid():
    assert results.ceiling({"ceiling": {"pointing_game": 0.409, "grid": [4, 4]}}) == (0.409, 4, 4)
    assert results.ceiling({"ceiling": {"pointing_game": 0.409, "grid": [4]}}) is None
    assert results.ceiling({"ceiling": {"grid": [4, 4]}}) is None and results.ceiling({}) is None


# --------------------------------------------------------------------------- sentences

CAM = {"pointing_game": 0.0417, "energy_in_mask": 0.02, "n": 1234,
       "baseline": {"pointing_game": 0.2171, "energy_in_mask": 0.0412},
       "ceiling": {"pointing_game": 0.409, "grid": [4, 4]}}  # fmt: skip
LOCALISER = {"pointing_game": 0.6543, "peak": 0.4567, "n": 40, "baseline": {"pointing_game": 0.125},
             "no_tumor": {"peak": 0.0789, "n": 321}}  # fmt: skip


def test_pointing_sentence():
    assert results.pointing_sentence(CAM) == (
        "On held-out patients its peak falls inside the tumour on 4.2% of 1,234 slices "
        "(a fixed point at the image centre: 21.7%)."
    )
    assert results.pointing_sentence({"pointing_game": 0.5}) == (
        "On held-out patients its peak falls inside the tumour on 50.0% of slices."
    )
    assert results.pointing_sentence({}) == "" and results.pointing_sentence({"pointing_game": None}) == ""


def test_chance_ceiling_centre_and_peak_sentences():
    assert results.chance_sentence(CAM) == (
        "Chance levels on the same slices: a heatmap that always peaks at the image centre scores 21.7%, "
        "and a uniform one puts 4.1% of its energy inside the mask."
    )
    assert results.chance_sentence({"baseline": {"pointing_game": 0.2}}) == ""
    assert results.ceiling_sentence(CAM) == (
        "The heatmap is upsampled from a 4 x 4 feature grid, so no heatmap of this model could point inside "
        "the tumour on more than 40.9% of these slices."
    )
    assert results.ceiling_sentence({}) == ""
    assert results.centre_sentence(LOCALISER) == "A fixed point at the image centre scores 12.5%."
    assert results.peak_sentence(LOCALISER) == "Mean peak 0.46 on tumour slices, 0.08 on 321 no-tumour slices."
    # A three-class run has no tumour-free slices to compare with.
    assert results.peak_sentence({**LOCALISER, "no_tumor": {"peak": None, "n": 0}}) == ""


def test_ece_sentence(metrics):
    data = {**metrics, "ece": 0.0197, "ece_uncalibrated": 0.0506}
    assert results.ece_sentence(data) == (
        "Expected calibration error (top label, 10 equal-width bins) on the evaluation set: 2.0%; "
        "before temperature scaling: 5.1%."
    )
    assert results.ece_sentence({"ece": 0.02}) == "Expected calibration error (top label) on the evaluation set: 2.0%."
    assert results.ece_sentence({}) == ""


def test_no_tumour_aliases_are_one_set():
    assert {"no_tumor", "notumor", "healthy", "normal"} <= results.NO_TUMOUR_LABELS
    assert results.is_no_tumour("No-Tumour") and results.is_no_tumour("no tumor") and not results.is_no_tumour("glioma")


# --------------------------------------------------------------------------- the Model tab

ROOT = Path(__file__).resolve().parents[1]

CONFIG = {
    "architecture": "resnet50",
    "num_classes": 3,
    "label_names": ["glioma", "meningioma", "pituitary"],
    "pretrained_cfg": {"input_size": [3, 128, 128], "mean": [0.5] * 3, "std": [0.25] * 3},
    "tumorlib": {
        "preprocess": {"grayscale": True, "crop_brain": False, "equalize": "none"},
        "temperature": 0.7322445816414629,
        "weights_dtype": "float16",
        "files": {"model.safetensors": {"sha256": "8d725da509f73965b311afd3c1c3ec6e", "bytes": 47167584}},
    },
}
GATE_CONFIG = {"n_heldout": 3096, "thresholds_from": "two patient-grouped halves", "mri_refused_crossfit": 0.01195}
LOCALISER_CONFIG = {"method": "auxiliary tumour-mask head", "stage": 3}


def _config(gate: bool = False, localiser: bool = False) -> dict:
    config = copy.deepcopy(CONFIG)
    if gate:
        config["tumorlib"]["gate"] = dict(GATE_CONFIG)
    if localiser:
        config["tumorlib"]["localiser"] = dict(LOCALISER_CONFIG)
    return config


def test_model_facts_without_gate_or_localiser():
    facts = model_facts("default", "your-name/brain-mri-resnet50", _config(), {}, None)
    assert facts == (
        "| | |\n|---|---|\n"
        "| Model | `default` |\n"
        "| Architecture | resnet50 (timm) |\n"
        "| Classes | `glioma`, `meningioma`, `pituitary` |\n"
        "| Input | 128 × 128 px, 3 channels |\n"
        "| Preprocessing | grayscale |\n"
        "| Calibration | temperature scaling, T = 0.732 |\n"
        "| Weights | float16 safetensors, 45.0 MB, SHA-256 `8d725da509f7…` |\n"
        "| Not-an-MRI check | none: any image gets one of the classes |\n"
        "| Tumour map | none: the heatmap is Grad-CAM |\n"
        "| Source | `your-name/brain-mri-resnet50` |"
    )


def test_model_facts_with_gate_localiser_licence_and_metrics():
    metrics = {"n": 3096, "n_groups": 816}
    folder = str(ROOT / "models" / "default")
    facts = model_facts("default", folder, _config(True, True), {"license": "apache-2.0"}, metrics)
    assert (
        "| Not-an-MRI check | yes, thresholds set on 3096 slices (two patient-grouped halves); refuses 1.2% of "
        "real MRI slices (cross-fitted) |" in facts
    )
    assert "| Tumour map | yes, a head trained on tumour masks on stage 3 |" in facts
    assert "| Licence | apache-2.0 |" in facts and "| Evaluated on | 3096 test slices from 816 patients |" in facts
    assert facts.endswith("| Source | `default` |")
    assert "| Evaluated on" not in model_facts("default", "models/default", _config(True, True), {}, None)


def test_read_bundle_metrics_missing_corrupt_and_good(tmp_path):
    metrics, note = read_bundle_metrics(tmp_path)
    assert metrics is None and "has not been evaluated here" in note
    (tmp_path / "metrics.json").write_text("{not json")
    metrics, note = read_bundle_metrics(tmp_path)
    assert metrics is None and note.startswith("The metrics file could not be read:") and "not valid JSON" in note
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.9}))
    assert "no 'labels' key" in read_bundle_metrics(tmp_path)[1]
    stored = make_metrics()
    (tmp_path / "metrics.json").write_text(json.dumps(stored))
    metrics, note = read_bundle_metrics(tmp_path)
    assert note == "" and metrics["confusion_matrix"] == stored["confusion_matrix"]


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("your-name/brain-mri-resnet50", "your-name/brain-mri-resnet50"),
        ("hf-hub:your-name/brain-mri-resnet50", "your-name/brain-mri-resnet50"),
        ("/srv/app/models/default", "default"),
        ("~/bundles/mine/", "mine"),
        ("./models/tiny", "tiny"),
        ("C:\\Users\\me\\bundle", "bundle"),
        ("a/b/c", "c"),
    ],
)
def test_the_source_row_names_a_hub_id_or_a_folder_never_a_path(source, shown):
    assert results.shown_source(source) == shown


def test_an_existing_folder_is_shown_by_its_name(tmp_path):
    (tmp_path / "bundle").mkdir()
    assert results.shown_source(str(tmp_path / "bundle")) == "bundle"


def _bundle(folder: Path, metrics: dict | None, card: bool = True) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(_config(gate=True)), encoding="utf-8")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    if card:
        (folder / "README.md").write_text(model_card(_config(gate=True), metrics), encoding="utf-8")
    return folder


def test_model_info_of_an_evaluated_bundle(tmp_path):
    metrics = make_metrics()
    info = model_info(_bundle(tmp_path / "evaluated", metrics), "evaluated", "models/evaluated")
    assert isinstance(info, ModelInfo) and info.metrics == metrics and info.metrics_note == ""
    assert info.facts == model_facts("evaluated", "models/evaluated", _config(gate=True), {"license": "apache-2.0"},
                                     metrics)  # fmt: skip
    assert list(info.headline.columns) == ["Metric", "Value", "Interval", "What it means"]
    assert info.headline.loc[0, "Metric"] == "Accuracy" and info.headline.loc[0, "Value"] == (
        f"{metrics['accuracy'] * 100:.1f}%"
    )
    assert list(info.per_class["Class"]) == metrics["labels"]
    assert info.paper.loc[0, "Metric"] == "Accuracy"
    # Both of the paper's tables, as printed: its overall figures, then each class's.
    assert len(info.paper) == 5 + len(set(metrics["labels"]) | set(results.PAPER["per_class"]))
    assert info.paper.loc[0, "Paper: ResNet-50"] == results.format_pct(results.PAPER["metrics"]["accuracy"])
    # The public page names the folder, never where it lies on this machine.
    assert str(tmp_path) not in info.facts and "| Source | `models/evaluated` |" in info.facts
    absolute = model_info(tmp_path / "evaluated", "evaluated", str(tmp_path / "evaluated"))
    assert str(tmp_path) not in absolute.facts and absolute.facts.endswith("| Source | `evaluated` |")
    assert info.confusion.data[0].z is not None and info.reliability is not None
    assert info.card.startswith("<!-- Generated by tumorlib.modelcard") and "## Intended use" in info.card


def test_model_info_without_metrics_card_or_readable_config(tmp_path):
    info = model_info(_bundle(tmp_path / "plain", None, card=False), "plain", "models/plain")
    assert info.headline is None and info.confusion is None and info.metrics is None
    assert "has not been evaluated here" in info.metrics_note and info.card == ""
    assert "| Not-an-MRI check | yes, thresholds" in info.facts

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    info = model_info(broken, "broken", "models/broken")
    assert info.facts.startswith("**Model `broken`: config.json unreadable (") and info.headline is None


def test_model_info_of_a_file_that_is_not_what_evaluation_writes(tmp_path):
    odd = {"labels": ["glioma"], "per_class": {"glioma": 3}, "n": 4}
    info = model_info(_bundle(tmp_path / "odd", odd, card=False), "odd", "models/odd")
    assert info.headline is None and info.per_class is None and info.confusion is None
    assert "could not be read: per_class.glioma is 3, not a mapping" in info.metrics_note
    assert "| Evaluated on | 4 test slices |" in info.facts


@pytest.mark.parametrize("module", ["tumorlib.results", "tumorlib.results.modeltab", "tumorlib.dashboard"])
def test_readers_import_no_ui_toolkit_and_no_torch(module):
    code = f"import sys, {module}\nprint([m for m in ('gradio', 'streamlit', 'torch') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_exported_name_resolves_from_its_submodule():
    assert set(results.__all__) == set(results._EXPORTS)
    for name, module in results._EXPORTS.items():
        assert getattr(results, name) is getattr(importlib.import_module(f"tumorlib.results.{module}"), name)
    with pytest.raises(AttributeError, match="no_such_name"):
        results.no_such_name  # noqa: B018


def _shipped_metrics() -> dict:
    from .conftest import ROOT

    return json.loads((ROOT / "models" / "default" / "metrics.json").read_text(encoding="utf-8"))


def test_conformal_entries_in_level_order_with_either_thresholds():
    stored = _shipped_metrics()
    marginal, mondrian = results.conformal(stored), results.conformal(stored, mondrian=True)
    assert [e["level"] for e in marginal] == [e["level"] for e in mondrian] == [0.9, 0.95, 0.99]
    assert marginal[1]["coverage"] == stored["conformal"][1]["coverage"]
    assert mondrian[1]["coverage"] == stored["conformal"][1]["mondrian"]["coverage"]
    assert mondrian[1]["thresholds"] == "cross-fitted" and mondrian[1]["n"] == 3096 and "mondrian" not in marginal[1]
    assert results.conformal_level(stored, 0.95, mondrian=True) == mondrian[1]
    assert results.conformal_level(stored, 0.5) == {} and results.conformal({}) == []
    assert results.conformal_scores(stored)["chosen"] == "1 - p"
    for bad in ("a list, it is not", [{"coverage": 0.9}], [3]):
        with pytest.raises(results.ResultsError):
            results.conformal({"conformal": bad})
    assert results.format_set_size(1.0656) == "1.07" and results.format_set_size(None) == results.MISSING


def test_coverage_sentence_names_where_and_the_weakest_class():
    stored = _shipped_metrics()
    entry = results.conformal_level(stored, 0.95, mondrian=True)
    weakest = min(entry["per_class_coverage"], key=entry["per_class_coverage"].get)
    sentence = results.coverage_sentence(stored)
    assert sentence.startswith("Measured on held-out patients, with thresholds fitted without them: the 95% set")
    assert f"{results.format_pct(entry['coverage'])} of 3,096 slices" in sentence
    assert f"({weakest}, the lowest class: {results.format_pct(entry['per_class_coverage'][weakest])})" in sentence
    assert sentence.endswith(f"with {results.format_set_size(entry['mean_set_size'])} classes on average.")
    assert results.coverage_sentence({}) == "" and results.coverage_sentence(stored, 0.5) == ""


def test_model_facts_name_the_prediction_sets_only_when_the_bundle_has_them():
    from .conftest import ROOT

    config = json.loads((ROOT / "models" / "default" / "config.json").read_text(encoding="utf-8"))
    facts = model_facts("default", "models/default", config, {}, _shipped_metrics())
    coverage = results.format_pct(results.conformal_level(_shipped_metrics(), 0.95, mondrian=True)["coverage"])
    assert (
        "| Prediction sets | 90%, 95%, 99%, a threshold per class, fitted on 3096 out-of-fold slices; "
        f"the 95% set holds the true class on {coverage} (measured) |" in facts
    )
    assert "Prediction sets" not in model_facts("default", "models/default", _config(), {}, None)


def _with_patients() -> dict:
    """make_metrics with a patient_level section from hand-made slices: 3 patients, one refused slice."""
    from tumorlib.patients import patient_level

    groups = ["figshare/1", "figshare/1", "figshare/2", "figshare/3", "figshare/3", "nt/dup:a.jpg"]
    probs = [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.9, 0.05, 0.05], [0.7, 0.2, 0.1]]
    section = patient_level([0, 0, 1, 2, 2, 0], probs, LABELS, groups, [True] * 4 + [False, True], n_bootstrap=50)
    return {**make_metrics(), "patient_level": section}


def test_patient_level_accessor_sentence_and_cards():
    stored = _with_patients()
    section = results.patient_level(stored)
    assert section["n"] == 3 and results.patient_level(make_metrics()) == {}
    text = results.patient_sentence(stored)
    lo, hi = section["accuracy_ci"]
    assert text.startswith("One answer per patient (the class with the highest mean probability")
    assert f"right for {section['accuracy'] * 100:.1f}% of 3 patients (95% CI {lo * 100:.1f}–{hi * 100:.1f}" in text
    assert f"against {section['slice_accuracy'] * 100:.1f}% for their 5 slices one by one" in text
    assert f"a majority vote of the slices is right for {section['vote']['accuracy'] * 100:.1f}%" in text
    assert "The slices of 1 of the 3 patients do not all give the same class." in text
    assert (
        "Slices pooled: slices the not-an-MRI check accepts. Left out, refused by the not-an-MRI check: 1 slice."
        in text
    )
    assert "Scored one by one, apart: the 1 image without a patient id, 100.0% right." in text
    assert results.patient_sentence(make_metrics()) == "" and results.patient_headline(make_metrics()) == []
    cards = {card["label"]: card for card in results.patient_headline(stored)}
    assert list(cards) == ["Accuracy per patient", "Majority vote", "Same slices, one by one", "Patients"]
    assert cards["Accuracy per patient"]["value"] == results.format_pct(section["accuracy"])
    assert cards["Accuracy per patient"]["ci"] == f"95% CI {results.ci_text(section['accuracy_ci'])}"
    assert cards["Majority vote"]["value"] == results.format_pct(section["vote"]["accuracy"])
    assert cards["Same slices, one by one"]["value"] == results.format_pct(section["slice_accuracy"])
    assert cards["Patients"]["value"] == "3" and cards["Patients"]["ci"] == "1 mixed"


def test_the_shipped_models_patient_sentence_reads_its_own_numbers():
    stored = _shipped_metrics()
    section = results.patient_level(stored)
    text = results.patient_sentence(stored)
    assert f"right for {section['accuracy'] * 100:.1f}% of {section['n']} patients" in text
    assert "no check on out-of-fold predictions" in text
    assert f"apart: the {section['without_patient_id']['n']:,} images without a patient id" in text
