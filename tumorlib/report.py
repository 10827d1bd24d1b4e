"""Figures and tables for the results an evaluation run wrote to disk.

Both apps (the Gradio Model tab and the Streamlit dashboard) and the standalone HTML report draw from
these functions, so a number looks the same wherever it is shown. Everything here only reads and
reshapes what evaluation stored in ``metrics.json``, ``history.csv`` and ``predictions.csv``: no metric
is recomputed, so the apps can never disagree with the evaluation that produced the files.

The module imports neither gradio nor streamlit (the apps import us, not the other way round) and
never touches the network: the HTML report embeds plotly.js inline so it opens offline.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from .errors import TumorlibError

__all__ = [
    "EXPLANATION_COLUMNS",
    "NO_TUMOUR_CAVEAT",
    "PAPER",
    "PAPER_CAVEAT",
    "ResultsError",
    "ResultsFileError",
    "ablation_table",
    "checks_table",
    "class_colour",
    "comparison_figure",
    "comparison_table",
    "confusion_matrix_figure",
    "explanation_caption",
    "fold_table",
    "format_interval",
    "format_mean_std",
    "format_pct",
    "headline",
    "history_figure",
    "html_report",
    "load_ablations",
    "load_explanations",
    "load_history",
    "load_metrics",
    "load_predictions",
    "no_tumour_labels",
    "paper_table1",
    "paper_table2",
    "per_class_figure",
    "per_class_table",
    "recipe_of",
    "recipe_table",
    "reliability_figure",
    "roc_figure",
    "worst_misclassifications",
]

#: The reference paper. Only the overall accuracy has been checked against the paper; every other
#: cell of the comparison tables says "not transcribed" rather than carry a number we cannot vouch for.
PAPER: dict[str, Any] = {
    "citation": (
        "Sahaai et al. (2022), ResNet-50 based deep neural network using transfer learning "
        "for brain tumor classification"
    ),
    "short": "Sahaai et al. 2022",
    "dataset": "Cheng et al. figshare brain tumour dataset",
    "split": "unstated",
    "labels": ["glioma", "meningioma", "pituitary"],
    "metrics": {"accuracy": 0.953},
    "per_class": {},
}

PAPER_CAVEAT = (
    "Paper figures are from Sahaai et al. (2022), whose train/test split is unstated (it may put slices of "
    "one patient on both sides). Ours is a patient-level split: no patient appears in both train and test, "
    "which is stricter, so the two columns are not a like-for-like comparison. Paper cells marked "
    '"not transcribed" are figures we have not verified and do not quote.'
)

NOT_TRANSCRIBED = "not transcribed"
MISSING = "—"

# Okabe–Ito: distinguishable under the common colour-vision deficiencies and in greyscale print.
_CLASS_COLOURS = {
    "glioma": "#0072B2",
    "meningioma": "#E69F00",
    "pituitary": "#009E73",
    "no_tumor": "#CC79A7",
}
_SPARE_COLOURS = ("#D55E00", "#56B4E9", "#F0E442", "#000000")
_FOLD_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
_NEUTRAL = "#7f7f7f"
_HEATMAP_SCALE = "Blues"
_FONT = {"family": "Inter, 'Helvetica Neue', Arial, sans-serif", "size": 13, "color": "#222222"}

_METRIC_NAMES = {
    "precision": "Precision",
    "recall": "Recall",
    "specificity": "Specificity",
    "f1": "F1",
    "f_beta": "F-beta",
    "accuracy": "Accuracy",
}


class ResultsError(TumorlibError, ValueError):
    """A results file exists but is not what evaluation writes (bad JSON, missing columns)."""


class ResultsFileError(TumorlibError, FileNotFoundError):
    """A results file the report needs is not there."""


# --------------------------------------------------------------------------- loading


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ResultsFileError(f"{what} not found at {path} (it is written by the evaluation run; run it first)")
    return path


def load_metrics(path: str | Path) -> dict:
    """Read ``metrics.json`` as written by evaluation."""
    path = _existing(path, "Metrics file")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResultsError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(metrics, dict) or "labels" not in metrics:
        raise ResultsError(f"{path} does not look like a metrics file (no 'labels' key)")
    return metrics


def _read_csv(path: str | Path, what: str, required: Sequence[str], **kwargs: Any) -> pd.DataFrame:
    path = _existing(path, what)
    try:
        frame = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path} is not a readable CSV file: {err}") from err
    missing = [col for col in required if col not in frame.columns]
    if missing:
        raise ResultsError(f"{path} lacks column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))}")
    return frame


def load_history(path: str | Path) -> pd.DataFrame:
    """Read ``history.csv`` (one row per epoch; ``fold`` is empty for a single run)."""
    return _read_csv(path, "Training history", ["epoch"])


def load_predictions(path: str | Path) -> pd.DataFrame:
    """Read ``predictions.csv`` (one row per slice, ``prob_<label>`` per class)."""
    # Ids and patient codes can look numeric ("0001"); reading them as text keeps leading zeros.
    return _read_csv(
        path,
        "Predictions file",
        ["id", "true_label", "pred_label"],
        dtype={"id": str, "patient": str, "true_label": str, "pred_label": str},
    )


# --------------------------------------------------------------------------- formatting


def _num(value: Any) -> float | None:
    """A finite float, or None for missing / null / NaN / non-numeric."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def format_pct(value: Any, digits: int = 1) -> str:
    """``0.9534`` -> ``"95.3%"``; a dash when the value is missing."""
    num = _num(value)
    return MISSING if num is None else f"{num * 100:.{digits}f}%"


