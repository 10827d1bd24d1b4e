"""What the results dashboard shows, without Streamlit: the runs in a results folder, their exports, and
the cards and captions of each section.

``streamlit_app.py`` only lays these out. Runs are folders holding a ``metrics.json`` (a training run,
or a bundled model); every number comes from :mod:`tumorlib.results`, and the tables and figures are
those of :mod:`tumorlib.tables` and :mod:`tumorlib.figures`. Nothing is recomputed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import yaml

from . import figures, results, slides, tables
from .results import format_auc, format_pct, number
from .results.names import METRICS_JSON, STATUS_JSON

__all__ = [
    "PLOTLY_CONFIG",
    "Run",
    "calibration_caption",
    "calibration_cards",
    "cam_caption",
    "conformal_caption",
    "confusion_caption",
    "confusion_scopes",
    "default_run",
    "discover_runs",
    "explanation_cards",
    "figure_html",
    "filter_gallery",
    "fold_temperatures_caption",
    "label_set_warning",
    "localiser_caption",
    "localiser_cards",
    "missing_results_message",
    "overlay_path",
    "patient_caption",
    "pending_runs",
    "png_export_problem",
    "read_config",
    "read_status",
    "run_figures",
    "run_summary",
    "run_tables",
    "slug",
    "table_csv",
]

#: A card: (label, value, help text).
Card = tuple[str, str, str]

# Folders inside a run that hold parts of it, never a run of their own.
_RUN_PARTS = ("final", "explanations")
# The modebar's camera button saves a PNG in the browser: offline, no kaleido needed.
PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


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
        if (child / METRICS_JSON).is_file():
            runs.append(Run(child.name, child, bundled))
            continue
        try:
            nested = sorted(p for p in child.iterdir() if p.is_dir() and not _is_part(p))
        except OSError:
            continue
        runs.extend(Run(f"{child.name}/{p.name}", p, bundled) for p in nested if (p / METRICS_JSON).is_file())
    return runs


def default_run(runs: list[Run], models_root: Path) -> Run | None:
    """The run to open on: the results run whose metrics the shipped default model carries (its bundle's
    ``metrics.json`` is that run's), else the default bundle itself, else the first run."""
    if not runs:
        return None
    shipped = models_root / "default" / METRICS_JSON
    try:
        wanted = json.loads(shipped.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return runs[0]
    bundle = next((run for run in runs if run.bundled and run.path.resolve() == shipped.parent.resolve()), None)
    for run in runs:
        if run.bundled:
            continue
        path = run.path / METRICS_JSON
        try:
            if json.loads(path.read_text(encoding="utf-8")) == wanted:
                return run
        except (OSError, ValueError):
            continue
    return bundle or runs[0]


def pending_runs(root: Path) -> list[str]:
    """Subfolders of ``root`` with a ``status.json`` but no ``metrics.json`` yet (training or failed)."""
    if not root.is_dir():
        return []
    out = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not _is_part(p)):
        if (child / STATUS_JSON).is_file() and not (child / METRICS_JSON).is_file():
            status = read_status(child / STATUS_JSON)
            out.append(f"{child.name} ({status or 'no metrics yet'})")
    return out


def missing_results_message(root: Path, env: str) -> str:
    """What is missing in a results folder without runs, and how to produce it (Markdown)."""
    if not root.exists():
        problem = f"The results folder **{root}** does not exist."
    elif not root.is_dir():
        problem = f"**{root}** is not a folder."
    else:
        problem = f"No runs in **{root}**: none of its subfolders holds a metrics.json."
    pending = pending_runs(root)
    return (
        f"{problem}\n\n"
        "A run is a folder with the metrics.json that training writes, for example "
        "`python -m train --data DATA --folds 5 --name resnet50-cv --output results`. "
        f"Choose another folder in the sidebar, or set ${env}."
        + (f"\n\nStill running or failed (no metrics.json yet): {', '.join(pending)}." if pending else "")
    )


def read_status(path: Path) -> str:
    """The ``state`` a run's ``status.json`` records (``running``, ``complete``...); empty if unreadable."""
    try:
        state = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return ""
    return str(state.get("state", "")) if isinstance(state, dict) else ""


def read_config(path: str | Path) -> dict:
    """A run's ``config.yaml`` from the trainer, or a bundle's ``config.json`` (JSON is YAML)."""
    loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


def run_summary(metrics: Mapping, config: Mapping | None) -> str:
    """One line under the title: model, input size, split, classes, intervals."""
    parts = []
    recipe = tables.recipe_of(config)
    if recipe.get("model"):
        parts.append(f"**{recipe['model']}**")
    if recipe.get("input_size"):
        parts.append(f"{recipe['input_size']} px")
    folds = results.n_folds(metrics)
    if folds:
        parts.append(f"{folds}-fold cross-validation, grouped by patient")
    labels = results.labels(metrics)
    parts.append(f"{len(labels)} classes ({', '.join(labels)})")
    ci = results.section(metrics, "ci")
    if ci.get("method"):
        unit = f" over {ci['unit']}s" if ci.get("unit") else ""
        parts.append(f"intervals: {results.ci_level_text(metrics)}% {ci['method']}{unit}")
    return " · ".join(parts)


# --------------------------------------------------------------------------- exports


def figure_html(fig: go.Figure, config: Mapping | None = None) -> str:
    """A chart as a standalone interactive HTML page with plotly.js inline, so it opens offline."""
    return fig.to_html(full_html=True, include_plotlyjs=True, config=dict(config or PLOTLY_CONFIG))


def table_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


def slug(text: str) -> str:
    """``"Per-class metrics (CSV)"`` -> ``"per-class-metrics-csv"``: a file-name stem."""
    keep = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text.strip().lower())
    return "-".join(part for part in keep.split("-") if part) or "run"


