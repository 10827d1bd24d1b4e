"""The numbers of ``metrics.json``: which section holds what, how each number is checked, how it is printed."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from ..labels import NO_TUMOUR_LABELS
from .files import ResultsError

__all__ = [
    "GATE_TEST_SETS",
    "METRIC_NAMES",
    "MISSING",
    "NO_TUMOUR_CAVEAT",
    "NO_TUMOUR_LABELS",
    "PER_CLASS_METRICS",
    "auc_ci_text",
    "baseline",
    "calibration",
    "cam",
    "ceiling",
    "ci_level",
    "ci_level_text",
    "ci_method",
    "ci_text",
    "class_auc",
    "conformal",
    "conformal_level",
    "conformal_scores",
    "confusion_matrix",
    "cv_summary",
    "ece",
    "ece_before",
    "folds",
    "format_auc",
    "format_count",
    "format_interval",
    "format_mean_std",
    "format_pct",
    "format_set_size",
    "format_share",
    "gate",
    "integer",
    "interval",
    "is_no_tumour",
    "labels",
    "localiser",
    "macro",
    "n_folds",
    "no_tumour_labels",
    "no_tumour_scores",
    "number",
    "patient_level",
    "per_class",
    "reliability",
    "roc_curve",
    "section",
    "temperature",
    "value",
]

MISSING = "—"

#: The per-class metrics every table and figure shows, and their display names.
PER_CLASS_METRICS = ("precision", "recall", "specificity", "f1")
METRIC_NAMES = {
    "precision": "Precision",
    "recall": "Recall",
    "specificity": "Specificity",
    "f1": "F1",
    "f_beta": "F-beta",
    "accuracy": "Accuracy",
}


# --------------------------------------------------------------------------- numbers and formatting


def number(value: Any) -> float | None:
    """``value`` as a finite float; None for missing, null, NaN, infinity, a bool or text."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def integer(value: Any) -> int | None:
    """``value`` as an int when it is a whole number, else None."""
    num = number(value)
    return int(num) if num is not None and num.is_integer() else None


def format_pct(value: Any, digits: int = 1) -> str:
    """``0.9534`` -> ``"95.3%"``; a dash when the value is missing."""
    num = number(value)
    return MISSING if num is None else f"{num * 100:.{digits}f}%"


def interval(ci: Any) -> tuple[float, float] | None:
    """A stored ``[low, high]`` interval as two floats; None when it is missing or incomplete."""
    if not isinstance(ci, Sequence) or isinstance(ci, str) or len(ci) != 2:
        return None
    lo, hi = number(ci[0]), number(ci[1])
    return None if lo is None or hi is None else (lo, hi)


def ci_text(ci: Any) -> str:
    """``[0.941, 0.964]`` -> ``"94.1–96.4"``; empty when there is no interval."""
    bounds = interval(ci)
    return "" if bounds is None else f"{bounds[0] * 100:.1f}–{bounds[1] * 100:.1f}"


def format_interval(value: Any, ci: Any = None) -> str:
    """``0.953, [0.941, 0.964]`` -> ``"95.3% (94.1–96.4)"``; just the value when there is no interval."""
    text = format_pct(value)
    bounds = ci_text(ci)
    return f"{text} ({bounds})" if bounds and text != MISSING else text


def auc_ci_text(ci: Any) -> str:
    """``[0.941, 0.964]`` -> ``"0.941–0.964"``: an AUC interval; empty when there is none."""
    bounds = interval(ci)
    return "" if bounds is None else f"{bounds[0]:.3f}–{bounds[1]:.3f}"


def format_auc(value: Any, ci: Any = None) -> str:
    """``0.9884`` -> ``"0.988"``, with its interval in brackets when given; a dash when missing."""
    # AUC is an area, not a rate: the convention is a 3-decimal number, not a percentage.
    num = number(value)
    if num is None:
        return MISSING
    bounds = auc_ci_text(ci)
    return f"{num:.3f} ({bounds})" if bounds else f"{num:.3f}"


