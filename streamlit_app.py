"""Results dashboard: the models' evaluation results, for presenting to stakeholders.

    streamlit run streamlit_app.py                         # reads ./results and the bundled ./models
    TUMORLIB_RESULTS=/path/to/results streamlit run streamlit_app.py

A thin shell over :mod:`tumorlib.report`: every number, table and figure comes from there, drawn from
the files that training and evaluation wrote (``metrics.json``, ``history.csv``, ``predictions.csv``,
``config.yaml``, ``explanations/``). Nothing is recomputed and no dataset or model is loaded, so the
dashboard can never disagree with the evaluation that produced the files.

Importing this module only defines functions; the page is drawn by :func:`main`, which runs when
Streamlit executes the file (Streamlit runs scripts as ``__main__``).

Research software: not a medical device, not for diagnosis.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import yaml

from tumorlib import report
from tumorlib.errors import TumorlibError

APP_DIR = Path(__file__).resolve().parent
DEFAULT_RESULTS = APP_DIR / "results"
DEFAULT_MODELS = APP_DIR / "models"
#: Environment variables that override the results root and the bundled-models folder.
RESULTS_ENV = "TUMORLIB_RESULTS"
MODELS_ENV = "TUMORLIB_MODELS"

TITLE = "Brain-tumour MRI classifier · results"
SECTIONS = (
    "Overview",
    "Confusion matrices",
    "Per-class metrics",
    "Cross-validation",
    "ROC and calibration",
    "Explanations",
    "Run comparison",
    "Export",
)
SECTION_ICONS = {
    "Overview": ":material/dashboard:",
    "Confusion matrices": ":material/grid_on:",
    "Per-class metrics": ":material/table_chart:",
    "Cross-validation": ":material/stacked_line_chart:",
    "ROC and calibration": ":material/ssid_chart:",
    "Explanations": ":material/image_search:",
    "Run comparison": ":material/compare_arrows:",
    "Export": ":material/download:",
}
# Folders inside a run that hold parts of it, never a run of their own.
_RUN_PARTS = ("final", "explanations")
# The modebar's camera button saves a PNG in the browser: offline, no kaleido needed.
PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
GALLERY_PAGE = 24  # overlays per gallery page
DISCLAIMER = "Research software: not a medical device and not for diagnosis."


# --------------------------------------------------------------------------- finding runs


@dataclass(frozen=True)
class Run:
    """One folder holding a ``metrics.json``: a results run or a bundled demo model."""

    key: str
    path: Path
    bundled: bool = False

    @property
    def label(self) -> str:
        return f"{self.key} (bundled model)" if self.bundled else self.key

    def file(self, name: str) -> Path | None:
        path = self.path / name
        return path if path.exists() else None


def _is_part(path: Path) -> bool:
    name = path.name.lower()
    return name.startswith((".", "_")) or name in _RUN_PARTS or (name.startswith("fold") and name[4:].isdigit())


def discover_runs(root: Path, bundled: bool = False) -> list[Run]:
    """Every run under ``root``: subfolders with a ``metrics.json``, one level of nesting allowed.

    ``results/resnet50-cv/metrics.json`` is the run ``resnet50-cv``; ``results/ablations/no-crop/metrics.json``
    is ``ablations/no-crop``. Cross-validation folds (``fold0``...), the final model's folder and hidden
    folders are parts of a run, not runs.
    """
    runs: list[Run] = []
    if not root.is_dir():
        return runs
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not _is_part(p))
    except OSError:
        return runs
    for child in children:
        if (child / "metrics.json").is_file():
            runs.append(Run(child.name, child, bundled))
            continue
        try:
            nested = sorted(p for p in child.iterdir() if p.is_dir() and not _is_part(p))
        except OSError:
            continue
        runs.extend(Run(f"{child.name}/{p.name}", p, bundled) for p in nested if (p / "metrics.json").is_file())
    return runs


def pending_runs(root: Path) -> list[str]:
    """Subfolders of ``root`` with a ``status.json`` but no ``metrics.json`` yet (training or failed)."""
    if not root.is_dir():
        return []
    out = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not _is_part(p)):
        if (child / "status.json").is_file() and not (child / "metrics.json").is_file():
            status = _read_status(child / "status.json")
            out.append(f"{child.name} ({status or 'no metrics yet'})")
    return out


def _read_status(path: Path) -> str:
    try:
        state = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return ""
    return str(state.get("state", "")) if isinstance(state, dict) else ""


def results_root_default() -> str:
    return os.environ.get(RESULTS_ENV) or str(DEFAULT_RESULTS)


def models_root() -> Path:
    return Path(os.environ.get(MODELS_ENV) or DEFAULT_MODELS)


# --------------------------------------------------------------------------- cached file access


def _stamp(path: Path) -> float:
    """Modification time, part of every cache key so a rewritten file is read again."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def _cache_data(max_entries: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``st.cache_data``, applied on first call: decorating at import would make Streamlit log warnings
    whenever this module is imported outside ``streamlit run`` (by tests or tools)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        cached: list[Callable[..., Any]] = []

        @functools.wraps(func)
        def call(*args: Any) -> Any:
            if not cached:
                cached.append(st.cache_data(show_spinner=False, max_entries=max_entries)(func))
            return cached[0](*args)

        return call

    return decorate


