"""Score what one training holds besides its final weights: the end of its main schedule, and the raw
weights beside their average. One run then records several paired ablations.

    python -m train.stages runs/abl-ema-ft192            # writes runs/abl-ema-ft192@main, @main-ema, @raw
    python -m train.ablate runs/abl-ema-ft192@main-ema --baseline results/r50-4c-cv --out results/ablations/ema

A run that fine-tunes after its main schedule (``--finetune-size``) keeps the checkpoint of that moment,
and with ``--model-ema`` every checkpoint holds the trained weights and their moving average. Neither
feeds back into training: the average is never trained on, and the main schedule runs the same whether
fine-tuning follows or not (the learning-rate schedule is the main schedule's alone). So the main-schedule
raw weights are the recipe without either lever, the main-schedule average is the recipe with the average
alone, and the final raw weights are the recipe with fine-tuning alone. Each becomes a run folder beside
the run, ``NAME@VARIANT``, with the fold files and ``config.yaml`` that :mod:`train.ablate` reads (its
recipe says which levers the weights had); the history keeps the epochs those weights saw.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from tumorlib.data import class_names, read_datasets
from tumorlib.errors import TumorlibError
from tumorlib.fileio import load_json, save_json
from tumorlib.results.names import HISTORY_CSV, METRICS_JSON
from tumorlib.splits import make_folds

from .checkpoint import CheckpointError
from .cv import fold_model, score_fold_model
from .engine import make_accelerator
from .runfiles import CHECKPOINT, MAIN_CHECKPOINT, read_history, read_run_config, write_history, write_run_config

NO_FINETUNE = {"finetune_size": None, "finetune_epochs": 0, "finetune_lr": None}


@dataclass(frozen=True)
class Variant:
    """Weights a run holds: which checkpoint, raw or averaged, and the recipe they amount to."""

    name: str
    checkpoint: str
    average: bool
    changes: dict
    main_only: bool  # the history stops at the end of the main schedule


def variants(config: dict) -> list[Variant]:
    """The variants a run's recipe makes available (none for a run with neither lever)."""
    ema, fine = bool(config.get("model_ema")), bool(config.get("finetune_epochs") and config.get("finetune_size"))
    out = []
    if fine:
        out.append(Variant("main", MAIN_CHECKPOINT, False, {**NO_FINETUNE, "model_ema": 0.0}, True))
        if ema:
            out.append(Variant("main-ema", MAIN_CHECKPOINT, True, dict(NO_FINETUNE), True))
    if ema:
        out.append(Variant("raw", CHECKPOINT, False, {"model_ema": 0.0}, False))
    return out


def score_variants(run: Path, data: list[str] | None = None) -> list[Path]:
    """Every variant of every fold of ``run`` that holds its weights; returns the variant run folders written."""
    config = read_run_config(run)
    todo = variants(config)
    if not todo:
        raise TumorlibError(f"{run} trained with neither --finetune-size nor --model-ema: it holds no other stage.")
    records = read_datasets(data or config["data"], config.get("classes"))
    labels = class_names(records)
    assignment = make_folds(records, config["folds"], config["seed"])
    written = []
    for v in todo:
        vconfig = {**config, **v.changes, "name": f"{run.name}@{v.name}"}
        args = argparse.Namespace(**vconfig)
        out = run.parent / vconfig["name"]
        accelerator = make_accelerator(args)
        # The main schedule's weights are there as soon as it ends; the last checkpoint counts once the
        # fold is finished (its metrics.json written).
        marker = v.checkpoint if v.main_only else METRICS_JSON
        folds = sorted(int(p.parent.name.removeprefix("fold")) for p in run.glob(f"fold*/{marker}"))
        if not folds:
            print(f"[{out.name}] no fold has these weights yet", file=sys.stderr)
            continue
        for k in folds:
            src, dst = run / f"fold{k}", out / f"fold{k}"
            ckpt = src / v.checkpoint
            if (dst / METRICS_JSON).is_file():
                continue
            if not ckpt.is_file():
                raise TumorlibError(f"{ckpt} is missing: the fold's checkpoints are needed to score {v.name}.")
            dst.mkdir(parents=True, exist_ok=True)
            test = [r for r, f in zip(records, assignment, strict=True) if f == k]
            try:
                model = fold_model(args, src, labels, None, checkpoint=ckpt, average=v.average).model
            except CheckpointError as err:
                raise TumorlibError(str(err)) from None
            metrics = score_fold_model(model, args, dst, test, labels, accelerator)
            history = read_history(src / HISTORY_CSV)
            if v.main_only:
                history = [r for r in history if int(r["epoch"]) <= int(config["epochs"])]
                if len(history) < int(config["epochs"]):
                    raise TumorlibError(f"{src / 'history.csv'} lacks epochs of the main schedule.")
            write_history(dst / HISTORY_CSV, history)
            save_json({**metrics, "fold": k, "precision": "fp32", "weights": v.name}, dst / METRICS_JSON)
            print(f"[{out.name} fold {k}] accuracy {metrics['accuracy']:.4f}", file=sys.stderr)
        write_run_config(out, vconfig)
        written.append(out)
    return written


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Score a run's main-schedule and raw weights.", add_help=add_help)
    p.add_argument("run", help="a run folder trained with --finetune-size and/or --model-ema")
    p.add_argument("--data", action="append", help="dataset folders, if not where the run's config.yaml says")
    return p


def main(args: argparse.Namespace) -> list[Path]:
    return score_variants(Path(args.run), args.data)


def cli(argv: list[str] | None = None) -> int:
    try:
        for out in main(get_args_parser().parse_args(argv)):
            scores = [load_json(p)["accuracy"] for p in sorted(out.glob("fold*/metrics.json"))]
            print(f"{out}: " + " / ".join(f"{a:.4f}" for a in scores))
    except (TumorlibError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
