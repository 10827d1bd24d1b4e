"""The report for slides: a PDF of real pages, the one-page HTML report and a PNG of each figure, from the
files an evaluation run wrote.

``python -m train.report`` writes these files and the dashboard's Export section offers them, both through
:func:`build_report`. The figures are :mod:`tumorlib.figures`' plotly charts, rendered by kaleido (plotly's
static export) driving a Chrome or Chromium already on the machine; the PDF is a print-styled page of the
same tables and figures printed by that browser. Nothing is downloaded: kaleido gets the browser's path and
no MathJax, and the pages reference no network resource. Nothing is recomputed.
"""

from __future__ import annotations

import asyncio
import html
import importlib.util
import io
import logging
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from . import figures, results, tables
from .errors import TumorlibError
from .report import html_report

__all__ = [
    "BROWSER_ENV",
    "SLIDE_SCALE",
    "SLIDE_SIZE",
    "RenderError",
    "SlideReport",
    "build_report",
    "figure_builders",
    "find_browser",
    "render_figures",
    "renderer_problem",
]

#: The variable kaleido (through choreographer) reads for the browser; set it to use a Chrome off the PATH.
BROWSER_ENV = "BROWSER_PATH"
_BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
#: Each figure is laid out at 1280 x 720 and rendered at 1.5x: 1920 x 1080 pixels, a full-HD slide.
SLIDE_SIZE = (1280, 720)
SLIDE_SCALE = 1.5
_INSTALL_HINT = (
    "install Chromium (Debian/Ubuntu: apt-get install -y chromium) or Google Chrome, "
    f"or set {BROWSER_ENV} to a Chrome or Chromium executable"
)


class RenderError(TumorlibError, RuntimeError):
    """The figures or the PDF could not be rendered (no browser, kaleido missing, the browser failed)."""


# --------------------------------------------------------------------------- the renderer


def find_browser() -> str | None:
    """The Chrome or Chromium to render with: ``$BROWSER_PATH`` when set, else the first on the PATH."""
    chosen = os.environ.get(BROWSER_ENV, "").strip()
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    return next((path for name in _BROWSER_NAMES if (path := shutil.which(name))), None)


def renderer_problem() -> str | None:
    """Why the PDF and PNGs cannot be rendered here, with what to install; None when they can."""
    if importlib.util.find_spec("kaleido") is None:
        return "the kaleido package is not installed (pip install -r requirements.txt)"
    if find_browser() is None:
        chosen = os.environ.get(BROWSER_ENV, "").strip()
        where = f" ({BROWSER_ENV}={chosen} is not an executable)" if chosen else ""
        return f"no Chrome or Chromium browser was found{where}: {_INSTALL_HINT}"
    return None


def _browser() -> str:
    problem = renderer_problem()
    if problem:
        raise RenderError(f"Rendering the report needs kaleido and a Chrome or Chromium browser: {problem}.")
    return find_browser()  # type: ignore[return-value]


def render_figures(figs: Mapping[str, go.Figure], formats: tuple[str, ...] = ("png", "svg")) -> dict[str, dict]:
    """Each figure in each format (``{name: {"png": bytes, "svg": bytes}}``), in one kaleido session: the
    browser starts once. PNGs are :data:`SLIDE_SIZE` at :data:`SLIDE_SCALE`; SVGs at :data:`SLIDE_SIZE`."""
    browser = _browser()
    import kaleido  # only here: the dashboard and the app import this module without it

    # kaleido logs each browser step at INFO through logistro; a report run should print only its own lines.
    logging.getLogger("kaleido").setLevel(logging.WARNING)
    logging.getLogger("choreographer").setLevel(logging.WARNING)
    width, height = SLIDE_SIZE

    async def render() -> dict[str, dict]:
        out: dict[str, dict] = {}
        # mathjax=False: kaleido would otherwise load MathJax from a CDN; the figures use no LaTeX.
        async with kaleido.Kaleido(path=browser, mathjax=False, n=1) as session:
            for name, fig in figs.items():
                out[name] = {}
                for fmt in formats:
                    scale = SLIDE_SCALE if fmt == "png" else 1
                    opts = {"format": fmt, "width": width, "height": height, "scale": scale}
                    out[name][fmt] = await session.calc_fig(fig, opts=opts)
        return out

    try:
        return asyncio.run(render())
    except TumorlibError:
        raise
    except Exception as err:  # kaleido and the browser fail in many ways: say which step failed, and where
        message = f"The browser at {browser} could not render the figures: {type(err).__name__}: {err}"
        raise RenderError(message) from err