@_cache_data(max_entries=64)
def _cached_metrics(path: str, stamp: float) -> dict:
    return report.load_metrics(path)


@_cache_data(max_entries=64)
def _cached_history(path: str, stamp: float) -> pd.DataFrame:
    return report.load_history(path)


@_cache_data(max_entries=32)
def _cached_predictions(path: str, stamp: float) -> pd.DataFrame:
    return report.load_predictions(path)


@_cache_data(max_entries=64)
def _cached_config(path: str, stamp: float) -> dict:
    # config.yaml from the trainer, or a bundle's config.json (JSON is YAML).
    loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


@_cache_data(max_entries=32)
def _cached_explanations(path: str, stamp: float) -> pd.DataFrame:
    return report.load_explanations(path)


@_cache_data(max_entries=8)
def _cached_ablations(path: str, stamp: float) -> pd.DataFrame:
    return report.load_ablations(path)


@_cache_data(max_entries=512)
def _cached_image(path: str, stamp: float) -> bytes:
    return Path(path).read_bytes()


def load_metrics(run: Run) -> dict:
    path = run.path / "metrics.json"
    return _cached_metrics(str(path), _stamp(path))


def load_optional(run: Run, name: str, loader: Callable[[str, float], Any]) -> tuple[Any, str | None]:
    """``(value, None)``, ``(None, None)`` when the file is absent, ``(None, message)`` when it is unreadable."""
    path = run.file(name)
    if path is None:
        return None, None
    try:
        return loader(str(path), _stamp(path)), None
    except (TumorlibError, OSError, ValueError, yaml.YAMLError) as err:
        return None, f"{name} could not be read: {err}"


def load_history(run: Run) -> tuple[pd.DataFrame | None, str | None]:
    return load_optional(run, "history.csv", _cached_history)


def load_predictions(run: Run) -> tuple[pd.DataFrame | None, str | None]:
    return load_optional(run, "predictions.csv", _cached_predictions)


def load_config(run: Run) -> dict | None:
    for name in ("config.yaml", "config.json"):
        config, _ = load_optional(run, name, _cached_config)
        if config:
            return config
    return None


@st.cache_resource(show_spinner=False)
def png_export_problem() -> str | None:
    """Why plotly's static PNG export cannot work here (None when it can): it needs kaleido and a Chrome."""
    if importlib.util.find_spec("kaleido") is None:
        return "the kaleido package is not installed"
    browsers = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
    if not any(shutil.which(name) for name in browsers):
        return "kaleido is installed but no Chrome or Chromium browser was found"
    return None


# --------------------------------------------------------------------------- export helpers


def figure_html(fig: go.Figure) -> str:
    """A chart as a standalone interactive HTML page with plotly.js inline, so it opens offline."""
    return fig.to_html(full_html=True, include_plotlyjs=True, config=PLOTLY_CONFIG)


def table_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text.strip().lower())
    return "-".join(part for part in keep.split("-") if part) or "run"


def run_figures(metrics: dict, history: pd.DataFrame | None) -> dict[str, Callable[[], go.Figure]]:
    """Every chart of a run, by name, built only when asked for."""
    charts: dict[str, Callable[[], go.Figure]] = {
        "Confusion matrix (counts)": lambda: report.confusion_matrix_figure(metrics),
        "Confusion matrix (row shares)": lambda: report.confusion_matrix_figure(metrics, normalized=True),
        "Per-class metrics": lambda: report.per_class_figure(metrics),
        "ROC curves": lambda: report.roc_figure(metrics),
        "Reliability diagram": lambda: report.reliability_figure(metrics),
    }
    if history is not None and not history.empty:
        charts["Training loss"] = lambda: report.history_figure(history, "loss")
        charts["Training accuracy"] = lambda: report.history_figure(history, "acc")
        charts["Learning rate"] = lambda: report.history_figure(history, "lr")
    return charts