def format_mean_std(summary: Any) -> str:
    """``{"mean": 0.894, "std": 0.034}`` as "89.4 ± 3.4%" (a fold summary of :func:`summarize_folds`)."""
    if not isinstance(summary, Mapping):
        return MISSING
    mean, std = number(summary.get("mean")), number(summary.get("std"))
    if mean is None:
        return MISSING
    return f"{mean * 100:.1f}%" if std is None else f"{mean * 100:.1f} ± {std * 100:.1f}%"


def format_count(value: Any) -> str:
    """``3096`` -> ``"3,096"``; a dash when missing."""
    num = number(value)
    return MISSING if num is None else f"{int(num):,}"


def format_set_size(value: Any, digits: int = 2) -> str:
    """A prediction set's mean size in classes, to two decimals (``1.0656`` -> ``"1.07"``)."""
    num = number(value)
    return MISSING if num is None else f"{num:.{digits}f}"


def format_share(value: Any) -> str:
    """A value in [0, 1] that is not a rate (a map's peak), to two decimals."""
    num = number(value)
    return MISSING if num is None else f"{num:.2f}"


# --------------------------------------------------------------------------- sections of metrics.json


def section(obj: Any, *path: str) -> Mapping:
    """The mapping at ``path`` inside ``obj``: ``{}`` when a step is missing or null.

    Raises :class:`ResultsError` when a step holds something else (a file that parses but is not what
    evaluation writes): a reader that skipped it would quietly show less than the file holds.
    """
    found: Any = obj
    for depth in range(len(path) + 1):
        if found is None:
            return {}
        if not isinstance(found, Mapping):
            where = ".".join(path[:depth]) or "the file"
            raise ResultsError(f"{where} is {found!r:.60}, not a mapping")
        if depth < len(path):
            found = found.get(path[depth])
    return found


def value(obj: Any, *path: str) -> Any:
    """The value at ``path`` inside nested mappings (None when a step is missing); see :func:`section`."""
    return section(obj, *path[:-1]).get(path[-1]) if path else obj


def labels(metrics: Any) -> list[str]:
    """The class labels, in the order of the confusion matrix."""
    stored = value(metrics, "labels")
    return [str(label) for label in stored] if isinstance(stored, Sequence) and not isinstance(stored, str) else []


def per_class(metrics: Any, label: str) -> Mapping:
    """One class's one-vs-rest figures (precision, recall, specificity, f1, accuracy, support, ``*_ci``)."""
    return section(metrics, "per_class", label)


def macro(metrics: Any) -> Mapping:
    """The macro averages over classes (each with its ``*_ci``)."""
    return section(metrics, "macro")


def class_auc(metrics: Any, label: str) -> Any:
    """One class's one-vs-rest ROC AUC, as stored."""
    return roc_curve(metrics, label).get("auc")


def ci_level(metrics: Any) -> float | None:
    """The stored interval level as a fraction (``0.95``; a stored ``95`` reads the same); None if absent."""
    level = number(value(metrics, "ci", "level"))
    if level is None or level <= 0:
        return None
    return level / 100 if level > 1 else level


def ci_level_text(metrics: Any) -> str:
    """``"95"``: the interval level in percent, 95 when not stored."""
    level = ci_level(metrics)
    return f"{100 * (0.95 if level is None else level):g}"


def ci_method(metrics: Any) -> str:
    """``"bootstrap, patient, 1000 resamples"``: how the intervals were drawn, as stored; empty if not."""
    ci = section(metrics, "ci")
    parts = [str(ci[key]) for key in ("method", "unit") if ci.get(key)]
    if ci.get("resamples"):
        parts.append(f"{ci['resamples']} resamples")
    return ", ".join(parts)