def run_figures(metrics: Mapping, history: pd.DataFrame | None) -> dict[str, Callable[[], go.Figure]]:
    """Every chart of a run, by name, built only when asked for (the report's figures: :mod:`tumorlib.slides`)."""
    return slides.figure_builders(metrics, history)


def run_tables(metrics: Mapping, predictions: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """Every table of a run, by name, as exported to CSV (per-class metrics as plain numbers)."""
    out = {
        "Per-class metrics": tables.per_class_table(metrics, formatted=False),
        "Comparison with the paper (Table 1)": tables.paper_table1(metrics),
        "Comparison with the paper (Table 2)": tables.paper_table2(metrics),
    }
    folds = tables.fold_table(metrics)
    if folds is not None:
        out["Cross-validation folds"] = folds
    per_patient = tables.patient_table(metrics)
    if per_patient is not None:
        out["Per patient"] = per_patient
    checks = tables.checks_table(metrics)
    if checks is not None:
        out["Other checks"] = checks
    if predictions is not None:
        out["Worst misclassifications"] = tables.worst_misclassifications(predictions, n=50, formatted=False)
    return out


def png_export_problem() -> str | None:
    """Why the PDF and PNG export cannot work here (None when it can): it needs kaleido and a Chrome."""
    return slides.renderer_problem()


# --------------------------------------------------------------------------- cards and captions


def calibration_cards(metrics: Mapping) -> list[Card]:
    """Macro AUC, ECE after and before calibration, and the temperature."""
    bins = results.reliability(metrics)
    binning = f" over {len(bins)} equal-width confidence bins" if bins else ""
    temperature = results.temperature(metrics)
    return [
        ("Macro AUC", format_auc(metrics.get("macro_auc")), "One-vs-rest AUC averaged over classes."),
        (
            "ECE after calibration",
            format_pct(results.ece(metrics)),
            f"Expected calibration error{binning}: the gap between confidence and accuracy, weighted by bin size.",
        ),
        (
            "ECE before calibration",
            format_pct(results.ece_before(metrics)),
            "Expected calibration error of the raw softmax.",
        ),
        (
            "Temperature",
            results.MISSING if temperature is None else f"{temperature:.2f}",
            "Temperature scaling divides the logits by this before the softmax; it never changes the predicted class.",
        ),
    ]


def calibration_caption(metrics: Mapping) -> str:
    method = results.calibration(metrics).get("method")
    return (
        "Reliability: in each confidence bin, how often the model was right; on the diagonal, a stated 90% "
        "means right 90% of the time. Bars: slices per bin." + (f" Calibration: {method}." if method else "")
    )


def conformal_caption(metrics: Mapping) -> str:
    """What the prediction-set figures show and how they were measured; empty when the run has no sets."""
    if not results.conformal(metrics):
        return ""
    text = (
        "Prediction sets (conformal prediction, score 1 − p): at each level, the classes the model cannot rule "
        "out. Coverage is the share of slices whose set holds the true class; on the diagonal, a 95% set holds "
        "it 95% of the time. Per-class thresholds (what the app shows) give each class its own coverage; one "
        "threshold for all classes guarantees only the average (each class with one threshold: in the legend)."
    )
    if results.conformal(metrics)[0].get("thresholds") == "cross-fitted":
        text += " Cross-fitted: each fold's slices get sets from thresholds fitted on the other folds."
    measured = results.coverage_sentence(metrics)
    return f"{text} {measured}" if measured else text


def fold_temperatures_caption(metrics: Mapping) -> str:
    """The temperature each fold's calibration fitted; empty when not stored."""
    temps = results.calibration(metrics).get("fold_temperatures")
    if not isinstance(temps, list) or not temps:
        return ""
    shown = ", ".join(f"{t:.2f}" for t in map(number, temps) if t is not None)
    return f"Temperature fitted per fold (cross-fitted calibration): {shown}."


def _n(check: Mapping) -> str:
    n = results.integer(check.get("n"))
    return f" (n = {n:,})" if n is not None else ""


def explanation_cards(metrics: Mapping) -> list[Card]:
    """Grad-CAM's pointing game and energy in mask, and the input gate's refusals, where stored."""
    cam, gate = results.cam(metrics), results.gate(metrics)
    cards = []
    if cam:
        cards.append(
            (
                "Pointing game",
                format_pct(cam.get("pointing_game")),
                "Share of tumour slices whose Grad-CAM peak falls inside the tumour mask" + _n(cam) + ".",
            )
        )
        cards.append(
            (
                "Energy in mask",
                format_pct(cam.get("energy_in_mask")),
                "Share of the Grad-CAM map's total energy inside the tumour mask" + _n(cam) + ".",
            )
        )
    if gate:
        cards.append(
            (
                "Input gate refused",
                format_pct(gate.get("refused_fraction")),
                "Share of inputs the out-of-distribution gate refused to classify.",
            )
        )
    return cards


def cam_caption(metrics: Mapping) -> str:
    """Grad-CAM's chance levels and the ceiling of its feature grid; empty without chance levels."""
    cam = results.cam(metrics)
    text = results.chance_sentence(cam)
    top = results.ceiling(cam)
    if text and top is not None:
        best, rows, cols = top
        text += (
            f" The heatmap comes from a {rows} x {cols} feature grid: no heatmap of this model could point inside "
            f"the tumour on more than {format_pct(best)} of these slices."
        )
    return text


def localiser_cards(metrics: Mapping) -> list[Card]:
    """The tumour map (the recipe's mask head, shipped as the bundle's localiser) against the masks."""
    loc = results.localiser(metrics)
    if number(loc.get("pointing_game")) is None:
        return []
    n = _n(loc)
    return [
        (
            "Pointing game",
            format_pct(loc["pointing_game"]),
            "Share of tumour slices whose map peak falls inside the tumour mask" + n + ".",
        ),
        (
            "Energy in mask",
            format_pct(loc.get("energy_in_mask")),
            "Share of the map's total inside the tumour mask" + n + ".",
        ),
        (
            "Soft Dice",
            format_pct(loc.get("soft_dice")),
            "2 x overlap / (map total + mask area), no threshold" + n + ".",
        ),
    ]


def localiser_caption(metrics: Mapping) -> str:
    """What the tumour map is, with its chance level and its peak with and without a tumour."""
    loc = results.localiser(metrics)
    text = (
        "The auxiliary head trained with the classifier to predict how much of each feature-grid cell is tumour, "
        "scored by each fold's model on its held-out patients. It shows where a tumour is likely, not why a "
        "class was chosen."
    )
    centre = results.centre_sentence(loc)
    if centre:
        text += f" {centre}"
    quiet = results.no_tumour_scores(loc)
    peak, q_peak, q_n = number(loc.get("peak")), number(quiet.get("peak")), results.integer(quiet.get("n"))
    if peak is not None and q_peak is not None and q_n:
        text += f" Mean peak {peak:.2f} on tumour slices and {q_peak:.2f} on {q_n:,} no-tumour slices."
    return text


def patient_caption(metrics: Mapping) -> str:
    """What the answers per patient are and how they were pooled; empty without them."""
    return results.patient_sentence(metrics)


def confusion_scopes(metrics: Mapping) -> dict[str, Callable[[bool], go.Figure]]:
    """The confusion matrices a run offers, by name: all slices, per patient (where stored), each fold.

    Each builds its figure (counts, or with ``True`` the share of each true class) only when asked for.
    """

    def titled(scope: str, normalized: bool) -> str:
        return f"{scope}: share of each true class" if normalized else f"{scope}: counts"

    folds = results.folds(metrics)
    pooled = "All folds pooled" if folds else "All test slices"
    scopes: dict[str, Callable[[bool], go.Figure]] = {
        pooled: lambda normalized: figures.confusion_matrix_figure(metrics, normalized, titled(pooled, normalized))
    }
    if results.patient_level(metrics).get("confusion_matrix"):
        scopes["Per patient"] = lambda normalized: figures.patient_confusion_figure(
            metrics, normalized, titled("Per patient", normalized)
        )
    for index, fold in enumerate(folds, 1):
        name = f"Fold {index}"
        scopes[name] = lambda normalized, fold=fold, name=name: figures.confusion_matrix_figure(
            fold, normalized, titled(name, normalized)
        )
    return scopes


def confusion_caption(metrics: Mapping, scope: str) -> str:
    """How to read the confusion matrices of ``scope`` (a name of :func:`confusion_scopes`)."""
    text = (
        "Rows are the true class, columns the predicted class; the diagonal holds the correct predictions. "
        "Hover a cell for its count and its share of the true class."
    )
    if scope == "Per patient":
        return f"{text} One answer per patient. {results.patient_sentence(metrics)}"
    if results.folds(metrics):
        text += " Pooled: every slice predicted once, by the fold model that did not train on its patient."
    return text


def label_set_warning(runs: Mapping[str, Mapping]) -> str:
    """A warning when the runs compared do not classify the same classes; empty when they do."""
    label_sets = {run: tuple(results.labels(m)) for run, m in runs.items()}
    if len(set(label_sets.values())) <= 1:
        return ""
    described = "; ".join(f"{run}: {len(labels)} classes" for run, labels in label_sets.items())
    return (
        f"These runs do not classify the same classes ({described}): their overall figures are not "
        "like-for-like (more classes is a harder task)."
    )


# --------------------------------------------------------------------------- the Grad-CAM gallery


def filter_gallery(index: pd.DataFrame, which: str, classes: list[Any]) -> pd.DataFrame:
    """The overlays of ``explanations/index.csv`` to show: ``which`` is All, Misclassified or Correct."""
    wrong = index["true_label"] != index["pred_label"]
    keep = index["true_label"].isin(classes)
    keep &= wrong if which == "Misclassified" else (~wrong if which == "Correct" else True)
    return index[keep]


def overlay_path(folder: Path, name: str) -> Path | None:
    """An overlay file listed in the index, None when it is missing or lies outside the folder."""
    path = (folder / name).resolve()
    return path if path.is_file() and folder.resolve() in path.parents else None
