"""Tables of the results an evaluation run wrote to disk, as pandas DataFrames.

The paper comparison, per-class and per-fold tables, run comparisons, the other checks (Grad-CAM, the
tumour map, the input gate), the worst misclassifications, ablations and training recipes. The apps and
the HTML report show these same frames, so a number reads the same wherever it is shown. Every value
comes from :mod:`tumorlib.results`; nothing is recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from . import results
from .results import (
    METRIC_NAMES,
    MISSING,
    PAPER,
    PAPER_COLUMNS,
    PER_CLASS_METRICS,
    ci_text,
    format_auc,
    format_count,
    format_interval,
    format_mean_std,
    format_pct,
    format_share,
    number,
)

__all__ = [
    "FOLD_COLUMN",
    "ablation_table",
    "checks_table",
    "comparison_table",
    "explanation_caption",
    "fold_table",
    "paper_table",
    "paper_table1",
    "paper_table2",
    "patient_table",
    "per_class_display",
    "per_class_table",
    "recipe_of",
    "recipe_table",
    "worst_misclassifications",
]

# --------------------------------------------------------------------------- the paper comparison


def _ours_column(metrics: Mapping) -> str:
    return f"Ours ({results.ci_level_text(metrics)}% CI)"


FOLD_COLUMN = "Ours, mean ± std over folds"


def _paper_cell(value: Any) -> str:
    return MISSING if value is None else format_pct(value)


#: Table 2's column: what the paper printed per class.
PAPER_TABLE2_COLUMN = "Paper (validation accuracy)"


def paper_table1(metrics: Mapping) -> pd.DataFrame:
    """Overall (macro-averaged) metrics, ours next to the paper's Table 1 as printed (both of its columns)."""
    macro = results.macro(metrics)
    cv = results.cv_summary(metrics)
    rows = [("Accuracy", metrics.get("accuracy"), metrics.get("accuracy_ci"), "accuracy")]
    for key in ("specificity", "precision", "recall", "f1"):
        rows.append((f"{METRIC_NAMES[key]} (macro)", macro.get(key), macro.get(f"{key}_ci"), key))
    records = []
    for name, value, ci, key in rows:
        record = {"Metric": name, _ours_column(metrics): format_interval(value, ci)}
        if cv:
            summary = cv.get("accuracy") if key == "accuracy" else results.section(cv, "macro").get(key)
            record[FOLD_COLUMN] = format_mean_std(summary)
        for column, shown in PAPER_COLUMNS.items():
            record[f"Paper: {shown}"] = _paper_cell(PAPER["columns"][column].get(key))
        records.append(record)
    return pd.DataFrame.from_records(records)


def paper_table2(metrics: Mapping) -> pd.DataFrame:
    """One-vs-rest accuracy per class, ours next to the paper's Table 2 as printed (its classes we lack too)."""
    cv_classes = results.section(metrics, "cv_summary", "per_class")
    ours = results.labels(metrics)
    records = []
    for label in [*ours, *(label for label in PAPER["per_class"] if label not in ours)]:
        stats = results.per_class(metrics, label) if label in ours else {}
        record = {
            "Class": label,
            _ours_column(metrics): format_interval(stats.get("accuracy"), stats.get("accuracy_ci")),
        }
        if cv_classes:
            record[FOLD_COLUMN] = format_mean_std(results.section(cv_classes, label).get("accuracy"))
        record[PAPER_TABLE2_COLUMN] = _paper_cell((PAPER["per_class"].get(label) or {}).get("accuracy"))
        records.append(record)
    columns = ["Class", _ours_column(metrics), *([FOLD_COLUMN] if cv_classes else []), PAPER_TABLE2_COLUMN]
    return pd.DataFrame.from_records(records, columns=columns)


def paper_table(metrics: Mapping) -> pd.DataFrame:
    """Tables 1 and 2 in one frame (Table 1's rows, then each class's accuracy), ours beside the paper's
    ResNet-50: for a single table such as the app's Model tab."""
    ours = _ours_column(metrics)
    first = paper_table1(metrics)
    second = paper_table2(metrics)
    paper = f"Paper: {PAPER_COLUMNS['dnn_with_resnet50']}"
    top = pd.DataFrame({"Metric": first["Metric"], ours: first[ours], paper: first[paper]})
    bottom = pd.DataFrame(
        {
            "Metric": [f"Accuracy, {label} (one vs rest)" for label in second["Class"]],
            ours: second[ours],
            paper: second[PAPER_TABLE2_COLUMN],
        }
    )
    return pd.concat([top, bottom], ignore_index=True)


# --------------------------------------------------------------------------- per class, per fold, per run


