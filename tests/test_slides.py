"""python -m train.report: the PDF's pages and text, the HTML report and the slide PNGs, checked by content.

The run is a results folder made of committed files: the shipped default model's metrics.json (a 5-fold
cross-validation with answers per patient and prediction sets) and a training history. The report is
rendered once for the module (kaleido starts Chromium once for every figure).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pypdf
import pytest
from PIL import Image

from train import report as train_report
from tumorlib import results, slides

from .conftest import ROOT, needs_chromium
from .results_data import make_history, make_metrics

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("results") / "r50-demo"
    folder.mkdir()
    shutil.copy(ROOT / "models" / "default" / "metrics.json", folder / "metrics.json")
    make_history().to_csv(folder / "history.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def written(run, tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("report")
    paths = train_report.main(train_report.get_args_parser().parse_args([str(run), "--out", str(out)]))
    return out, paths


def _text(pdf: pypdf.PdfReader) -> str:
    return "\n".join(page.extract_text() for page in pdf.pages)


def test_the_pdf_has_the_headline_the_paper_and_a_page_per_figure(run, written):
    out, _ = written
    metrics = results.load_metrics(run / "metrics.json")
    pdf = pypdf.PdfReader(out / "report.pdf")
    figures = slides.figure_builders(metrics, make_history())
    # Headline, paper comparison, per-class tables, folds, then one page per figure.
    assert len(pdf.pages) >= 4 + len(figures)
    text = _text(pdf)
    first = pdf.pages[0].extract_text()
    assert results.format_pct(metrics["accuracy"]) in first
    assert results.ci_text(metrics["accuracy_ci"]) in first
    assert results.format_pct(metrics["patient_level"]["accuracy"]) in first
    assert "Comparison with the paper" in text and "Paper: ResNet-50" in text
    assert results.format_pct(results.PAPER["metrics"]["accuracy"]) in text and "unstated" in text
    assert "Per-class results" in text and "Cross-validation folds" in text
    for name in figures:
        assert name in text
    # Figures are vector pages: their axis titles are text in the PDF.
    assert "False-positive rate" in text and "Mean predicted confidence" in text
    page = pdf.pages[0].mediabox
    assert float(page.width) / float(page.height) == pytest.approx(16 / 9, rel=0.01)


def test_a_slide_png_of_each_figure(run, written):
    out, paths = written
    metrics = results.load_metrics(run / "metrics.json")
    pngs = sorted((out / "figures").glob("*.png"))
    assert [p for p in paths if p.suffix == ".png"] == pngs
    assert len(pngs) == len(slides.figure_builders(metrics, make_history())) >= 3
    assert any("per-patient" in p.name for p in pngs) and any("roc" in p.name for p in pngs)
    for path in pngs:
        with Image.open(path) as image:
            assert image.size == (1920, 1080)
            colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is not None and len(colours) > 50, path.name  # not a blank or flat image
            assert max(colours)[0] < 0.98 * image.size[0] * image.size[1], path.name  # no colour fills it


def test_the_html_report_is_the_one_page_report(run, written):
    out, _ = written
    page = (out / "report.html").read_text(encoding="utf-8")
    metrics = results.load_metrics(run / "metrics.json")
    assert page.startswith("<!DOCTYPE html>") and "<script src=" not in page
    assert f"Brain-tumour MRI classifier: {run.name}" in page
    assert results.format_pct(metrics["accuracy"]) in page and "Comparison with the paper" in page


def test_the_png_zip_holds_every_png_and_the_command_line_says_what_it_wrote(run, tmp_path):
    metrics = make_metrics()
    report = slides.build_report(metrics, "A single run", summary="test_resnet")
    with zipfile.ZipFile(io.BytesIO(report.png_zip())) as archive:
        assert archive.namelist() == list(report.pngs)
        assert archive.read(archive.namelist()[0]) == next(iter(report.pngs.values()))
    assert not any("folds" in name for name in report.pngs)  # a single run has no fold figure
    assert report.pdf.startswith(b"%PDF-")
    text = _text(pypdf.PdfReader(io.BytesIO(report.pdf)))
    assert "A single run" in text and "test_resnet" in text and "Cross-validation folds" not in text

    # The console script's code path, as a user runs it.
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "train.report", str(tmp_path / "run"), "--out", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "report.pdf" in proc.stdout and (tmp_path / "out" / "report.pdf").stat().st_size > 10_000


def test_without_a_browser_the_command_says_what_to_install(tmp_path, monkeypatch, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(make_metrics()), encoding="utf-8")
    monkeypatch.setenv(slides.BROWSER_ENV, str(tmp_path / "no-chrome-here"))
    assert train_report.cli([str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "apt-get install -y chromium" in err and slides.BROWSER_ENV in err and "no-chrome-here" in err
    assert not (tmp_path / "out").exists()
    assert train_report.cli([str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "Metrics file not found" in capsys.readouterr().err
