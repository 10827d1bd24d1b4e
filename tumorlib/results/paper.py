"""The reference paper's own figures: its Table 1 and Table 2 as printed, read from ``results/paper/``.

Table 1 holds the overall metrics in percent (the paper's ResNet-50 and the DNN with autoencoders it
compares against), Table 2 the validation accuracy per class. Both are read once, on first use, into
:data:`PAPER` as fractions, so the readers print them with :func:`~tumorlib.results.format_pct` like ours.
Where the files are absent (a wheel without the checkout) the paper's cells read as missing and
:data:`PAPER` says why.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from .files import ResultsError

__all__ = ["PAPER", "PAPER_CAVEAT", "PAPER_COLUMNS", "PAPER_DIR", "load_paper", "paper_caveat"]

#: Where the paper's tables live in the checkout (``results/paper/``, with their source in its README).
PAPER_DIR = Path(__file__).resolve().parents[2] / "results" / "paper"

#: Table 1's columns as printed, and the names the readers show for them (the ResNet-50 first).
PAPER_COLUMNS = {"dnn_with_resnet50": "ResNet-50", "dnn_with_autoencoders": "DNN with autoencoders"}

_CITATION = (
    "Sahaai et al. (2022), ResNet-50 based deep neural network using transfer learning for brain tumor "
    "classification, AIP Conference Proceedings, doi:10.1063/5.0082328"
)


def _rows(path: Path, key: str) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ResultsError(f"{path} could not be read: {err}") from err
    if not rows or key not in rows[0]:
        raise ResultsError(f"{path} has no '{key}' column")
    return rows


def _fraction(text: str, scale: float, path: Path) -> float:
    try:
        return float(text) / scale
    except (TypeError, ValueError) as err:
        raise ResultsError(f"{path}: {text!r} is not a number") from err


def load_paper(folder: str | Path = PAPER_DIR) -> dict[str, Any]:
    """The paper's tables in ``folder`` (``table1.csv`` in percent, ``table2.csv`` as fractions).

    ``metrics`` is Table 1's ResNet-50 column and ``columns`` every column of it, metric by metric as
    fractions; ``per_class`` is Table 2 (``{label: {"accuracy": fraction}}``). Raises ResultsError when a
    file is there but malformed.
    """
    folder = Path(folder)
    table1, table2 = folder / "table1.csv", folder / "table2.csv"
    columns: dict[str, dict[str, float]] = {name: {} for name in PAPER_COLUMNS}
    for row in _rows(table1, "metric"):
        for name in PAPER_COLUMNS:
            if row.get(name) not in (None, ""):
                columns[name][row["metric"].strip()] = _fraction(row[name], 100, table1)
    per_class = {
        row["class"].strip(): {"accuracy": _fraction(row["validation_accuracy"], 1, table2)}
        for row in _rows(table2, "class")
        if row.get("validation_accuracy") not in (None, "")
    }
    return {
        "citation": _CITATION,
        "short": "Sahaai et al. 2022",
        "dataset": "Cheng et al. figshare brain tumour dataset",
        "split": "unstated",
        # The classes of its text and dataset; Table 2 adds a no-tumour class of unstated source.
        "labels": ["glioma", "meningioma", "pituitary"],
        "metrics": columns["dnn_with_resnet50"],
        "columns": columns,
        "per_class": per_class,
        "source": "results/paper/",
        "missing": "",
    }


def _load_or_say_why() -> dict[str, Any]:
    """:func:`load_paper`, or empty tables saying why (missing files must not break a page)."""
    try:
        return load_paper()
    except ResultsError as err:
        missing = "the paper's tables (results/paper/ of the project) are not installed"
        if (PAPER_DIR / "table1.csv").is_file():
            missing = f"the paper's tables could not be read ({err})"
        return {
            "citation": _CITATION,
            "short": "Sahaai et al. 2022",
            "split": "unstated",
            "labels": [],
            "metrics": {},
            "columns": {name: {} for name in PAPER_COLUMNS},
            "per_class": {},
            "source": "results/paper/",
            "missing": missing,
        }


def paper_caveat(paper: dict[str, Any]) -> str:
    """The one-line note beside every paper comparison: the split is unstated and the figures disagree."""
    stated = paper.get("metrics") or {}
    text = (
        "Paper: Sahaai et al. (2022), Tables 1 and 2 as printed. Its split is unstated (slices of one patient may "
        "be on both sides; ours is by patient, stricter), and its figures disagree with each other"
    )
    precision, recall, f1 = stated.get("precision"), stated.get("recall"), stated.get("f1")
    if precision and recall and f1 is not None:
        implied = 2 * precision * recall / (precision + recall)
        text += (
            f" (precision {100 * precision:.1f}% and recall {100 * recall:.1f}% give F1 {100 * implied:.1f}%, "
            f"not the printed {100 * f1:.1f}%)"
        )
    text += ": not a like-for-like comparison."
    missing = paper.get("missing")
    return f"{text} Here {missing}." if missing else text


#: The paper's figures, read once from :data:`PAPER_DIR`.
PAPER: dict[str, Any] = _load_or_say_why()

#: The note shown beside every paper comparison.
PAPER_CAVEAT = paper_caveat(PAPER)