def per_class_table(metrics: Mapping, formatted: bool = True) -> pd.DataFrame:
    """Per-class precision, recall, specificity, F1 (each with its CI), AUC and support.

    ``formatted=False`` gives plain numbers (fractions, CI bounds as ``<name>_ci_low``/``_ci_high``)
    for sorting and CSV export.
    """
    records = []
    for label in results.labels(metrics):
        stats = results.per_class(metrics, label)
        if formatted:
            record: dict[str, Any] = {"Class": label}
            for key in PER_CLASS_METRICS:
                record[METRIC_NAMES[key]] = format_pct(stats.get(key))
                record[f"{METRIC_NAMES[key]} CI"] = ci_text(stats.get(f"{key}_ci")) or MISSING
            record["AUC"] = format_auc(results.class_auc(metrics, label))
            record["Support"] = format_count(stats.get("support"))
        else:
            record = {"class": label}
            for key in PER_CLASS_METRICS:
                bounds = results.interval(stats.get(f"{key}_ci"))
                record[key] = number(stats.get(key))
                record[f"{key}_ci_low"] = bounds[0] if bounds else None
                record[f"{key}_ci_high"] = bounds[1] if bounds else None
            record["auc"] = number(results.class_auc(metrics, label))
            support = number(stats.get("support"))
            record["support"] = None if support is None else int(support)
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    if not formatted and not frame.empty:
        # Missing values become NaN, so the columns stay numeric for sorting.
        numeric = [col for col in frame.columns if col not in ("class", "support")]
        frame[numeric] = frame[numeric].astype(float)
        frame["support"] = frame["support"].astype("Int64")
    return frame


def per_class_display(metrics: Mapping) -> pd.DataFrame:
    """The per-class table to sort on screen: rates in percent (numbers, not text) beside the CI text."""
    raw = per_class_table(metrics, formatted=False)
    text = per_class_table(metrics)
    if raw.empty:
        return raw
    out = pd.DataFrame({"Class": raw["class"]})
    for key in PER_CLASS_METRICS:
        name = METRIC_NAMES[key]
        out[name] = raw[key] * 100
        out[f"{name} CI"] = text[f"{name} CI"]
    out["AUC"] = raw["auc"]
    out["Support"] = raw["support"]
    return out


_FOLD_COLUMNS = (
    ("Accuracy", None, "accuracy"),
    ("Macro F1", "macro", "f1"),
    ("Macro precision", "macro", "precision"),
    ("Macro recall", "macro", "recall"),
    ("Macro specificity", "macro", "specificity"),
    ("ECE", None, "ece"),
)


def fold_table(metrics: Mapping) -> pd.DataFrame | None:
    """One row per cross-validation fold plus the mean ± std row (with the accuracy per patient where the
    folds have it); None for a single run."""
    folds = results.folds(metrics)
    if not folds:
        return None
    columns = _FOLD_COLUMNS
    if any(results.patient_level(fold) for fold in folds):
        columns = (*columns, ("Accuracy per patient", "patient_level", "accuracy"))
    records = []
    for index, fold in enumerate(folds, start=1):
        record = {"Fold": str(index)}
        for column, group, key in columns:
            source = results.section(fold, group) if group else fold
            record[column] = format_pct(source.get(key))
        record["n"] = format_count(fold.get("n"))
        records.append(record)
    # The summary row comes from cv_summary as evaluation wrote it, never averaged here.
    cv = results.cv_summary(metrics)
    summary = {"Fold": "Mean ± std"}
    for column, group, key in columns:
        summary[column] = format_mean_std((results.section(cv, group) if group else cv).get(key))
    summary["n"] = MISSING
    records.append(summary)
    return pd.DataFrame.from_records(records)


def patient_table(metrics: Mapping) -> pd.DataFrame | None:
    """Recall per patient of each true class that has patients (one answer per patient), with the count of
    patients; None when the file has no answers per patient."""
    stored = results.patient_level(metrics)
    if not stored:
        return None
    records = []
    for label in results.labels(metrics):
        entry = results.section(stored, "per_class", label)
        support = results.integer(entry.get("support"))
        if support:  # classes without patient ids (scored per image) have no row
            records.append({"Class": label, "Recall per patient": format_pct(entry.get("recall")), "Patients": support})
    return pd.DataFrame.from_records(records, columns=["Class", "Recall per patient", "Patients"])


_COMPARISON_ROWS = (
    ("Accuracy", None, "accuracy"),
    ("Balanced accuracy", None, "balanced_accuracy"),
    ("Macro F1", "macro", "f1"),
    ("Macro precision", "macro", "precision"),
    ("Macro recall", "macro", "recall"),
    ("Macro specificity", "macro", "specificity"),
)