def _interval(ci: Any) -> tuple[float, float] | None:
    if not isinstance(ci, Sequence) or isinstance(ci, str) or len(ci) != 2:
        return None
    lo, hi = _num(ci[0]), _num(ci[1])
    return None if lo is None or hi is None else (lo, hi)


def _ci_text(ci: Any) -> str:
    """``[0.941, 0.964]`` -> ``"94.1–96.4"``; empty when there is no interval."""
    bounds = _interval(ci)
    return "" if bounds is None else f"{bounds[0] * 100:.1f}–{bounds[1] * 100:.1f}"


def format_interval(value: Any, ci: Any = None) -> str:
    """``0.953, [0.941, 0.964]`` -> ``"95.3% (94.1–96.4)"``; just the value when there is no interval."""
    text = format_pct(value)
    bounds = _ci_text(ci)
    return f"{text} ({bounds})" if bounds and text != MISSING else text


def _format_auc(value: Any, ci: Any = None) -> str:
    # AUC is an area, not a rate: the convention is a 3-decimal number, not a percentage.
    num = _num(value)
    if num is None:
        return MISSING
    bounds = _auc_ci_text(ci)
    return f"{num:.3f} ({bounds})" if bounds else f"{num:.3f}"


def _auc_ci_text(ci: Any) -> str:
    bounds = _interval(ci)
    return "" if bounds is None else f"{bounds[0]:.3f}–{bounds[1]:.3f}"


def format_mean_std(summary: Any) -> str:
    """``{"mean": 0.894, "std": 0.034}`` as "89.4 ± 3.4%" (a fold summary of :func:`summarize_folds`)."""
    if not isinstance(summary, Mapping):
        return MISSING
    mean, std = _num(summary.get("mean")), _num(summary.get("std"))
    if mean is None:
        return MISSING
    return f"{mean * 100:.1f}%" if std is None else f"{mean * 100:.1f} ± {std * 100:.1f}%"


def _ci_level(metrics: Mapping) -> str:
    level = _num((metrics.get("ci") or {}).get("level"))
    if level is None:
        return "95"
    level = level * 100 if level <= 1 else level
    return f"{level:g}"


def _ci_method(metrics: Mapping) -> str:
    ci = metrics.get("ci") or {}
    parts = [str(ci[key]) for key in ("method", "unit") if ci.get(key)]
    if ci.get("resamples"):
        parts.append(f"{ci['resamples']} resamples")
    return ", ".join(parts)


def _labels(metrics: Mapping) -> list[str]:
    return [str(label) for label in metrics.get("labels") or []]


def _per_class(metrics: Mapping, label: str) -> Mapping:
    return (metrics.get("per_class") or {}).get(label) or {}


def _macro(metrics: Mapping) -> Mapping:
    return metrics.get("macro") or {}


def _auc_of(metrics: Mapping, label: str) -> Any:
    return ((metrics.get("roc") or {}).get(label) or {}).get("auc")


def _count(value: Any) -> str:
    num = _num(value)
    return MISSING if num is None else f"{int(num):,}"


def class_colour(label: str, labels: Sequence[str] = ()) -> str:
    """The colour a class has in every figure (known classes keep theirs across runs)."""
    if label in _CLASS_COLOURS:
        return _CLASS_COLOURS[label]
    unknown = [name for name in labels if name not in _CLASS_COLOURS]
    index = unknown.index(label) if label in unknown else 0
    return _SPARE_COLOURS[index % len(_SPARE_COLOURS)]


def _pretty(label: str) -> str:
    return label.replace("_", " ")


# --------------------------------------------------------------------------- tables


def headline(metrics: Mapping) -> list[dict]:
    """The summary cards: accuracy, macro F1, macro specificity, macro AUC and how much was evaluated."""
    level, method = _ci_level(metrics), _ci_method(metrics)
    ci_help = f" Interval: {level}% CI ({method})." if method else f" Interval: {level}% CI."
    macro = _macro(metrics)

    def card(label: str, value: str, ci: str, help_text: str) -> dict:
        return {"label": label, "value": value, "ci": f"{level}% CI {ci}" if ci else "", "help": help_text}

    n, groups = metrics.get("n"), metrics.get("n_groups")
    evaluated = f"{_count(n)} slices"
    if _num(groups) is not None:
        evaluated = f"{_count(groups)} patients · {evaluated}"
    folds = (metrics.get("cv_summary") or {}).get("n_folds")
    pooled = f" Pooled over {folds} cross-validation folds." if folds else ""
    return [
        card(
            "Accuracy",
            format_pct(metrics.get("accuracy")),
            _ci_text(metrics.get("accuracy_ci")),
            "Share of test slices classified correctly." + pooled + ci_help,
        ),
        card(
            "Macro F1",
            format_pct(macro.get("f1")),
            _ci_text(macro.get("f1_ci")),
            "Harmonic mean of precision and recall, averaged over classes with equal weight." + ci_help,
        ),
        card(
            "Macro specificity",
            format_pct(macro.get("specificity")),
            _ci_text(macro.get("specificity_ci")),
            "Share of slices not of a class that were not called that class, averaged over classes." + ci_help,
        ),
        card(
            "Macro AUC",
            _format_auc(metrics.get("macro_auc")),
            _auc_ci_text(metrics.get("macro_auc_ci")),
            "Area under the one-vs-rest ROC curve, averaged over classes (1.0 is perfect, 0.5 is chance).",
        ),
        {
            "label": "Evaluated",
            "value": evaluated,
            "ci": "",
            "help": "Test-set size. The split is by patient: no patient is in both train and test.",
        },
    ]