def run_tables(metrics: dict, predictions: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """Every table of a run, by name, as exported to CSV (per-class metrics as plain numbers)."""
    tables = {
        "Per-class metrics": report.per_class_table(metrics, formatted=False),
        "Comparison with the paper (Table 1)": report.paper_table1(metrics),
        "Comparison with the paper (Table 2)": report.paper_table2(metrics),
    }
    folds = report.fold_table(metrics)
    if folds is not None:
        tables["Cross-validation folds"] = folds
    checks = report.checks_table(metrics)
    if checks is not None:
        tables["Other checks"] = checks
    if predictions is not None:
        tables["Worst misclassifications"] = report.worst_misclassifications(predictions, n=50, formatted=False)
    return tables


# --------------------------------------------------------------------------- page pieces


@dataclass
class View:
    """What every section draws from: the chosen run, its metrics, and all runs found."""

    run: Run
    metrics: dict
    runs: list[Run]
    root: Path


def chart(fig: go.Figure, key: str) -> None:
    # theme=None keeps report.py's styling, so the dashboard matches the HTML report and the app.
    st.plotly_chart(fig, theme=None, config=PLOTLY_CONFIG, key=key)


def no_tumour_caveat(metrics: dict) -> None:
    if report.no_tumour_labels(metrics):
        st.warning(report.NO_TUMOUR_CAVEAT, icon=":material/warning:")


def run_summary(view: View) -> str:
    """One line under the title: model, input size, split, classes, test-set size, intervals."""
    metrics, parts = view.metrics, []
    recipe = report.recipe_of(load_config(view.run))
    if recipe.get("model"):
        parts.append(f"**{recipe['model']}**")
    if recipe.get("input_size"):
        parts.append(f"{recipe['input_size']} px")
    folds = (metrics.get("cv_summary") or {}).get("n_folds") or len(metrics.get("folds") or [])
    if folds:
        parts.append(f"{folds}-fold cross-validation, grouped by patient")
    labels = metrics.get("labels") or []
    parts.append(f"{len(labels)} classes ({', '.join(map(str, labels))})")
    ci = metrics.get("ci") or {}
    if ci.get("method"):
        unit = f" over {ci['unit']}s" if ci.get("unit") else ""
        parts.append(f"intervals: {ci_level(metrics)} {ci['method']}{unit}")
    return " · ".join(parts)


def ci_level(metrics: dict) -> str:
    """``"95%"``: the stored interval level, as a fraction (0.95) or a percentage (95)."""
    level = (metrics.get("ci") or {}).get("level")
    if not isinstance(level, int | float) or isinstance(level, bool) or level <= 0:
        level = 0.95
    return report.format_pct(level / 100 if level > 1 else level, 0)


def header(view: View, section: str) -> None:
    st.title(section)
    st.markdown(f"Run **{view.run.label}** · " + run_summary(view))


# --------------------------------------------------------------------------- sections


def section_overview(view: View) -> None:
    metrics = view.metrics
    header(view, "Overview")
    cards = report.headline(metrics)
    for column, card in zip(st.columns(len(cards)), cards, strict=True):
        column.metric(
            card["label"],
            card["value"],
            delta=card["ci"] or None,
            delta_color="off",
            delta_arrow="off",
            help=card["help"],
            border=True,
        )
    no_tumour_caveat(metrics)

    st.subheader("Compared with the paper")
    left, right = st.columns([3, 2])
    with left:
        st.markdown("**Table 1 · overall metrics**")
        st.dataframe(report.paper_table1(metrics), hide_index=True)
    with right:
        st.markdown("**Table 2 · one-vs-rest accuracy per class**")
        st.dataframe(report.paper_table2(metrics), hide_index=True)
    st.caption(f"{report.PAPER_CAVEAT} Paper: {report.PAPER['citation']}.")

    checks = report.checks_table(metrics)
    if checks is not None:
        st.subheader("Other checks")
        st.dataframe(checks, hide_index=True)

    st.subheader("At a glance")
    left, right = st.columns(2)
    with left:
        chart(report.confusion_matrix_figure(metrics, normalized=True), "overview_cm")
    with right:
        chart(report.per_class_figure(metrics), "overview_per_class")


def section_confusion(view: View) -> None:
    metrics = view.metrics
    header(view, "Confusion matrices")
    folds = [fold for fold in metrics.get("folds") or [] if isinstance(fold, dict)]
    pooled = "All folds pooled" if folds else "All test slices"
    scopes = [pooled, *(f"Fold {index}" for index in range(1, len(folds) + 1))]
    scope = st.radio("Predictions", scopes, horizontal=True, key="cm_scope")
    source = metrics if scope == pooled else folds[scopes.index(scope) - 1]
    left, right = st.columns(2)
    with left:
        chart(report.confusion_matrix_figure(source, title=f"{scope}: counts"), "cm_counts")
    with right:
        chart(
            report.confusion_matrix_figure(source, normalized=True, title=f"{scope}: share of each true class"),
            "cm_norm",
        )
    st.caption(
        "Rows are the true class, columns the predicted class; the diagonal holds the correct predictions. "
        "Hover a cell for its count and its share of the true class."
        + (" Pooled: every slice predicted once, by the fold model that did not train on its patient." if folds else "")
    )
    no_tumour_caveat(metrics)


_PER_CLASS_COLUMNS = (("precision", "Precision"), ("recall", "Recall"), ("specificity", "Specificity"), ("f1", "F1"))


def per_class_display(metrics: dict) -> pd.DataFrame:
    """Sortable per-class table: numbers in percent (from report's plain table) next to report's CI text."""
    raw = report.per_class_table(metrics, formatted=False)
    text = report.per_class_table(metrics)
    if raw.empty:
        return raw
    out = pd.DataFrame({"Class": raw["class"]})
    for key, name in _PER_CLASS_COLUMNS:
        out[name] = raw[key] * 100
        out[f"{name} CI"] = text[f"{name} CI"]
    out["AUC"] = raw["auc"]
    out["Support"] = raw["support"]
    return out


def section_per_class(view: View) -> None:
    metrics = view.metrics
    header(view, "Per-class metrics")
    table = per_class_display(metrics)
    if table.empty:
        st.info("This metrics file has no per-class results.")
        return
    level = ci_level(metrics)
    percent = {
        name: st.column_config.NumberColumn(name, format="%.1f%%", help=f"{name}; click the header to sort")
        for _, name in _PER_CLASS_COLUMNS
    }
    intervals = {f"{name} CI": st.column_config.TextColumn(f"{name} {level} CI") for _, name in _PER_CLASS_COLUMNS}
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            **percent,
            **intervals,
            "AUC": st.column_config.NumberColumn("AUC", format="%.3f", help="One-vs-rest area under the ROC curve"),
            "Support": st.column_config.NumberColumn("Support", format="%d", help="Test slices of this class"),
        },
    )
    st.caption(
        "Each class against the rest. Specificity: share of slices of the other classes not called this class. "
        "Click a column header to sort."
    )
    chart(report.per_class_figure(metrics), "per_class_bars")
    no_tumour_caveat(metrics)