def comparison_table(runs: Mapping[str, Mapping], formatted: bool = True) -> pd.DataFrame:
    """Headline metrics of several runs side by side, one row per run (for ablations)."""
    records = []
    for name, metrics in runs.items():
        record: dict[str, Any] = {"Run": name}
        for column, group, key in _COMPARISON_ROWS:
            source = results.section(metrics, group) if group else metrics
            value, ci = source.get(key), source.get(f"{key}_ci")
            record[column] = format_interval(value, ci) if formatted else number(value)
        if formatted:
            record["Macro AUC"] = format_auc(metrics.get("macro_auc"))
            record["ECE"] = format_pct(results.ece(metrics))
            record["n"] = format_count(metrics.get("n"))
        else:
            record["Macro AUC"] = number(metrics.get("macro_auc"))
            record["ECE"] = results.ece(metrics)
            record["n"] = number(metrics.get("n"))
        records.append(record)
    columns = ["Run", *(row[0] for row in _COMPARISON_ROWS), "Macro AUC", "ECE", "n"]
    return pd.DataFrame.from_records(records, columns=columns)


# --------------------------------------------------------------------------- other checks


def checks_table(metrics: Mapping) -> pd.DataFrame | None:
    """Grad-CAM and tumour-map localisation (pointing game, energy in mask, their chance levels) and the
    input gate's refusals; None when evaluation stored none of them."""
    rows = []
    cam, loc, gate = results.cam(metrics), results.localiser(metrics), results.gate(metrics)
    if cam:
        n = f" (n = {format_count(cam.get('n'))})"
        rows.append(("Grad-CAM pointing game" + n, format_pct(cam.get("pointing_game"))))
        rows.append(("Grad-CAM energy inside tumour mask" + n, format_pct(cam.get("energy_in_mask"))))
        base = results.baseline(cam)
        if base:
            rows.append(("Chance: pointing game of the image centre", format_pct(base.get("pointing_game"))))
            rows.append(("Chance: energy of a uniform map inside the mask", format_pct(base.get("energy_in_mask"))))
        ceiling = results.ceiling(cam)
        if ceiling is not None:
            best, grid_rows, grid_cols = ceiling
            grid = f"{grid_rows} x {grid_cols}"
            rows.append((f"Ceiling: best pointing game on the {grid} feature grid", format_pct(best)))
    if loc:
        n = f" (n = {format_count(loc.get('n'))})"
        rows.append(("Tumour map pointing game" + n, format_pct(loc.get("pointing_game"))))
        rows.append(("Tumour map energy inside tumour mask" + n, format_pct(loc.get("energy_in_mask"))))
        rows.append(("Tumour map soft Dice" + n, format_pct(loc.get("soft_dice"))))
        quiet = results.no_tumour_scores(loc)
        if quiet.get("n"):
            rows.append(
                (
                    f"Tumour map mean peak: tumour slices / no-tumour slices (n = {format_count(quiet.get('n'))})",
                    f"{format_share(loc.get('peak'))} / {format_share(quiet.get('peak'))}",
                )
            )
    if gate:
        rows.append(
            (f"Input gate: share refused (n = {format_count(gate.get('n'))})", format_pct(gate.get("refused_fraction")))
        )
    return pd.DataFrame(rows, columns=["Check", "Value"]) if rows else None


# --------------------------------------------------------------------------- predictions and explanations


def worst_misclassifications(predictions: pd.DataFrame, n: int = 10, formatted: bool = True) -> pd.DataFrame:
    """The ``n`` wrong predictions the model was most confident about, from ``predictions.csv``.

    Confidence is the stored probability of the predicted class (``prob_<pred_label>``); nothing is
    recomputed. ``formatted=False`` keeps the probabilities as fractions.
    """
    columns = ["Rank", "id", "patient", "True class", "Predicted", "Confidence", "P(true class)", "path"]
    wrong = predictions[predictions["true_label"].astype(str) != predictions["pred_label"].astype(str)]

    def prob(row: pd.Series, label: Any) -> float | None:
        return number(row.get(f"prob_{label}"))

    records = []
    for _, row in wrong.iterrows():
        records.append(
            {
                "id": str(row["id"]),
                "patient": "" if pd.isna(row.get("patient")) else str(row.get("patient")),
                "True class": str(row["true_label"]),
                "Predicted": str(row["pred_label"]),
                "Confidence": prob(row, row["pred_label"]),
                "P(true class)": prob(row, row["true_label"]),
                "path": "" if pd.isna(row.get("path")) else str(row.get("path")),
            }
        )
    frame = pd.DataFrame.from_records(records, columns=columns[1:])
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame["Confidence"] = frame["Confidence"].astype(float)
    frame["P(true class)"] = frame["P(true class)"].astype(float)
    frame = frame.sort_values(["Confidence", "id"], ascending=[False, True], na_position="last", kind="stable")
    frame = frame.head(max(0, int(n))).reset_index(drop=True)
    frame.insert(0, "Rank", range(1, len(frame) + 1))
    if formatted:
        for column in ("Confidence", "P(true class)"):
            frame[column] = [format_pct(value) for value in frame[column]]
    return frame


