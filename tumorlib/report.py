"""The one-page HTML report of an evaluation run: headline cards, tables and figures, opening offline.

The page is built from :mod:`tumorlib.results` (the numbers), :mod:`tumorlib.tables` and
:mod:`tumorlib.figures`, the same pieces the apps show, and embeds plotly.js inline so it opens on any
laptop without a network. Nothing is recomputed. The module imports neither gradio nor streamlit.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from . import results
from .figures import (
    confusion_matrix_figure,
    history_figure,
    patient_confusion_figure,
    reliability_figure,
    roc_figure,
)
from .results import MISSING, NO_TUMOUR_CAVEAT, PAPER_CAVEAT, headline, no_tumour_labels, patient_headline
from .tables import checks_table, fold_table, paper_table1, paper_table2, patient_table, per_class_table

__all__ = ["html_report"]

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


def _cards_html(values: list[dict]) -> str:
    cards = []
    for card in values:
        esc = {key: html.escape(str(value)) for key, value in card.items()}
        cards.append(
            f'<div class="card" title="{esc["help"]}"><div class="label">{esc["label"]}</div>'
            f'<div class="value">{esc["value"]}</div><div class="ci">{esc["ci"] or "&nbsp;"}</div></div>'
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def html_report(metrics: Mapping, title: str, history: pd.DataFrame | None = None) -> str:
    """A standalone one-page HTML report with plotly.js inline, so it opens offline and on any slide laptop."""
    sections = [f"<h1>{html.escape(title)}</h1>"]
    method = results.ci_method(metrics)
    if method:
        sections.append(f'<p class="muted">Intervals: {results.ci_level_text(metrics)}% CI, {html.escape(method)}.</p>')
    sections.append(_cards_html(headline(metrics)))
    per_patient = patient_headline(metrics)
    if per_patient:  # one answer per patient, beside the slices' figures
        sections.append("<h2>Per patient</h2>")
        sections.append(_cards_html(per_patient))
        sections.append(f'<p class="caption">{html.escape(results.patient_sentence(metrics))}</p>')
        sections.append(_table_html(patient_table(metrics)))

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
    checks = checks_table(metrics)
    if checks is not None:
        sections.append("<h2>Other checks</h2>")
        sections.append(_table_html(checks))

    sections.append("<h2>Confusion matrices</h2>")
    sections.append(_figure_html(confusion_matrix_figure(metrics)))
    sections.append(_figure_html(confusion_matrix_figure(metrics, normalized=True)))
    if per_patient:
        sections.append(_figure_html(patient_confusion_figure(metrics)))
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