def _print_pdf(page: str, browser: str, timeout: float = 180) -> bytes:
    """``page`` (self-contained HTML) printed to PDF by the browser, headless, in a throwaway profile."""
    with tempfile.TemporaryDirectory(prefix="tumorlib-report-") as tmp:
        source, target = Path(tmp) / "report-print.html", Path(tmp) / "report.pdf"
        source.write_text(page, encoding="utf-8")
        command = [
            browser,
            "--headless",
            "--no-sandbox",  # a container's root user cannot start Chromium's sandbox
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-networking",
            "--no-first-run",
            "--no-default-browser-check",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={target}",
            source.as_uri(),
        ]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise RenderError(f"The browser at {browser} could not print the PDF: {err}") from err
        if not target.is_file() or target.stat().st_size == 0:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            raise RenderError(f"The browser at {browser} wrote no PDF (exit {proc.returncode}): {' '.join(tail)}")
        return target.read_bytes()


# --------------------------------------------------------------------------- what the report holds


def figure_builders(metrics: Mapping, history: pd.DataFrame | None) -> dict[str, Callable[[], go.Figure]]:
    """Every chart of a run, by name, built only when asked for (the dashboard's and the report's list)."""
    charts: dict[str, Callable[[], go.Figure]] = {
        "Confusion matrix (counts)": lambda: figures.confusion_matrix_figure(metrics),
        "Confusion matrix (row shares)": lambda: figures.confusion_matrix_figure(metrics, normalized=True),
    }
    if results.patient_level(metrics).get("confusion_matrix"):
        charts["Confusion matrix per patient"] = lambda: figures.patient_confusion_figure(metrics)
    charts["Per-class metrics"] = lambda: figures.per_class_figure(metrics)
    charts["ROC curves"] = lambda: figures.roc_figure(metrics)
    charts["Reliability diagram"] = lambda: figures.reliability_figure(metrics)
    if results.folds(metrics):
        charts["Cross-validation folds"] = lambda: figures.fold_figure(metrics)
    if results.conformal(metrics):
        charts["Prediction-set coverage"] = lambda: figures.coverage_figure(metrics)
        charts["Prediction-set size"] = lambda: figures.set_size_figure(metrics)
    if history is not None and not history.empty:
        charts["Training loss"] = lambda: figures.history_figure(history, "loss")
        charts["Training accuracy"] = lambda: figures.history_figure(history, "acc")
        charts["Learning rate"] = lambda: figures.history_figure(history, "lr")
    return charts


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() else "-" for ch in text.strip().lower())
    return "-".join(part for part in keep.split("-") if part) or "figure"