def _ours_column(metrics: Mapping) -> str:
    return f"Ours ({_ci_level(metrics)}% CI)"


FOLD_COLUMN = "Ours, mean ± std over folds"


def paper_table1(metrics: Mapping) -> pd.DataFrame:
    """Overall (macro-averaged) metrics, ours next to the paper's."""
    macro = _macro(metrics)
    cv = metrics.get("cv_summary")
    rows = [("Accuracy", metrics.get("accuracy"), metrics.get("accuracy_ci"), "accuracy")]
    for key in ("specificity", "precision", "recall", "f1"):
        rows.append((f"{_METRIC_NAMES[key]} (macro)", macro.get(key), macro.get(f"{key}_ci"), key))
    paper = PAPER["metrics"]
    records = []
    for name, value, ci, key in rows:
        record = {"Metric": name, _ours_column(metrics): format_interval(value, ci)}
        if isinstance(cv, Mapping):
            summary = cv.get("accuracy") if key == "accuracy" else (cv.get("macro") or {}).get(key)
            record[FOLD_COLUMN] = format_mean_std(summary)
        record["Paper"] = format_pct(paper[key]) if key in paper else NOT_TRANSCRIBED
        records.append(record)
    return pd.DataFrame.from_records(records)


def paper_table2(metrics: Mapping) -> pd.DataFrame:
    """One-vs-rest accuracy per class, ours next to the paper's."""
    cv_classes = (metrics.get("cv_summary") or {}).get("per_class")
    records = []
    for label in _labels(metrics):
        stats = _per_class(metrics, label)
        record = {
            "Class": label,
            _ours_column(metrics): format_interval(stats.get("accuracy"), stats.get("accuracy_ci")),
        }
        if isinstance(cv_classes, Mapping):
            record[FOLD_COLUMN] = format_mean_std((cv_classes.get(label) or {}).get("accuracy"))
        paper_value = (PAPER["per_class"].get(label) or {}).get("accuracy")
        record["Paper"] = NOT_TRANSCRIBED if paper_value is None else format_pct(paper_value)
        records.append(record)
    columns = ["Class", _ours_column(metrics), *([FOLD_COLUMN] if isinstance(cv_classes, Mapping) else []), "Paper"]
    return pd.DataFrame.from_records(records, columns=columns)


_PER_CLASS_METRICS = ("precision", "recall", "specificity", "f1")


def per_class_table(metrics: Mapping, formatted: bool = True) -> pd.DataFrame:
    """Per-class precision, recall, specificity, F1 (each with its CI), AUC and support.

    ``formatted=False`` gives plain numbers (fractions, CI bounds as ``<name>_ci_low``/``_ci_high``)
    for sorting and CSV export.
    """
    records = []
    for label in _labels(metrics):
        stats = _per_class(metrics, label)
        if formatted:
            record: dict[str, Any] = {"Class": label}
            for key in _PER_CLASS_METRICS:
                record[_METRIC_NAMES[key]] = format_pct(stats.get(key))
                record[f"{_METRIC_NAMES[key]} CI"] = _ci_text(stats.get(f"{key}_ci")) or MISSING
            record["AUC"] = _format_auc(_auc_of(metrics, label))
            record["Support"] = _count(stats.get("support"))
        else:
            record = {"class": label}
            for key in _PER_CLASS_METRICS:
                bounds = _interval(stats.get(f"{key}_ci"))
                record[key] = _num(stats.get(key))
                record[f"{key}_ci_low"] = bounds[0] if bounds else None
                record[f"{key}_ci_high"] = bounds[1] if bounds else None
            record["auc"] = _num(_auc_of(metrics, label))
            support = _num(stats.get("support"))
            record["support"] = None if support is None else int(support)
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    if not formatted and not frame.empty:
        # Missing values become NaN, so the columns stay numeric for sorting.
        numeric = [col for col in frame.columns if col not in ("class", "support")]
        frame[numeric] = frame[numeric].astype(float)
        frame["support"] = frame["support"].astype("Int64")
    return frame


_FOLD_COLUMNS = (
    ("Accuracy", None, "accuracy"),
    ("Macro F1", "macro", "f1"),
    ("Macro precision", "macro", "precision"),
    ("Macro recall", "macro", "recall"),
    ("Macro specificity", "macro", "specificity"),
    ("ECE", None, "ece"),
)


