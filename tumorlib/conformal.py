"""Prediction sets with a stated coverage: split conformal prediction on the calibrated probabilities.

A calibrated probability is right on average; where the model is torn between two classes its top
class still reads as one answer. A conformal prediction set instead holds every class the model cannot
rule out at a chosen level: at 95%, on new patients exchangeable with those the thresholds were fitted
on, the true class is in the set at least 95% of the time (Vovk et al. 2005; Angelopoulos & Bates 2021).

How the sets are made:

- **Score.** The plain score ``1 - p`` (one minus the calibrated probability of a class; "LAC",
  Sadinle et al. 2019): the set holds every class with ``1 - p <= threshold``. It was chosen over the
  adaptive score (APS, Romano et al. 2020) by the measured mean set size at equal coverage on our
  out-of-fold probabilities (:func:`compare_scores`, ``python -m train.conformal RUN --compare``): the
  plain score gives the smallest sets on all four cross-validation runs, at 95% and at 99%, against
  APS with and without randomisation (the committed figures are the ``conformal_scores`` section of
  each run's ``metrics.json``). APS's strength, coverage that adapts to hard cases, is what the
  class-conditional thresholds below give where it matters here, class by class. No randomisation is
  used anywhere: the shipped thresholds and sets are deterministic.
- **Threshold.** The ``ceil((n + 1) * level)``-th smallest of the ``n`` calibration scores (the score
  of each calibration slice's true class): the finite-sample quantile that makes the coverage
  guarantee exact. When that rank exceeds ``n`` (too few slices for the level) the threshold is None:
  every class is in the set.
- **Marginal and class-conditional.** ``overall``: one threshold over all slices, coverage guaranteed
  on average over classes only (a hard class such as meningioma may fall below the level while the
  easy ones exceed it). ``per_class`` (Mondrian conformal prediction, Vovk et al. 2003): a threshold
  per class from the slices of that class, so each class gets its own coverage guarantee, meningioma
  included. The bundle stores both; the sets the app shows use ``method`` (class-conditional).
- **Never empty.** A set always holds the most probable class, even where no class passes its
  threshold; that can only raise coverage.

The thresholds are fitted on the out-of-fold probabilities of a cross-validation run (each slice scored
by the fold model that never saw its patient, scaled by the shipped temperature: the same slices the
temperature was fitted on) and travel in the bundle's ``config.json`` under ``tumorlib.conformal``.
The coverage a run reports is cross-fitted (:func:`crossfit`): each fold's slices get sets from a
temperature and thresholds fitted on the other folds only, never on themselves.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .calibration import fit_temperature, softmax

log = logging.getLogger(__name__)

__all__ = [
    "APS",
    "LEVELS",
    "MONDRIAN",
    "OVERALL",
    "PLAIN",
    "ConformalError",
    "Thresholds",
    "class_scores",
    "compare_scores",
    "crossfit",
    "crossfit_thresholds",
    "evaluate",
    "fit",
    "from_bundle",
    "level_key",
    "quantile",
    "set_stats",
    "size_at_coverage",
]

#: The coverage levels fitted and reported.
LEVELS = (0.9, 0.95, 0.99)
#: The plain score, 1 - p of a class (the one used); APS, the adaptive score (compared, not shipped).
PLAIN, APS = "1 - p", "aps"
#: The thresholds a set is made with: one over all classes, or one per class (Mondrian).
OVERALL, MONDRIAN = "overall", "mondrian"


class ConformalError(ValueError):
    """A ``tumorlib.conformal`` section that is not what :func:`fit` writes."""


def level_key(level: float) -> str:
    """``0.95`` -> ``"0.95"``: how a level is spelled as a JSON key."""
    return f"{float(level):g}"


# --------------------------------------------------------------------------- scores and thresholds


def class_scores(probs: np.ndarray, score: str = PLAIN, rng: np.random.Generator | None = None) -> np.ndarray:
    """The non-conformity score of every class for every slice: (n, K), lower is more plausible.

    ``PLAIN``: ``1 - p``. ``APS``: the total probability of the classes ranked at or above this one
    (deterministic); with ``rng``, the randomised APS (a uniform share of the class's own probability
    taken off), used only to compare scores.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if score == PLAIN:
        return 1.0 - probs
    if score != APS:
        raise ConformalError(f"unknown conformal score {score!r} (known: {PLAIN!r}, {APS!r})")
    order = np.argsort(-probs, axis=1, kind="stable")
    ranks = np.argsort(order, axis=1, kind="stable")
    cumulative = np.cumsum(np.take_along_axis(probs, order, axis=1), axis=1)
    out = np.take_along_axis(cumulative, ranks, axis=1)
    if rng is not None:
        out = out - rng.random((len(probs), 1)) * probs
    return out