def _truthy(value: Any) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "yes", "1", "hit"):
            return True
        if lowered in ("false", "no", "0", "miss"):
            return False
        return None
    num = number(value)
    return None if num is None else bool(num)


def explanation_caption(row: Mapping) -> str:
    """``"glioma → meningioma · CAM of meningioma · pointing hit · 63.0% energy in mask"``."""
    true, pred = row.get("true_label"), row.get("pred_label")
    parts = []
    if isinstance(true, str) and isinstance(pred, str):
        parts.append(f"{true} ✓" if true == pred else f"{true} → {pred} ✗")
    target = row.get("target")
    if isinstance(target, str) and target:
        parts.append(f"CAM of {target}")
    hit = _truthy(row.get("pointing_hit"))
    if hit is not None:
        parts.append("pointing hit" if hit else "pointing miss")
    energy = number(row.get("energy_in_mask"))
    if energy is not None:
        parts.append(f"{format_pct(energy)} energy in mask")
    return " · ".join(parts) or str(row.get("file", ""))


# --------------------------------------------------------------------------- ablations and recipes


_ABLATION_COLUMNS = {
    "run": "Run",
    "recipe": "Recipe",
    "epochs": "Epochs",
    "input_size": "Input size",
    "init": "Initialisation",
    "wall_minutes": "Wall time (min)",
    "accuracy": "Accuracy",
    "macro_f1": "Macro F1",
    "notes": "Notes",
}


def ablation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The ablation table for display: rates as percentages, readable headers, unknown columns kept."""
    out = frame.copy()
    for column in ("accuracy", "macro_f1"):
        if column in out.columns:
            out[column] = [format_pct(value) for value in out[column]]
    if "wall_minutes" in out.columns:
        out["wall_minutes"] = [MISSING if number(v) is None else f"{number(v):,.1f}" for v in out["wall_minutes"]]
    for column in ("epochs", "input_size"):
        if column in out.columns:
            out[column] = [MISSING if number(v) is None else f"{number(v):g}" for v in out[column]]
    out = out.astype(object).where(out.notna(), MISSING)
    return out.rename(columns=_ABLATION_COLUMNS)


_RECIPE_FIELDS = (
    ("model", "Architecture"),
    ("pretrained", "Initialisation"),
    ("input_size", "Input size (px)"),
    ("classes", "Classes"),
    ("data", "Data"),
    ("folds", "Cross-validation folds"),
    ("epochs", "Epochs"),
    ("batch_size", "Batch size"),
    ("opt", "Optimiser"),
    ("lr", "Learning rate"),
    ("backbone_lr_scale", "Backbone lr scale"),
    ("sched", "Schedule"),
    ("label_smoothing", "Label smoothing"),
    ("balance", "Class balancing"),
    ("crop_brain", "Crop to brain"),
    ("sharpen", "Sharpen"),
    ("equalize", "Equalisation"),
    ("binarize", "Binarisation"),
    ("morphology", "Morphology"),
    ("no_augment", "No augmentation"),
    ("mixup", "Mixup alpha"),
    ("cutmix", "CutMix alpha"),
    ("mask_loss", "Mask loss weight"),
    ("teacher", "Distilled from"),
    ("seed", "Seed"),
)


def recipe_of(config: Mapping | None) -> dict:
    """The training options of a run: ``config.yaml`` as the trainer wrote it, or a bundle's ``config.json``."""
    if not isinstance(config, Mapping):
        return {}
    bundled = (config.get("tumorlib") or {}).get("training") if isinstance(config.get("tumorlib"), Mapping) else None
    return dict(bundled) if isinstance(bundled, Mapping) else dict(config)


def _setting(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_setting(item) for item in value) if value else MISSING
    return f"{value:g}" if isinstance(value, float) else str(value)


def recipe_table(configs: Mapping[str, Mapping | None], only_differences: bool = False) -> pd.DataFrame:
    """Training settings of several runs side by side: one row per setting, one column per run."""
    recipes = {run: recipe_of(config) for run, config in configs.items()}
    records = []
    for key, name in _RECIPE_FIELDS:
        if not any(key in recipe for recipe in recipes.values()):
            continue
        record = {"Setting": name}
        for run, recipe in recipes.items():
            record[run] = _setting(recipe.get(key)) if key in recipe else MISSING
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=["Setting", *recipes])
    if only_differences and len(recipes) > 1 and not frame.empty:
        differs = frame[list(recipes)].nunique(axis=1) > 1
        frame = frame[differs].reset_index(drop=True)
    return frame
