"""Transfer-learning trainer with patient-level k-fold cross-validation.

    python -m train --data ../shared/data/figshare --model resnet50 --folds 5 --epochs 40 --name r50-cv

One code path for CPU, one GPU or several (``accelerate launch -m train ...``). This module checks the
command line and holds the run's top level; the flags are :mod:`train.args`, one run's training
:func:`train.engine.fit`, cross-validation :mod:`train.cv`, the run folder's files :mod:`train.runfiles`.
Only the top level writes results; :func:`train.engine.train_one_epoch` and :func:`train.engine.evaluate`
compute and return.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import zlib
from pathlib import Path

import numpy as np
import torch

from tumorlib.calibration import crossfit_probabilities, fit_temperature, softmax
from tumorlib.data import class_names, read_datasets
from tumorlib.errors import TumorlibError
from tumorlib.fileio import save_json
from tumorlib.results.names import METRICS_JSON, PREDICTIONS_CSV, STATUS_JSON
from tumorlib.splits import train_val_split

from .args import get_args_parser, read_recipe
from .cv import run_cross_validation
from .engine import fit, make_accelerator
from .gate import fit_bundle_gate
from .model import teacher_sources
from .runfiles import (
    export_bundle,
    fold_metrics,
    resolved_config,
    set_status,
    training_machine,
    write_model_card,
    write_predictions,
    write_run_config,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags over YAML over defaults."""
    parser = get_args_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    recipe_teacher = None
    if known.config:
        try:
            values = read_recipe(known.config, parser)
        except TumorlibError as err:
            parser.error(str(err))
        # A list option: the command line's --teacher replaces the recipe's, as every other flag does.
        recipe_teacher = values.pop("teacher", None)
        parser.set_defaults(**values)
    args = parser.parse_args(argv)
    teachers = teacher_sources(args.teacher or recipe_teacher)
    if args.hint_loss and len(teachers) > 1:
        parser.error("--hint-loss matches one teacher's features: give a single --teacher")
    args.teacher = teachers[0] if len(teachers) == 1 else teachers or None
    if not args.data:
        parser.error("give at least one --data folder (or 'data:' in the YAML config)")
    if args.fold is not None and not (args.folds and 0 <= args.fold < args.folds):
        parser.error("--fold K needs --folds N with 0 <= K < N")
    if args.mask_loss and (args.mixup or args.cutmix):
        parser.error("--mask-loss cannot be combined with --mixup/--cutmix (the masks would not be mixed)")
    if not 0.0 <= args.model_ema < 1.0:
        parser.error("--model-ema DECAY needs 0 <= DECAY < 1 (0: off)")
    if args.finetune_epochs < 0 or (args.finetune_size is not None and args.finetune_size < 1):
        parser.error("--finetune-epochs and --finetune-size cannot be negative")
    if bool(args.finetune_epochs) != (args.finetune_size is not None):
        parser.error("--finetune-size PX and --finetune-epochs N go together")
    return args


def main(args: argparse.Namespace) -> int:
    """One run: the run folder, its recipe and status, then cross-validation or a single split; returns 0."""
    if args.threads:
        torch.set_num_threads(args.threads)
    accelerator = make_accelerator(args)
    records = read_datasets(args.data, args.classes)
    labels = class_names(records)
    if len(labels) < 2:
        raise TumorlibError(f"The data holds {len(labels)} class(es); a classifier needs at least two.")
    name = args.name or f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(args.output) / name
    main_proc = accelerator.is_main_process
    if main_proc:
        if (run_dir / STATUS_JSON).exists() and not args.resume and args.fold is None:
            raise TumorlibError(f"{run_dir} already holds a run; use --resume to continue it or another --name.")
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_config(run_dir, resolved_config(args))
        set_status(run_dir, "running", pid=os.getpid())
    recipe = {
        k: v for k, v in resolved_config(args).items() if k not in ("output", "name", "resume", "no_progress", "config")
    }
    try:
        if args.folds:
            result = run_cross_validation(records, labels, args, run_dir, accelerator, recipe)
        else:
            result = run_single(records, labels, args, run_dir, accelerator, recipe)
    except BaseException as err:
        if main_proc:
            set_status(
                run_dir, "failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-4000:]
            )
        raise
    if main_proc:
        set_status(run_dir, result)
        print(f"run folder: {run_dir} ({result})", file=sys.stderr)
    return 0


def run_single(records, labels, args, run_dir: Path, accelerator, recipe) -> str:
    """Train on a patient-grouped split (or on all data), score the held-out patients, export the bundle."""
    records = list(records)
    if args.val_fraction > 0:
        val_mask = train_val_split(records, args.val_fraction, args.seed)
        train_r = [r for r, v in zip(records, val_mask, strict=True) if not v]
        val_r = [r for r, v in zip(records, val_mask, strict=True) if v]
    else:
        train_r, val_r = records, []
    out = fit(train_r, val_r, labels, args, run_dir, accelerator, "single")
    if not accelerator.is_main_process:
        return "complete"
    metrics, temperature = None, 1.0
    if val_r:
        ordered = [val_r[i] for i in out["index"]]
        groups = [r.group for r in ordered]
        # Two patient-grouped halves of the validation set calibrate each other: an honest ECE.
        halves = np.array([zlib.crc32(g.encode()) % 2 for g in groups])
        probs, _ = crossfit_probabilities(out["logits"], out["labels"], halves)
        temperature = fit_temperature(out["logits"], out["labels"])
        metrics = fold_metrics(out["logits"], out["labels"], groups, labels, probs)
        metrics["temperature"] = temperature
        metrics["trained_on"] = training_machine(accelerator)
        write_predictions(
            run_dir / PREDICTIONS_CSV,
            ordered,
            labels,
            out["logits"],
            softmax(out["logits"], temperature),
            out["labels"],
        )
        save_json(metrics, run_dir / METRICS_JSON)
    extra = {"training": recipe, "split": f"patient-grouped validation fraction {args.val_fraction}"}
    export_bundle(out["model"], run_dir, labels, args, records, temperature, extra, out["mask_head"], out["mask_stage"])
    fit_bundle_gate(run_dir, train_r, val_r)
    write_model_card(run_dir, metrics, extra)
    return "complete"


def cli(argv: list[str] | None = None) -> int:
    """``python -m train``: exit status 2 and one line for a usage or data error, no traceback."""
    args = parse_args(argv)
    try:
        return main(args)
    except TumorlibError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
