"""The answers per patient of the committed results and of train.evaluate, recomputed from their files.

``python -m train.patients`` wrote each committed ``patient_level`` section from the results folder's
predictions.csv (an ensemble study: from its members' fold predictions); here each is recomputed and
compared field by field, and ``train.evaluate`` on the committed samples is checked by hand.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from train import evaluate as evaluate_cli
from train.patients import NO_VERDICTS, backfill, sections
from train.patients import cli as patients_cli
from tumorlib.errors import TumorlibError
from tumorlib.modelcard import model_card
from tumorlib.patients import OUT_OF_FOLD

from .conftest import FIGSHARE, ROOT, SHIPPED_RUNS

RESULTS = sorted(p.parent for p in (ROOT / "results").glob("*/predictions.csv"))
DEFAULT_RUN = ROOT / "results" / SHIPPED_RUNS["default"]


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("folder", RESULTS, ids=[p.name for p in RESULTS])
def test_committed_sections_equal_a_recomputation_from_predictions(folder):
    stored, found = _load(folder / "metrics.json"), sections(folder)
    assert found["patient_level"] is not None and stored["patient_level"] == found["patient_level"]
    note = OUT_OF_FOLD if stored.get("folds") else NO_VERDICTS
    assert stored["patient_level"]["accepted"] == note
    for k, section in found["folds"].items():
        assert _load(folder / f"fold{k}" / "metrics.json")["patient_level"] == section
        assert stored["folds"][k]["patient_level"] == section and stored["folds"][k]["fold"] == k
    if found["folds"]:
        assert stored["cv_summary"]["patient_level"] == found["summary"]


@pytest.mark.parametrize("study", ["ensemble-4c-cv", "ensemble-3c-cv"])
def test_committed_ensemble_sections_equal_a_recomputation_from_their_members(study, monkeypatch):
    monkeypatch.chdir(ROOT)  # the members are listed relative to the repository
    folder = ROOT / "results" / "studies" / study
    assert _load(folder / "metrics.json")["patient_level"] == sections(folder)["patient_level"]


@pytest.mark.parametrize("bundle", sorted(SHIPPED_RUNS))
def test_shipped_bundles_carry_their_cross_validations_sections(bundle):
    shipped, run = (
        _load(ROOT / "models" / bundle / "metrics.json"),
        _load(ROOT / "results" / SHIPPED_RUNS[bundle] / "metrics.json"),
    )
    assert shipped["patient_level"] == run["patient_level"]
    assert shipped["cv_summary"]["patient_level"] == run["cv_summary"]["patient_level"]
    assert [f["patient_level"] for f in shipped["folds"]] == [f["patient_level"] for f in run["folds"]]
    assert "**Per patient.**" in (ROOT / "models" / bundle / "README.md").read_text(encoding="utf-8")


def test_the_pooled_section_by_hand_from_predictions_csv():
    """Independent of tumorlib.patients: group the committed rows by patient, average, compare."""
    folder = DEFAULT_RUN
    stored = _load(folder / "metrics.json")
    labels = stored["labels"]
    with (folder / "predictions.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["patient"].startswith("figshare/")]
    by_patient: dict[str, list[dict]] = {}
    for r in rows:
        by_patient.setdefault(r["patient"], []).append(r)
    right = mixed = 0
    for slices in by_patient.values():
        mean = np.mean([[float(r[f"prob_{c}"]) for c in labels] for r in slices], axis=0)
        right += labels[int(np.argmax(mean))] == slices[0]["true_label"]
        mixed += len({r["pred_label"] for r in slices}) > 1
    section = stored["patient_level"]
    assert section["n"] == len(by_patient) and section["n_slices"] == len(rows)
    assert section["accuracy"] == pytest.approx(right / len(by_patient)) and section["mixed"] == mixed
    assert section["slice_accuracy"] == pytest.approx(np.mean([r["pred_label"] == r["true_label"] for r in rows]))
    assert section["without_patient_id"]["n"] == stored["n"] - len(rows)


def test_backfill_writes_the_results_the_bundle_and_its_card(tmp_path):
    results, bundle = tmp_path / "results", tmp_path / "bundle"
    shutil.copytree(DEFAULT_RUN, results)
    bundle.mkdir()
    for name in ("config.json", "metrics.json"):
        shutil.copy(ROOT / "models" / "default" / name, bundle / name)
    for path in [results / "metrics.json", bundle / "metrics.json", *results.glob("fold*/metrics.json")]:
        stripped = _load(path)
        stripped.pop("patient_level")
        for fold in stripped.get("folds", []):
            fold.pop("patient_level")
        stripped.get("cv_summary", {}).pop("patient_level", None)
        path.write_text(json.dumps(stripped))
    assert patients_cli([str(results), "--bundle", str(bundle)]) == 0
    committed = _load(DEFAULT_RUN / "metrics.json")
    assert _load(results / "metrics.json") == committed
    assert _load(bundle / "metrics.json") == _load(ROOT / "models" / "default" / "metrics.json")
    assert _load(results / "fold3" / "metrics.json") == _load(DEFAULT_RUN / "fold3" / "metrics.json")
    card = (bundle / "README.md").read_text(encoding="utf-8")
    assert card == model_card(_load(bundle / "config.json"), _load(bundle / "metrics.json"))
    assert card == (ROOT / "models" / "default" / "README.md").read_text(encoding="utf-8")


def test_backfill_refuses_a_bundle_of_other_figures(tmp_path, capsys):
    results, bundle = tmp_path / "results", tmp_path / "bundle"
    shutil.copytree(ROOT / "results" / "mnv2-4c-val", results)
    bundle.mkdir()
    shutil.copy(ROOT / "models" / "mobilenetv2" / "metrics.json", bundle / "metrics.json")
    before = (results / "metrics.json").read_text()
    assert patients_cli([str(results), "--bundle", str(bundle)]) == 2
    assert "does not hold the figures" in capsys.readouterr().err
    assert (results / "metrics.json").read_text() == before  # nothing written
    assert patients_cli([str(tmp_path / "nothing")]) == 2
    with pytest.raises(TumorlibError, match="no predictions.csv"):
        backfill(bundle)


def test_evaluate_on_the_samples_answers_each_patient(tiny_bundle, tmp_path):
    out, preds = tmp_path / "m.json", tmp_path / "p.csv"
    args = ["--model", str(tiny_bundle), "--data", str(FIGSHARE), "--out", str(out), "--predictions", str(preds),
            "--no-cam", "--no-progress", "--bootstrap", "100", "--variant", "fp32"]  # fmt: skip
    assert evaluate_cli.cli(args) == 0
    section = _load(out)["patient_level"]
    with (FIGSHARE / "metadata.csv").open(newline="") as f:
        patients = {row["pid_root"] for row in csv.DictReader(f)}  # the patient, not the series
    # The tiny bundle has no not-an-MRI check: every slice is pooled, and says so.
    assert section["accepted"].startswith("every slice") and section["refused_slices"] == 0
    assert section["n"] == len(patients) and section["n_slices"] == 24 and "without_patient_id" not in section
    assert sum(map(sum, section["confusion_matrix"])) == len(patients)
    # The same section from the predictions.csv the evaluation wrote (its served probabilities).
    from train.patients import from_predictions

    again = from_predictions(preds, _load(out)["labels"], section["accepted"], 100)
    assert again == section