def section_cross_validation(view: View) -> None:
    metrics = view.metrics
    header(view, "Cross-validation")
    folds = report.fold_table(metrics)
    if folds is None:
        st.info(
            "This run was not cross-validated (its metrics.json has no 'folds'): there is no per-fold table. "
            "Train with --folds K to get one."
        )
    else:
        st.dataframe(folds, hide_index=True)
        st.caption(
            "One row per held-out fold, each tested on patients its model never saw. Mean ± std (sample standard "
            "deviation) as the trainer stored it; the Overview's figures pool the out-of-fold predictions of all "
            "folds."
        )
        temps = (metrics.get("calibration") or {}).get("fold_temperatures")
        if isinstance(temps, list) and temps:
            shown = ", ".join(f"{t:.2f}" for t in temps if isinstance(t, int | float))
            st.caption(f"Temperature fitted per fold (cross-fitted calibration): {shown}.")

    st.subheader("Training curves")
    history, problem = load_history(view.run)
    if problem:
        st.error(problem)
    elif history is None:
        st.info("No history.csv in this run folder: the training curves are not available.")
    else:
        tabs = st.tabs(["Loss", "Accuracy", "Learning rate"])
        for tab, metric in zip(tabs, ("loss", "acc", "lr"), strict=True):
            with tab:
                chart(report.history_figure(history, metric), f"history_{metric}")
        st.caption("Solid: training; dashed: the held-out fold. One colour per fold.")


