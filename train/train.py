"""Transfer-learning trainer with patient-level k-fold cross-validation.

    python -m train --data ../shared/data/figshare --model resnet50 --folds 5 --epochs 40 --name r50-cv

One code path for CPU, one GPU or several (``accelerate launch -m train ...``). This module holds the
command line and the run's top level; one run's training is :func:`train.engine.fit`, cross-validation
:mod:`train.cv`, the run folder's files :mod:`train.runfiles`. Only the top level writes results;
:func:`train.engine.train_one_epoch` and :func:`train.engine.evaluate` compute and return.
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
import yaml

from tumorlib.calibration import crossfit_probabilities, fit_temperature, softmax
from tumorlib.data import class_names, read_datasets
from tumorlib.errors import TumorlibError
from tumorlib.fileio import atomic_write_text, save_json
from tumorlib.splits import train_val_split

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
)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Every flag of ``python -m train``, grouped as in ``--help``."""
    p = argparse.ArgumentParser(
        description="Train a brain-tumour MRI classifier (timm) by transfer learning.", add_help=add_help
    )
    p.add_argument("--config", help="YAML file of option values; flags given on the command line override it")
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        action="append",
        help="dataset folder (figshare layout, class folders or the .mat release); repeatable",
    )
    g.add_argument("--classes", nargs="+", help="keep only these classes (default: every class in the data)")
    g.add_argument("--folds", type=int, default=0, help="k-fold cross-validation grouped by patient (0: one run)")
    g.add_argument("--fold", type=int, help="run only this fold of --folds")
    g.add_argument(
        "--final", action="store_true", help="after cross-validation, train on all data and export the model"
    )
    g.add_argument(
        "--val-fraction", type=float, default=0.2, help="without --folds: patient-grouped validation share (0: none)"
    )
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("model")
    g.add_argument("--model", default="resnet50", help="timm architecture")
    g.add_argument(
        "--pretrained",
        default="none",
        help="none, a timm Hub tag (resnet50.tv_in1k), a .safetensors file or a bundle folder",
    )
    g.add_argument("--input-size", type=int, default=224)
    g.add_argument("--interpolation", default="bicubic")
    g.add_argument("--drop-rate", type=float, default=0.0)
    g.add_argument("--drop-path", type=float, default=0.0)
    g.add_argument(
        "--output-stride",
        type=int,
        default=32,
        choices=[8, 16, 32],
        help="16 dilates the last stage instead of striding it: a finer Grad-CAM grid (8 x 8 at 128 px), more compute",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--opt", default="adamw", choices=["sgd", "adam", "adamw", "rmsprop"])
    g.add_argument("--lr", type=float, default=1e-3, help="learning rate of the head")
    g.add_argument(
        "--backbone-lr-scale", type=float, default=1.0, help="backbone lr = lr x this (transfer learning: 0.1)"
    )
    g.add_argument(
        "--layer-decay", type=float, default=None, help="layer-wise lr decay inside the backbone (e.g. 0.75)"
    )
    g.add_argument("--freeze-epochs", type=int, default=0, help="train only the head for this many epochs first")
    g.add_argument("--weight-decay", type=float, default=0.05)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--sched", default="cosine", choices=["cosine", "onecycle", "constant"])
    g.add_argument("--warmup-epochs", type=float, default=1.0)
    g.add_argument("--min-lr-ratio", type=float, default=0.01)
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--balance", default="none", choices=["none", "sampler", "loss"], help="class balancing")
    g.add_argument(
        "--recalibrate-bn",
        action="store_true",
        help="after training, recompute BatchNorm statistics in float32 on the training images, unaugmented",
    )
    g.add_argument("--grad-clip", type=float, default=0.0)
    g.add_argument(
        "--model-ema",
        type=float,
        default=0.0,
        metavar="DECAY",
        help="keep a moving average of the weights with this decay per optimiser step (e.g. 0.999; 0: off); "
        "the average is what is evaluated, checkpointed, scored and exported",
    )
    g.add_argument(
        "--finetune-size",
        type=int,
        default=None,
        metavar="PX",
        help="after the main schedule, train --finetune-epochs more at this input size (FixRes); "
        "the model is scored and shipped at it",
    )
    g.add_argument("--finetune-epochs", type=int, default=0, metavar="N", help="epochs at --finetune-size")
    g.add_argument(
        "--finetune-lr",
        type=float,
        default=None,
        help="constant learning rate of the fine-tuning epochs (default: the schedule's floor, lr x min-lr-ratio)",
    )
    g = p.add_argument_group("preprocessing (the paper's steps) and augmentation")
    g.add_argument("--crop-brain", action="store_true")
    g.add_argument("--sharpen", type=float, default=0.0)
    g.add_argument("--equalize", default="none", choices=["none", "global", "clahe"])
    g.add_argument("--binarize", default="none", help="none, otsu or a threshold in [0, 1]")
    g.add_argument("--binarize-mode", default="mask", choices=["mask", "replace"])
    g.add_argument("--morphology", default="none", choices=["none", "dilate", "erode", "open", "close"])
    g.add_argument("--no-augment", action="store_true")
    g.add_argument("--hflip", type=float, default=0.5)
    g.add_argument("--vflip", type=float, default=0.0)
    g.add_argument("--rotate", type=float, default=15.0)
    g.add_argument("--scale", type=float, nargs=2, default=(0.85, 1.15))
    g.add_argument("--translate", type=float, default=0.06)
    g.add_argument("--contrast", type=float, default=0.15)
    g.add_argument("--gamma", type=float, nargs=2, default=(0.8, 1.25))
    g.add_argument("--noise", type=float, default=0.0)
    g.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0: off)")
    g.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (0: off)")
    g = p.add_argument_group("auxiliary losses")
    g.add_argument(
        "--mask-loss", type=float, default=0.0, help="weight of an auxiliary tumour-mask loss (stride-16 head)"
    )
    g.add_argument(
        "--teacher",
        action="append",
        help="bundle folder or Hub id of a trained teacher for knowledge distillation; in cross-validation, "
        "RUN/fold{fold}/bundle gives each fold the teacher that held out the same patients, and --final "
        "the teacher's own all-patient model RUN; repeat it for an ensemble teacher (the mean of their "
        "softened probabilities)",
    )
    g.add_argument("--distill-alpha", type=float, default=0.5, help="weight of the teacher's soft targets")
    g.add_argument("--distill-temperature", type=float, default=4.0)
    g.add_argument(
        "--hint-loss", type=float, default=0.0, help="weight of the feature-hint loss to the teacher's last stage"
    )
    g = p.add_argument_group("run")
    g.add_argument("--output", default="runs", help="parent folder of run folders")
    g.add_argument("--name", help="run folder name (default: model-time)")
    g.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoints")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    g.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    g.add_argument(
        "--precision", default="auto", choices=["auto", "bf16", "fp32"], help="auto: bf16 autocast where native"
    )
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--no-cam", action="store_true", help="skip the per-fold Grad-CAM check against tumour masks")
    g.add_argument("--max-steps-per-epoch", type=int, default=0, help="for smoke tests: cut epochs short")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags over YAML over defaults."""
    parser = get_args_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.config:
        try:
            with open(known.config, encoding="utf-8") as f:
                values = yaml.safe_load(f) or {}  # safe_load: a !!python/... tag is refused, never run
        except OSError as err:
            parser.error(f"cannot read {known.config}: {err.strerror or err}")
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            parser.error(f"{known.config} is not a valid YAML recipe (plain keys and values only): {err}")
        if not isinstance(values, dict):
            parser.error(f"{known.config} must be a YAML mapping of option: value, not a {type(values).__name__}")
        dests = {a.dest for a in parser._actions}
        unknown = sorted(str(k) for k in values if k not in dests)
        if unknown:
            parser.error(f"unknown keys in {known.config}: {', '.join(unknown)}")
        # A list option: the command line's --teacher replaces the recipe's, as every other flag does.
        recipe_teacher = values.pop("teacher", None)
        parser.set_defaults(**values)
    else:
        recipe_teacher = None
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
        if (run_dir / "status.json").exists() and not args.resume and args.fold is None:
            raise TumorlibError(f"{run_dir} already holds a run; use --resume to continue it or another --name.")
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved_config(args), sort_keys=False))
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
            run_dir / "predictions.csv",
            ordered,
            labels,
            out["logits"],
            softmax(out["logits"], temperature),
            out["labels"],
        )
        save_json(metrics, run_dir / "metrics.json")
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