def fold_table(metrics: Mapping) -> pd.DataFrame | None:
    """One row per cross-validation fold plus the mean ± std row; None for a single run."""
    folds = metrics.get("folds")
    if not isinstance(folds, Sequence) or not folds:
        return None
    records = []
    for index, fold in enumerate(folds, start=1):
        fold = fold if isinstance(fold, Mapping) else {}
        record = {"Fold": str(index)}
        for column, group, key in _FOLD_COLUMNS:
            source = (fold.get(group) or {}) if group else fold
            record[column] = format_pct(source.get(key))
        record["n"] = _count(fold.get("n"))
        records.append(record)
    # The summary row comes from cv_summary as evaluation wrote it, never averaged here.
    cv = metrics.get("cv_summary") or {}
    summary = {"Fold": "Mean ± std"}
    for column, group, key in _FOLD_COLUMNS:
        summary[column] = format_mean_std(((cv.get(group) or {}) if group else cv).get(key))
    summary["n"] = MISSING
    records.append(summary)
    return pd.DataFrame.from_records(records)


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
            source = (metrics.get(group) or {}) if group else metrics
            value, ci = source.get(key), source.get(f"{key}_ci")
            record[column] = format_interval(value, ci) if formatted else _num(value)
        if formatted:
            record["Macro AUC"] = _format_auc(metrics.get("macro_auc"))
            record["ECE"] = format_pct(metrics.get("ece"))
            record["n"] = _count(metrics.get("n"))
        else:
            record["Macro AUC"] = _num(metrics.get("macro_auc"))
            record["ECE"] = _num(metrics.get("ece"))
            record["n"] = _num(metrics.get("n"))
        records.append(record)
    columns = ["Run", *(row[0] for row in _COMPARISON_ROWS), "Macro AUC", "ECE", "n"]
    return pd.DataFrame.from_records(records, columns=columns)


# --------------------------------------------------------------------------- figures


def _style(fig: go.Figure, title: str, x_title: str, y_title: str, height: int = 460) -> go.Figure:
    """The layout every figure shares, so app and report look like one product."""
    fig.update_layout(
        template="plotly_white",
        title={"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 17}},
        font=_FONT,
        height=height,
        margin={"l": 70, "r": 30, "t": 70, "b": 60},
        hoverlabel={"font": {"family": _FONT["family"], "size": 12}},
        legend={"bgcolor": "rgba(255,255,255,0.8)", "bordercolor": "#dddddd", "borderwidth": 1},
    )
    fig.update_xaxes(title_text=x_title, showline=True, linecolor="#999999", mirror=True)
    fig.update_yaxes(title_text=y_title, showline=True, linecolor="#999999", mirror=True)
    return fig


def _empty_figure(title: str, message: str) -> go.Figure:
    """A figure saying what is missing, so a dashboard panel never breaks on an older results file."""
    fig = go.Figure()
    _style(fig, title, "", "", height=300)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 15})
    return fig


def confusion_matrix_figure(metrics: Mapping, normalized: bool = False, title: str | None = None) -> go.Figure:
    """Heatmap of the confusion matrix (rows true, columns predicted), each cell showing count and row %."""
    labels = _labels(metrics)
    counts = metrics.get("confusion_matrix")
    title = title or ("Confusion matrix (share of each true class)" if normalized else "Confusion matrix (counts)")
    if not labels or not counts or len(counts) != len(labels):
        return _empty_figure(title, "No confusion matrix in this results file")
    shares = metrics.get("confusion_matrix_normalized")
    if not shares or len(shares) != len(labels):
        # Row shares are only a display of the stored counts; derive them when an older file lacks them.
        shares = [[c / sum(row) if sum(row) else 0.0 for c in row] for row in counts]
    z = shares if normalized else counts
    peak = max((max(row) for row in z), default=0) or 1
    hover = [
        [
            f"True: {labels[i]}<br>Predicted: {labels[j]}<br>Count: {counts[i][j]:,}<br>"
            f"{format_pct(shares[i][j])} of true {labels[i]}"
            for j in range(len(labels))
        ]
        for i in range(len(labels))
    ]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=labels,
            y=labels,
            text=hover,
            hovertemplate="%{text}<extra></extra>",
            colorscale=_HEATMAP_SCALE,
            zmin=0,
            zmax=1 if normalized else None,
            colorbar={
                "title": {"text": "Row share" if normalized else "Slices"},
                "tickformat": ".0%" if normalized else ",",
            },
        )
    )
    _style(fig, title, "Predicted class", "True class", height=max(420, 110 * len(labels) + 140))
    for i, true in enumerate(labels):
        for j, pred in enumerate(labels):
            # Light text on the dark cells keeps every annotation readable.
            dark = z[i][j] / peak > 0.55
            fig.add_annotation(
                x=pred,
                y=true,
                text=f"<b>{counts[i][j]:,}</b><br>{format_pct(shares[i][j])}",
                showarrow=False,
                font={"color": "white" if dark else "#222222", "size": 13},
            )
    fig.update_yaxes(autorange="reversed", showgrid=False, ticksuffix=" ")
    fig.update_xaxes(side="bottom", showgrid=False)
    return fig


def roc_figure(metrics: Mapping) -> go.Figure:
    """One-vs-rest ROC curve per class, AUC in the legend, with the chance diagonal."""
    roc = metrics.get("roc") or {}
    labels = [label for label in _labels(metrics) if isinstance(roc.get(label), Mapping)]
    macro_auc = _num(metrics.get("macro_auc"))
    title = "ROC curves, one class vs rest" + (f" (macro AUC {macro_auc:.3f})" if macro_auc is not None else "")
    if not labels:
        return _empty_figure(title, "No ROC data in this results file")
    fig = go.Figure()
    for label in labels:
        curve = roc[label]
        auc = _num(curve.get("auc"))
        support = _count(_per_class(metrics, label).get("support"))
        fig.add_trace(
            go.Scatter(
                x=list(curve.get("fpr") or []),
                y=list(curve.get("tpr") or []),
                mode="lines",
                name=f"{label} (AUC {auc:.3f})" if auc is not None else f"{label} (AUC n/a)",
                line={"color": class_colour(label, labels), "width": 2.5},
                hovertemplate=(
                    f"<b>{label}</b> vs rest ({support} positives)<br>"
                    "False-positive rate %{x:.1%}<br>True-positive rate %{y:.1%}<extra></extra>"
                ),
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="Chance",
            line={"color": _NEUTRAL, "dash": "dash", "width": 1.5},
            hoverinfo="skip",
        )
    )
    _style(fig, title, "False-positive rate (1 − specificity)", "True-positive rate (recall)", height=500)
    fig.update_xaxes(range=[-0.01, 1.01], tickformat=".0%", constrain="domain")
    fig.update_yaxes(range=[-0.01, 1.01], tickformat=".0%", scaleanchor="x", scaleratio=1, constrain="domain")
    fig.update_layout(legend={"x": 0.98, "y": 0.02, "xanchor": "right", "yanchor": "bottom"})
    return fig


