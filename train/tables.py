"""The README's results tables, written from the committed metrics files (so the two cannot drift).

    python -m train.tables "MobileNetV2=results/mnv2-3c-cv" "ResNet-50=results/r50-3c-cv"
    python -m train.tables "models/default" "models/mobilenetv2"
    python -m train.tables --conformal ResNet-50=models/default MobileNetV2=models/mobilenetv2
    python -m train.tables --update README.md     # rewrite every generated block in place

Each source is a run or bundle folder (or its metrics.json), optionally named ``Name=path``. When every
source is a cross-validation results run the output is the paper's two tables (overall and per class)
with pooled out-of-fold figures and their spread over folds; otherwise (and for shipped model
folders) one table of held-out figures with a column per model, the not-an-MRI gate's included;
``--conformal`` gives the prediction sets' measured coverage and size per level, and the score comparison. The
README carries the output between ``<!-- python -m train.tables ... -->`` and ``<!-- end tables -->``;
``tests/test_readme.py`` regenerates every such block and compares.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tumorlib import results
from tumorlib.fileio import atomic_write_text
from tumorlib.results import (
    MISSING,
    PAPER,
    format_count,
    format_interval,
    format_mean_std,
    format_pct,
    format_share,
    number,
)
from tumorlib.results.names import METRICS_JSON

_MACRO = ("specificity", "precision", "recall", "f1")


def load_source(source: str) -> tuple[str, dict]:
    """``Name=path`` or ``path`` (a folder with metrics.json, or the file) -> (name, metrics)."""
    name, _, path = source.rpartition("=")
    path = Path(path)
    file = path / METRICS_JSON if path.is_dir() else path
    return name or str(path if path.is_dir() else path.parent), results.load_metrics(file)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table's lines: the header, its ``---`` rule, then one line per row of cells."""
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _labels(runs: Mapping[str, Mapping]) -> list[str]:
    labels: list[str] = []
    for metrics in runs.values():
        labels += [label for label in results.labels(metrics) if label not in labels]
    return labels


def cv_tables(runs: Mapping[str, Mapping]) -> str:
    """Table 1 (overall, macro) and Table 2 (per class) of the paper, one pair of columns per CV run.

    The paper's column only beside runs on its own classes: its 3-class figures say nothing of a 4-class model.
    """
    paper = PAPER if sorted(_labels(runs)) == sorted(PAPER["labels"]) else None
    header = ["metric"]
    for name, m in runs.items():
        k = results.n_folds(m) or 0
        header += [f"{name}: pooled out-of-fold (95% CI)", f"{name}: mean ± std over {k} folds"]
    if paper:
        header.append("paper (split unstated): its ResNet-50, Table 1 as printed")
    rows = []
    for key in ("accuracy", *_MACRO):
        row = ["accuracy" if key == "accuracy" else f"macro {key}"]
        for m in runs.values():
            if key == "accuracy":
                row += [
                    format_interval(m.get("accuracy"), m.get("accuracy_ci")),
                    format_mean_std(results.cv_summary(m).get("accuracy")),
                ]
            else:
                macro = results.macro(m)
                row += [
                    format_interval(macro.get(key), macro.get(f"{key}_ci")),
                    format_mean_std(results.section(m, "cv_summary", "macro").get(key)),
                ]
        if paper:
            row.append(format_pct(paper["metrics"][key]) if key in paper["metrics"] else MISSING)
        rows.append(row)
        if key == "accuracy" and any(results.patient_level(m) for m in runs.values()):
            row = ["accuracy per patient (of n patients; their slices one by one)"]
            for m in runs.values():
                spread = results.section(m, "cv_summary", "patient_level").get("accuracy")
                row += [_patient_cell(m), format_mean_std(spread)]
            rows.append([*row, MISSING] if paper else row)  # the paper scores slices only
    lines = [*markdown_table(header, rows), ""]

    header = ["class (one-vs-rest accuracy; recall / precision)"]
    for name in runs:
        header += [f"{name}: pooled (95% CI)", f"{name}: recall / precision", f"{name}: mean ± std over folds"]
    if paper:
        header.append("paper, Table 2 as printed (validation accuracy)")
    rows = []
    for label in _labels(runs):
        row = [label]
        for m in runs.values():
            stats = results.per_class(m, label)
            folds = results.section(m, "cv_summary", "per_class", label).get("accuracy")
            row += [
                format_interval(stats.get("accuracy"), stats.get("accuracy_ci")),
                f"{format_pct(stats.get('recall'))} / {format_pct(stats.get('precision'))}",
                format_mean_std(folds),
            ]
        if paper:
            paper_value = (paper["per_class"].get(label) or {}).get("accuracy")
            row.append(MISSING if paper_value is None else format_pct(paper_value))
        rows.append(row)
    lines += [*markdown_table(header, rows), ""]
    if paper:
        lines.append(f"- {results.PAPER_CAVEAT}")
    for name, m in runs.items():
        lines.append(f"- {name}: {_calibration_text(m)} {_cam_text(m)}".rstrip())
    return "\n".join(lines)


