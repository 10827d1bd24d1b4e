"""What the readers say about the numbers: the headline cards and the
sentences about the Grad-CAM and tumour-map checks, calibration and prediction sets that several readers print."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .values import (
    auc_ci_text,
    baseline,
    ceiling,
    ci_level,
    ci_level_text,
    ci_method,
    ci_text,
    conformal_level,
    cv_summary,
    ece,
    ece_before,
    format_auc,
    format_count,
    format_pct,
    format_set_size,
    integer,
    macro,
    no_tumour_scores,
    number,
    patient_level,
    reliability,
    section,
    value,
)

__all__ = [
    "ceiling_sentence",
    "centre_sentence",
    "chance_sentence",
    "coverage_sentence",
    "ece_sentence",
    "headline",
    "patient_headline",
    "patient_sentence",
    "peak_sentence",
    "pointing_sentence",
]

# --------------------------------------------------------------------------- the headline


def headline(metrics: Mapping) -> list[dict]:
    """The summary cards: accuracy, macro F1, macro specificity, macro AUC and how much was evaluated."""
    level, method = ci_level_text(metrics), ci_method(metrics)
    ci_help = f" Interval: {level}% CI ({method})." if method else f" Interval: {level}% CI."
    averages = macro(metrics)

    def card(label: str, shown: str, ci: str, help_text: str) -> dict:
        return {"label": label, "value": shown, "ci": f"{level}% CI {ci}" if ci else "", "help": help_text}

    n, groups = metrics.get("n"), metrics.get("n_groups")
    evaluated = f"{format_count(n)} slices"
    if number(groups) is not None:
        evaluated = f"{format_count(groups)} patients · {evaluated}"
    pooled_over = cv_summary(metrics).get("n_folds")
    pooled = f" Pooled over {pooled_over} cross-validation folds." if pooled_over else ""
    return [
        card(
            "Accuracy",
            format_pct(metrics.get("accuracy")),
            ci_text(metrics.get("accuracy_ci")),
            "Share of test slices classified correctly." + pooled + ci_help,
        ),
        card(
            "Macro F1",
            format_pct(averages.get("f1")),
            ci_text(averages.get("f1_ci")),
            "Harmonic mean of precision and recall, averaged over classes with equal weight." + ci_help,
        ),
        card(
            "Macro specificity",
            format_pct(averages.get("specificity")),
            ci_text(averages.get("specificity_ci")),
            "Share of slices not of a class that were not called that class, averaged over classes." + ci_help,
        ),
        card(
            "Macro AUC",
            format_auc(metrics.get("macro_auc")),
            auc_ci_text(metrics.get("macro_auc_ci")),
            "Area under the one-vs-rest ROC curve, averaged over classes (1.0 is perfect, 0.5 is chance).",
        ),
        {
            "label": "Evaluated",
            "value": evaluated,
            "ci": "",
            "help": "Test-set size. The split is by patient: no patient is in both train and test.",
        },
    ]


def patient_headline(metrics: Mapping) -> list[dict]:
    """The cards of the answers per patient, as :func:`headline`'s: accuracy with its interval, the majority
    vote's, the same slices one by one, how many patients; none when the file has no answers per patient."""
    stored = patient_level(metrics)
    n = integer(stored.get("n"))
    if number(stored.get("accuracy")) is None or not n:
        return []
    level = ci_level_text(stored)
    bounds = ci_text(stored.get("accuracy_ci"))
    mixed = integer(stored.get("mixed")) or 0
    return [
        {
            "label": "Accuracy per patient",
            "value": format_pct(stored["accuracy"]),
            "ci": f"{level}% CI {bounds}" if bounds else "",
            "help": "Share of patients whose answer (the class with the highest mean probability over their "
            f"slices) is right. Interval: {level}% CI (percentile bootstrap over patients).",
        },
        {
            "label": "Majority vote",
            "value": format_pct(value(stored, "vote", "accuracy")),
            "ci": "",
            "help": "Share of patients whose slices' most frequent class is right (ties: the higher mean probability).",
        },
        {
            "label": "Same slices, one by one",
            "value": format_pct(stored.get("slice_accuracy")),
            "ci": "",
            "help": f"Accuracy of the {format_count(stored.get('n_slices'))} slices of these patients, each "
            "scored on its own.",
        },
        {
            "label": "Patients",
            "value": f"{n:,}",
            "ci": f"{mixed:,} mixed",
            "help": "Patients answered; mixed: patients whose slices do not all give the same class.",
        },
    ]


# --------------------------------------------------------------------------- sentences


def pointing_sentence(check: Any) -> str:
    """How often a heatmap's peak hit the tumour on held-out patients, beside the image centre's score."""
    hit = number(value(check, "pointing_game"))
    if hit is None:
        return ""
    n = integer(value(check, "n"))
    where = f" of {n:,} slices" if n is not None and n > 0 else " of slices"
    text = f"On held-out patients its peak falls inside the tumour on {format_pct(hit)}{where}"
    centre = number(baseline(check).get("pointing_game"))
    if centre is not None:
        text += f" (a fixed point at the image centre: {format_pct(centre)})"
    return text + "."