def _reliability_points(bins: Sequence[Mapping], name: str, colour: str, dash: str) -> go.Scatter:
    filled = [b for b in bins if _num(b.get("confidence")) is not None and _num(b.get("accuracy")) is not None]
    total = sum(int(_num(b.get("count")) or 0) for b in bins) or 1
    hover = [
        f"Confidence {format_pct(b.get('lower'), 0)}–{format_pct(b.get('upper'), 0)}<br>"
        f"{_count(b.get('count'))} slices ({format_pct((_num(b.get('count')) or 0) / total)} of all)<br>"
        f"Mean confidence {format_pct(b.get('confidence'))}<br>Accuracy {format_pct(b.get('accuracy'))}"
        for b in filled
    ]
    return go.Scatter(
        x=[_num(b["confidence"]) for b in filled],
        y=[_num(b["accuracy"]) for b in filled],
        mode="lines+markers",
        name=name,
        line={"color": colour, "dash": dash, "width": 2.5},
        marker={"size": 8},
        text=hover,
        hovertemplate=f"<b>{name}</b><br>%{{text}}<extra></extra>",
    )


def reliability_figure(metrics: Mapping) -> go.Figure:
    """Reliability diagram after (and, when stored, before) calibration, with bin counts as bars."""
    after = metrics.get("reliability")
    before = metrics.get("reliability_uncalibrated")
    title = "Reliability diagram"
    if not after:
        return _empty_figure(title, "No reliability bins in this results file")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    # Counts first so the bars sit behind the curves.
    fig.add_trace(
        go.Bar(
            x=[((_num(b.get("lower")) or 0) + (_num(b.get("upper")) or 0)) / 2 for b in after],
            y=[int(_num(b.get("count")) or 0) for b in after],
            width=[(_num(b.get("upper")) or 0) - (_num(b.get("lower")) or 0) for b in after],
            name="Slices per bin",
            marker={"color": "rgba(127,127,127,0.22)", "line": {"color": "rgba(127,127,127,0.5)", "width": 1}},
            hovertemplate="%{y:,} slices in this confidence bin<extra></extra>",
        ),
        secondary_y=True,
    )
    has_before = bool(before)
    name = "After calibration" if has_before else "Model"
    fig.add_trace(
        _reliability_points(after, f"{name} (ECE {format_pct(metrics.get('ece'))})", "#0072B2", "solid"),
        secondary_y=False,
    )
    if has_before:
        label = f"Before calibration (ECE {format_pct(metrics.get('ece_uncalibrated'))})"
        fig.add_trace(_reliability_points(before, label, "#D55E00", "dot"), secondary_y=False)
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="Perfect calibration",
            line={"color": _NEUTRAL, "dash": "dash", "width": 1.5},
            hoverinfo="skip",
        ),
        secondary_y=False,
    )
    _style(fig, title, "Mean predicted confidence", "Observed accuracy", height=480)
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", secondary_y=False)
    fig.update_yaxes(title_text="Slices per bin", showgrid=False, rangemode="tozero", secondary_y=True)
    fig.update_layout(legend={"x": 0.02, "y": 0.98, "xanchor": "left", "yanchor": "top"}, bargap=0)
    return fig


_HISTORY_METRICS = {
    "loss": ("Loss", ("train_loss", "val_loss")),
    "acc": ("Accuracy", ("train_acc", "val_acc")),
    "lr": ("Learning rate", ("lr",)),
}


_FOLD_TAG = re.compile(r"fold[ _-]?(\d+)", re.IGNORECASE)


def _fold_name(fold: Any) -> tuple[tuple[int, float, str], str]:
    """Sort key and display name of one ``fold`` value of a history file."""
    num = _num(fold)
    if num is not None:
        # Pandas reads a fold column with gaps as float: show "Fold 1", not "Fold 1.0".
        return (0, num, ""), f"Fold {int(num)}" if num.is_integer() else f"Fold {num:g}"
    if fold is None or (isinstance(fold, float) and math.isnan(fold)) or str(fold) in ("", "single"):
        return (1, 0.0, ""), "Run"
    tag = _FOLD_TAG.fullmatch(str(fold).strip())
    if tag:
        # The trainer tags folds 0-based ("fold0"); tables number them from 1, so "fold0" is "Fold 1".
        return (0, float(tag.group(1)) + 1, ""), f"Fold {int(tag.group(1)) + 1}"
    return (2, 0.0, str(fold)), "Final model" if str(fold) == "final" else f"Fold {fold}"