def _temperature(m: Mapping) -> str:
    temperature = results.temperature(m)
    return f"T = {1 if temperature is None else temperature:.3f}"


def _calibration_text(m: Mapping) -> str:
    ece = results.ece(m)
    if ece is None:
        return ""
    method = results.calibration(m).get("method") or "temperature scaling"
    text = f"ECE {format_pct(ece)} after {method} ({_temperature(m)} fitted on all)"
    before = results.ece_before(m)
    return text + (f"; {format_pct(before)} before." if before is not None else ".")


def _cam_text(m: Mapping) -> str:
    cam = results.cam(m)
    if number(cam.get("pointing_game")) is None:
        return ""
    text = (
        f"Grad-CAM pointing game {format_pct(cam['pointing_game'])}, energy in mask "
        f"{format_pct(cam.get('energy_in_mask'))} ({format_count(cam.get('n', 0))} tumour slices)"
    )
    base = results.baseline(cam)
    if number(base.get("pointing_game")) is not None:
        text += (
            f"; chance levels on the same slices {format_pct(base['pointing_game'])} (a fixed point at the image "
            f"centre) and {format_pct(base.get('energy_in_mask'))} (a uniform map)"
        )
    ceiling = results.ceiling(cam)
    if ceiling is not None:
        best, rows, cols = ceiling
        text += f"; ceiling on its {rows} x {cols} feature grid {format_pct(best)}"
    loc = results.localiser(m)
    if number(loc.get("pointing_game")) is not None:
        text += (
            f". Tumour map (the mask head): pointing game {format_pct(loc['pointing_game'])}, energy in mask "
            f"{format_pct(loc.get('energy_in_mask'))}, soft Dice {format_pct(loc.get('soft_dice'))}"
        )
    return text + "."


def models_table(runs: Mapping[str, Mapping]) -> str:
    """Held-out figures of evaluated bundles, one column per model."""
    header = ["metric (95% CI, patient bootstrap)", *(f"`{name}`" for name in runs)]
    rows: list[list[str]] = [["slices / patients", *(f"{m.get('n')} / {m.get('n_groups')}" for m in runs.values())]]
    rows.append(["accuracy", *(format_interval(m.get("accuracy"), m.get("accuracy_ci")) for m in runs.values())])
    rows.append(
        ["accuracy per patient (of n patients; their slices one by one)", *(_patient_cell(m) for m in runs.values())]
    )
    for key in ("precision", "recall", "specificity", "f1"):
        cells = [format_interval(results.macro(m).get(key), results.macro(m).get(f"{key}_ci")) for m in runs.values()]
        rows.append([f"macro {key}", *cells])
    for label in _labels(runs):
        cells = []
        for m in runs.values():
            stats = results.per_class(m, label)
            cells.append(format_interval(stats.get("recall"), stats.get("recall_ci")) if stats else MISSING)
        rows.append([f"recall, {label}", *cells])
    rows.append(["ECE after / before temperature scaling", *(_ece(m) for m in runs.values())])
    rows.append(["Grad-CAM pointing game / energy in mask", *(_pointing_cell(results.cam(m)) for m in runs.values())])
    rows.append(["chance: image centre / uniform map", *(_chance_cell(m) for m in runs.values())])
    rows.append(["pointing game ceiling on the feature grid", *(_ceiling_cell(m) for m in runs.values())])
    rows.append(
        ["tumour map pointing game / energy in mask", *(_pointing_cell(results.localiser(m)) for m in runs.values())]
    )
    rows.append(["tumour map soft Dice; mean peak, tumour / no-tumour", *(_peak_cell(m) for m in runs.values())])
    rows.append(["gate: MRI slices refused (cross-fitted)", *(_gate_cell(results.gate(m)) for m in runs.values())])
    for key, _, short, _ in results.GATE_TEST_SETS:
        rows.append([f"gate: {short} refused", *(_gate_cell(results.section(m, "gate", key)) for m in runs.values())])
    rows = [r for r in rows if any(cell != MISSING for cell in r[1:])]  # e.g. chance levels not yet measured
    return "\n".join(markdown_table(header, rows))


