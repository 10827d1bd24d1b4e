"""Record a paired ablation: a recipe change trained on some folds of a cross-validation, against the
baseline run's own scores on the same folds (same patients, same seed), as a row of ``results/ablations.csv``.

    python -m train --config recipes/resnet50-scratch.yaml --data ... --folds 5 --fold 0 --name abl-crop --crop-brain
    python -m train --config recipes/resnet50-scratch.yaml --data ... --folds 5 --fold 3 --name abl-crop --crop-brain
    python -m train.ablate runs/abl-crop --baseline results/r50-4c-cv --out results/ablations/crop-brain
    python -m train.ablate --update docs/results.md     # rewrite its tables: paired ablations, every run

One fold alone moves by +-2 points between seeds, so a change is read on the pair of folds and their
mean, never on one. The fold files (metrics, predictions, history) are copied to ``--out`` with the run's
options (``fold``: the folds of the row) and a ``summary.json``; no weights are copied.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import shutil
import statistics
import sys
from collections.abc import Mapping
from pathlib import Path

from tumorlib.errors import TumorlibError
from tumorlib.fileio import atomic_write_text, load_json, save_json
from tumorlib.results.names import HISTORY_CSV, METRICS_JSON, PREDICTIONS_CSV

from .args import recipe_options
from .runfiles import read_history, read_run_config, write_run_config
from .tables import markdown_table

FOLD_FILES = (METRICS_JSON, PREDICTIONS_CSV, HISTORY_CSV)
ABLATIONS = Path("results/ablations.csv")
COLUMNS = ("run", "recipe", "epochs", "input_size", "init", "wall_minutes", "accuracy", "macro_f1", "notes")
#: The class whose recall the ResNet-50's aims name (the weakest on new patients).
WATCHED = "meningioma"


def fold_scores(metrics: Mapping) -> dict:
    """Accuracy, macro F1 and the watched class's recall of one fold's metrics.json."""
    per_class = metrics.get("per_class") or {}
    return {
        "accuracy": float(metrics["accuracy"]),
        "macro_f1": float(metrics["macro"]["f1"]),
        f"{WATCHED}_recall": float(per_class[WATCHED]["recall"]) if WATCHED in per_class else None,
        "n": int(metrics["n"]),
    }


def fold_minutes(history_csv: Path) -> dict:
    """Wall minutes of a fold's epochs as recorded, and epochs x the median epoch (what it costs alone:
    a paused or shared machine stretches some epochs several times)."""
    rows = read_history(history_csv)
    seconds = [float(r["seconds"]) for r in rows]
    return {
        "epochs": len(rows),
        "wall_minutes": sum(seconds) / 60,
        "median_epoch_s": statistics.median(seconds) if seconds else None,
        "uncontended_minutes": len(seconds) * statistics.median(seconds) / 60 if seconds else None,
    }


def summarise(run: Path, baseline: Path) -> dict:
    """Every finished fold of ``run`` beside ``baseline``'s score on the same fold, and their means."""
    folds = sorted(int(p.parent.name.removeprefix("fold")) for p in run.glob("fold*/metrics.json"))
    if not folds:
        raise TumorlibError(f"{run} has no finished fold (fold*/metrics.json).")
    rows = []
    for k in folds:
        ours, theirs = run / f"fold{k}", baseline / f"fold{k}"
        if not (theirs / METRICS_JSON).is_file():
            raise TumorlibError(f"The baseline {baseline} has no fold {k} to compare with.")
        metrics = load_json(ours / METRICS_JSON)
        rows.append(
            {
                "fold": k,
                **fold_scores(metrics),
                "trained_on": metrics.get("trained_on"),
                "baseline": fold_scores(load_json(theirs / METRICS_JSON)),
                **fold_minutes(ours / HISTORY_CSV),
            }
        )

    def mean(key: str, of: str | None = None) -> float | None:
        values = [(r[of] if of else r)[key] for r in rows]
        return None if any(v is None for v in values) else sum(values) / len(values)

    keys = ("accuracy", "macro_f1", f"{WATCHED}_recall")
    return {
        "run": str(run),
        "baseline": str(baseline),
        "folds": rows,
        "mean": {k: mean(k) for k in keys},
        "baseline_mean": {k: mean(k, "baseline") for k in keys},
        "wall_minutes": sum(r["wall_minutes"] for r in rows),
        "uncontended_minutes": sum(r["uncontended_minutes"] or 0 for r in rows),
    }


#: Options that say where and how a run went, not what it trained.
NOT_RECIPE = {
    "name",
    "fold",
    "folds",
    "final",
    "resume",
    "output",
    "data",
    "config",
    "_environment",
    "threads",
    "workers",
    "no_progress",
    "no_cam",
}


def changed_flags(config: Mapping, base: Mapping) -> list[str]:
    """The options of ``config`` that differ from ``base``, as trainer flags (YAML lists equal tuples)."""

    def plain(v: object) -> object:
        return list(v) if isinstance(v, tuple) else v

    flags = []
    for key, value in config.items():
        if key in NOT_RECIPE or (plain(base[key]) == plain(value) if key in base else not value):
            continue
        flag = "--" + key.replace("_", "-")
        if key == "teacher" and isinstance(value, list):  # given once per teacher
            flags += [f"{flag} {v}" for v in value]
        elif isinstance(value, list):
            flags.append(f"{flag} {' '.join(str(v) for v in value)}")
        else:
            flags.append(flag if value is True else f"{flag} {value}")
    return flags


def recipe_change(config: Mapping, base: Mapping) -> str:
    """The options that differ from the baseline's recipe, as trainer flags."""
    return " ".join(changed_flags(config, base)) or "(none)"


def recipe_command(config: Mapping) -> str:
    """The run's recipe file and the flags given on top of it (its command, less data and output)."""
    recipe = config.get("config")
    return " ".join([recipe or "", *changed_flags(config, recipe_options(recipe))]).strip()


def machines(folds: list[Mapping]) -> str:
    """Where the folds trained, as the notes say it: minutes compare only on one machine and precision."""

    def one(m: Mapping) -> str:
        precision = m.get("mixed_precision")
        return f"{m.get('gpu') or m.get('cpu') or 'unknown CPU'} ({'fp32' if precision in (None, 'no') else precision})"

    known = [(r["fold"], one(r["trained_on"])) for r in folds if r.get("trained_on")]
    if not known:
        return ""
    if len({m for _, m in known}) == 1 and len(known) == len(folds):
        return f"; trained on {known[0][1]}"
    return "; trained on " + ", ".join(f"fold {k} {m}" for k, m in known)


def ablation_row(name: str, summary: Mapping, config: Mapping) -> dict:
    """The ``results/ablations.csv`` row: the fold mean, and each fold beside the baseline in the notes."""

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    folds = summary["folds"]
    ks = "/".join(str(r["fold"]) for r in folds)
    mean, base_mean = summary["mean"], summary["baseline_mean"]
    fold_word = "fold" if len(folds) == 1 else "folds"
    notes = (
        f"paired ablation on {fold_word} {ks} of the 4-class CV against {summary['baseline']} on the same {fold_word}; "
        f"accuracy {'/'.join(pct(r['accuracy']) for r in folds)}% "
        f"(baseline {'/'.join(pct(r['baseline']['accuracy']) for r in folds)}%), "
        f"mean {pct(mean['accuracy'])}% vs {pct(base_mean['accuracy'])}%; "
        f"{WATCHED} recall {'/'.join(pct(r[f'{WATCHED}_recall']) for r in folds)}% "
        f"(baseline {'/'.join(pct(r['baseline'][f'{WATCHED}_recall']) for r in folds)}%); "
        f"about {summary['uncontended_minutes']:.0f} min of epochs uncontended{machines(folds)}"
    )
    size = config.get("finetune_size") or config.get("input_size")
    return {
        "run": name,
        "recipe": recipe_command(config),
        "epochs": folds[0]["epochs"],
        "input_size": size,
        "init": "random" if config.get("pretrained") in (None, "none") else config.get("pretrained"),
        "wall_minutes": f"{summary['wall_minutes']:.1f}",
        "accuracy": f"{mean['accuracy']:.4f}",
        "macro_f1": f"{mean['macro_f1']:.4f}",
        "notes": notes,
    }


def write_row(path: Path, row: Mapping) -> None:
    """Add ``row`` to the CSV, replacing an earlier row of the same run."""
    rows = []
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["run"] != row["run"]]
    rows.append({k: row.get(k, "") for k in COLUMNS})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def run_name(out: Path) -> str:
    """The run's name in the table: its path under the last ``results`` folder (as the other rows are named)."""
    parts = out.parts
    if "results" not in parts:
        return out.name
    return "/".join(parts[len(parts) - parts[::-1].index("results") :])


#: The generated table's place in a Markdown page.
BLOCK = re.compile(r"(<!-- python -m train\.ablate --table -->\n)(.*?)(<!-- end ablations -->)", re.S)


def table(root: Path = Path("results/ablations")) -> str:
    """Every recorded paired ablation under ``root`` as a Markdown table, fold by fold beside the baseline."""

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.1f}%"

    header = [
        "ablation",
        "change",
        "folds",
        "accuracy (baseline)",
        "mean (baseline)",
        f"{WATCHED} recall (baseline)",
        "minutes of epochs (uncontended)",
    ]
    rows = []
    for path in sorted(root.glob("*/summary.json")):
        s = load_json(path)
        config = read_run_config(path.parent)
        base = read_run_config(Path(s["baseline"]))
        folds = s["folds"]
        acc = " / ".join(f"{pct(f['accuracy'])} ({pct(f['baseline']['accuracy'])})" for f in folds)
        rec = " / ".join(f"{pct(f[f'{WATCHED}_recall'])} ({pct(f['baseline'][f'{WATCHED}_recall'])})" for f in folds)
        mean = f"{pct(s['mean']['accuracy'])} ({pct(s['baseline_mean']['accuracy'])})"
        cells = [f"`{path.parent.name}`", f"`{recipe_change(config, base)}`", "/".join(str(f["fold"]) for f in folds)]
        rows.append([*cells, acc, mean, rec, f"{s['uncontended_minutes']:.0f}"])
    return "\n".join(markdown_table(header, rows)) + "\n"


#: The place of the table of every recorded run (``results/ablations.csv``) in a Markdown page.
RUNS_BLOCK = re.compile(r"(<!-- python -m train\.ablate --runs -->\n)(.*?)(<!-- end runs -->)", re.S)


def runs_cells(row: Mapping) -> list[str]:
    """One ``results/ablations.csv`` row as the cells of a Markdown table row (the notes stay in the CSV)."""
    recipe = f"`{row['recipe']}`" if row["recipe"].startswith("recipes/") else row["recipe"]
    wall = row["wall_minutes"] if float(row["wall_minutes"] or 0) else "no training"
    cells = [f"`{row['run']}`", recipe, row["epochs"] or "—", row["input_size"] or "—", row["init"] or "—", wall]
    return [*cells, f"{100 * float(row['accuracy']):.2f}%", f"{100 * float(row['macro_f1']):.2f}%"]


def runs_table(path: Path = ABLATIONS) -> str:
    """Every row of ``results/ablations.csv`` as a Markdown table, in the CSV's order."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = [runs_cells(r) for r in csv.DictReader(f)]
    header = ["run", "recipe", "epochs", "input px", "initialisation", "wall time (min)", "accuracy", "macro F1"]
    return "\n".join(markdown_table(header, rows)) + "\n"


def update(text: str, root: Path = Path("results/ablations"), runs_csv: Path = ABLATIONS) -> str:
    """``text`` with its generated blocks rewritten: the paired ablations from their recorded summaries,
    the table of every run from ``results/ablations.csv``."""
    text = BLOCK.sub(lambda m: m.group(1) + table(root) + m.group(3), text)
    return RUNS_BLOCK.sub(lambda m: m.group(1) + runs_table(runs_csv) + m.group(3), text)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Record a paired ablation against a CV baseline.", add_help=add_help)
    p.add_argument("run", nargs="?", help="the ablation's run folder (runs/NAME), with some finished folds")
    p.add_argument("--baseline", help="the baseline CV results folder (results/r50-4c-cv)")
    p.add_argument("--out", help="where the fold files and summary.json go (results/ablations/NAME)")
    p.add_argument("--csv", default=str(ABLATIONS), help="the ablations table to add the row to")
    p.add_argument(
        "--update",
        metavar="PAGE",
        help="rewrite the generated tables (paired ablations, every run) in this Markdown page",
    )
    return p


def main(args: argparse.Namespace) -> dict:
    if args.update:
        page = Path(args.update)
        atomic_write_text(page, update(page.read_text(encoding="utf-8"), runs_csv=Path(args.csv)))
        return {}
    if not (args.run and args.baseline and args.out):
        raise TumorlibError("Give the run folder, --baseline and --out (or --update PAGE).")
    run, baseline, out = Path(args.run), Path(args.baseline), Path(args.out)
    summary = summarise(run, baseline)
    config = read_run_config(run)
    for fold in summary["folds"]:
        (out / f"fold{fold['fold']}").mkdir(parents=True, exist_ok=True)
        for name in FOLD_FILES:
            shutil.copy2(run / f"fold{fold['fold']}" / name, out / f"fold{fold['fold']}" / name)
    # The trainer rewrites ``fold`` at each invocation; the copy names the folds of the row instead.
    write_run_config(out, {**config, "fold": [fold["fold"] for fold in summary["folds"]]})
    summary["run"] = str(out)
    save_json(summary, out / "summary.json")
    write_row(Path(args.csv), ablation_row(run_name(out), summary, config))
    return summary


def cli(argv: list[str] | None = None) -> int:
    try:
        summary = main(get_args_parser().parse_args(argv))
    except (TumorlibError, OSError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not summary:
        return 0
    m, b = summary["mean"], summary["baseline_mean"]
    print(f"mean accuracy {m['accuracy']:.4f} (baseline {b['accuracy']:.4f}) over {len(summary['folds'])} folds")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