def _fold_groups(history: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    if "fold" not in history.columns or history["fold"].isna().all():
        return [("Run", history)]
    groups = []
    for fold, frame in history.groupby("fold", sort=False, dropna=False):
        key, name = _fold_name(fold)
        groups.append((key, name, frame))
    return [(name, frame) for _, name, frame in sorted(groups, key=lambda group: group[0])]


def history_figure(history: pd.DataFrame, metric: str = "loss") -> go.Figure:
    """Training curves per fold: train solid, validation dashed (``metric`` is loss, acc or lr)."""
    if metric not in _HISTORY_METRICS:
        raise ValueError(f"metric must be one of {', '.join(_HISTORY_METRICS)}, not {metric!r}")
    if "epoch" not in history.columns:
        raise ResultsError("training history has no 'epoch' column")
    name, columns = _HISTORY_METRICS[metric]
    columns = tuple(col for col in columns if col in history.columns)
    title = f"Training history: {name.lower()}"
    if not columns or history.empty:
        return _empty_figure(title, f"No {name.lower()} recorded in this history")
    fig = go.Figure()
    for index, (fold, frame) in enumerate(_fold_groups(history)):
        frame = frame.sort_values("epoch")
        colour = _FOLD_COLOURS[index % len(_FOLD_COLOURS)]
        for column in columns:
            split = {"train": "train", "val": "validation"}.get(column.split("_")[0], "")
            trace_name = f"{fold} {split}".strip()
            value_format = ".1%" if metric == "acc" else (".2e" if metric == "lr" else ".4f")
            fig.add_trace(
                go.Scatter(
                    x=frame["epoch"],
                    y=frame[column],
                    mode="lines+markers",
                    name=trace_name,
                    legendgroup=fold,
                    line={"color": colour, "dash": "dash" if split == "validation" else "solid", "width": 2},
                    marker={"size": 5},
                    hovertemplate=f"<b>{trace_name}</b><br>Epoch %{{x}}<br>{name} %{{y:{value_format}}}<extra></extra>",
                )
            )
    _style(fig, title, "Epoch", name, height=420)
    if metric == "acc":
        fig.update_yaxes(tickformat=".0%")
    elif metric == "lr":
        fig.update_yaxes(type="log", exponentformat="power")
    return fig


# --------------------------------------------------------------------------- dashboard tables and figures

# Label spellings that mean "no tumour" in the datasets we read.
_NO_TUMOUR = frozenset({"no_tumor", "no_tumour", "notumor", "notumour", "no", "healthy", "normal"})

NO_TUMOUR_CAVEAT = (
    "The no-tumour slices come from other collections (Br35H, SARTAJ) than the tumour slices (Cheng et al., "
    "figshare): other scanners, sequences, resolutions and post-processing. A model can tell that class apart "
    "by the source of the image alone, so its no-tumour figures (and the overall figures they feed) overstate "
    "how well it would separate tumour from no tumour on scans from one scanner."
)


def no_tumour_labels(metrics_or_labels: Mapping | Sequence[str]) -> list[str]:
    """The labels of a run (or a label list) that mean "no tumour", which need :data:`NO_TUMOUR_CAVEAT`."""
    labels = _labels(metrics_or_labels) if isinstance(metrics_or_labels, Mapping) else list(metrics_or_labels)
    return [str(label) for label in labels if str(label).lower().replace(" ", "_").replace("-", "_") in _NO_TUMOUR]


def checks_table(metrics: Mapping) -> pd.DataFrame | None:
    """Grad-CAM and tumour-map localisation (pointing game, energy in mask) and input-gate results; None
    when not stored."""
    return _other_checks(metrics)


def _interval_bars(values: Sequence[float | None], cis: Sequence[Any]) -> dict | None:
    """Asymmetric error bars from stored CIs; None when no value has one."""
    plus, minus, any_ci = [], [], False
    for value, ci in zip(values, cis, strict=True):
        bounds = _interval(ci)
        if value is None or bounds is None:
            plus.append(0.0)
            minus.append(0.0)
            continue
        any_ci = True
        plus.append(max(0.0, bounds[1] - value))
        minus.append(max(0.0, value - bounds[0]))
    if not any_ci:
        return None
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "thickness": 1.5, "width": 4}


def per_class_figure(metrics: Mapping, keys: Sequence[str] = _PER_CLASS_METRICS) -> go.Figure:
    """Per-class precision, recall, specificity and F1 as grouped bars, with the stored CIs as error bars."""
    labels = [label for label in _labels(metrics) if _per_class(metrics, label)]
    title = "Per-class metrics"
    if not labels:
        return _empty_figure(title, "No per-class metrics in this results file")
    names = [_METRIC_NAMES.get(key, key) for key in keys]
    fig = go.Figure()
    for label in labels:
        stats = _per_class(metrics, label)
        values = [_num(stats.get(key)) for key in keys]
        cis = [stats.get(f"{key}_ci") for key in keys]
        hover = [
            f"<b>{label}</b><br>{name} {format_interval(value, ci)}"
            for name, value, ci in zip(names, values, cis, strict=True)
        ]
        fig.add_trace(
            go.Bar(
                x=names,
                y=values,
                name=f"{label} (n = {_count(stats.get('support'))})",
                marker={"color": class_colour(label, labels)},
                error_y=_interval_bars(values, cis),
                text=hover,
                hovertemplate="%{text}<extra></extra>",
            )
        )
    _style(fig, title, "", f"Value (bars: {_ci_level(metrics)}% CI)")
    # Bars start at zero: a cut axis would make small differences look large.
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%")
    fig.update_layout(barmode="group", bargap=0.25, legend={"orientation": "h", "y": -0.12, "x": 0})
    return fig


