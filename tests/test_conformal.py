"""Conformal prediction sets: the coverage guarantee, cross-fitting, the bundle's thresholds end to end, and
the committed models' thresholds and figures recomputed from their out-of-fold predictions."""

from __future__ import annotations

import json
import logging
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from train import conformal as conformal_cli
from train import evaluate as evaluate_cli
from train.conformal import read_run
from tumorlib import Classifier, conformal, load_bundle, summary
from tumorlib.batch import BatchItem, result_columns, result_row
from tumorlib.bundle import update_config
from tumorlib.calibration import fit_temperature, softmax
from tumorlib.conformal import MONDRIAN, OVERALL, ConformalError, Thresholds

from .conftest import FIGSHARE, LABELS3, ROOT, SHIPPED_RUNS

LABELS4 = ["glioma", "meningioma", "pituitary", "no_tumor"]


def _calibrated(rng: np.random.Generator, n: int, k: int = 4, scale: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and classes drawn from them: a calibrated model, so every slice is exchangeable."""
    probs = softmax(rng.normal(0.0, scale, size=(n, k)))
    y = (rng.random((n, 1)) > np.cumsum(probs, axis=1)).sum(axis=1)
    return probs, np.minimum(y, k - 1)


# --------------------------------------------------------------------------- the guarantee


@pytest.mark.parametrize("level", conformal.LEVELS)
def test_coverage_is_the_level_on_exchangeable_data(level):
    """20 calibration draws: each within a binomial bound of the level, their mean within 1 point."""
    n_cal, n_test, seeds = 1000, 4000, 20
    # Coverage given the calibration set is Beta-distributed around the level; add the test draw's spread.
    bound = 4 * math.sqrt(level * (1 - level) * (1 / (n_cal + 2) + 1 / n_test))
    overall, per_class = [], []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        cal, cal_y = _calibrated(rng, n_cal)
        test, test_y = _calibrated(rng, n_test)
        thresholds = Thresholds.from_config(conformal.fit(cal, cal_y, LABELS4, [level]), LABELS4)
        stats = conformal.set_stats(thresholds.mask(test, level, OVERALL), test_y, LABELS4)
        assert abs(stats["coverage"] - level) <= bound, seed
        overall.append(stats["coverage"])
        mondrian = conformal.set_stats(thresholds.mask(test, level, MONDRIAN), test_y, LABELS4)
        per_class.append(list(mondrian["per_class_coverage"].values()))
    assert abs(np.mean(overall) - level) <= 0.01
    # Each class its own coverage, on about a quarter of the slices each.
    assert np.abs(np.mean(per_class, axis=0) - level).max() <= 0.015


def test_the_finite_sample_quantile():
    scores = np.arange(1, 101) / 100  # 0.01 ... 1.00
    assert conformal.quantile(scores, 0.9) == 0.91  # ceil(101 * 0.9) = 91st smallest
    assert conformal.quantile(scores, 0.95) == 0.96  # ceil(95.95) = 96
    assert conformal.quantile(scores, 0.99) == 1.0  # ceil(99.99) = 100: the largest
    assert conformal.quantile(scores[:10], 0.95) is None  # rank 11 of 10: every class
    assert conformal.quantile([], 0.9) is None


def test_sets_are_never_empty_and_hold_the_top_class():
    rng = np.random.default_rng(0)
    probs, y = _calibrated(rng, 500, scale=0.2)  # nearly uniform: no class passes a strict threshold
    section = conformal.fit(probs, y, LABELS4)
    section["levels"]["0.9"] = {"overall": 0.0, "per_class": dict.fromkeys(LABELS4, 0.0)}
    thresholds = Thresholds.from_config(section, LABELS4)
    for how in (OVERALL, MONDRIAN):
        inside = thresholds.mask(probs, 0.9, how)
        assert inside.sum(axis=1).min() == 1 and inside[np.arange(len(probs)), probs.argmax(axis=1)].all()
    row = probs[0]
    sets = thresholds.sets(row)
    assert sets[0.9] == [LABELS4[int(row.argmax())]]
    assert set(sets) == set(conformal.LEVELS) and all(s[0] == LABELS4[int(row.argmax())] for s in sets.values())


def test_a_none_threshold_lets_every_class_in():
    probs, y = _calibrated(np.random.default_rng(1), 12)
    section = conformal.fit(probs, y, LABELS4)  # 3 slices a class: no per-class quantile at any level
    assert all(t is None for level in section["levels"].values() for t in level["per_class"].values())
    assert Thresholds.from_config(section, LABELS4).mask(probs, 0.95, MONDRIAN).all()


def test_fitting_is_deterministic_and_the_section_is_json():
    probs, y = _calibrated(np.random.default_rng(2), 300)
    first = conformal.fit(probs, y, LABELS4)
    assert first == conformal.fit(probs.copy(), y.copy(), LABELS4)
    assert json.loads(json.dumps(first)) == first
    assert first["method"] == MONDRIAN and first["score"] == conformal.PLAIN and first["n"] == 300
    assert conformal.compare_scores(probs, y) == conformal.compare_scores(probs, y)


@pytest.mark.parametrize(
    "section",
    [
        "not a mapping",
        {"levels": {}},
        {"levels": {"high": {"overall": 0.5, "per_class": {}}}},
        {"levels": {"1.5": {"overall": 0.5, "per_class": dict.fromkeys(LABELS4, 0.5)}}},
        {"levels": {"0.9": {"overall": "x", "per_class": dict.fromkeys(LABELS4, 0.5)}}},
        {"levels": {"0.9": {"overall": 0.5, "per_class": {"glioma": 0.5}}}},
        {"score": "mystery", "levels": {"0.9": {"overall": 0.5, "per_class": dict.fromkeys(LABELS4, 0.5)}}},
    ],
)
def test_a_malformed_section_is_refused(section, caplog):
    with pytest.raises(ConformalError):
        Thresholds.from_config(section, LABELS4)
    with caplog.at_level(logging.ERROR):
        assert conformal.from_bundle({"conformal": section}, LABELS4) is None
    assert "No prediction sets" in caplog.text
    assert conformal.from_bundle({}, LABELS4) is None


# --------------------------------------------------------------------------- cross-fitting


def _folds(seed: int = 3, n: int = 600, k: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(n, 4))
    y = (rng.random((n, 1)) > np.cumsum(softmax(logits / 0.7), axis=1)).sum(axis=1).clip(0, 3)
    return logits, y, np.arange(n) % k


def test_each_fold_is_scored_with_thresholds_fitted_without_it():
    logits, y, folds = _folds()
    fitted = conformal.crossfit_thresholds(logits, y, folds, LABELS4)
    for k, (temperature, thresholds) in fitted.items():
        rest = folds != k
        t = fit_temperature(logits[rest], y[rest])
        assert temperature == t
        expected = Thresholds.from_config(conformal.fit(softmax(logits[rest], t), y[rest], LABELS4), LABELS4)
        assert thresholds == expected
    # The pooled figures are those of each fold's own sets under those thresholds.
    report = conformal.crossfit(logits, y, folds, LABELS4)
    for entry in report:
        for how, figures in ((OVERALL, entry), (MONDRIAN, entry["mondrian"])):
            inside = np.zeros(logits.shape, dtype=bool)
            for k, (t, thresholds) in fitted.items():
                inside[folds == k] = thresholds.mask(softmax(logits[folds == k], t), entry["level"], how)
            assert figures["coverage"] == inside[np.arange(len(y)), y].mean()
            assert figures["mean_set_size"] == inside.sum(axis=1).mean()
        assert entry["thresholds"] == "cross-fitted" and entry["n"] == len(y)


def test_a_fold_with_extreme_scores_does_not_move_its_own_thresholds():
    """Fold 0's slices made as wrong as they can be: its thresholds (fitted on the others) stay; theirs move."""
    logits, y, folds = _folds()
    before = conformal.crossfit_thresholds(logits, y, folds, LABELS4)
    spoiled = logits.copy()
    own = folds == 0
    spoiled[own, :] = 10.0
    spoiled[own, y[own]] = -10.0  # the true class is the least probable on every slice of fold 0
    after = conformal.crossfit_thresholds(spoiled, y, folds, LABELS4)
    assert after[0] == before[0]
    assert all(after[k][1] != before[k][1] for k in (1, 2, 3, 4))
    # Its own coverage then collapses, as it should for slices its thresholds never saw.
    report = conformal.crossfit(spoiled, y, folds, LABELS4)
    t, thresholds = after[0]
    inside = thresholds.mask(softmax(spoiled[own], t), 0.9, OVERALL)
    assert inside[np.arange(own.sum()), y[own]].mean() < 0.5
    assert report[0]["coverage"] < conformal.crossfit(logits, y, folds, LABELS4)[0]["coverage"]


# --------------------------------------------------------------------------- a bundle with and without thresholds


@pytest.fixture(scope="module")
def set_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle with thresholds written by the fit function (3 classes, synthetic calibration slices)."""
    folder = tmp_path_factory.mktemp("sets") / "tiny-sets"
    shutil.copytree(tiny_bundle, folder)
    probs, y = _calibrated(np.random.default_rng(4), 900, k=3)
    update_config(folder, conformal=conformal.fit(probs, y, LABELS3))
    return folder


def _analysis(source, slice_path):
    return Classifier.from_pretrained(source, variant="fp32").analyse(slice_path, check=False, heatmap=False)


def test_a_bundle_without_thresholds_predicts_as_before(tiny_bundle, slice_path):
    clf = Classifier.from_pretrained(tiny_bundle, variant="fp32")
    assert clf.conformal is None
    prediction = clf.predict(slice_path, check=False)
    assert prediction.sets is None and prediction.prediction_set(0.95) is None
    assert list(prediction) == LABELS3 and abs(sum(prediction.values()) - 1) < 1e-5
    analysis = _analysis(tiny_bundle, slice_path)
    assert "prediction set" not in summary.summary(analysis)
    row = result_row(clf, BatchItem(name="a.jpg", path=slice_path), check=False)
    assert row["set_95"] == "" and row["prediction"] in LABELS3
    assert result_columns(LABELS3)[-2:] == ["set_95", "note"]


def test_a_bundle_with_thresholds_returns_its_sets(set_bundle, tiny_bundle, slice_path):
    load_bundle(set_bundle)  # the edited config still verifies
    clf = Classifier.from_pretrained(set_bundle, variant="fp32")
    prediction = clf.predict(slice_path, check=False)
    # The probabilities are those of the bundle without thresholds: the sets only add to the answer.
    plain = Classifier.from_pretrained(tiny_bundle, variant="fp32").predict(slice_path, check=False)
    assert dict(prediction) == pytest.approx(dict(plain))
    assert set(prediction.sets) == set(conformal.LEVELS)
    expected = clf.conformal.sets(list(prediction.values()))
    assert prediction.sets == expected and prediction.prediction_set(0.95) == expected[0.95]
    assert prediction.sets[0.9][0] == prediction.label
    assert len(prediction.sets[0.9]) <= len(prediction.sets[0.95]) <= len(prediction.sets[0.99])
    row = result_row(clf, BatchItem(name="a.jpg", path=slice_path), check=False)
    assert row["set_95"] == "|".join(expected[0.95])
    words = summary.summary(_analysis(set_bundle, slice_path))
    assert "**95% prediction set:" in words and "95% of the time" in words


def test_the_summary_says_what_a_set_of_several_classes_means(set_bundle, slice_path):
    analysis = _analysis(set_bundle, slice_path)
    analysis.probabilities.sets = {0.95: ["meningioma", "pituitary"]}
    metrics = json.loads((ROOT / "models" / "default" / "metrics.json").read_text())
    line = summary.set_line(analysis, metrics)
    assert line.startswith("**95% prediction set: meningioma or pituitary** (unsure between these).")
    assert "On new patients like those it was evaluated on, the true class is in this set 95% of the time." in line
    entry = next(e for e in metrics["conformal"] if e["level"] == 0.95)
    assert f"{entry['mondrian']['coverage'] * 100:.1f}% of 3,096 slices" in line
    analysis.probabilities.sets = {0.95: ["glioma"]}
    assert summary.set_line(analysis, {}).startswith("**95% prediction set: glioma alone.**")


def test_evaluate_measures_coverage_with_the_bundles_thresholds(set_bundle, tmp_path):
    out, preds = tmp_path / "m.json", tmp_path / "p.csv"
    code = evaluate_cli.cli(
        ["--model", str(set_bundle), "--data", str(FIGSHARE), "--out", str(out), "--predictions", str(preds),
         "--no-progress", "--no-cam", "--bootstrap", "20", "--variant", "fp32"]
    )  # fmt: skip
    assert code == 0
    metrics = json.loads(out.read_text())
    assert [e["level"] for e in metrics["conformal"]] == list(conformal.LEVELS)
    assert {e["thresholds"] for e in metrics["conformal"]} == {"bundle"}
    frame = pd.read_csv(preds)
    probs = frame[[f"prob_{c}" for c in LABELS3]].to_numpy()
    y = frame["true_label"].map(LABELS3.index).to_numpy()
    thresholds = Classifier.from_pretrained(set_bundle, variant="fp32").conformal
    for entry in metrics["conformal"]:
        inside = thresholds.mask(probs, entry["level"], MONDRIAN)
        assert entry["mondrian"]["coverage"] == pytest.approx(inside[np.arange(len(y)), y].mean())
        assert entry["n"] == len(y) == metrics["n"]


# --------------------------------------------------------------------------- the committed models


@pytest.mark.parametrize("bundle", sorted(SHIPPED_RUNS))
def test_shipped_bundles_carry_thresholds_fitted_on_their_own_out_of_fold_predictions(bundle):
    folder, run = ROOT / "models" / bundle, ROOT / "results" / SHIPPED_RUNS[bundle]
    loaded = load_bundle(folder)  # checksums verified with the edited config
    stored = loaded.section["conformal"]
    labels, logits, y, folds = read_run(run)
    assert labels == loaded.labels and len(y) == 3096 and len(set(folds)) == 5
    expected = conformal.fit(softmax(logits, loaded.temperature), y, labels)
    assert {k: v for k, v in stored.items() if k not in ("fitted_on", "temperature")} == expected
    assert stored["temperature"] == loaded.temperature and SHIPPED_RUNS[bundle] in stored["fitted_on"]
    # An independent reading of one threshold: the ceil((n + 1) 0.95)-th smallest meningioma score.
    scores = np.sort(1 - softmax(logits, loaded.temperature)[y == 1, 1])
    assert stored["levels"]["0.95"]["per_class"]["meningioma"] == scores[math.ceil((len(scores) + 1) * 0.95) - 1]
    assert Classifier(loaded, device="cpu", variant="fp32").conformal.levels == conformal.LEVELS


@pytest.mark.parametrize(
    "run", ["r50-ema-kd-4c", "r50-ema-4c-cv", "r50-4c-cv", "mnv2-4c-cv", "r50-3c-cv", "mnv2-3c-cv"]
)
def test_committed_metrics_report_cross_fitted_coverage(run):
    folder = ROOT / "results" / run
    labels, logits, y, folds = read_run(folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    fresh = json.loads(json.dumps(conformal_cli.conformal_metrics(logits, y, folds, labels)))
    assert metrics["conformal"] == fresh["conformal"]
    stored_scores, fresh_scores = dict(metrics["conformal_scores"]), dict(fresh["conformal_scores"])
    stored_rows, fresh_rows = stored_scores.pop("rows"), fresh_scores.pop("rows")
    assert stored_scores == fresh_scores
    # The comparison's adaptive (APS) sets sum sorted probabilities, so a near-tie can fall either way
    # on another CPU's floating point: a few slices of thousands, never the shipped "1 - p" sets.
    assert [(r["score"], r["target"]) for r in stored_rows] == [(r["score"], r["target"]) for r in fresh_rows]
    for ours, theirs in zip(stored_rows, fresh_rows, strict=True):
        tol = 0 if ours["score"] == conformal.PLAIN else 5e-3
        assert ours["coverage"] == pytest.approx(theirs["coverage"], abs=tol)
        assert ours["mean_set_size"] == pytest.approx(theirs["mean_set_size"], abs=tol)
    assert {e["thresholds"] for e in metrics["conformal"]} == {"cross-fitted"}
    # The score used gives the smallest sets at every compared coverage (the choice the docs state).
    rows = metrics["conformal_scores"]["rows"]
    for target in {r["target"] for r in rows}:
        sizes = {r["score"]: r["mean_set_size"] for r in rows if r["target"] == target}
        assert min(sizes, key=sizes.__getitem__) == metrics["conformal_scores"]["chosen"] == conformal.PLAIN
    for name in (b for b, r in SHIPPED_RUNS.items() if r == run):
        shipped = json.loads((ROOT / "models" / name / "metrics.json").read_text())
        assert shipped["conformal"] == metrics["conformal"]
        assert shipped["conformal_scores"] == metrics["conformal_scores"]


def test_the_command_writes_a_bundle_and_refuses_another_runs_model(tmp_path, capsys):
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    shutil.copytree(ROOT / "results" / "r50-3c-cv", run)
    shutil.copytree(ROOT / "models" / "mobilenetv2", bundle)
    stored = json.loads((run / "metrics.json").read_text())
    del stored["conformal"], stored["conformal_scores"]
    (run / "metrics.json").write_text(json.dumps(stored))
    assert conformal_cli.cli([str(run), "--bundle", str(bundle)]) == 2
    assert "not this run's model" in capsys.readouterr().err
    assert "conformal" in json.loads((run / "metrics.json").read_text())  # the run's own figures were written
    assert conformal_cli.cli([str(run), "--compare"]) == 0
    assert "aps, randomised (seed 0)" in capsys.readouterr().out
    assert conformal_cli.cli([str(tmp_path / "nothing")]) == 2