def confusion_matrix(metrics: Any, normalized: bool = False) -> list[list] | None:
    """The confusion matrix (rows true class, columns predicted), or its row shares; None unless it is square
    over the labels."""
    stored = value(metrics, "confusion_matrix_normalized" if normalized else "confusion_matrix")
    k = len(labels(metrics))
    if not k or not isinstance(stored, list) or len(stored) != k:
        return None
    return stored if all(isinstance(row, list) and len(row) == k for row in stored) else None


def roc_curve(metrics: Any, label: str) -> Mapping:
    """One class's one-vs-rest ROC curve (``fpr``, ``tpr``, ``auc``)."""
    return section(metrics, "roc", label)


def cv_summary(metrics: Any) -> Mapping:
    """Mean and sample std over cross-validation folds (:func:`tumorlib.metrics.summarize_folds`)."""
    return section(metrics, "cv_summary")


def folds(metrics: Any) -> list[Mapping]:
    """The per-fold metrics of a cross-validation run, in fold order (an unreadable fold is ``{}``)."""
    stored = value(metrics, "folds")
    if not isinstance(stored, Sequence) or isinstance(stored, str):
        return []
    return [fold if isinstance(fold, Mapping) else {} for fold in stored]


def n_folds(metrics: Any) -> int | None:
    """How many cross-validation folds the figures pool; None for a single run."""
    return integer(cv_summary(metrics).get("n_folds")) or len(folds(metrics)) or None


def calibration(metrics: Any) -> Mapping:
    """How the probabilities were calibrated (``method``, ``note``, ``fold_temperatures``...)."""
    return section(metrics, "calibration")


def ece(metrics: Any) -> float | None:
    """Expected calibration error of the calibrated probabilities."""
    return number(value(metrics, "ece"))


def ece_before(metrics: Any) -> float | None:
    """Expected calibration error of the plain softmax, before temperature scaling."""
    return number(value(metrics, "ece_uncalibrated"))


def temperature(metrics: Any) -> float | None:
    """The fitted calibration temperature."""
    return number(value(metrics, "temperature"))


def conformal(metrics: Any, mondrian: bool = False) -> list[Mapping]:
    """The prediction sets as measured, one entry per coverage level in level order (:mod:`tumorlib.conformal`).

    Each holds ``level``, ``coverage``, ``mean_set_size``, ``singleton_share``, ``per_class_coverage`` and
    ``per_class_set_size`` of the sets made with one threshold over all classes, or with ``mondrian`` those
    made with one threshold per class (what the app shows), plus ``thresholds`` ("cross-fitted": each
    fold's slices scored with thresholds fitted on the other folds; "bundle": the model's own), ``score``
    and ``n``. Empty when the file has no prediction sets.
    """
    stored = value(metrics, "conformal")
    if stored is None:
        return []
    if not isinstance(stored, Sequence) or isinstance(stored, str):
        raise ResultsError(f"conformal is {stored!r:.60}, not a list of levels")
    out = []
    for entry in stored:
        if not isinstance(entry, Mapping) or number(entry.get("level")) is None:
            raise ResultsError(f"a conformal entry is {entry!r:.60}, not a level with its figures")
        figures = section(entry, "mondrian") if mondrian else entry
        shared = {key: entry.get(key) for key in ("thresholds", "score", "n")}
        out.append({**{k: v for k, v in figures.items() if k != "mondrian"}, **shared, "level": number(entry["level"])})
    return sorted(out, key=lambda e: e["level"])


def conformal_level(metrics: Any, level: float, mondrian: bool = False) -> Mapping:
    """The :func:`conformal` entry at ``level`` (0.9, 0.95, 0.99); ``{}`` when it was not measured."""
    return next((e for e in conformal(metrics, mondrian) if abs(e["level"] - level) < 1e-9), {})


def conformal_scores(metrics: Any) -> Mapping:
    """The comparison of conformal scores at equal coverage (``chosen``, ``how``, ``rows`` of ``score``,
    ``target``, ``coverage``, ``mean_set_size``): why the plain score is used."""
    return section(metrics, "conformal_scores")


