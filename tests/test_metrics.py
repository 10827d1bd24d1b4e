"""tumorlib.metrics checked against scikit-learn and against plain-loop reference implementations."""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from tumorlib.metrics import (
    auc,
    bootstrap_ci,
    bootstrap_confusion_matrices,
    compute_metrics,
    confusion_matrix,
    expected_calibration_error,
    f_beta,
    load_json,
    per_class_metrics,
    roc_curve_ovr,
    save_json,
    summarize_folds,
)

SETTINGS = settings(max_examples=60, deadline=None)


def _probs(rng: np.random.Generator, y: np.ndarray, n_classes: int, signal: float = 1.0, decimals: int | None = None):
    """Softmax probabilities that favour the true class; rounding creates ties in the scores."""
    logits = rng.normal(size=(y.size, n_classes))
    logits[np.arange(y.size), y] += signal
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return np.round(p, decimals) if decimals is not None else p


@st.composite
def cases(draw, min_n: int = 1, max_n: int = 80):
    """(y_true, probs, n_classes) with possibly absent classes, ties and never-predicted classes."""
    n_classes = draw(st.integers(2, 6))
    n = draw(st.integers(min_n, max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Restricting y_true to a subset of classes leaves some classes absent.
    present = draw(st.integers(1, n_classes))
    y = rng.integers(0, present, n)
    decimals = draw(st.sampled_from([None, 1, 2]))
    signal = draw(st.sampled_from([0.0, 1.0, 3.0]))
    return y, _probs(rng, y, n_classes, signal, decimals), n_classes


def _labels(n_classes: int) -> list[str]:
    return [f"class{k}" for k in range(n_classes)]


# ---------------------------------------------------------------------------------------------------
# Confusion matrix and per-class metrics
# ---------------------------------------------------------------------------------------------------


@SETTINGS
@given(cases())
def test_confusion_matrix_matches_sklearn(case):
    y, p, c = case
    pred = p.argmax(axis=1)
    cm = confusion_matrix(y, pred, c)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, pred, labels=range(c)))