_COMPARISON_FIGURE = (
    ("Accuracy", None, "accuracy"),
    ("Balanced accuracy", None, "balanced_accuracy"),
    ("Macro F1", "macro", "f1"),
    ("Macro recall", "macro", "recall"),
    ("Macro specificity", "macro", "specificity"),
)


def comparison_figure(runs: Mapping[str, Mapping]) -> go.Figure:
    """Headline metrics of several runs as grouped bars (one colour per run), with CIs as error bars."""
    title = "Run comparison"
    if not runs:
        return _empty_figure(title, "No runs selected")
    names = [row[0] for row in _COMPARISON_FIGURE]
    fig = go.Figure()
    for index, (run, metrics) in enumerate(runs.items()):
        values, cis = [], []
        for _, group, key in _COMPARISON_FIGURE:
            source = (metrics.get(group) or {}) if group else metrics
            values.append(_num(source.get(key)))
            cis.append(source.get(f"{key}_ci"))
        hover = [
            f"<b>{html.escape(run)}</b><br>{n} {format_interval(v, c)}"
            for n, v, c in zip(names, values, cis, strict=True)
        ]
        fig.add_trace(
            go.Bar(
                x=names,
                y=values,
                name=run,
                marker={"color": _FOLD_COLOURS[index % len(_FOLD_COLOURS)]},
                error_y=_interval_bars(values, cis),
                text=hover,
                hovertemplate="%{text}<extra></extra>",
            )
        )
    _style(fig, title, "", "Value (bars: CI where stored)")
    # Bars start at zero: a cut axis would make small differences look large.
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%")
    fig.update_layout(barmode="group", bargap=0.25, legend={"orientation": "h", "y": -0.12, "x": 0})
    return fig


def worst_misclassifications(predictions: pd.DataFrame, n: int = 10, formatted: bool = True) -> pd.DataFrame:
    """The ``n`` wrong predictions the model was most confident about, from ``predictions.csv``.

    Confidence is the stored probability of the predicted class (``prob_<pred_label>``); nothing is
    recomputed. ``formatted=False`` keeps the probabilities as fractions.
    """
    columns = ["Rank", "id", "patient", "True class", "Predicted", "Confidence", "P(true class)", "path"]
    wrong = predictions[predictions["true_label"].astype(str) != predictions["pred_label"].astype(str)]

    def prob(row: pd.Series, label: Any) -> float | None:
        return _num(row.get(f"prob_{label}"))

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


EXPLANATION_COLUMNS = ("file", "id", "true_label", "pred_label", "target", "pointing_hit", "energy_in_mask")


def load_explanations(path: str | Path) -> pd.DataFrame:
    """Read ``explanations/index.csv`` (one row per exported Grad-CAM overlay; ``file`` is relative to it)."""
    text = {column: str for column in ("file", "id", "true_label", "pred_label", "target")}
    return _read_csv(path, "Explanations index", ["file"], dtype=text)


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
    num = _num(value)
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
    energy = _num(row.get("energy_in_mask"))
    if energy is not None:
        parts.append(f"{format_pct(energy)} energy in mask")
    return " · ".join(parts) or str(row.get("file", ""))


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


def load_ablations(path: str | Path) -> pd.DataFrame:
    """Read ``ablations.csv`` (run, recipe, epochs, input_size, init, wall_minutes, accuracy, macro_f1, notes)."""
    return _read_csv(path, "Ablation table", ["run"], dtype={"run": str, "recipe": str, "init": str, "notes": str})


def ablation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The ablation table for display: rates as percentages, readable headers, unknown columns kept."""
    out = frame.copy()
    for column in ("accuracy", "macro_f1"):
        if column in out.columns:
            out[column] = [format_pct(value) for value in out[column]]
    if "wall_minutes" in out.columns:
        out["wall_minutes"] = [MISSING if _num(v) is None else f"{_num(v):,.1f}" for v in out["wall_minutes"]]
    for column in ("epochs", "input_size"):
        if column in out.columns:
            out[column] = [MISSING if _num(v) is None else f"{_num(v):g}" for v in out[column]]
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


# --------------------------------------------------------------------------- HTML report

_CSS = """
body { font-family: Inter, 'Helvetica Neue', Arial, sans-serif; color: #222; margin: 0 auto; max-width: 1100px;
       padding: 24px 32px; line-height: 1.45; }