def section_roc_calibration(view: View) -> None:
    metrics = view.metrics
    header(view, "ROC and calibration")
    bins = metrics.get("reliability")
    binning = f" over {len(bins)} equal-width confidence bins" if isinstance(bins, list) and bins else ""
    values = [
        ("Macro AUC", report.headline(metrics)[3]["value"], "One-vs-rest AUC averaged over classes."),
        (
            "ECE after calibration",
            report.format_pct(metrics.get("ece")),
            f"Expected calibration error{binning}: the gap between confidence and accuracy, weighted by bin size.",
        ),
        (
            "ECE before calibration",
            report.format_pct(metrics.get("ece_uncalibrated")),
            "Expected calibration error of the raw softmax.",
        ),
        (
            "Temperature",
            f"{metrics['temperature']:.2f}" if isinstance(metrics.get("temperature"), int | float) else "—",
            "Temperature scaling divides the logits by this before the softmax; it never changes the predicted class.",
        ),
    ]
    for column, (label, value, help_text) in zip(st.columns(len(values)), values, strict=True):
        column.metric(label, value, help=help_text, border=True)
    left, right = st.columns(2)
    with left:
        chart(report.roc_figure(metrics), "roc")
    with right:
        chart(report.reliability_figure(metrics), "reliability")
    method = (metrics.get("calibration") or {}).get("method")
    st.caption(
        "Reliability: in each confidence bin, how often the model was right; on the diagonal, a stated 90% "
        "means right 90% of the time. Bars: slices per bin." + (f" Calibration: {method}." if method else "")
    )
    no_tumour_caveat(metrics)