def _patient_cell(m: Mapping) -> str:
    """Accuracy of the answers per patient with its interval, of how many patients, and of their slices."""
    stored = results.patient_level(m)
    if number(stored.get("accuracy")) is None:
        return MISSING
    text = f"{format_interval(stored['accuracy'], stored.get('accuracy_ci'))} of {format_count(stored.get('n'))}"
    # Beside the same slices one by one: the slice accuracy above also counts the images without a patient id.
    slices = number(stored.get("slice_accuracy"))
    return text if slices is None else f"{text} (slices: {format_pct(slices)})"


def _ece(m: Mapping) -> str:
    ece = results.ece(m)
    if ece is None:
        return MISSING
    return f"{format_pct(ece)} ({_temperature(m)}) / {format_pct(results.ece_before(m))}"


def _pointing_cell(check: Mapping) -> str:
    """Pointing game / energy in mask of a heatmap's check against the masks (``cam`` or ``localiser``)."""
    if number(check.get("pointing_game")) is None:
        return MISSING
    return (
        f"{format_pct(check['pointing_game'])} / {format_pct(check.get('energy_in_mask'))} "
        f"({format_count(check.get('n', 0))} slices)"
    )


def _peak_cell(m: Mapping) -> str:
    loc = results.localiser(m)
    if number(loc.get("soft_dice")) is None:
        return MISSING
    quiet = results.no_tumour_scores(loc).get("peak")
    peaks = format_share(loc.get("peak"))
    if number(quiet) is not None:
        peaks += f" / {format_share(quiet)}"
    return f"{format_pct(loc['soft_dice'])}; {peaks}"


def _chance_cell(m: Mapping) -> str:
    base = results.baseline(results.cam(m))
    if number(base.get("pointing_game")) is None:
        return MISSING
    return f"{format_pct(base['pointing_game'])} / {format_pct(base.get('energy_in_mask'))}"


def _ceiling_cell(m: Mapping) -> str:
    ceiling = results.ceiling(results.cam(m))
    if ceiling is None:
        return MISSING
    best, rows, cols = ceiling
    return f"{format_pct(best)} ({rows} x {cols})"


def _gate_cell(gate: Mapping) -> str:
    if number(gate.get("refused_fraction")) is None:
        return MISSING
    return f"{format_pct(gate['refused_fraction'])} of {format_count(gate.get('n', 0))}"


