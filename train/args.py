"""The trainer's flags (``python -m train --help``) and how a YAML recipe sets them: read by the trainer,
and by :mod:`train.ablate` to tell which of a run's recorded options its recipe file did not set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from tumorlib.errors import TumorlibError


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


def read_recipe(path: str | Path, parser: argparse.ArgumentParser) -> dict:
    """The option values a YAML recipe sets, checked against ``parser``'s options."""
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}  # safe_load: a !!python/... tag is refused, never run
    except OSError as err:
        raise TumorlibError(f"cannot read {path}: {err.strerror or err}") from err
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise TumorlibError(f"{path} is not a valid YAML recipe (plain keys and values only): {err}") from err
    if not isinstance(values, dict):
        raise TumorlibError(f"{path} must be a YAML mapping of option: value, not a {type(values).__name__}")
    dests = {a.dest for a in parser._actions}
    unknown = sorted(str(k) for k in values if k not in dests)
    if unknown:
        raise TumorlibError(f"unknown keys in {path}: {', '.join(unknown)}")
    return values


def recipe_options(path: str | Path | None) -> dict:
    """Every option as the trainer sets it from the recipe at ``path`` and no flags (None: no recipe)."""
    parser = get_args_parser()
    defaults = {a.dest: a.default for a in parser._actions if a.dest != "help"}
    return {**defaults, **(read_recipe(path, parser) if path else {})}