def _gallery(view: View) -> None:
    folder = view.run.path / "explanations"
    if not folder.is_dir():
        st.info(
            "No explanations/ folder in this run: the Grad-CAM overlays are exported there by evaluation "
            "(PNG files plus explanations/index.csv). The gallery appears once they exist."
        )
        return
    index_path = folder / "index.csv"
    if index_path.is_file():
        try:
            index = _cached_explanations(str(index_path), _stamp(index_path))
        except TumorlibError as err:
            st.error(f"explanations/index.csv could not be read: {err}")
            return
    else:
        index = pd.DataFrame({"file": sorted(p.name for p in folder.glob("*.png"))})
        st.caption("No explanations/index.csv: showing the PNG files without their labels.")
    if index.empty:
        st.info("The explanations folder holds no overlays.")
        return
    if {"true_label", "pred_label"} <= set(index.columns):
        left, right = st.columns([2, 3])
        which = left.radio("Show", ["All", "Misclassified", "Correct"], horizontal=True, key="gallery_filter")
        classes = sorted(index["true_label"].dropna().unique())
        chosen = right.multiselect("True class", classes, default=classes, key="gallery_classes")
        wrong = index["true_label"] != index["pred_label"]
        keep = index["true_label"].isin(chosen)
        keep &= wrong if which == "Misclassified" else (~wrong if which == "Correct" else True)
        index = index[keep]
    pages = max(1, -(-len(index) // GALLERY_PAGE))
    page = 1
    if pages > 1:
        page = int(st.number_input(f"Page (of {pages})", 1, pages, 1, key="gallery_page"))
    shown = index.iloc[(page - 1) * GALLERY_PAGE : page * GALLERY_PAGE]
    if pages > 1:
        first = (page - 1) * GALLERY_PAGE
        st.caption(f"Overlays {first + 1}–{first + len(shown)} of {len(index)}.")
    missing = []
    columns = st.columns(4)
    for position, (_, row) in enumerate(shown.iterrows()):
        path = (folder / str(row["file"])).resolve()
        if not path.is_file() or folder.resolve() not in path.parents:
            missing.append(str(row["file"]))
            continue
        caption = report.explanation_caption(row.to_dict())
        columns[position % 4].image(_cached_image(str(path), _stamp(path)), caption=caption)
    if missing:
        st.warning(f"{len(missing)} overlay file(s) listed in index.csv are missing: {', '.join(missing[:5])}")
    if shown.empty:
        st.info("No overlays match the filter.")


def _ceiling_text(ceiling) -> str:
    if not isinstance(ceiling, dict) or ceiling.get("pointing_game") is None or len(ceiling.get("grid") or []) != 2:
        return ""
    rows, cols = ceiling["grid"]
    return (
        f" The heatmap comes from a {rows} x {cols} feature grid: no heatmap of this model could point inside "
        f"the tumour on more than {report.format_pct(ceiling['pointing_game'])} of these slices."
    )


def _localiser_cards(loc) -> None:
    """The tumour map (the recipe's mask head, shipped as the bundle's localiser) against the masks."""
    if not isinstance(loc, dict) or loc.get("pointing_game") is None:
        return
    st.subheader("Tumour map (the mask head)")
    n = f" (n = {loc['n']:,})" if isinstance(loc.get("n"), int) else ""
    quiet = loc.get("no_tumor") if isinstance(loc.get("no_tumor"), dict) else {}
    cards = [
        (
            "Pointing game",
            report.format_pct(loc["pointing_game"]),
            "Share of tumour slices whose map peak falls inside the tumour mask" + n + ".",
        ),
        (
            "Energy in mask",
            report.format_pct(loc.get("energy_in_mask")),
            "Share of the map's total inside the tumour mask" + n + ".",
        ),
        (
            "Soft Dice",
            report.format_pct(loc.get("soft_dice")),
            "2 x overlap / (map total + mask area), no threshold" + n + ".",
        ),
    ]
    for column, (label, value, help_text) in zip(st.columns(len(cards)), cards, strict=True):
        column.metric(label, value, help=help_text, border=True)
    text = (
        "The auxiliary head trained with the classifier to predict how much of each feature-grid cell is tumour, "
        "scored by each fold's model on its held-out patients. It shows where a tumour is likely, not why a "
        "class was chosen."
    )
    base = (loc.get("baseline") or {}).get("pointing_game")
    if base is not None:
        text += f" A fixed point at the image centre scores {report.format_pct(base)} on the same slices."
    if quiet.get("n") and quiet.get("peak") is not None and loc.get("peak") is not None:
        text += (
            f" Mean peak {loc['peak']:.2f} on tumour slices and {quiet['peak']:.2f} on {quiet['n']:,} no-tumour slices."
        )
    st.caption(text)


def section_explanations(view: View) -> None:
    metrics = view.metrics
    header(view, "Explanations")
    cam = metrics.get("cam") if isinstance(metrics.get("cam"), dict) else None
    gate = metrics.get("gate") if isinstance(metrics.get("gate"), dict) else None
    if cam or gate:
        cards = []
        if cam:
            n = f" (n = {cam['n']:,})" if isinstance(cam.get("n"), int) else ""
            cards.append(
                (
                    "Pointing game",
                    report.format_pct(cam.get("pointing_game")),
                    "Share of tumour slices whose Grad-CAM peak falls inside the tumour mask" + n + ".",
                )
            )
            cards.append(
                (
                    "Energy in mask",
                    report.format_pct(cam.get("energy_in_mask")),
                    "Share of the Grad-CAM map's total energy inside the tumour mask" + n + ".",
                )
            )
        if gate:
            cards.append(
                (
                    "Input gate refused",
                    report.format_pct(gate.get("refused_fraction")),
                    "Share of inputs the out-of-distribution gate refused to classify.",
                )
            )
        for column, (label, value, help_text) in zip(st.columns(len(cards)), cards, strict=True):
            column.metric(label, value, help=help_text, border=True)
        base = cam.get("baseline") if cam and isinstance(cam.get("baseline"), dict) else {}
        if base.get("pointing_game") is not None and base.get("energy_in_mask") is not None:
            # Without the chance level a pointing game means little: a fixed point at the centre scores too.
            st.caption(
                f"Chance levels on the same slices: a heatmap that always peaks at the image centre scores "
                f"{report.format_pct(base['pointing_game'])}; a uniform heatmap puts "
                f"{report.format_pct(base['energy_in_mask'])} of its energy inside the mask."
                + _ceiling_text(cam.get("ceiling"))
            )
    else:
        st.info(
            "This metrics.json has no Grad-CAM scores (its 'cam' section): the pointing-game score is not available."
        )
    _localiser_cards(metrics.get("localiser"))

    st.subheader("Grad-CAM gallery")
    _gallery(view)

    st.subheader("Worst misclassifications")
    predictions, problem = load_predictions(view.run)
    if problem:
        st.error(problem)
        return
    if predictions is None:
        st.info("No predictions.csv in this run folder: the misclassifications cannot be listed.")
        return
    count = st.slider("How many", 5, 50, 10, step=5, key="worst_n")
    worst = report.worst_misclassifications(predictions, n=count)
    if worst.empty:
        st.success("No misclassified slices in predictions.csv.")
        return
    st.dataframe(worst, hide_index=True)
    st.caption(
        "The wrong predictions the model was most sure of, by the stored probability of the predicted class. "
        "These are the slices to review first: a label error, an unusual slice, or a systematic confusion."
    )


def section_comparison(view: View) -> None:
    st.title("Run comparison")
    keys = [run.key for run in view.runs]
    by_key = {run.key: run for run in view.runs}
    ablations_path = view.root / "ablations.csv"
    if len(keys) < 2:
        st.info("Only one run was found: add runs to the results folder to compare them.")
    else:
        default = [view.run.key, *[key for key in keys if key != view.run.key]][: min(len(keys), 4)]
        chosen = st.multiselect(
            "Runs", keys, default=default, key="compare_runs", format_func=lambda key: by_key[key].label
        )
        if len(chosen) < 2:
            st.info("Pick two or more runs to compare them side by side.")
        else:
            _compare(view, [by_key[key] for key in chosen])
    st.subheader("Ablation table")
    if not ablations_path.is_file():
        st.caption(f"No ablations.csv in {view.root}.")
        return
    try:
        ablations = _cached_ablations(str(ablations_path), _stamp(ablations_path))
    except TumorlibError as err:
        st.error(f"ablations.csv could not be read: {err}")
        return
    st.dataframe(report.ablation_table(ablations), hide_index=True)


def _compare(view: View, runs: list[Run]) -> None:
    metrics: dict[str, dict] = {}
    for run in runs:
        try:
            metrics[run.key] = load_metrics(run)
        except TumorlibError as err:
            st.error(f"{run.label}: {err}")
    if len(metrics) < 2:
        return
    label_sets = {run: tuple(m.get("labels") or []) for run, m in metrics.items()}
    if len(set(label_sets.values())) > 1:
        described = "; ".join(f"{run}: {len(labels)} classes" for run, labels in label_sets.items())
        st.warning(
            f"These runs do not classify the same classes ({described}): their overall figures are not "
            "like-for-like (more classes is a harder task)."
        )
    st.dataframe(report.comparison_table(metrics), hide_index=True)
    chart(report.comparison_figure(metrics), "comparison_bars")
    st.download_button(
        "Comparison (CSV)",
        table_csv(report.comparison_table(metrics, formatted=False)),
        file_name="run-comparison.csv",
        mime="text/csv",
        on_click="ignore",
        icon=":material/table_view:",
        key="csv_comparison",
    )
    if any(report.no_tumour_labels(m) for m in metrics.values()):
        st.caption(report.NO_TUMOUR_CAVEAT)
    st.subheader("Training recipes")
    configs = {run.key: load_config(run) for run in runs if run.key in metrics}
    only_diff = st.toggle("Only settings that differ", value=True, key="recipe_diff")
    recipes = report.recipe_table(configs, only_differences=only_diff)
    if recipes.empty:
        st.caption("No recipe differences found (or no config.yaml in these runs).")
    else:
        st.dataframe(recipes, hide_index=True)


def section_export(view: View) -> None:
    metrics, run = view.metrics, view.run
    header(view, "Export")
    history, _ = load_history(run)
    predictions, _ = load_predictions(run)
    stem = _slug(run.key)

    st.subheader("Tables (CSV)")
    for name, frame in run_tables(metrics, predictions).items():
        st.download_button(
            name,
            table_csv(frame),
            file_name=f"{stem}-{_slug(name)}.csv",
            mime="text/csv",
            on_click="ignore",
            icon=":material/table_view:",
            key=f"csv_{_slug(name)}",
        )

    st.subheader("Charts (interactive HTML)")
    st.caption("Each file opens offline in any browser: plotly.js is embedded, hover and zoom work.")
    charts = run_figures(metrics, history)
    columns = st.columns(2)
    for position, (name, build) in enumerate(charts.items()):
        columns[position % 2].download_button(
            name,
            # Built only when clicked: each page carries plotly.js (about 4.6 MB).
            data=lambda build=build: figure_html(build()),
            file_name=f"{stem}-{_slug(name)}.html",
            mime="text/html",
            on_click="ignore",
            icon=":material/monitoring:",
            key=f"html_{_slug(name)}",
        )

    st.subheader("One-page report (HTML)")
    title = f"{TITLE}: {run.key}"
    st.download_button(
        "One-page HTML report",
        data=lambda: report.html_report(metrics, title, history=history),
        file_name=f"{stem}-report.html",
        mime="text/html",
        on_click="ignore",
        type="primary",
        icon=":material/description:",
        key="html_report",
    )
    st.caption(
        "Headline cards, the paper comparison, per-class and per-fold tables, confusion matrices, ROC, "
        "calibration and training curves on one page; opens offline. Print it to PDF from the browser for slides."
    )

    st.subheader("Images (PNG)")
    problem = png_export_problem()
    if problem:
        st.info(
            f"Server-side PNG export is not available here: plotly's static export needs kaleido and a Chrome "
            f"browser, and {problem}. Use the camera icon in any chart's toolbar instead: it saves a PNG "
            "from your browser, offline.",
            icon=":material/photo_camera:",
        )
        return
    for name, build in charts.items():
        st.download_button(
            f"{name} (PNG)",
            data=lambda build=build: build().to_image(format="png", scale=2),
            file_name=f"{stem}-{_slug(name)}.png",
            mime="image/png",
            on_click="ignore",
            key=f"png_{_slug(name)}",
        )


SECTION_PAGES: dict[str, Callable[[View], None]] = {
    "Overview": section_overview,
    "Confusion matrices": section_confusion,
    "Per-class metrics": section_per_class,
    "Cross-validation": section_cross_validation,
    "ROC and calibration": section_roc_calibration,
    "Explanations": section_explanations,
    "Run comparison": section_comparison,
    "Export": section_export,
}


# --------------------------------------------------------------------------- the page


def _root_from(text: str) -> Path:
    text = text.strip()
    return Path(text).expanduser() if text else Path(results_root_default())


def sidebar() -> tuple[Path, list[Run], Run | None, str]:
    """Run choice, section choice and (folded away) the results folder: ``(root, runs, run, section)``."""
    bar = st.sidebar
    bar.title("Results dashboard")
    bar.caption("Brain-tumour MRI classification: evaluation results.")
    # Widgets are drawn top to bottom, but the run list depends on the folder chosen at the bottom:
    # reserve the top slots, fill the folder box first.
    run_slot, section_slot = bar.container(), bar.container()
    guess = _root_from(st.session_state.get("results_root", results_root_default()))
    with bar.expander("Results folder", expanded=not discover_runs(guess), icon=":material/folder_open:"):
        root = _root_from(
            st.text_input(
                "Folder",
                value=results_root_default(),
                key="results_root",
                help=f"Each subfolder with a metrics.json is a run. Default: ./results, or ${RESULTS_ENV}.",
            )
        )
        runs = discover_runs(root)
        bundled = discover_runs(models_root(), bundled=True)
        if bundled and st.toggle(
            f"Include the bundled models ({len(bundled)})",
            value=True,
            key="include_bundled",
            help=f"Demo models shipped in {models_root()}",
        ):
            runs += bundled
        pending = pending_runs(root)
        st.caption(f"{len(runs)} run(s) found." + (f" Not finished yet: {', '.join(pending)}." if pending else ""))
    run = None
    if runs:
        with run_slot:
            run = choose_run(runs)
    with section_slot:
        section = st.radio(
            "Section",
            SECTIONS,
            key="section",
            format_func=lambda name: f"{SECTION_ICONS[name]} {name}",
            disabled=not runs,
        )
    return root, runs, run, section


def choose_run(runs: list[Run]) -> Run:
    by_key = {run.key: run for run in runs}
    key = st.selectbox("Run", list(by_key), key="run", format_func=lambda key: by_key[key].label)
    run = by_key[key]
    present = [name for name in ("history.csv", "predictions.csv", "config.yaml") if run.file(name)]
    if run.file("explanations"):
        present.append("explanations/")
    status = _read_status(run.path / "status.json") if run.file("status.json") else ""
    if status and status != "complete":
        st.warning(f"Run status: {status}")
    st.caption("Files: metrics.json" + "".join(f", {name}" for name in present))
    return run


def missing_results(root: Path) -> None:
    """Say what is missing and how to produce it, then stop the page."""
    if not root.exists():
        problem = f"The results folder **{root}** does not exist."
    elif not root.is_dir():
        problem = f"**{root}** is not a folder."
    else:
        problem = f"No runs in **{root}**: none of its subfolders holds a metrics.json."
    pending = pending_runs(root)
    st.error(
        f"{problem}\n\n"
        "A run is a folder with the metrics.json that training writes, for example "
        "`python -m train --data DATA --folds 5 --name resnet50-cv --output results`. "
        f"Choose another folder in the sidebar, or set ${RESULTS_ENV}."
        + (f"\n\nStill running or failed (no metrics.json yet): {', '.join(pending)}." if pending else ""),
        icon=":material/folder_off:",
    )
    st.stop()


def main() -> None:
    st.set_page_config(page_title=TITLE, page_icon=":material/neurology:", layout="wide")
    root, runs, run, section = sidebar()
    if run is None:
        missing_results(root)
        return
    try:
        metrics = load_metrics(run)
    except TumorlibError as err:
        st.error(f"Run **{run.label}** cannot be shown: {err}", icon=":material/error:")
        st.stop()
        return
    try:
        SECTION_PAGES[section](View(run, metrics, runs, root))
    except (TumorlibError, KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        # A results file that parses but holds something unexpected: say so instead of a traceback.
        st.error(
            f"The {section} section cannot be drawn from {run.path}: {type(err).__name__}: {err}. "
            "The results files may be from an older or newer evaluation; rerun the evaluation to refresh them.",
            icon=":material/error:",
        )
    st.divider()
    st.caption(f"{DISCLAIMER} Figures are read from {run.path}; nothing is recomputed.")


if __name__ == "__main__":
    main()