h1 { font-size: 26px; margin-bottom: 4px; }
h2 { font-size: 19px; margin-top: 36px; border-bottom: 2px solid #0072B2; padding-bottom: 4px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 18px 0; }
.card { flex: 1 1 170px; border: 1px solid #ddd; border-radius: 8px; padding: 12px 14px; background: #f8fafc; }
.card .label { font-size: 13px; color: #555; }
.card .value { font-size: 24px; font-weight: 600; color: #0072B2; }
.card .ci { font-size: 12px; color: #666; }
table.results { border-collapse: collapse; margin: 10px 0; font-size: 14px; }
table.results th, table.results td { border: 1px solid #ddd; padding: 6px 10px; text-align: left; }
table.results th { background: #eef3f8; }
p.caption { font-size: 13px; color: #555; max-width: 900px; }
.figure { page-break-inside: avoid; break-inside: avoid; margin: 12px 0; }
.muted { color: #666; font-size: 13px; }
@media print { body { max-width: none; } h2 { page-break-after: avoid; } }
"""


def _table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, classes="results", border=0, escape=True, na_rep=MISSING)


def _figure_html(fig: go.Figure) -> str:
    # plotly.js is embedded once in <head>; each figure only carries its data.
    height = fig.layout.height or 450
    div = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        default_height=f"{height}px",
        config={"displaylogo": False, "responsive": True},
    )
    return f'<div class="figure">{div}</div>'


def _cards_html(metrics: Mapping) -> str:
    cards = []
    for card in headline(metrics):
        esc = {key: html.escape(str(value)) for key, value in card.items()}
        cards.append(
            f'<div class="card" title="{esc["help"]}"><div class="label">{esc["label"]}</div>'
            f'<div class="value">{esc["value"]}</div><div class="ci">{esc["ci"] or "&nbsp;"}</div></div>'
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def _other_checks(metrics: Mapping) -> pd.DataFrame | None:
    """CAM localisation and input-gate results, when evaluation stored them."""
    rows = []
    cam, gate = metrics.get("cam"), metrics.get("gate")
    if isinstance(cam, Mapping):
        n = f" (n = {_count(cam.get('n'))})"
        rows.append(("Grad-CAM pointing game" + n, format_pct(cam.get("pointing_game"))))
        rows.append(("Grad-CAM energy inside tumour mask" + n, format_pct(cam.get("energy_in_mask"))))
        base = cam.get("baseline")
        if isinstance(base, Mapping):
            rows.append(("Chance: pointing game of the image centre", format_pct(base.get("pointing_game"))))
            rows.append(("Chance: energy of a uniform map inside the mask", format_pct(base.get("energy_in_mask"))))
        ceiling = cam.get("ceiling")
        if isinstance(ceiling, Mapping) and isinstance(ceiling.get("grid"), Sequence) and len(ceiling["grid"]) == 2:
            grid = f"{ceiling['grid'][0]} x {ceiling['grid'][1]}"
            rows.append(
                (f"Ceiling: best pointing game on the {grid} feature grid", format_pct(ceiling.get("pointing_game")))
            )
    loc = metrics.get("localiser")
    if isinstance(loc, Mapping):
        n = f" (n = {_count(loc.get('n'))})"
        rows.append(("Tumour map pointing game" + n, format_pct(loc.get("pointing_game"))))
        rows.append(("Tumour map energy inside tumour mask" + n, format_pct(loc.get("energy_in_mask"))))
        rows.append(("Tumour map soft Dice" + n, format_pct(loc.get("soft_dice"))))
        quiet = loc.get("no_tumor") if isinstance(loc.get("no_tumor"), Mapping) else {}
        if quiet.get("n"):
            rows.append(
                (
                    f"Tumour map mean peak: tumour slices / no-tumour slices (n = {_count(quiet.get('n'))})",
                    f"{_share(loc.get('peak'))} / {_share(quiet.get('peak'))}",
                )
            )
    if isinstance(gate, Mapping):
        rows.append(
            (f"Input gate: share refused (n = {_count(gate.get('n'))})", format_pct(gate.get("refused_fraction")))
        )
    return pd.DataFrame(rows, columns=["Check", "Value"]) if rows else None


def _share(value: Any) -> str:
    """A value in [0, 1] that is not a rate (a map's peak), to two decimals."""
    return f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else MISSING


def html_report(metrics: Mapping, title: str, history: pd.DataFrame | None = None) -> str:
    """A standalone one-page HTML report with plotly.js inline, so it opens offline and on any slide laptop."""
    sections = [f"<h1>{html.escape(title)}</h1>"]
    method = _ci_method(metrics)
    if method:
        sections.append(f'<p class="muted">Intervals: {_ci_level(metrics)}% CI, {html.escape(method)}.</p>')
    sections.append(_cards_html(metrics))

    sections.append("<h2>Comparison with the paper</h2>")
    sections.append(_table_html(paper_table1(metrics)))
    sections.append('<p class="muted">One-vs-rest accuracy per class</p>')
    sections.append(_table_html(paper_table2(metrics)))
    sections.append(f'<p class="caption">{html.escape(PAPER_CAVEAT)}</p>')

    sections.append("<h2>Per-class results</h2>")
    sections.append(_table_html(per_class_table(metrics)))
    if no_tumour_labels(metrics):
        sections.append(f'<p class="caption">{html.escape(NO_TUMOUR_CAVEAT)}</p>')
    folds = fold_table(metrics)
    if folds is not None:
        sections.append("<h2>Cross-validation folds</h2>")
        sections.append(_table_html(folds))
    checks = _other_checks(metrics)
    if checks is not None:
        sections.append("<h2>Other checks</h2>")
        sections.append(_table_html(checks))

    sections.append("<h2>Confusion matrices</h2>")
    sections.append(_figure_html(confusion_matrix_figure(metrics)))
    sections.append(_figure_html(confusion_matrix_figure(metrics, normalized=True)))
    sections.append("<h2>Discrimination and calibration</h2>")
    sections.append(_figure_html(roc_figure(metrics)))
    sections.append(_figure_html(reliability_figure(metrics)))
    if history is not None and not history.empty:
        sections.append("<h2>Training history</h2>")
        for metric in ("loss", "acc"):
            sections.append(_figure_html(history_figure(history, metric)))

    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n"
        f"<script type='text/javascript'>{get_plotlyjs()}</script>\n</head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )
