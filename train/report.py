"""The report of a run for slides: ``report.pdf``, ``report.html`` and a full-HD PNG of each figure.

    python -m train.report results/r50-4c-cv --out out/
    python -m train.report models/default --out out/ --title "Default model"

RUN is a results or bundle folder with a ``metrics.json`` (and, where present, ``history.csv`` and
``config.yaml``/``config.json`` for the training curves and the recipe line). The PDF has real pages: the
headline with its intervals, the paper comparison, the per-class and per-fold tables, then one figure a
page (confusion matrices, per patient where stored, ROC, reliability, the folds, prediction sets, training
curves). The figures are rendered by kaleido through a Chrome or Chromium on this machine (Debian:
``apt-get install -y chromium``; ``BROWSER_PATH`` picks another); nothing is downloaded or recomputed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from tumorlib import results
from tumorlib.dashboard import read_config, run_summary
from tumorlib.errors import TumorlibError
from tumorlib.results.names import HISTORY_CSV, METRICS_JSON, RUN_CONFIG
from tumorlib.slides import build_report

__all__ = ["cli", "get_args_parser", "main"]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=add_help)
    p.add_argument("run", help="a results or bundle folder with metrics.json (results/r50-4c-cv)")
    p.add_argument("--out", required=True, help="folder for report.pdf, report.html and figures/*.png")
    p.add_argument("--title", help="the report's title (default: the run folder's name)")
    return p


def main(args: argparse.Namespace) -> list[Path]:
    """Write the report files of ``args.run`` under ``args.out``; returns their paths."""
    run = Path(args.run)
    metrics = results.load_metrics(run / METRICS_JSON if run.is_dir() else run)
    folder = run if run.is_dir() else run.parent
    history = results.load_history(folder / HISTORY_CSV) if (folder / HISTORY_CSV).is_file() else None
    config = next((read_config(folder / n) for n in (RUN_CONFIG, "config.json") if (folder / n).is_file()), None)
    name = folder.resolve().name
    title = args.title or f"Brain-tumour MRI classifier: {name}"
    report = build_report(metrics, title, history=history, summary=run_summary(metrics, config).replace("**", ""))
    return report.write(args.out)


def cli(argv: list[str] | None = None) -> int:
    try:
        written = main(get_args_parser().parse_args(argv))
    except (TumorlibError, OSError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pngs = sum(path.suffix == ".png" for path in written)
    print(f"wrote {written[0]}, {written[1]} and {pngs} PNG figures in {written[0].parent / 'figures'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