def quantile(scores: Sequence[float], level: float) -> float | None:
    """The ``ceil((n + 1) * level)``-th smallest of ``scores``; None (every class) when that rank exceeds n."""
    values = np.sort(np.asarray(scores, dtype=np.float64))
    # The rank is computed on a rounded product so that e.g. 0.95 * 100 is not read as 95.00000000000001.
    rank = math.ceil(round((len(values) + 1) * float(level), 9))
    if rank > len(values) or rank < 1:
        return None
    return float(values[rank - 1])


def _true_scores(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    return scores[np.arange(len(y)), y]


def fit(
    probs: np.ndarray, y: Sequence[int], labels: Sequence[str], levels: Sequence[float] = LEVELS, score: str = PLAIN
) -> dict:
    """The ``tumorlib.conformal`` section from calibration slices: their calibrated probabilities (n, K)
    and true class indices. Deterministic: the same inputs give the same thresholds."""
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=np.int64)
    if probs.ndim != 2 or probs.shape[1] != len(labels) or len(y) != len(probs):
        raise ConformalError(
            f"probabilities of shape {probs.shape} do not fit {len(y)} labels of {len(labels)} classes"
        )
    true = _true_scores(class_scores(probs, score), y)
    out: dict[str, Any] = {"method": MONDRIAN, "score": score, "levels": {}}
    for level in levels:
        per_class = {label: quantile(true[y == c], level) for c, label in enumerate(labels)}
        out["levels"][level_key(level)] = {"overall": quantile(true, level), "per_class": per_class}
    out["n"] = len(y)
    out["per_class_n"] = {label: int((y == c).sum()) for c, label in enumerate(labels)}
    return out


# --------------------------------------------------------------------------- thresholds in use


@dataclass(frozen=True)
class Thresholds:
    """A bundle's fitted thresholds, checked, ready to make sets (see :func:`fit` for the section)."""

    labels: tuple[str, ...]
    score: str
    method: str
    overall: dict[float, float | None]
    per_class: dict[float, dict[str, float | None]]

    @property
    def levels(self) -> tuple[float, ...]:
        return tuple(sorted(self.overall))

    @classmethod
    def from_config(cls, section: Any, labels: Sequence[str]) -> Thresholds:
        """Parse a ``tumorlib.conformal`` section; :class:`ConformalError` when it is malformed."""
        if not isinstance(section, Mapping):
            raise ConformalError(f"the conformal section is {section!r:.60}, not a mapping")
        score, method = section.get("score", PLAIN), section.get("method", MONDRIAN)
        if score not in (PLAIN, APS) or method not in (OVERALL, MONDRIAN):
            raise ConformalError(f"unknown conformal score {score!r} or method {method!r}")
        levels = section.get("levels")
        if not isinstance(levels, Mapping) or not levels:
            raise ConformalError("the conformal section has no levels")
        overall: dict[float, float | None] = {}
        per_class: dict[float, dict[str, float | None]] = {}
        for key, entry in levels.items():
            try:
                level = float(key)
            except ValueError:
                raise ConformalError(f"conformal level {key!r} is not a number") from None
            if not 0 < level < 1 or not isinstance(entry, Mapping):
                raise ConformalError(f"conformal level {key!r} is not a level in (0, 1) with thresholds")
            classes = entry.get("per_class") or {}
            if not isinstance(classes, Mapping) or set(classes) != set(labels):
                raise ConformalError(
                    f"conformal level {key!r}: per-class thresholds for other classes than the model's"
                )
            overall[level] = _threshold(entry.get("overall"), key)
            per_class[level] = {label: _threshold(classes[label], key) for label in labels}
        return cls(tuple(labels), score, method, overall, per_class)

    def mask(self, probs: np.ndarray, level: float, method: str | None = None) -> np.ndarray:
        """(n, K) booleans: which classes are in each slice's set at ``level`` (never an empty row)."""
        probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
        scores = class_scores(probs, self.score)
        if (method or self.method) == MONDRIAN:
            limits = np.array([_inf(self.per_class[level][label]) for label in self.labels])[None, :]
        else:
            limits = np.full((1, len(self.labels)), _inf(self.overall[level]))
        inside = scores <= limits
        inside[np.arange(len(probs)), probs.argmax(axis=1)] = True  # never empty: the top class is always in
        return inside

    def sets(self, probs: Sequence[float], method: str | None = None) -> dict[float, list[str]]:
        """One slice's set at every level, most probable class first."""
        row = np.asarray(probs, dtype=np.float64)
        order = np.argsort(-row, kind="stable")
        out = {}
        for level in self.levels:
            inside = self.mask(row, level, method)[0]
            out[level] = [self.labels[i] for i in order if inside[i]]
        return out


