"""Reading the files evaluation writes: ``metrics.json``, ``history.csv``, ``predictions.csv``,
``explanations/index.csv`` and ``ablations.csv``, each with a clear error when it is missing or malformed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import TumorlibError

__all__ = [
    "EXPLANATION_COLUMNS",
    "ResultsError",
    "ResultsFileError",
    "load_ablations",
    "load_explanations",
    "load_history",
    "load_metrics",
    "load_predictions",
]


class ResultsError(TumorlibError, ValueError):
    """A results file exists but is not what evaluation writes (bad JSON, missing columns)."""


class ResultsFileError(TumorlibError, FileNotFoundError):
    """A results file the report needs is not there."""


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


EXPLANATION_COLUMNS = ("file", "id", "true_label", "pred_label", "target", "pointing_hit", "energy_in_mask")


def load_explanations(path: str | Path) -> pd.DataFrame:
    """Read ``explanations/index.csv`` (one row per exported Grad-CAM overlay; ``file`` is relative to it)."""
    text = {column: str for column in ("file", "id", "true_label", "pred_label", "target")}
    return _read_csv(path, "Explanations index", ["file"], dtype=text)


def load_ablations(path: str | Path) -> pd.DataFrame:
    """Read ``ablations.csv`` (run, recipe, epochs, input_size, init, wall_minutes, accuracy, macro_f1, notes)."""
    return _read_csv(path, "Ablation table", ["run"], dtype={"run": str, "recipe": str, "init": str, "notes": str})