@dataclass
class SlideReport:
    """The report's files: ``report.pdf``, ``report.html`` and one PNG per figure (file name -> bytes)."""

    pdf: bytes
    html: str
    pngs: dict[str, bytes] = field(default_factory=dict)

    def png_zip(self) -> bytes:
        """The PNGs in one zip file, for a single download."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:  # PNGs are compressed
            for name, data in self.pngs.items():
                archive.writestr(name, data)
        return buffer.getvalue()

    def write(self, folder: str | Path) -> list[Path]:
        """Write ``report.pdf``, ``report.html`` and ``figures/<NN>-<name>.png`` under ``folder``."""
        folder = Path(folder)
        (folder / "figures").mkdir(parents=True, exist_ok=True)
        written = [folder / "report.pdf", folder / "report.html"]
        written[0].write_bytes(self.pdf)
        written[1].write_text(self.html, encoding="utf-8")
        for name, data in self.pngs.items():
            path = folder / "figures" / name
            path.write_bytes(data)
            written.append(path)
        return written


_PRINT_CSS = """
@page { size: 13.333in 7.5in; margin: 0.45in 0.55in; }
* { box-sizing: border-box; }
body { font-family: 'DejaVu Sans', 'Helvetica Neue', Arial, sans-serif; color: #222; margin: 0; font-size: 12.5px; }
section { break-after: page; page-break-after: always; }
section:last-child { break-after: auto; page-break-after: auto; }
h1 { font-size: 30px; margin: 0.6in 0 6px 0; color: #0072B2; }
h2 { font-size: 21px; margin: 0 0 8px 0; border-bottom: 2px solid #0072B2; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 14px 0 4px 0; }
.sub { font-size: 15px; color: #444; margin: 0 0 18px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 14px 0; }
.card { flex: 1 1 0; border: 1px solid #ccd; border-radius: 8px; padding: 10px 12px; background: #f5f8fb; }
.card .label { font-size: 12px; color: #555; }
.card .value { font-size: 24px; font-weight: 700; color: #0072B2; }
.card .ci { font-size: 11.5px; color: #555; }
table.results { border-collapse: collapse; margin: 6px 0 10px 0; font-size: 11.5px; }
table.results th, table.results td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
table.results th { background: #eef3f8; }
.note { font-size: 11.5px; color: #444; max-width: 11.5in; margin: 6px 0; }
.figure { text-align: center; }
.figure svg { height: 5.65in; width: auto; max-width: 100%; }
"""


def _table(frame: pd.DataFrame | None) -> str:
    if frame is None or frame.empty:
        return ""
    return frame.to_html(index=False, classes="results", border=0, escape=True, na_rep=results.MISSING)


def _cards(values: list[dict]) -> str:
    out = []
    for card in values:
        esc = {key: html.escape(str(value)) for key, value in card.items()}
        out.append(
            f'<div class="card"><div class="label">{esc["label"]}</div><div class="value">{esc["value"]}</div>'
            f'<div class="ci">{esc["ci"] or "&nbsp;"}</div></div>'
        )
    return f'<div class="cards">{"".join(out)}</div>'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>' if text else ""


_SVG_SIZE = re.compile(rb'<svg[^>]*?\swidth="([\d.]+)(?:px)?"[^>]*?\sheight="([\d.]+)(?:px)?"')


def _scalable(svg: bytes) -> str:
    """An SVG that scales to its box: plotly's carries width and height but no viewBox."""
    head = svg[:2000]
    size = _SVG_SIZE.search(head)
    if size and b"viewBox" not in head:
        svg = svg.replace(b"<svg", f'<svg viewBox="0 0 {float(size[1]):g} {float(size[2]):g}"'.encode(), 1)
    return svg.decode("utf-8")


def _print_page(metrics: Mapping, title: str, summary: str, svgs: Mapping[str, bytes]) -> str:
    """The PDF's pages as print-styled HTML: headline, paper comparison, tables, one figure a page."""
    level = results.ci_level_text(metrics)
    method = results.ci_method(metrics)
    intervals = f"Intervals: {level}% CI" + (f", {method}." if method else ".")
    first = [f"<h1>{html.escape(title)}</h1>", f'<p class="sub">{html.escape(summary)}</p>']
    first += [_cards(results.headline(metrics)), _note(intervals)]
    per_patient = results.patient_headline(metrics)
    if per_patient:
        first += ["<h3>Per patient</h3>", _cards(per_patient), _note(results.patient_sentence(metrics))]
    if results.no_tumour_labels(metrics):
        first.append(_note(results.NO_TUMOUR_CAVEAT))
    first.append(_note("Research software: not a medical device and not for diagnosis."))
    pages = ["\n".join(first)]
    pages.append(
        "\n".join(
            [
                "<h2>Comparison with the paper</h2>",
                "<h3>Table 1 · overall metrics</h3>",
                _table(tables.paper_table1(metrics)),
                "<h3>Table 2 · one-vs-rest accuracy per class</h3>",
                _table(tables.paper_table2(metrics)),
                _note(f"{results.PAPER_CAVEAT} Source: {results.PAPER['citation']}."),
            ]
        )
    )
    per_class = ["<h2>Per-class results</h2>", _table(tables.per_class_table(metrics))]
    patients = tables.patient_table(metrics)
    if patients is not None:
        per_class += ["<h3>Recall per patient</h3>", _table(patients)]
    checks = tables.checks_table(metrics)
    if checks is not None:
        per_class += ["<h3>Other checks</h3>", _table(checks)]
    pages.append("\n".join(per_class))
    folds = tables.fold_table(metrics)
    if folds is not None:
        caption = "One row per held-out fold, each tested on patients its model never saw; mean ± std as stored."
        pages.append("\n".join(["<h2>Cross-validation folds</h2>", _table(folds), _note(caption)]))
    for name, svg in svgs.items():
        pages.append(f'<h2>{html.escape(name)}</h2><div class="figure">{_scalable(svg)}</div>')
    body = "\n".join(f"<section>{page}</section>" for page in pages)
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n<style>{_PRINT_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def build_report(metrics: Mapping, title: str, history: pd.DataFrame | None = None, summary: str = "") -> SlideReport:
    """The PDF, the one-page HTML report and a slide-sized PNG of each figure of one run.

    ``summary`` is the line under the title (model, split, classes). Raises RenderError when kaleido or a
    Chrome or Chromium browser is missing (:func:`renderer_problem` says which) or fails.
    """
    browser = _browser()
    built = {name: build() for name, build in figure_builders(metrics, history).items()}
    rendered = render_figures(built)
    pngs = {f"{index:02d}-{_slug(name)}.png": out["png"] for index, (name, out) in enumerate(rendered.items(), 1)}
    page = _print_page(metrics, title, summary, {name: out["svg"] for name, out in rendered.items()})
    return SlideReport(pdf=_print_pdf(page, browser), html=html_report(metrics, title, history=history), pngs=pngs)
