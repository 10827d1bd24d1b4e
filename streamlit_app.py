"""Results dashboard: the models' evaluation results, for presenting to stakeholders.

    streamlit run streamlit_app.py                         # reads ./results and the bundled ./models
    TUMORLIB_RESULTS=/path/to/results streamlit run streamlit_app.py

A thin shell over :mod:`tumorlib.dashboard`, :mod:`tumorlib.tables` and :mod:`tumorlib.figures`: every
number, table, figure, card and caption comes from there (through :mod:`tumorlib.results`), drawn from
the files that training and evaluation wrote (``metrics.json``, ``history.csv``, ``predictions.csv``,
``config.yaml``, ``explanations/``). Nothing is recomputed and no dataset or model is loaded, so the
dashboard can never disagree with the evaluation that produced the files.

Importing this module only defines functions; the page is drawn by :func:`main`, which runs when
Streamlit executes the file (Streamlit runs scripts as ``__main__``).

Research software: not a medical device, not for diagnosis.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import yaml

from tumorlib import dashboard, figures, report, results, slides, tables
from tumorlib.dashboard import (
    PLOTLY_CONFIG,
    Run,
    discover_runs,
    figure_html,
    pending_runs,
    read_status,
    run_figures,
    run_tables,
    slug,
    table_csv,
)
from tumorlib.errors import TumorlibError
from tumorlib.results.names import HISTORY_CSV, METRICS_JSON, PREDICTIONS_CSV, RUN_CONFIG, STATUS_JSON

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
GALLERY_PAGE = 24  # overlays per gallery page
DISCLAIMER = "Research software: not a medical device and not for diagnosis."
TABLE_ICON = ":material/table_view:"


# --------------------------------------------------------------------------- finding runs


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


#: How each kind of results file is read (a bundle's config.json reads as config.yaml does).
_READERS: dict[str, Callable[[str], Any]] = {
    "metrics": results.load_metrics,
    "history": results.load_history,
    "predictions": results.load_predictions,
    "config": dashboard.read_config,
    "explanations": results.load_explanations,
    "ablations": results.load_ablations,
    "image": lambda path: Path(path).read_bytes(),
}


@_cache_data(max_entries=512)
def _cached_read(kind: str, path: str, stamp: float) -> Any:
    return _READERS[kind](path)


def _read(kind: str, path: Path) -> Any:
    """A results file, read once per modification time (``kind`` as in :data:`_READERS`)."""
    return _cached_read(kind, str(path), _stamp(path))


def load_metrics(run: Run) -> dict:
    return _read("metrics", run.path / METRICS_JSON)


def load_optional(run: Run, name: str, kind: str) -> tuple[Any, str | None]:
    """``(value, None)``, ``(None, None)`` when the file is absent, ``(None, message)`` when it is unreadable."""
    path = run.file(name)
    if path is None:
        return None, None
    try:
        return _read(kind, path), None
    except (TumorlibError, OSError, ValueError, yaml.YAMLError) as err:
        return None, f"{name} could not be read: {err}"


def load_history(run: Run) -> tuple[pd.DataFrame | None, str | None]:
    return load_optional(run, HISTORY_CSV, "history")


def load_predictions(run: Run) -> tuple[pd.DataFrame | None, str | None]:
    return load_optional(run, PREDICTIONS_CSV, "predictions")


def load_config(run: Run) -> dict | None:
    for name in (RUN_CONFIG, "config.json"):
        config, _ = load_optional(run, name, "config")
        if config:
            return config
    return None


#: Why plotly's static PNG export cannot work here (None when it can), checked once per server.
png_export_problem = st.cache_resource(show_spinner=False)(dashboard.png_export_problem)


# --------------------------------------------------------------------------- page pieces


@dataclass
class View:
    """What every section draws from: the chosen run, its metrics, and all runs found."""

    run: Run
    metrics: dict
    runs: list[Run]
    root: Path


def chart(fig: go.Figure, key: str) -> None:
    # theme=None keeps tumorlib.figures' styling, so the dashboard matches the HTML report and the app.
    st.plotly_chart(fig, theme=None, config=PLOTLY_CONFIG, key=key)


def no_tumour_caveat(metrics: dict) -> None:
    if results.no_tumour_labels(metrics):
        st.warning(results.NO_TUMOUR_CAVEAT, icon=":material/warning:")


def cards(values: list[tuple[str, str, str]]) -> None:
    """A row of bordered metric cards: (label, value, help text) each."""
    for column, (label, value, help_text) in zip(st.columns(len(values)), values, strict=True):
        column.metric(label, value, help=help_text, border=True)


def download(
    label: str, data: Any, file_name: str, mime: str, key: str, icon: str | None = None, where: Any = None, **extra: Any
) -> None:
    """A download button that does not rerun the page when clicked (``data`` may be built on the click)."""
    (where or st).download_button(
        label, data, file_name=file_name, mime=mime, on_click="ignore", icon=icon, key=key, **extra
    )


def header(view: View, section: str) -> None:
    st.title(section)
    st.markdown(f"Run **{view.run.label}** · " + dashboard.run_summary(view.metrics, load_config(view.run)))


# --------------------------------------------------------------------------- sections


def headline_cards(values: list[dict]) -> None:
    """A row of headline cards (dicts as :func:`tumorlib.results.headline` gives them), the interval below."""
    for column, card in zip(st.columns(len(values)), values, strict=True):
        column.metric(
            card["label"],
            card["value"],
            delta=card["ci"] or None,
            delta_color="off",
            delta_arrow="off",
            help=card["help"],
            border=True,
        )


def section_overview(view: View) -> None:
    metrics = view.metrics
    header(view, "Overview")
    headline_cards(results.headline(metrics))
    per_patient = results.patient_headline(metrics)
    if per_patient:  # where the data carries patient ids: one answer per patient, beside the slices'
        st.subheader("Per patient")
        headline_cards(per_patient)
        st.caption(dashboard.patient_caption(metrics))
    no_tumour_caveat(metrics)

    st.subheader("Compared with the paper")
    left, right = st.columns([3, 2])
    with left:
        st.markdown("**Table 1 · overall metrics**")
        st.dataframe(tables.paper_table1(metrics), hide_index=True)
    with right:
        st.markdown("**Table 2 · one-vs-rest accuracy per class**")
        st.dataframe(tables.paper_table2(metrics), hide_index=True)
    st.caption(f"{results.PAPER_CAVEAT} Source: {results.PAPER['citation']}.")

    checks = tables.checks_table(metrics)
    if checks is not None:
        st.subheader("Other checks")
        st.dataframe(checks, hide_index=True)

    st.subheader("At a glance")
    left, right = st.columns(2)
    with left:
        chart(figures.confusion_matrix_figure(metrics, normalized=True), "overview_cm")
    with right:
        chart(figures.per_class_figure(metrics), "overview_per_class")


def section_confusion(view: View) -> None:
    metrics = view.metrics
    header(view, "Confusion matrices")
    scopes = dashboard.confusion_scopes(metrics)  # all slices, per patient (where stored), each fold
    scope = st.radio("Predictions", list(scopes), horizontal=True, key="cm_scope")
    left, right = st.columns(2)
    with left:
        chart(scopes[scope](False), "cm_counts")
    with right:
        chart(scopes[scope](True), "cm_norm")
    st.caption(dashboard.confusion_caption(metrics, scope))
    no_tumour_caveat(metrics)


def section_per_class(view: View) -> None:
    metrics = view.metrics
    header(view, "Per-class metrics")
    table = tables.per_class_display(metrics)
    if table.empty:
        st.info("This metrics file has no per-class results.")
        return
    level = f"{results.ci_level_text(metrics)}%"
    names = [results.METRIC_NAMES[key] for key in results.PER_CLASS_METRICS]
    percent = {
        name: st.column_config.NumberColumn(name, format="%.1f%%", help=f"{name}; click the header to sort")
        for name in names
    }
    intervals = {f"{name} CI": st.column_config.TextColumn(f"{name} {level} CI") for name in names}
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
    chart(figures.per_class_figure(metrics), "per_class_bars")
    no_tumour_caveat(metrics)


def section_cross_validation(view: View) -> None:
    metrics = view.metrics
    header(view, "Cross-validation")
    folds = tables.fold_table(metrics)
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
        temps = dashboard.fold_temperatures_caption(metrics)
        if temps:
            st.caption(temps)

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
                chart(figures.history_figure(history, metric), f"history_{metric}")
        st.caption("Solid: training; dashed: the held-out fold. One colour per fold.")


def section_roc_calibration(view: View) -> None:
    metrics = view.metrics
    header(view, "ROC and calibration")
    cards(dashboard.calibration_cards(metrics))
    left, right = st.columns(2)
    with left:
        chart(figures.roc_figure(metrics), "roc")
    with right:
        chart(figures.reliability_figure(metrics), "reliability")
    st.caption(dashboard.calibration_caption(metrics))
    if results.conformal(metrics):  # the prediction sets, where the run measured them
        left, right = st.columns(2)
        with left:
            chart(figures.coverage_figure(metrics), "coverage")
        with right:
            chart(figures.set_size_figure(metrics), "set_size")
        st.caption(dashboard.conformal_caption(metrics))
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
            index = _read("explanations", index_path)
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
        index = dashboard.filter_gallery(index, which, chosen)
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
        path = dashboard.overlay_path(folder, str(row["file"]))
        if path is None:
            missing.append(str(row["file"]))
            continue
        caption = tables.explanation_caption(row.to_dict())
        columns[position % 4].image(_read("image", path), caption=caption)
    if missing:
        st.warning(f"{len(missing)} overlay file(s) listed in index.csv are missing: {', '.join(missing[:5])}")
    if shown.empty:
        st.info("No overlays match the filter.")


def _localiser_cards(metrics: dict) -> None:
    """The tumour map (the recipe's mask head, shipped as the bundle's localiser) against the masks."""
    values = dashboard.localiser_cards(metrics)
    if not values:
        return
    st.subheader("Tumour map (the mask head)")
    cards(values)
    st.caption(dashboard.localiser_caption(metrics))


def section_explanations(view: View) -> None:
    metrics = view.metrics
    header(view, "Explanations")
    values = dashboard.explanation_cards(metrics)
    if values:
        cards(values)
        caption = dashboard.cam_caption(metrics)
        if caption:
            # Without the chance level a pointing game means little: a fixed point at the centre scores too.
            st.caption(caption)
    else:
        st.info(
            "This metrics.json has no Grad-CAM scores (its 'cam' section): the pointing-game score is not available."
        )
    _localiser_cards(metrics)

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
    worst = tables.worst_misclassifications(predictions, n=count)
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
        ablations = _read("ablations", ablations_path)
    except TumorlibError as err:
        st.error(f"ablations.csv could not be read: {err}")
        return
    st.dataframe(tables.ablation_table(ablations), hide_index=True)


def _compare(view: View, runs: list[Run]) -> None:
    metrics: dict[str, dict] = {}
    for run in runs:
        try:
            metrics[run.key] = load_metrics(run)
        except TumorlibError as err:
            st.error(f"{run.label}: {err}")
    if len(metrics) < 2:
        return
    mismatch = dashboard.label_set_warning(metrics)
    if mismatch:
        st.warning(mismatch)
    st.dataframe(tables.comparison_table(metrics), hide_index=True)
    chart(figures.comparison_figure(metrics), "comparison_bars")
    frame = tables.comparison_table(metrics, formatted=False)
    download("Comparison (CSV)", table_csv(frame), "run-comparison.csv", "text/csv", "csv_comparison", TABLE_ICON)
    if any(results.no_tumour_labels(m) for m in metrics.values()):
        st.caption(results.NO_TUMOUR_CAVEAT)
    st.subheader("Training recipes")
    configs = {run.key: load_config(run) for run in runs if run.key in metrics}
    only_diff = st.toggle("Only settings that differ", value=True, key="recipe_diff")
    recipes = tables.recipe_table(configs, only_differences=only_diff)
    if recipes.empty:
        st.caption("No recipe differences found (or no config.yaml in these runs).")
    else:
        st.dataframe(recipes, hide_index=True)


def section_export(view: View) -> None:
    metrics, run = view.metrics, view.run
    header(view, "Export")
    history, _ = load_history(run)
    predictions, _ = load_predictions(run)
    stem = slug(run.key)

    st.subheader("Tables (CSV)")
    for name, frame in run_tables(metrics, predictions).items():
        download(name, table_csv(frame), f"{stem}-{slug(name)}.csv", "text/csv", f"csv_{slug(name)}", TABLE_ICON)

    st.subheader("Charts (interactive HTML)")
    st.caption("Each file opens offline in any browser: plotly.js is embedded, hover and zoom work.")
    charts = run_figures(metrics, history)
    columns = st.columns(2)
    for position, (name, build) in enumerate(charts.items()):
        download(
            name,
            lambda build=build: figure_html(build()),  # built only when clicked: each carries plotly.js (4.6 MB)
            f"{stem}-{slug(name)}.html",
            "text/html",
            f"html_{slug(name)}",
            ":material/monitoring:",
            where=columns[position % 2],
        )

    st.subheader("Report for slides (PDF, HTML, PNG)")
    title = f"{TITLE}: {run.key}"
    download(
        "One-page HTML report",
        lambda: report.html_report(metrics, title, history=history),
        f"{stem}-report.html",
        "text/html",
        "html_report",
        ":material/description:",
        type="primary",
    )
    st.caption(
        "Headline cards, the paper comparison, per-class and per-fold tables, confusion matrices, ROC, "
        "calibration and training curves on one page; opens offline. The PDF and the PNGs are the files of "
        "`python -m train.report`: the same tables on real pages, and each figure at 1920 x 1080."
    )
    problem = png_export_problem()
    if problem:
        st.info(
            f"The PDF and PNG export is not available here: it renders with kaleido and a Chrome or Chromium "
            f"browser, and {problem}. Use the camera icon in any chart's toolbar instead: it saves a PNG "
            "from your browser, offline.",
            icon=":material/photo_camera:",
        )
        return
    left, right = st.columns(2)
    summary = dashboard.run_summary(metrics, load_config(run)).replace("**", "")
    download(
        "Report (PDF)",
        lambda: slide_report(run, title, summary).pdf,
        f"{stem}-report.pdf",
        "application/pdf",
        "pdf_report",
        ":material/picture_as_pdf:",
        where=left,
    )
    download(
        "Every figure (PNG, zip)",
        lambda: slide_report(run, title, summary).png_zip(),
        f"{stem}-figures.zip",
        "application/zip",
        "png_zip",
        ":material/photo_library:",
        where=right,
    )
    st.caption("Built on the click (the browser renders every figure: about 15 s), then kept for this run.")


def slide_report(run: Run, title: str, summary: str) -> Any:
    """The run's :class:`tumorlib.slides.SlideReport`, rendered once per run and modification time."""
    return _slide_report(str(run.path), _stamp(run.path / METRICS_JSON), title, summary)