def reliability(metrics: Any, calibrated: bool = True) -> list[Mapping]:
    """The reliability bins (``lower``, ``upper``, ``count``, ``confidence``, ``accuracy``)."""
    stored = value(metrics, "reliability" if calibrated else "reliability_uncalibrated")
    return [b for b in stored if isinstance(b, Mapping)] if isinstance(stored, list) else []


def cam(metrics: Any) -> Mapping:
    """Grad-CAM against tumour masks: ``pointing_game``, ``energy_in_mask``, ``n``, ``baseline``, ``ceiling``."""
    return section(metrics, "cam")


def localiser(metrics: Any) -> Mapping:
    """The tumour map against tumour masks: pointing game, energy, ``soft_dice``, ``peak``, ``no_tumor``."""
    return section(metrics, "localiser")


def gate(metrics: Any) -> Mapping:
    """The not-an-MRI gate on the evaluation slices, and on its test sets (:data:`GATE_TEST_SETS`)."""
    return section(metrics, "gate")


def baseline(check: Any) -> Mapping:
    """A heatmap check's chance levels: the image centre's pointing game, a uniform map's energy."""
    return section(check, "baseline")


def ceiling(check: Any) -> tuple[float, int, int] | None:
    """``(best pointing game, grid rows, grid columns)``: the most any heatmap on the feature grid can score."""
    stored = section(check, "ceiling")
    best, grid = number(stored.get("pointing_game")), stored.get("grid")
    if best is None or not isinstance(grid, Sequence) or isinstance(grid, str) or len(grid) != 2:
        return None
    return best, grid[0], grid[1]


def patient_level(metrics: Any) -> Mapping:
    """One answer per patient (:mod:`tumorlib.patients`): ``n`` patients, ``accuracy`` and ``accuracy_ci``,
    ``per_class`` recall and support, ``confusion_matrix`` over patients, ``mixed``, ``vote``, the same
    slices one by one (``slice_accuracy``), which slices were pooled (``accepted``) and the images without
    a patient id (``without_patient_id``); ``{}`` when the data carried no patient ids."""
    return section(metrics, "patient_level")


def no_tumour_scores(check: Any) -> Mapping:
    """The tumour map on tumour-free slices (``peak``, ``n``)."""
    return section(check, "no_tumor")


#: The gate's test sets in ``metrics.json`` (built by ``tests/nonmri.py``): key, title, short name, and
#: what they hold.
GATE_TEST_SETS = (
    (
        "non_mri_test",
        "other images",
        "non-MRI images",
        "non-MRI images (photographs and drawings from scikit-image, rendered text, noise, blank and gradient images)",
    ),
    (
        "other_medical_test",
        "other medical images",
        "other medical images",
        "(CT of the head and spine, a nuclear bone scan, abdominal MR, ultrasound: pydicom's test files, chosen "
        "after the gate was designed)",
    ),
)


# --------------------------------------------------------------------------- the no-tumour class

#: Label spellings that mean "no tumour" in the datasets we read.

NO_TUMOUR_CAVEAT = (
    "The no-tumour slices come from other collections (Br35H, SARTAJ) than the tumour slices (Cheng et al., "
    "figshare): other scanners, sequences, resolutions and post-processing. A model can tell that class apart "
    "by the source of the image alone, so its no-tumour figures (and the overall figures they feed) overstate "
    "how well it would separate tumour from no tumour on scans from one scanner."
)


def is_no_tumour(label: Any) -> bool:
    """Whether a label means "no tumour" (``no_tumor``, ``No Tumour``, ``healthy``...)."""
    return str(label).lower().replace(" ", "_").replace("-", "_") in NO_TUMOUR_LABELS


def no_tumour_labels(metrics_or_labels: Mapping | Sequence[str]) -> list[str]:
    """The labels of a run (or a label list) that mean "no tumour", which need :data:`NO_TUMOUR_CAVEAT`."""
    names = labels(metrics_or_labels) if isinstance(metrics_or_labels, Mapping) else list(metrics_or_labels)
    return [str(label) for label in names if is_no_tumour(label)]
