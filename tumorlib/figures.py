"""Plotly figures of the results an evaluation run wrote to disk.

The Gradio Model tab, the Streamlit dashboard and the HTML report draw the same figures from here, in
one style and one colour per class, so a chart looks the same wherever it is shown. The numbers come
from :mod:`tumorlib.results`; nothing is recomputed (a confusion matrix's row shares are derived only
when an older file lacks them).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import results
from .results import METRIC_NAMES, PER_CLASS_METRICS, ResultsError, format_count, format_interval, format_pct, number

__all__ = [
    "class_colour",
    "comparison_figure",
    "confusion_matrix_figure",
    "coverage_figure",
    "fold_figure",
    "history_figure",
    "patient_confusion_figure",
    "per_class_figure",
    "reliability_figure",
    "roc_figure",
    "set_size_figure",
]

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


def class_colour(label: str, labels: Sequence[str] = ()) -> str:
    """The colour a class has in every figure (known classes keep theirs across runs)."""
    if label in _CLASS_COLOURS:
        return _CLASS_COLOURS[label]
    unknown = [name for name in labels if name not in _CLASS_COLOURS]
    index = unknown.index(label) if label in unknown else 0
    return _SPARE_COLOURS[index % len(_SPARE_COLOURS)]


# --------------------------------------------------------------------------- figures


def _diagonal(name: str) -> go.Scatter:
    """The dashed y = x line a curve is read against (chance for ROC, perfect calibration)."""
    return go.Scatter(
        x=[0, 1],
        y=[0, 1],
        mode="lines",
        name=name,
        line={"color": _NEUTRAL, "dash": "dash", "width": 1.5},
        hoverinfo="skip",
    )


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
    labels = results.labels(metrics)
    counts = results.confusion_matrix(metrics)
    title = title or ("Confusion matrix (share of each true class)" if normalized else "Confusion matrix (counts)")
    if counts is None:
        return _empty_figure(title, "No confusion matrix in this results file")
    shares = results.confusion_matrix(metrics, normalized=True)
    return _confusion_heatmap(counts, shares, labels, labels, title, normalized, "Slices")


def patient_confusion_figure(metrics: Mapping, normalized: bool = False, title: str | None = None) -> go.Figure:
    """The confusion matrix over patients (one answer per patient, :mod:`tumorlib.patients`); rows only for
    the true classes that have patients (images without a patient id are scored apart)."""
    labels = results.labels(metrics)
    stored = results.patient_level(metrics).get("confusion_matrix")
    what = "share of each true class" if normalized else "patients"
    title = title or f"Confusion matrix per patient ({what})"
    k = len(labels)
    if not k or not isinstance(stored, list) or len(stored) != k or any(len(row) != k for row in stored):
        return _empty_figure(title, "No answers per patient in this results file")
    rows = [i for i, row in enumerate(stored) if sum(row)]
    if not rows:
        return _empty_figure(title, "No patient was answered")
    counts = [stored[i] for i in rows]
    return _confusion_heatmap(counts, None, [labels[i] for i in rows], labels, title, normalized, "Patients")


def _confusion_heatmap(
    counts: Sequence[Sequence[int]],
    shares: Sequence[Sequence[float]] | None,
    rows: Sequence[str],
    columns: Sequence[str],
    title: str,
    normalized: bool,
    unit: str,
) -> go.Figure:
    """A confusion heatmap (rows true, columns predicted) with count and row share in each cell."""
    if shares is None:
        # Row shares are only a display of the stored counts; derive them when the file lacks them.
        shares = [[c / sum(row) if sum(row) else 0.0 for c in row] for row in counts]
    z = shares if normalized else counts
    peak = max((max(row) for row in z), default=0) or 1
    hover = [
        [
            f"True: {rows[i]}<br>Predicted: {columns[j]}<br>Count: {counts[i][j]:,}<br>"
            f"{format_pct(shares[i][j])} of true {rows[i]}"
            for j in range(len(columns))
        ]
        for i in range(len(rows))
    ]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(columns),
            y=list(rows),
            text=hover,
            hovertemplate="%{text}<extra></extra>",
            colorscale=_HEATMAP_SCALE,
            zmin=0,
            zmax=1 if normalized else None,
            colorbar={
                "title": {"text": "Row share" if normalized else unit},
                "tickformat": ".0%" if normalized else ",",
            },
        )
    )
    _style(fig, title, "Predicted class", "True class", height=max(420, 110 * len(rows) + 140))
    for i, true in enumerate(rows):
        for j, pred in enumerate(columns):
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
    labels = [label for label in results.labels(metrics) if results.roc_curve(metrics, label)]
    macro_auc = number(metrics.get("macro_auc"))
    title = "ROC curves, one class vs rest" + (f" (macro AUC {macro_auc:.3f})" if macro_auc is not None else "")
    if not labels:
        return _empty_figure(title, "No ROC data in this results file")
    fig = go.Figure()
    for label in labels:
        curve = results.roc_curve(metrics, label)
        auc = number(curve.get("auc"))
        support = format_count(results.per_class(metrics, label).get("support"))
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
    fig.add_trace(_diagonal("Chance"))
    _style(fig, title, "False-positive rate (1 − specificity)", "True-positive rate (recall)", height=500)
    fig.update_xaxes(range=[-0.01, 1.01], tickformat=".0%", constrain="domain")
    fig.update_yaxes(range=[-0.01, 1.01], tickformat=".0%", scaleanchor="x", scaleratio=1, constrain="domain")
    fig.update_layout(legend={"x": 0.98, "y": 0.02, "xanchor": "right", "yanchor": "bottom"})
    return fig


def _reliability_points(bins: Sequence[Mapping], name: str, colour: str, dash: str) -> go.Scatter:
    filled = [b for b in bins if number(b.get("confidence")) is not None and number(b.get("accuracy")) is not None]
    total = sum(int(number(b.get("count")) or 0) for b in bins) or 1
    hover = [
        f"Confidence {format_pct(b.get('lower'), 0)}–{format_pct(b.get('upper'), 0)}<br>"
        f"{format_count(b.get('count'))} slices ({format_pct((number(b.get('count')) or 0) / total)} of all)<br>"
        f"Mean confidence {format_pct(b.get('confidence'))}<br>Accuracy {format_pct(b.get('accuracy'))}"
        for b in filled
    ]
    return go.Scatter(
        x=[number(b["confidence"]) for b in filled],
        y=[number(b["accuracy"]) for b in filled],
        mode="lines+markers",
        name=name,
        line={"color": colour, "dash": dash, "width": 2.5},
        marker={"size": 8},
        text=hover,
        hovertemplate=f"<b>{name}</b><br>%{{text}}<extra></extra>",
    )


def reliability_figure(metrics: Mapping) -> go.Figure:
    """Reliability diagram after (and, when stored, before) calibration, with bin counts as bars."""
    after = results.reliability(metrics)
    before = results.reliability(metrics, calibrated=False)
    title = "Reliability diagram"
    if not after:
        return _empty_figure(title, "No reliability bins in this results file")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    # Counts first so the bars sit behind the curves.
    fig.add_trace(
        go.Bar(
            x=[((number(b.get("lower")) or 0) + (number(b.get("upper")) or 0)) / 2 for b in after],
            y=[int(number(b.get("count")) or 0) for b in after],
            width=[(number(b.get("upper")) or 0) - (number(b.get("lower")) or 0) for b in after],
            name="Slices per bin",
            marker={"color": "rgba(127,127,127,0.22)", "line": {"color": "rgba(127,127,127,0.5)", "width": 1}},
            hovertemplate="%{y:,} slices in this confidence bin<extra></extra>",
        ),
        secondary_y=True,
    )
    has_before = bool(before)
    name = "After calibration" if has_before else "Model"
    fig.add_trace(
        _reliability_points(after, f"{name} (ECE {format_pct(results.ece(metrics))})", "#0072B2", "solid"),
        secondary_y=False,
    )
    if has_before:
        label = f"Before calibration (ECE {format_pct(results.ece_before(metrics))})"
        fig.add_trace(_reliability_points(before, label, "#D55E00", "dot"), secondary_y=False)
    fig.add_trace(
        _diagonal("Perfect calibration"),
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
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d*)?")


def _fold_name(fold: Any) -> tuple[tuple[int, float, str], str]:
    """Sort key and display name of one ``fold`` value of a history file."""
    num = number(fold)
    if num is None and isinstance(fold, str) and _PLAIN_NUMBER.fullmatch(fold.strip()):
        num = float(fold)  # a fold column that mixes numbers and names ("final") is read as text
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


def _interval_bars(values: Sequence[float | None], cis: Sequence[Any]) -> dict | None:
    """Asymmetric error bars from stored CIs; None when no value has one."""
    plus, minus, any_ci = [], [], False
    for value, ci in zip(values, cis, strict=True):
        bounds = results.interval(ci)
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


def per_class_figure(metrics: Mapping, keys: Sequence[str] = PER_CLASS_METRICS) -> go.Figure:
    """Per-class precision, recall, specificity and F1 as grouped bars, with the stored CIs as error bars."""
    labels = [label for label in results.labels(metrics) if results.per_class(metrics, label)]
    title = "Per-class metrics"
    if not labels:
        return _empty_figure(title, "No per-class metrics in this results file")
    names = [METRIC_NAMES.get(key, key) for key in keys]
    fig = go.Figure()
    for label in labels:
        stats = results.per_class(metrics, label)
        values = [number(stats.get(key)) for key in keys]
        cis = [stats.get(f"{key}_ci") for key in keys]
        hover = [
            f"<b>{label}</b><br>{name} {format_interval(value, ci)}"
            for name, value, ci in zip(names, values, cis, strict=True)
        ]
        fig.add_trace(
            go.Bar(
                x=names,
                y=values,
                name=f"{label} (n = {format_count(stats.get('support'))})",
                marker={"color": class_colour(label, labels)},
                error_y=_interval_bars(values, cis),
                text=hover,
                hovertemplate="%{text}<extra></extra>",
            )
        )
    _style(fig, title, "", f"Value (bars: {results.ci_level_text(metrics)}% CI)")
    # Bars start at zero: a cut axis would make small differences look large.
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%")
    fig.update_layout(barmode="group", bargap=0.25, legend={"orientation": "h", "y": -0.12, "x": 0})
    return fig


_FOLD_FIGURE = (
    ("Accuracy", None, "accuracy"),
    ("Macro F1", "macro", "f1"),
    ("Accuracy per patient", "patient_level", "accuracy"),
)


def fold_figure(metrics: Mapping) -> go.Figure:
    """Each cross-validation fold's accuracy, macro F1 and (where stored) accuracy per patient as grouped bars,
    with the mean over folds as evaluation stored it (``cv_summary``) in the legend."""
    folds = results.folds(metrics)
    title = "Cross-validation: each held-out fold"
    if not folds:
        return _empty_figure(title, "Not a cross-validation run: no folds in this results file")
    names = [f"Fold {index}" for index in range(1, len(folds) + 1)]
    cv = results.cv_summary(metrics)
    fig = go.Figure()
    for index, (shown, group, key) in enumerate(_FOLD_FIGURE):
        values = [number((results.section(fold, group) if group else fold).get(key)) for fold in folds]
        if all(value is None for value in values):
            continue
        spread = (results.section(cv, group) if group else cv).get(key)
        fig.add_trace(
            go.Bar(
                x=names,
                y=values,
                name=f"{shown} (mean ± std {results.format_mean_std(spread)})",
                marker={"color": _FOLD_COLOURS[index % len(_FOLD_COLOURS)]},
                text=[format_pct(value) for value in values],
                textposition="outside",
                hovertemplate=f"<b>%{{x}}</b><br>{shown} %{{y:.1%}}<extra></extra>",
            )
        )
    _style(fig, title, "", "Value on the fold's held-out patients")
    # Bars start at zero: a cut axis would make small differences look large.
    fig.update_yaxes(range=[0, 1.1], tickformat=".0%")
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
            source = results.section(metrics, group) if group else metrics
            values.append(number(source.get(key)))
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


# --------------------------------------------------------------------------- prediction sets


def _coverage_trace(entries: Sequence[Mapping], key: str | None, name: str, line: dict, **extra: Any) -> go.Scatter:
    """Measured coverage against the nominal level: overall (``key`` None) or of one true class."""
    values = [
        number(entry.get("coverage") if key is None else results.section(entry, "per_class_coverage").get(key))
        for entry in entries
    ]
    return go.Scatter(
        x=[entry["level"] for entry in entries],
        y=values,
        mode="lines+markers",
        name=name,
        line=line,
        marker={"size": 7},
        hovertemplate=f"<b>{html.escape(name)}</b><br>level %{{x:.0%}}: coverage %{{y:.1%}}<extra></extra>",
        **extra,
    )


def coverage_figure(metrics: Mapping) -> go.Figure:
    """The prediction sets' measured coverage against the nominal level: overall with per-class and with one
    threshold, and each class with per-class thresholds (each class with one threshold: in the legend)."""
    title = "Prediction sets: coverage against the level"
    per_class, marginal = results.conformal(metrics, mondrian=True), results.conformal(metrics)
    if not per_class:
        return _empty_figure(title, "No prediction sets in this results file")
    labels = results.labels(metrics)
    fig = go.Figure()
    fig.add_trace(_coverage_trace(per_class, None, "All classes, per-class thresholds", {"color": "#222222"}))
    fig.add_trace(_coverage_trace(marginal, None, "All classes, one threshold", {"color": _NEUTRAL, "dash": "dash"}))
    for label in labels:
        colour = class_colour(label, labels)
        fig.add_trace(_coverage_trace(per_class, label, f"{label}, per-class thresholds", {"color": colour}))
    for label in labels:
        line = {"color": class_colour(label, labels), "dash": "dot"}
        fig.add_trace(_coverage_trace(marginal, label, f"{label}, one threshold", line, visible="legendonly"))
    levels = [entry["level"] for entry in per_class]
    low = min(levels) - 0.01
    shown = [y for trace in fig.data if trace.visible is not False for y in trace.y if y is not None]
    fig.add_trace(
        go.Scatter(
            x=[low, 1],
            y=[low, 1],
            mode="lines",
            name="Coverage = level",
            line={"color": _NEUTRAL, "width": 1},
            hoverinfo="skip",
        )
    )
    how = str(per_class[0].get("thresholds") or "")
    _style(fig, title, "Nominal coverage level", f"Measured coverage ({how})" if how else "Measured coverage")
    fig.update_xaxes(range=[low, 1.0], tickvals=levels, tickformat=".0%")
    fig.update_yaxes(range=[min([low, *shown]) - 0.01, 1.005], tickformat=".0%")
    return fig


# Shades of one hue for the coverage levels: the class colours already name the groups of bars.
_LEVEL_COLOURS = ("#9ECAE1", "#4292C6", "#08519C")


def set_size_figure(metrics: Mapping) -> go.Figure:
    """Mean prediction-set size (per-class thresholds, as the app shows) over all slices and by true class, one
    bar per coverage level."""
    title = "Prediction sets: mean size by true class"
    entries = results.conformal(metrics, mondrian=True)
    if not entries:
        return _empty_figure(title, "No prediction sets in this results file")
    labels = results.labels(metrics)
    groups = ["all classes", *labels]
    fig = go.Figure()
    for index, entry in enumerate(entries):
        sizes = results.section(entry, "per_class_set_size")
        values = [number(entry.get("mean_set_size")), *(number(sizes.get(label)) for label in labels)]
        level = format_pct(entry["level"], 0)
        fig.add_trace(
            go.Bar(
                x=groups,
                y=values,
                name=f"{level} sets",
                marker={"color": _LEVEL_COLOURS[index % len(_LEVEL_COLOURS)]},
                hovertemplate=f"<b>%{{x}}</b><br>{level} sets: %{{y:.2f}} classes on average<extra></extra>",
            )
        )
    _style(fig, title, "True class", "Mean set size (classes)")
    # Bars start at zero: a cut axis would make small differences look large.
    fig.update_yaxes(range=[0, max(len(labels), 1) + 0.05])
    fig.update_layout(barmode="group", bargap=0.25, legend={"orientation": "h", "y": -0.12, "x": 0})
    return fig