@SETTINGS
@given(cases(), st.sampled_from([0.5, 1.0, 2.0, 3.0]))
def test_per_class_metrics_match_sklearn(case, beta):
    y, p, c = case
    pred = p.argmax(axis=1)
    cm = confusion_matrix(y, pred, c)
    pc = per_class_metrics(cm)
    prec, rec, f1, support = skm.precision_recall_fscore_support(
        y, pred, labels=range(c), average=None, zero_division=0
    )
    np.testing.assert_allclose(pc["precision"], prec, rtol=1e-12, atol=0)
    np.testing.assert_allclose(pc["recall"], rec, rtol=1e-12, atol=0)
    np.testing.assert_allclose(pc["f1"], f1, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(pc["support"], support)
    _, _, fb, _ = skm.precision_recall_fscore_support(
        y, pred, labels=range(c), average=None, beta=beta, zero_division=0
    )
    np.testing.assert_allclose(f_beta(pc["precision"], pc["recall"], beta), fb, rtol=1e-12, atol=1e-15)
    for k in range(c):
        # Specificity and one-vs-rest accuracy counted item by item.
        neg = y != k
        tn = np.sum(neg & (pred != k))
        spec = tn / neg.sum() if neg.sum() else 0.0
        assert pc["specificity"][k] == pytest.approx(spec, abs=1e-15)
        assert pc["accuracy"][k] == pytest.approx(np.mean((y == k) == (pred == k)), abs=1e-15)


def test_per_class_metrics_on_a_stack_equals_one_by_one():
    rng = np.random.default_rng(3)
    stack = rng.integers(0, 5, size=(7, 4, 4))
    stack[2, 1, :] = 0  # a class with no items
    stack[3, :, 2] = 0  # a class never predicted
    together = per_class_metrics(stack)
    for i in range(stack.shape[0]):
        alone = per_class_metrics(stack[i])
        for name, value in alone.items():
            np.testing.assert_allclose(together[name][i], value, rtol=0, atol=0)


def test_f_beta_scalar_and_validation():
    assert f_beta(0.5, 1.0, 1.0) == pytest.approx(2 * 0.5 / 1.5)
    assert f_beta(0.0, 0.0, 2.0) == 0.0
    assert isinstance(f_beta(0.5, 0.5, 2.0), float)
    with pytest.raises(ValueError, match="beta"):
        f_beta(0.5, 0.5, 0.0)


@SETTINGS
@given(cases(), st.sampled_from([0.5, 1.0, 2.0]))
def test_compute_metrics_matches_sklearn(case, beta):
    y, p, c = case
    pred = p.argmax(axis=1)
    labels = _labels(c)
    m = compute_metrics(y, p, labels, n_bootstrap=0, beta=beta)
    assert m["n"] == y.size and m["n_groups"] is None and m["labels"] == labels and m["beta"] == beta
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-15)
    assert m["error_rate"] == pytest.approx(1 - skm.accuracy_score(y, pred), abs=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    for average in ("macro", "weighted"):
        prec, rec, fb, _ = skm.precision_recall_fscore_support(
            y, pred, labels=range(c), average=average, beta=beta, zero_division=0
        )
        f1 = skm.f1_score(y, pred, labels=range(c), average=average, zero_division=0)
        assert m[average]["precision"] == pytest.approx(prec, abs=1e-12)
        assert m[average]["recall"] == pytest.approx(rec, abs=1e-12)
        assert m[average]["f1"] == pytest.approx(f1, abs=1e-12)
        assert m[average]["f_beta"] == pytest.approx(fb, abs=1e-12)
    cm = skm.confusion_matrix(y, pred, labels=range(c))
    spec = []
    for k in range(c):
        tn = cm.sum() - cm[k, :].sum() - cm[:, k].sum() + cm[k, k]
        fp = cm[:, k].sum() - cm[k, k]
        spec.append(tn / (tn + fp) if tn + fp else 0.0)
    support = cm.sum(axis=1)
    assert m["macro"]["specificity"] == pytest.approx(np.mean(spec), abs=1e-12)
    assert m["weighted"]["specificity"] == pytest.approx(np.dot(spec, support) / support.sum(), abs=1e-12)
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=range(c), zero_division=0)
    for k, label in enumerate(labels):
        entry = m["per_class"][label]
        assert entry["precision"] == pytest.approx(prec[k], abs=1e-15)
        assert entry["recall"] == pytest.approx(rec[k], abs=1e-15)
        assert entry["f1"] == pytest.approx(f1[k], abs=1e-15)
        assert entry["support"] == sup[k] and isinstance(entry["support"], int)
        assert entry["specificity"] == pytest.approx(spec[k], abs=1e-15)
    assert m["confusion_matrix"] == cm.tolist()
    rows = cm.sum(axis=1, keepdims=True)
    expected = np.where(rows > 0, cm / np.maximum(rows, 1), 0.0)
    np.testing.assert_allclose(m["confusion_matrix_normalized"], expected, atol=1e-15)
    json.dumps(m, allow_nan=False)


# ---------------------------------------------------------------------------------------------------
# ROC and AUC
# ---------------------------------------------------------------------------------------------------


@SETTINGS
@given(cases(min_n=2))
def test_roc_curve_matches_sklearn(case):
    y, p, c = case
    for k in range(c):
        positive = y == k
        ours = roc_curve_ovr(y, p, k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # undefined fpr/tpr when one side is empty
            theirs = skm.roc_curve(positive, p[:, k], drop_intermediate=True)
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b)
        if 0 < positive.sum() < y.size:
            assert auc(ours[0], ours[1]) == pytest.approx(skm.roc_auc_score(positive, p[:, k]), abs=1e-15)


@SETTINGS
@given(cases(min_n=2))
def test_compute_metrics_auc_per_class_and_macro(case):
    y, p, c = case
    m = compute_metrics(y, p, _labels(c), n_bootstrap=0)
    defined = []
    for k, label in enumerate(_labels(c)):
        roc = m["roc"][label]
        positive = y == k
        if 0 < positive.sum() < y.size:
            expected = skm.roc_auc_score(positive, p[:, k])
            assert roc["auc"] == pytest.approx(expected, abs=1e-15)
            fpr, tpr, _ = skm.roc_curve(positive, p[:, k])
            assert roc["fpr"] == fpr.tolist() and roc["tpr"] == tpr.tolist()
            defined.append(expected)
        else:
            assert roc == {"fpr": [], "tpr": [], "auc": None}
    if defined:
        assert m["macro_auc"] == pytest.approx(np.mean(defined), abs=1e-15)
    else:
        assert m["macro_auc"] is None


def test_macro_auc_equals_sklearn_multiclass_ovr():
    rng = np.random.default_rng(11)
    for _ in range(10):
        c = int(rng.integers(3, 6))
        y = rng.integers(0, c, 200)
        y[:c] = np.arange(c)  # every class present: sklearn's multiclass AUC needs that
        p = _probs(rng, y, c, 1.0)
        m = compute_metrics(y, p, _labels(c), n_bootstrap=0)
        expected = skm.roc_auc_score(y, p, multi_class="ovr", average="macro")
        assert m["macro_auc"] == pytest.approx(expected, abs=1e-12)


def test_auc_trapezoid_and_validation():
    assert auc([0, 0.5, 1], [0, 1, 1]) == pytest.approx(0.75)
    assert auc([1, 0.5, 0], [1, 1, 0]) == pytest.approx(0.75)  # decreasing x is allowed
    with pytest.raises(ValueError):
        auc([0, 1, 0.5], [0, 1, 1])
    with pytest.raises(ValueError):
        auc([0], [0])


# ---------------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------------


def _ece_loop(probs, y, n_bins):
    """Reference: bins (lo, hi] with edges from linspace, confidence 0 counted in the first bin."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0, 1, n_bins + 1)
    total, counts = 0.0, []
    for b in range(n_bins):
        lo, hi = edges[b], edges[b + 1]
        members = [i for i in range(len(y)) if (lo < conf[i] <= hi) or (b == 0 and conf[i] == 0)]
        counts.append(len(members))
        if members:
            acc = np.mean([correct[i] for i in members])
            mean_conf = np.mean([conf[i] for i in members])
            total += len(members) / len(y) * abs(acc - mean_conf)
    return total, counts


@SETTINGS
@given(cases(), st.sampled_from([1, 5, 10, 15]))
def test_ece_matches_loop(case, n_bins):
    y, p, _ = case
    ece, bins = expected_calibration_error(p, y, n_bins)
    ref, counts = _ece_loop(p, y, n_bins)
    assert ece == pytest.approx(ref, abs=1e-12)
    assert [b["count"] for b in bins] == counts
    assert sum(counts) == y.size
    for b in bins:
        if b["count"] == 0:
            assert b["confidence"] is None and b["accuracy"] is None
        else:
            assert b["lower"] <= b["confidence"] <= b["upper"] + 1e-12
            assert 0 <= b["accuracy"] <= 1


def test_ece_confidences_on_bin_edges():
    # Top confidences exactly k/10 belong to the bin (lower, upper] they close.
    n_bins = 10
    conf = np.array([0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 0.55])
    p = np.stack([conf, 1 - conf], axis=1)
    y = np.array([0, 1, 1, 0, 0, 0, 1])
    ece, bins = expected_calibration_error(p, y, n_bins)
    ref, counts = _ece_loop(p, y, n_bins)
    assert [b["count"] for b in bins] == counts
    assert ece == pytest.approx(ref, abs=1e-12)
    assert bins[-1]["count"] == 1 and bins[-1]["confidence"] == 1.0


def test_ece_perfect_calibration_is_zero_and_overconfidence_is_not():
    y = np.array([0] * 8 + [1] * 2)
    p = np.tile([0.8, 0.2], (10, 1))  # 80 % confident, 80 % right
    assert expected_calibration_error(p, y, 10)[0] == pytest.approx(0.0, abs=1e-12)
    p_over = np.tile([0.99, 0.01], (10, 1))
    assert expected_calibration_error(p_over, y, 10)[0] == pytest.approx(0.19)


def test_uncalibrated_keys_only_when_given():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 100)
    p = _probs(rng, y, 3)
    without = compute_metrics(y, p, _labels(3), n_bootstrap=0)
    assert "ece_uncalibrated" not in without and "reliability_uncalibrated" not in without
    sharp = _probs(rng, y, 3, 4.0)
    with_ = compute_metrics(y, p, _labels(3), n_bootstrap=0, probs_uncalibrated=sharp)
    assert with_["ece_uncalibrated"] == pytest.approx(_ece_loop(sharp, y, 15)[0], abs=1e-12)
    assert with_["ece"] == pytest.approx(_ece_loop(p, y, 15)[0], abs=1e-12)
    assert len(with_["reliability_uncalibrated"]) == 15


# ---------------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------------


def _typical(seed: int = 0, n: int = 400, c: int = 4, n_groups: int = 60):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    p = _probs(rng, y, c, 1.5)
    groups = np.array([f"patient-{g:03d}" for g in rng.integers(0, n_groups, n)])
    return y, p, groups


def test_bootstrap_ci_contains_point_and_is_deterministic():
    y, p, groups = _typical()
    correct = (p.argmax(axis=1) == y).astype(float)
    point = correct.mean()
    for g in (None, groups):
        lo, hi = bootstrap_ci(lambda idx: correct[idx].mean(), y.size, g, n_resamples=300, seed=5)
        assert lo < point < hi
        assert 0 < hi - lo < 0.3
        assert bootstrap_ci(lambda idx: correct[idx].mean(), y.size, g, n_resamples=300, seed=5) == (lo, hi)
        assert bootstrap_ci(lambda idx: correct[idx].mean(), y.size, g, n_resamples=300, seed=6) != (lo, hi)


def test_bootstrap_ci_matches_a_plain_percentile_interval():
    # Statistic = the drawn indices themselves: checks both that idx are uniform draws and the quantiles.
    n, b = 50, 400
    lo, hi = bootstrap_ci(lambda idx: idx.mean(), n, n_resamples=b, seed=2)
    draws = np.random.default_rng(2).integers(0, n, size=(b, n))
    means = draws.mean(axis=1)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), abs=1e-12)


def test_bootstrap_ci_vector_statistic():
    x = np.random.default_rng(0).normal(size=(200, 3)) + np.array([0.0, 5.0, -5.0])
    lo, hi = bootstrap_ci(lambda idx: x[idx].mean(axis=0), 200, n_resamples=200)
    assert lo.shape == hi.shape == (3,)
    assert np.all(lo < x.mean(axis=0)) and np.all(x.mean(axis=0) < hi)


def test_group_bootstrap_draws_whole_groups():
    rng = np.random.default_rng(4)
    groups = np.array([f"p{g}" for g in rng.integers(0, 12, 90)])
    sizes = {g: int(np.sum(groups == g)) for g in np.unique(groups)}
    seen_lengths = set()

    def check(idx):
        drawn = groups[idx]
        for g, size in sizes.items():
            members = np.flatnonzero(groups == g)
            # A drawn group brings every one of its items, each exactly as often as the group was drawn.
            per_item = np.array([np.sum(idx == i) for i in members])
            assert np.all(per_item == per_item[0])
            assert np.sum(drawn == g) == per_item[0] * size
        seen_lengths.add(idx.size)
        return 0.0

    bootstrap_ci(check, groups.size, groups, n_resamples=30, seed=0)
    assert len(seen_lengths) > 1  # resample sizes vary with the groups drawn, so groups were drawn


def test_group_bootstrap_is_wider_when_groups_are_homogeneous():
    # 40 patients with 25 identical slices each: the patient is the real unit of evidence.
    rng = np.random.default_rng(7)
    patient_correct = rng.random(40) < 0.7
    correct = np.repeat(patient_correct, 25).astype(float)
    groups = np.repeat([f"p{i}" for i in range(40)], 25)
    item = bootstrap_ci(lambda idx: correct[idx].mean(), correct.size, n_resamples=400)
    group = bootstrap_ci(lambda idx: correct[idx].mean(), correct.size, groups, n_resamples=400)
    assert group[1] - group[0] > 3 * (item[1] - item[0])


@pytest.mark.parametrize("with_groups", [False, True])
def test_vectorised_bootstrap_matches_bootstrap_ci(with_groups):
    y, p, groups = _typical(seed=1)
    g = groups if with_groups else None
    pred = p.argmax(axis=1)
    cms = bootstrap_confusion_matrices(y, pred, 4, g, n_resamples=200, seed=9)
    # The same resamples, one at a time, through the general path.
    one_by_one = []
    bootstrap_ci(lambda idx: one_by_one.append(confusion_matrix(y[idx], pred[idx], 4)) or 0.0, y.size, g, 200, 9)
    np.testing.assert_array_equal(cms, np.stack(one_by_one))

    m = compute_metrics(y, p, _labels(4), g, n_bootstrap=200, seed=9)
    assert m["ci"]["unit"] == ("patient" if with_groups else "image")
    assert m["n_groups"] == (len(set(groups)) if with_groups else None)
    acc = bootstrap_ci(lambda idx: np.mean(y[idx] == pred[idx]), y.size, g, 200, 9)
    assert m["accuracy_ci"] == pytest.approx(list(acc), abs=1e-12)
    recall0 = bootstrap_ci(lambda idx: np.mean(pred[idx][y[idx] == 0] == 0), y.size, g, 200, 9)
    assert m["per_class"]["class0"]["recall_ci"] == pytest.approx(list(recall0), abs=1e-12)
    macro_f1 = bootstrap_ci(
        lambda idx: skm.f1_score(y[idx], pred[idx], labels=range(4), average="macro", zero_division=0),
        y.size,
        g,
        200,
        9,
    )
    assert m["macro"]["f1_ci"] == pytest.approx(list(macro_f1), abs=1e-12)


@pytest.mark.parametrize("with_groups", [False, True])
def test_vectorised_bootstrap_in_many_chunks(monkeypatch, with_groups):
    # Tiny chunks (3 resamples each) must still give exactly the resamples bootstrap_ci sees.
    import tumorlib.metrics as metrics

    y, p, groups = _typical(seed=3, n=300)
    g = groups if with_groups else None
    pred = p.argmax(axis=1)
    monkeypatch.setattr(metrics, "_CHUNK_CELLS", 900)
    cms = bootstrap_confusion_matrices(y, pred, 4, g, n_resamples=50, seed=1)
    one_by_one = []
    bootstrap_ci(lambda idx: one_by_one.append(confusion_matrix(y[idx], pred[idx], 4)) or 0.0, y.size, g, 50, 1)
    np.testing.assert_array_equal(cms, np.stack(one_by_one))
    assert cms.sum(axis=(1, 2)).min() > 0
    if not with_groups:
        assert np.all(cms.sum(axis=(1, 2)) == y.size)


def test_compute_metrics_intervals_contain_points():
    y, p, groups = _typical(seed=2, n=600)
    m = compute_metrics(y, p, _labels(4), groups, n_bootstrap=300)
    assert m["ci"] == {"method": "percentile bootstrap", "resamples": 300, "level": 0.95, "unit": "patient"}

    def inside(value, ci):
        assert ci[0] <= value <= ci[1]

    for key in ("accuracy", "error_rate", "balanced_accuracy"):
        inside(m[key], m[f"{key}_ci"])
    assert m["error_rate_ci"] == pytest.approx([1 - m["accuracy_ci"][1], 1 - m["accuracy_ci"][0]])
    for name in ("precision", "recall", "specificity", "f1", "f_beta"):
        inside(m["macro"][name], m["macro"][f"{name}_ci"])
    for entry in m["per_class"].values():
        for name in ("precision", "recall", "specificity", "f1", "accuracy"):
            inside(entry[name], entry[f"{name}_ci"])
    assert compute_metrics(y, p, _labels(4), groups, n_bootstrap=300) == m  # deterministic


def test_no_bootstrap_gives_null_intervals():
    y, p, _ = _typical(n=50)
    m = compute_metrics(y, p, _labels(4), n_bootstrap=0)
    assert m["accuracy_ci"] == [None, None]
    assert m["per_class"]["class1"]["f1_ci"] == [None, None]
    assert m["ci"]["resamples"] == 0
    json.dumps(m, allow_nan=False)


def test_bootstrap_argument_checks():
    with pytest.raises(ValueError):
        bootstrap_ci(lambda idx: 0.0, 0)
    with pytest.raises(ValueError):
        bootstrap_ci(lambda idx: 0.0, 3, n_resamples=0)
    with pytest.raises(ValueError):
        bootstrap_ci(lambda idx: 0.0, 3, alpha=1.5)
    with pytest.raises(ValueError, match="groups"):
        bootstrap_ci(lambda idx: 0.0, 3, groups=["a", "b"])


# ---------------------------------------------------------------------------------------------------
# Edge cases and validation
# ---------------------------------------------------------------------------------------------------


def test_class_never_predicted_and_absent_class():
    # Class 2 is never predicted; class 3 is never the truth (but is predicted once).
    y = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    pred = np.array([0, 1, 1, 1, 0, 1, 3, 0])
    p = np.full((y.size, 4), 0.1)
    p[np.arange(y.size), pred] = 0.7
    p[:, 2] = np.linspace(0.0, 0.15, y.size)  # class-2 scores still rank items
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division-by-zero or other numpy warnings
        m = compute_metrics(y, p, ["a", "b", "c", "d"], n_bootstrap=50)
    assert m["per_class"]["c"]["precision"] == 0.0 and m["per_class"]["c"]["recall"] == 0.0
    assert m["per_class"]["c"]["f1"] == 0.0
    assert m["per_class"]["d"]["support"] == 0
    assert m["per_class"]["d"]["recall"] == 0.0 and m["per_class"]["d"]["precision"] == 0.0
    assert m["roc"]["d"] == {"fpr": [], "tpr": [], "auc": None}
    assert m["roc"]["c"]["auc"] == pytest.approx(skm.roc_auc_score(y == 2, p[:, 2]))
    assert m["macro_auc"] == pytest.approx(np.mean([m["roc"][k]["auc"] for k in "abc"]))
    assert m["confusion_matrix_normalized"][3] == [0.0, 0.0, 0.0, 0.0]
    text = json.dumps(m, allow_nan=False)
    assert json.loads(text) == m


def test_single_class_of_predictions_and_truth():
    y = np.zeros(6, dtype=int)
    p = np.tile([0.9, 0.05, 0.05], (6, 1))
    m = compute_metrics(y, p, ["x", "y", "z"], n_bootstrap=20)
    assert m["accuracy"] == 1.0 and m["accuracy_ci"] == [1.0, 1.0]
    assert m["balanced_accuracy"] == 1.0
    assert m["per_class"]["x"]["specificity"] == 0.0  # no negatives: 0 by the zero_division convention
    assert m["macro_auc"] is None and all(r["auc"] is None for r in m["roc"].values())
    json.dumps(m, allow_nan=False)

    y2 = np.array([0, 1, 2, 1])
    m2 = compute_metrics(y2, np.tile([0.2, 0.5, 0.3], (4, 1)), ["x", "y", "z"], n_bootstrap=20)
    assert m2["accuracy"] == 0.5
    assert m2["per_class"]["x"]["precision"] == 0.0 and m2["per_class"]["y"]["recall"] == 1.0
    # All scores tied: every ROC is the diagonal, AUC 0.5.
    assert all(r["auc"] == pytest.approx(0.5) for r in m2["roc"].values())


def test_single_item():
    m = compute_metrics([1], [[0.3, 0.7]], ["no", "yes"], ["p1"], n_bootstrap=10)
    assert m["accuracy"] == 1.0 and m["n_groups"] == 1 and m["macro_auc"] is None
    json.dumps(m, allow_nan=False)


@pytest.mark.parametrize(
    ("y", "p", "labels", "groups", "match"),
    [
        ([0, 1], [[0.5, 0.5]], ["a", "b"], None, "rows"),
        ([0, 1], [0.5, 0.5], ["a", "b"], None, "shape"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b", "c"], None, "shape"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], None, "outside"),
        ([0, -1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], None, "outside"),
        ([], np.zeros((0, 2)), ["a", "b"], None, "N == 0"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], ["p1"], "groups"),
        ([0.5, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], None, "integer"),
        ([0, 1], [[0.5, np.nan], [0.5, 0.5]], ["a", "b"], None, "NaN"),
        ([0, 1], [[1.5, -0.5], [0.5, 0.5]], ["a", "b"], None, "probabilities"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "a"], None, "distinct"),
    ],
)
def test_compute_metrics_rejects_bad_input(y, p, labels, groups, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(y, p, labels, groups, n_bootstrap=0)


def test_compute_metrics_rejects_bad_uncalibrated_probs():
    with pytest.raises(ValueError, match="probs_uncalibrated"):
        compute_metrics([0, 1], [[0.6, 0.4], [0.4, 0.6]], ["a", "b"], probs_uncalibrated=[[1.0, 0.0]])


def test_schema_keys():
    y, p, groups = _typical(n=120)
    m = compute_metrics(y, p, _labels(4), groups, n_bootstrap=20, probs_uncalibrated=p)
    assert set(m) == {
        "n", "n_groups", "labels", "accuracy", "accuracy_ci", "error_rate", "error_rate_ci",
        "balanced_accuracy", "balanced_accuracy_ci", "macro", "weighted", "per_class", "confusion_matrix",
        "confusion_matrix_normalized", "roc", "macro_auc", "ece", "reliability", "ece_uncalibrated",
        "reliability_uncalibrated", "beta", "ci",
    }  # fmt: skip
    names = ["precision", "recall", "specificity", "f1", "f_beta"]
    assert set(m["macro"]) == set(names) | {f"{n}_ci" for n in names}
    assert set(m["weighted"]) == set(names)
    ci_names = ["precision", "recall", "specificity", "f1", "accuracy"]
    assert set(m["per_class"]["class0"]) == {*names, "accuracy", "support"} | {f"{n}_ci" for n in ci_names}
    assert set(m["reliability"][0]) == {"lower", "upper", "count", "confidence", "accuracy"}
    assert set(m["roc"]["class0"]) == {"fpr", "tpr", "auc"}


# ---------------------------------------------------------------------------------------------------
# Cross-validation summary
# ---------------------------------------------------------------------------------------------------


def test_summarize_folds_matches_numpy():
    rng = np.random.default_rng(8)
    folds = []
    for _ in range(5):
        y = rng.integers(0, 3, 80)
        folds.append(compute_metrics(y, _probs(rng, y, 3, 1.0), _labels(3), n_bootstrap=0))
    s = summarize_folds(folds)
    assert s["n_folds"] == 5

    def check(summary, values):
        assert summary["mean"] == pytest.approx(np.mean(values), abs=1e-15)
        assert summary["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-15)

    check(s["accuracy"], [f["accuracy"] for f in folds])
    check(s["ece"], [f["ece"] for f in folds])
    check(s["macro_auc"], [f["macro_auc"] for f in folds])
    for name in ("precision", "recall", "specificity", "f1", "f_beta"):
        check(s["macro"][name], [f["macro"][name] for f in folds])
    for label in _labels(3):
        for name in ("precision", "recall", "f1", "accuracy"):
            check(s["per_class"][label][name], [f["per_class"][label][name] for f in folds])
    json.dumps(s, allow_nan=False)


def test_summarize_folds_ignores_none_and_single_fold():
    base = {"labels": ["a"], "accuracy": 0.5, "balanced_accuracy": 0.5, "ece": 0.1}
    base["macro"] = dict.fromkeys(("precision", "recall", "specificity", "f1", "f_beta"), 0.5)
    base["per_class"] = {"a": dict.fromkeys(("precision", "recall", "specificity", "f1", "f_beta", "accuracy"), 0.5)}
    one = summarize_folds([{**base, "macro_auc": 0.8}])
    assert one["accuracy"] == {"mean": 0.5, "std": 0.0}
    folds = [{**base, "macro_auc": v} for v in (0.8, None, 0.6)]
    s = summarize_folds(folds)
    assert s["macro_auc"]["mean"] == pytest.approx(0.7)
    assert s["macro_auc"]["std"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    assert summarize_folds([{**base, "macro_auc": None}])["macro_auc"] == {"mean": None, "std": None}
    with pytest.raises(ValueError):
        summarize_folds([])
    with pytest.raises(ValueError, match="labels"):
        summarize_folds([{**base, "macro_auc": 0.8}, {**base, "labels": ["b"], "macro_auc": 0.8}])


# ---------------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    y, p, groups = _typical(n=150)
    m = compute_metrics(y, p, _labels(4), groups, n_bootstrap=30, probs_uncalibrated=p)
    path = tmp_path / "metrics.json"
    save_json(m, path)
    assert load_json(path) == m
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text)
    assert text.startswith('{\n  "n": 150')  # indent=2
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]  # no temporary file left behind


def test_save_json_converts_numpy_and_nan(tmp_path):
    path = tmp_path / "x.json"
    obj = {
        "a": np.float32(0.5),
        "b": np.int64(3),
        "c": np.array([[1, 2], [3, 4]]),
        "d": float("nan"),
        "e": [np.nan, np.inf, 1.0],
        "f": np.bool_(True),
        "g": "tumeur – glioma",
    }
    save_json(obj, path)
    assert load_json(path) == {
        "a": 0.5,
        "b": 3,
        "c": [[1, 2], [3, 4]],
        "d": None,
        "e": [None, None, 1.0],
        "f": True,
        "g": "tumeur – glioma",
    }


def test_save_json_replaces_and_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "m.json"
    save_json({"v": 1}, path)
    save_json({"v": 2}, path)
    assert load_json(path) == {"v": 2}
    with pytest.raises(TypeError):
        save_json({"v": object()}, path)
    assert load_json(path) == {"v": 2}
    assert sorted(os.listdir(tmp_path)) == ["m.json"]


def test_load_json_rejects_nan_and_non_objects(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": NaN}', encoding="utf-8")
    with pytest.raises(ValueError):
        load_json(bad)
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError):
        load_json(arr)


def test_metric_values_are_plain_python():
    y, p, _ = _typical(n=60)
    m = compute_metrics(y, p, _labels(4), n_bootstrap=10)

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        else:
            assert x is None or type(x) in (int, float, str, bool), type(x)
            if isinstance(x, float):
                assert math.isfinite(x)

    walk(m)