@_cache_data(max_entries=4)
def _slide_report(path: str, stamp: float, title: str, summary: str) -> Any:
    folder = Path(path)
    metrics = results.load_metrics(folder / METRICS_JSON)
    history = results.load_history(folder / HISTORY_CSV) if (folder / HISTORY_CSV).is_file() else None
    return slides.build_report(metrics, title, history=history, summary=summary)


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
            run = choose_run(runs, dashboard.default_run(runs, models_root()))
    with section_slot:
        section = st.radio(
            "Section",
            SECTIONS,
            key="section",
            format_func=lambda name: f"{SECTION_ICONS[name]} {name}",
            disabled=not runs,
        )
    return root, runs, run, section


def choose_run(runs: list[Run], default: Run | None = None) -> Run:
    """The run picker; it opens on ``default`` (the shipped default model's results)."""
    by_key = {run.key: run for run in runs}
    keys = list(by_key)
    index = keys.index(default.key) if default is not None and default.key in by_key else 0
    key = st.selectbox("Run", keys, index=index, key="run", format_func=lambda key: by_key[key].label)
    run = by_key[key]
    present = [name for name in (HISTORY_CSV, PREDICTIONS_CSV, RUN_CONFIG) if run.file(name)]
    if run.file("explanations"):
        present.append("explanations/")
    status = read_status(run.path / STATUS_JSON) if run.file(STATUS_JSON) else ""
    if status and status != "complete":
        st.warning(f"Run status: {status}")
    st.caption(f"Files: {METRICS_JSON}" + "".join(f", {name}" for name in present))
    return run


def missing_results(root: Path) -> None:
    """Say what is missing and how to produce it, then stop the page."""
    st.error(dashboard.missing_results_message(root, RESULTS_ENV), icon=":material/folder_off:")
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
