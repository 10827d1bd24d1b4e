"""train.ensemble: out-of-fold figures of averaged recipes, on the committed CV results."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from train.ensemble import cli, ensemble

from .conftest import ROOT

R50, MNV2 = ROOT / "results" / "r50-4c-cv", ROOT / "results" / "mnv2-4c-cv"


def _rows(path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_averaged_with_itself_scores_as_the_run():
    own = json.loads((R50 / "metrics.json").read_text())
    report = ensemble([R50, R50])
    assert report["n"] == own["n"] and report["labels"] == own["labels"]
    assert report["accuracy"] == pytest.approx(own["accuracy"])
    assert report["macro"]["f1"] == pytest.approx(own["macro"]["f1"])


def test_two_recipes_are_averaged_slice_by_slice(tmp_path):
    out = tmp_path / "ensemble.json"
    assert cli([str(R50), str(MNV2), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    labels = report["labels"]
    # The mean of the two pooled out-of-fold probabilities (written uncalibrated beside the logits), by id.
    mean, truth = {}, {}
    for run in (R50, MNV2):
        for k in range(5):
            for r in _rows(run / f"fold{k}" / "predictions.csv"):
                logits = np.array([float(r[f"logit_{c}"]) for c in labels])
                p = np.exp(logits - logits.max())
                mean[r["id"]] = mean.get(r["id"], 0) + p / p.sum() / 2
                truth[r["id"]] = labels.index(r["true_label"])
    expected = np.mean([int(np.argmax(mean[i])) == truth[i] for i in mean])
    assert report["n"] == len(mean) == 3096
    assert report["accuracy"] == pytest.approx(expected)
    assert len(report["calibration"]["fold_temperatures"]) == 5 and report["members"] == [str(R50), str(MNV2)]


def test_runs_on_other_folds_or_classes_are_refused(tmp_path, capsys):
    moved = tmp_path / "moved"
    shutil.copytree(R50, moved, ignore=shutil.ignore_patterns("explanations"))
    rows0, rows1 = _rows(moved / "fold0" / "predictions.csv"), _rows(moved / "fold1" / "predictions.csv")
    rows1.append(rows0.pop())  # one slice held out in another fold
    for k, rows in ((0, rows0), (1, rows1)):
        with (moved / f"fold{k}" / "predictions.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    assert cli([str(R50), str(moved)]) == 2
    assert "do not hold out the same slices" in capsys.readouterr().err
    assert cli([str(R50), str(ROOT / "results" / "r50-3c-cv")]) == 2
    assert "has classes" in capsys.readouterr().err
    assert cli([str(R50)]) == 2
    assert "two runs or more" in capsys.readouterr().err