def conformal_tables(runs: Mapping[str, Mapping]) -> str:
    """The prediction sets of each run: coverage (overall and by true class), mean size and share of one-class
    sets per level, with per-class and with one threshold; then the mean set size of each conformal score at
    equal coverage, the evidence for the score used."""
    labels = _labels(runs)
    header = ["model", "level", "thresholds", "coverage", *labels, "mean set size", "one-class sets"]
    rows = []
    for name, m in runs.items():
        for mondrian, how in ((True, "per class"), (False, "one for all")):
            for entry in results.conformal(m, mondrian):
                per_class = results.section(entry, "per_class_coverage")
                rows.append(
                    [
                        name,
                        format_pct(entry["level"], 0),
                        how,
                        format_pct(entry.get("coverage")),
                        *(format_pct(per_class.get(label)) for label in labels),
                        results.format_set_size(entry.get("mean_set_size")),
                        format_pct(entry.get("singleton_share")),
                    ]
                )
    lines = [*markdown_table(header, rows), ""]
    compared = {name: results.conformal_scores(m) for name, m in runs.items()}
    targets = sorted({r["target"] for c in compared.values() for r in c.get("rows") or []})
    scores = list(dict.fromkeys(r["score"] for c in compared.values() for r in c.get("rows") or []))
    if targets and scores:
        header = ["score", *(f"{name}: mean set size at {format_pct(t, 0)}" for name in runs for t in targets)]
        rows = []
        for score in scores:
            cells = []
            for c in compared.values():
                found = {r["target"]: r for r in c.get("rows") or [] if r["score"] == score}
                # Three decimals: the scores differ by hundredths of a class at 95%.
                cells += [results.format_set_size((found.get(t) or {}).get("mean_set_size"), 3) for t in targets]
            rows.append([score + (" (used)" if score == _chosen(compared) else ""), *cells])
        lines += [*markdown_table(header, rows), ""]
    for name, m in runs.items():
        entries = results.conformal(m)
        if entries:
            lines.append(
                f"- {name}: {format_count(entries[0].get('n'))} slices, thresholds {entries[0].get('thresholds')}."
            )
    how = next((str(c["how"]) for c in compared.values() if c.get("how")), "")
    if how and targets:
        lines.append(f"- Score comparison: mean set size on {how}.")
    return "\n".join(lines)


def _chosen(compared: Mapping[str, Mapping]) -> str:
    return next((str(c["chosen"]) for c in compared.values() if c.get("chosen")), "")


def _is_bundle(source: str) -> bool:
    path = Path(source.rpartition("=")[2])
    return ((path if path.is_dir() else path.parent) / "model.safetensors").is_file()


def render(sources: Sequence[str]) -> str:
    """The markdown for these sources: CV tables when every one is a cross-validation results run; the
    models table (with the gate's figures) for shipped bundles, cross-validated or not; the prediction-set
    tables when the first argument is ``--conformal``."""
    if sources and sources[0] == "--conformal":
        return conformal_tables(dict(load_source(s) for s in sources[1:]))
    runs = dict(load_source(s) for s in sources)
    if all(results.cv_summary(m) for m in runs.values()) and not any(map(_is_bundle, sources)):
        return cv_tables(runs)
    return models_table(runs)


BLOCK = re.compile(r"<!-- python -m train\.tables ([^\n]+?) -->\n(.*?)\n<!-- end tables -->", flags=re.S)


def update(text: str) -> str:
    """``text`` with every generated block rendered afresh from its own command line."""
    return BLOCK.sub(
        lambda m: (
            f"<!-- python -m train.tables {m.group(1)} -->\n{render(shlex.split(m.group(1)))}\n<!-- end tables -->"
        ),
        text,
    )


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("sources", nargs="*", help="run or bundle folders (or metrics.json), optionally Name=path")
    p.add_argument("--update", metavar="FILE", help="rewrite the generated blocks of this markdown file")
    p.add_argument("--conformal", action="store_true", help="the prediction sets' tables of the sources")
    return p


def main(args: argparse.Namespace) -> int:
    try:
        if args.update:
            path = Path(args.update)
            text = path.read_text()
            fresh = update(text)
            if fresh != text:
                atomic_write_text(path, fresh)
            print(f"{path}: {len(BLOCK.findall(text))} block(s), {'updated' if fresh != text else 'unchanged'}")
        elif args.sources:
            print(render(["--conformal", *args.sources] if args.conformal else args.sources))
        else:
            print("error: give run or bundle folders, or --update FILE", file=sys.stderr)
            return 2
    except (results.ResultsError, results.ResultsFileError, KeyError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