def _threshold(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConformalError(f"conformal level {key!r}: threshold {value!r} is not a number")
    return float(value)


def _inf(value: float | None) -> float:
    """A stored threshold; None (too few slices for the level) lets every class in."""
    return math.inf if value is None else value


def from_bundle(section: Mapping, labels: Sequence[str]) -> Thresholds | None:
    """The thresholds in a bundle's ``tumorlib`` section, or None when it has none or they are unusable
    (logged: the sets are secondary, the prediction stands without them)."""
    stored = section.get("conformal") if isinstance(section, Mapping) else None
    if stored is None:
        return None
    try:
        return Thresholds.from_config(stored, labels)
    except ConformalError as err:
        log.error("No prediction sets for this model: its config.json's tumorlib.conformal is unusable: %s", err)
        return None


# --------------------------------------------------------------------------- measuring sets


def set_stats(inside: np.ndarray, y: Sequence[int], labels: Sequence[str]) -> dict:
    """Coverage, mean set size and share of one-class sets, overall and by true class, of set masks (n, K)."""
    y = np.asarray(y, dtype=np.int64)
    covered = inside[np.arange(len(y)), y]
    sizes = inside.sum(axis=1)

    def mean(values: np.ndarray) -> float | None:
        return float(values.mean()) if len(values) else None

    return {
        "coverage": mean(covered),
        "mean_set_size": mean(sizes),
        "singleton_share": mean(sizes == 1),
        "per_class_coverage": {label: mean(covered[y == c]) for c, label in enumerate(labels)},
        "per_class_set_size": {label: mean(sizes[y == c]) for c, label in enumerate(labels)},
    }


def evaluate(probs: np.ndarray, y: Sequence[int], thresholds: Thresholds, how: str = "bundle") -> list[dict]:
    """The ``conformal`` section of ``metrics.json``: per level, the sets' coverage, mean size and share of
    one-class sets with one threshold, and under ``mondrian`` with per-class thresholds. ``how`` says where
    the thresholds came from ("bundle": the shipped ones; "cross-fitted": see :func:`crossfit`)."""
    labels = list(thresholds.labels)
    out = []
    for level in thresholds.levels:
        entry: dict[str, Any] = {"level": level, "thresholds": how, "score": thresholds.score, "n": len(y)}
        entry.update(set_stats(thresholds.mask(probs, level, OVERALL), y, labels))
        entry["mondrian"] = set_stats(thresholds.mask(probs, level, MONDRIAN), y, labels)
        out.append(entry)
    return out


def crossfit_thresholds(
    logits: np.ndarray,
    y: Sequence[int],
    folds: Sequence[int],
    labels: Sequence[str],
    levels: Sequence[float] = LEVELS,
    score: str = PLAIN,
) -> dict[int, tuple[float, Thresholds]]:
    """Per fold, (the temperature, the thresholds) fitted on the other folds' slices only."""
    logits, y, folds = np.asarray(logits, dtype=np.float64), np.asarray(y), np.asarray(folds)
    out = {}
    for k in np.unique(folds):
        rest = folds != k
        temperature = fit_temperature(logits[rest], y[rest]) if rest.any() else 1.0
        section = fit(softmax(logits[rest], temperature), y[rest], labels, levels, score)
        out[int(k)] = (temperature, Thresholds.from_config(section, labels))
    return out


def crossfit(
    logits: np.ndarray,
    y: Sequence[int],
    folds: Sequence[int],
    labels: Sequence[str],
    levels: Sequence[float] = LEVELS,
    score: str = PLAIN,
) -> list[dict]:
    """The cross-fitted ``conformal`` section of a cross-validation run's out-of-fold logits.

    Each fold's slices are calibrated with the temperature fitted on the other folds and get sets from
    thresholds fitted on the other folds' slices, never their own; the figures pool every slice.
    """
    logits, y, folds = np.asarray(logits, dtype=np.float64), np.asarray(y, dtype=np.int64), np.asarray(folds)
    fitted = crossfit_thresholds(logits, y, folds, labels, levels, score)
    masks = {(level, how): np.zeros(logits.shape, dtype=bool) for level in levels for how in (OVERALL, MONDRIAN)}
    for k, (temperature, thresholds) in fitted.items():
        own = folds == k
        probs = softmax(logits[own], temperature)
        for level, how in masks:
            masks[level, how][own] = thresholds.mask(probs, level, how)
    out = []
    for level in levels:
        entry: dict[str, Any] = {"level": level, "thresholds": "cross-fitted", "score": score, "n": len(y)}
        entry.update(set_stats(masks[level, OVERALL], y, labels))
        entry["mondrian"] = set_stats(masks[level, MONDRIAN], y, labels)
        out.append(entry)
    return out


def size_at_coverage(scores: np.ndarray, y: Sequence[int], target: float) -> tuple[float, float]:
    """(coverage, mean set size) with the smallest threshold whose sets (top class always in) cover at least
    ``target`` of these slices: how efficient a score is at a given coverage, for comparing scores."""
    y = np.asarray(y, dtype=np.int64)
    rows, top = np.arange(len(y)), scores.argmin(axis=1)

    def sets_at(t: float) -> np.ndarray:
        inside = scores <= t
        inside[rows, top] = True
        return inside

    candidates = np.unique(scores)
    lo, hi = 0, len(candidates) - 1
    while lo < hi:  # coverage grows with the threshold: bisect for the first that reaches the target
        mid = (lo + hi) // 2
        if sets_at(candidates[mid])[rows, y].mean() >= target:
            hi = mid
        else:
            lo = mid + 1
    inside = sets_at(candidates[lo])
    return float(inside[rows, y].mean()), float(inside.sum(axis=1).mean())


def compare_scores(probs: np.ndarray, y: Sequence[int], coverages: Sequence[float] = (0.95, 0.99)) -> dict:
    """Mean set size of each score at equal coverage on the same probabilities: the evidence for the score
    used (``conformal_scores`` in ``metrics.json``). Randomised APS is drawn with a fixed seed (0)."""
    candidates = {
        PLAIN: class_scores(probs, PLAIN),
        APS: class_scores(probs, APS),
        f"{APS}, randomised (seed 0)": class_scores(probs, APS, np.random.default_rng(0)),
    }
    rows = []
    for name, scores in candidates.items():
        for target in coverages:
            coverage, size = size_at_coverage(scores, y, target)
            rows.append({"score": name, "target": target, "coverage": coverage, "mean_set_size": size})
    return {
        "chosen": PLAIN,
        "how": (
            "the cross-fitted out-of-fold probabilities; per score, the smallest threshold whose sets (the most "
            "probable class always in) hold the true class of at least the target share of slices"
        ),
        "rows": rows,
    }