def chance_sentence(check: Any) -> str:
    """The chance levels of a Grad-CAM check: without them a pointing game means little."""
    base = baseline(check)
    point, energy = number(base.get("pointing_game")), number(base.get("energy_in_mask"))
    if point is None or energy is None:
        return ""
    return (
        f"Chance levels on the same slices: a heatmap that always peaks at the image centre scores "
        f"{format_pct(point)}, and a uniform one puts {format_pct(energy)} of its energy inside the mask."
    )


def ceiling_sentence(check: Any) -> str:
    """The best pointing game any heatmap on the model's feature grid could reach."""
    top = ceiling(check)
    if top is None:
        return ""
    best, rows, cols = top
    return (
        f"The heatmap is upsampled from a {rows} x {cols} feature grid, so no heatmap of this model "
        f"could point inside the tumour on more than {format_pct(best)} of these slices."
    )


def centre_sentence(check: Any) -> str:
    """The image centre's pointing game on the slices of a tumour-map check."""
    centre = number(baseline(check).get("pointing_game"))
    return "" if centre is None else f"A fixed point at the image centre scores {format_pct(centre)}."


def peak_sentence(check: Any) -> str:
    """The tumour map's mean peak with and without a tumour: a map that also glows on healthy slices says little."""
    peak, quiet = number(value(check, "peak")), no_tumour_scores(check)
    q_peak, q_n = number(quiet.get("peak")), integer(quiet.get("n"))
    if peak is None or q_peak is None or not q_n:
        return ""
    return f"Mean peak {peak:.2f} on tumour slices, {q_peak:.2f} on {q_n} no-tumour slices."


def ece_sentence(metrics: Any) -> str:
    """The expected calibration error, after and (when stored) before temperature scaling."""
    after, before = ece(metrics), ece_before(metrics)
    if after is None:
        return ""
    bins = len(reliability(metrics))
    how = f", {bins} equal-width bins" if bins else ""
    text = f"Expected calibration error (top label{how}) on the evaluation set: {format_pct(after)}"
    return text + (f"; before temperature scaling: {format_pct(before)}." if before is not None else ".")


def coverage_sentence(metrics: Any, level: float = 0.95) -> str:
    """How often the prediction sets at ``level`` (per-class thresholds, as the app shows them) held the true
    class where they were measured, the weakest class's share, and their mean size; empty if not measured."""
    entry = conformal_level(metrics, level, mondrian=True)
    covered = number(entry.get("coverage"))
    if covered is None:
        return ""
    where = {
        "cross-fitted": "on held-out patients, with thresholds fitted without them",
        "bundle": "on the evaluation set, with the model's own thresholds",
    }.get(str(entry.get("thresholds")), "on the evaluation set")
    n = integer(entry.get("n"))
    text = f"Measured {where}: the {format_pct(level, 0)} set held the true class on {format_pct(covered)}"
    text += f" of {n:,} slices" if n else " of slices"
    stored = entry.get("per_class_coverage")
    shares = {str(k): number(v) for k, v in stored.items()} if isinstance(stored, Mapping) else {}
    classes = {k: v for k, v in shares.items() if v is not None}
    if classes:
        weakest = min(classes, key=classes.__getitem__)
        text += f" ({weakest.replace('_', ' ')}, the lowest class: {format_pct(classes[weakest])})"
    return text + f", with {format_set_size(entry.get('mean_set_size'))} classes on average."


def patient_sentence(metrics: Any) -> str:
    """How often the answer per patient is right, beside the same slices one by one and a majority vote;
    empty when the file has no answers per patient."""
    stored = patient_level(metrics)
    accuracy, n = number(stored.get("accuracy")), integer(stored.get("n"))
    if accuracy is None or not n:
        return ""
    text = (
        "One answer per patient (the class with the highest mean probability over the patient's slices) is right "
        f"for {format_pct(accuracy)} of {n:,} patients"
    )
    bounds = ci_text(stored.get("accuracy_ci"))
    if bounds:
        level = ci_level(stored)
        text += f" ({format_pct(0.95 if level is None else level, 0)} CI {bounds}, patient bootstrap)"
    slices, n_slices = number(stored.get("slice_accuracy")), integer(stored.get("n_slices"))
    if slices is not None:
        text += f", against {format_pct(slices)} for their {format_count(n_slices)} slices one by one"
    vote = number(value(stored, "vote", "accuracy"))
    if vote is not None:
        text += f"; a majority vote of the slices is right for {format_pct(vote)}"
    text += "."
    mixed = integer(stored.get("mixed"))
    if mixed is not None:
        text += f" The slices of {mixed:,} of the {n:,} patients do not all give the same class."
    text += f" Slices pooled: {stored.get('accepted') or 'every slice'}."
    refused, unanswered = integer(stored.get("refused_slices")), integer(stored.get("unanswered"))
    if refused:
        text += f" Left out, refused by the not-an-MRI check: {_count(refused, 'slice')}"
        text += f"; without an answer, every slice refused: {_count(unanswered, 'patient')}." if unanswered else "."
    apart = section(stored, "without_patient_id")
    apart_n, apart_accuracy = integer(apart.get("n")), number(apart.get("accuracy"))
    if apart_n and apart_accuracy is not None:
        text += (
            f" Scored one by one, apart: the {_count(apart_n, 'image')} without a patient id, "
            f"{format_pct(apart_accuracy)} right."
        )
    return text


def _count(n: int, noun: str) -> str:
    """``1 slice``, ``2,393 slices``."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")
