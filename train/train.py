"""Transfer-learning trainer with patient-level k-fold cross-validation.

    python -m train --data ../shared/data/figshare --model resnet50 --folds 5 --epochs 40 --name r50-cv

One code path for CPU, one GPU or several (``accelerate launch -m train ...``). Only :func:`main`
writes files; :func:`train_one_epoch` and :func:`evaluate` compute and return.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import sys
import time
import traceback
import zlib
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from tumorlib import localise
from tumorlib import metrics as M
from tumorlib.bundle import create_model, load_bundle, save_bundle, update_config
from tumorlib.calibration import crossfit_probabilities, fit_temperature, softmax
from tumorlib.data import Record, class_names, read_datasets
from tumorlib.errors import TumorlibError
from tumorlib.fileio import atomic_write_text, load_json, save_json
from tumorlib.inference import check_bf16
from tumorlib.preprocess import PreprocessConfig
from tumorlib.splits import make_folds, train_val_split
from tumorlib.torchdata import EpochSampler, SliceDataset, balanced_weights
from tumorlib.transforms import AugmentConfig, DataConfig, create_transform

from .checkpoint import CheckpointError, load_checkpoint, load_model_state, save_checkpoint
from .gate import fit_bundle_gate

CHECKPOINT = "checkpoint.safetensors"


# --- configuration ------------------------------------------------------------------------------------


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
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
    g.add_argument("--teacher", help="bundle folder or Hub id of a trained teacher for knowledge distillation")
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
        parser.set_defaults(**values)
    args = parser.parse_args(argv)
    if not args.data:
        parser.error("give at least one --data folder (or 'data:' in the YAML config)")
    if args.fold is not None and not (args.folds and 0 <= args.fold < args.folds):
        parser.error("--fold K needs --folds N with 0 <= K < N")
    if args.mask_loss and (args.mixup or args.cutmix):
        parser.error("--mask-loss cannot be combined with --mixup/--cutmix (the masks would not be mixed)")
    return args


def architecture_args(args: argparse.Namespace) -> dict:
    """timm arguments that change the network's shape of computation: saved with the bundle's weights."""
    stride = getattr(args, "output_stride", 32)
    return {"output_stride": stride} if stride != 32 else {}


def data_config(args: argparse.Namespace, mean=None, std=None) -> DataConfig:
    pre = PreprocessConfig(
        crop_brain=args.crop_brain,
        sharpen=args.sharpen,
        equalize=args.equalize,
        binarize=str(args.binarize),
        binarize_mode=args.binarize_mode,
        morphology=args.morphology,
    )
    extra = {} if mean is None else {"mean": tuple(mean), "std": tuple(std)}
    return DataConfig(
        input_size=(3, args.input_size, args.input_size), interpolation=args.interpolation, preprocess=pre, **extra
    )


def augment_config(args: argparse.Namespace) -> AugmentConfig | None:
    if args.no_augment:
        return None
    return AugmentConfig(
        hflip=args.hflip,
        vflip=args.vflip,
        rotate=args.rotate,
        scale=tuple(args.scale),
        translate=args.translate,
        contrast=args.contrast,
        gamma=tuple(args.gamma),
        noise=args.noise,
    )


# --- model ---------------------------------------------------------------------------------------------


class TrainModel(nn.Module):
    """A timm classifier plus training-only heads, which never ship (the bundle holds ``.model`` only)."""

    def __init__(self, model: nn.Module, mask_head: bool = False, hint_channels: int | None = None) -> None:
        super().__init__()
        self.model = model
        info = model.feature_info
        self.mask_index = None
        self.mask_head = None
        if mask_head:
            self.mask_index = next(i for i, f in enumerate(info) if f["reduction"] >= 16)
            self.mask_head = nn.Conv2d(info[self.mask_index]["num_chs"], 1, kernel_size=1)
        self.hint = None
        if hint_channels:
            self.hint = nn.Conv2d(model.num_features, hint_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.mask_head is None and self.hint is None:
            return {"logits": self.model(x)}
        if self.mask_head is not None:
            final, inter = self.model.forward_intermediates(x, indices=[self.mask_index])
        else:
            final, inter = self.model.forward_features(x), []
        out = {"logits": self.model.forward_head(final)}
        if self.mask_head is not None:
            out["mask_logits"] = self.mask_head(inter[0])[:, 0]
        if self.hint is not None:
            out["hint"] = self.hint(final)
        return out


class Teacher:
    """A trained bundle whose soft outputs (and last-stage features) the student learns to match."""

    def __init__(self, source: str, labels: list[str], student: DataConfig, device: torch.device) -> None:
        bundle = load_bundle(source)
        missing = [c for c in labels if c not in bundle.labels]
        if missing:
            raise TumorlibError(f"The teacher {source} does not know the class(es) {', '.join(missing)}.")
        self.order = torch.tensor([bundle.labels.index(c) for c in labels])
        self.model = bundle.model.to(device).eval()
        self.data = bundle.data_config
        if self.data.preprocess != student.preprocess:
            print(
                f"note: the teacher's preprocessing differs from the student's: {self.data.preprocess}", file=sys.stderr
            )
        self.student = student
        self.channels = self.model.num_features
        # Undo the student's normalisation, resize, apply the teacher's.
        self._s_mean = torch.tensor(student.mean).view(1, -1, 1, 1)
        self._s_std = torch.tensor(student.std).view(1, -1, 1, 1)
        self._t_mean = torch.tensor(self.data.mean).view(1, -1, 1, 1)
        self._t_std = torch.tensor(self.data.std).view(1, -1, 1, 1)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dev = x.device
        raw = x.float() * self._s_std.to(dev) + self._s_mean.to(dev)
        size = self.data.input_size[1:]
        if tuple(raw.shape[-2:]) != tuple(size):
            raw = F.interpolate(raw, size=size, mode="bilinear", align_corners=False, antialias=True)
        xt = ((raw - self._t_mean.to(dev)) / self._t_std.to(dev)).contiguous(memory_format=torch.channels_last)
        features = self.model.forward_features(xt)
        logits = self.model.forward_head(features)
        return logits[:, self.order.to(dev)].float(), features.float()


def param_groups(model: TrainModel, args: argparse.Namespace) -> list[dict]:
    """Head (classifier and auxiliary heads) at ``lr``; the backbone at ``lr x backbone_lr_scale``, optionally
    decayed layer by layer; no weight decay on norms and biases."""
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay

    net = model.model
    head_names = {f"model.{n}" for n, _ in net.get_classifier().named_parameters(prefix=_classifier_prefix(net))}
    if args.layer_decay:
        groups = param_groups_layer_decay(net, args.weight_decay, layer_decay=args.layer_decay)
    else:
        groups = param_groups_weight_decay(net, args.weight_decay)
    out = []
    name_of = {id(p): f"model.{n}" for n, p in net.named_parameters()}
    for g in groups:
        scale = g.get("lr_scale", 1.0)
        for is_head in (True, False):
            params = [p for p in g["params"] if (name_of[id(p)] in head_names) == is_head]
            if params:
                s = scale if not is_head else 1.0
                out.append(
                    {
                        "params": params,
                        "weight_decay": g["weight_decay"],
                        "lr_scale": s * (1.0 if is_head else args.backbone_lr_scale),
                        "head": is_head,
                    }
                )
    extra = [p for n, p in model.named_parameters() if not n.startswith("model.")]
    if extra:
        out.append({"params": extra, "weight_decay": args.weight_decay, "lr_scale": 1.0, "head": True})
    return out


def _classifier_prefix(net: nn.Module) -> str:
    target = net.get_classifier()
    return next(n for n, m in net.named_modules() if m is target)


def build_optimizer(model: TrainModel, args: argparse.Namespace) -> torch.optim.Optimizer:
    groups = param_groups(model, args)
    for g in groups:
        g["lr"] = args.lr * g["lr_scale"]
    if args.opt == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, nesterov=True)
    if args.opt == "adam":
        return torch.optim.Adam(groups, lr=args.lr)
    if args.opt == "rmsprop":
        return torch.optim.RMSprop(groups, lr=args.lr, alpha=0.9, momentum=args.momentum, eps=1e-3)
    return torch.optim.AdamW(groups, lr=args.lr)


def lr_factor(step: int, total: int, warmup: int, sched: str, min_ratio: float) -> float:
    """The schedule as a pure function of the step, so a resumed run needs no scheduler state."""
    if sched == "constant":
        return 1.0 if step >= warmup else (step + 1) / max(warmup, 1)
    if sched == "onecycle":
        peak = max(warmup, 1)
        if step < peak:  # cosine ramp from lr/25 up to lr
            return 0.04 + 0.96 * (1 - math.cos(math.pi * step / peak)) / 2
        t = (step - peak) / max(total - peak, 1)
        return min_ratio + (1 - min_ratio) * (1 + math.cos(math.pi * min(t, 1.0))) / 2
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return min_ratio + (1 - min_ratio) * (1 + math.cos(math.pi * min(t, 1.0))) / 2


def set_backbone_trainable(model: TrainModel, trainable: bool) -> None:
    """Freeze or unfreeze everything but the classifier (frozen parameters get no gradient and no update)."""
    head = {id(p) for p in model.model.get_classifier().parameters()}
    for p in model.model.parameters():
        if id(p) not in head:
            p.requires_grad_(trainable)


# --- one epoch, one evaluation -------------------------------------------------------------------------


def train_one_epoch(
    model: TrainModel,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    accelerator,
    epoch: int,
    args: argparse.Namespace,
    *,
    step: int,
    total_steps: int,
    warmup_steps: int,
    class_weights: torch.Tensor | None = None,
    teacher: Teacher | None = None,
    mixup=None,
    progress: bool = True,
) -> tuple[dict, int]:
    """Train for one epoch; returns the epoch's mean loss and accuracy, and the global step reached."""
    model.train()
    loss_sum = correct = seen = 0.0
    start = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False, disable=not progress, dynamic_ncols=True)
    for i, batch in enumerate(bar):
        if args.max_steps_per_epoch and i >= args.max_steps_per_epoch:
            break
        factor = lr_factor(step, total_steps, warmup_steps, args.sched, args.min_lr_ratio)
        for g in optimizer.param_groups:
            g["lr"] = args.lr * g["lr_scale"] * factor
        x = batch["image"].contiguous(memory_format=torch.channels_last)
        y = batch["label"]
        target = y
        if mixup is not None:
            x, target = mixup(x, y)
        with accelerator.autocast():
            out = model(x)
            logits = out["logits"].float()
            if mixup is not None:
                loss = torch.sum(-target * F.log_softmax(logits, dim=1), dim=1).mean()
            else:
                loss = F.cross_entropy(logits, y, weight=class_weights, label_smoothing=args.label_smoothing)
            if teacher is not None:
                t_logits, t_features = teacher(x)
                temp = args.distill_temperature
                kd = F.kl_div(F.log_softmax(logits / temp, 1), F.softmax(t_logits / temp, 1), reduction="batchmean")
                loss = (1 - args.distill_alpha) * loss + args.distill_alpha * kd * temp * temp
                if "hint" in out:
                    loss = loss + args.hint_loss * hint_loss(out["hint"].float(), t_features)
            if "mask_logits" in out:
                loss = loss + args.mask_loss * mask_loss(out["mask_logits"].float(), batch["mask"], batch["has_mask"])
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if args.grad_clip:
            accelerator.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        step += 1
        n = len(y)
        loss_sum += float(loss.detach()) * n
        correct += float((logits.argmax(1) == y).sum())
        seen += n
        if progress:
            rate = seen * accelerator.num_processes / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", img_s=f"{rate:.1f}")
    totals = accelerator.reduce(torch.tensor([loss_sum, correct, seen], dtype=torch.float64), reduction="sum")
    loss_sum, correct, seen = (float(v) for v in totals)
    return {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1)}, step


def mask_loss(mask_logits: torch.Tensor, masks: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Per-pixel BCE against the tumour mask, pooled to the head's resolution; only where the mask is known."""
    if not bool(known.any()):
        return mask_logits.sum() * 0.0
    target = F.adaptive_avg_pool2d(masks[:, None].float(), mask_logits.shape[-2:])[:, 0]
    per_item = F.binary_cross_entropy_with_logits(mask_logits, target, reduction="none").mean(dim=(1, 2))
    return per_item[known].mean()


def hint_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE between unit-normalised feature vectors at each position (FitNets-style hint)."""
    if student.shape[-2:] != teacher.shape[-2:]:
        student = F.interpolate(student, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
    return F.mse_loss(F.normalize(student, dim=1), F.normalize(teacher, dim=1)) * student.shape[1]


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, accelerator, progress: bool = False, fp32: bool = False) -> dict:
    """Logits, labels and dataset indices of every item, gathered from all processes, and the mean loss.

    ``fp32`` skips autocast: the final scores must be those of the served model, and a served model
    only uses bf16 where it gives fp32's answers (see :func:`tumorlib.inference.check_bf16`). For that
    ``model`` must not be one ``accelerator.prepare`` wrapped in bf16 autocast (see :func:`fit`)."""
    model.eval()
    logits, labels, index = [], [], []
    for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress, dynamic_ncols=True):
        x = batch["image"].contiguous(memory_format=torch.channels_last)
        with nullcontext() if fp32 else accelerator.autocast():
            out = model(x)
        out = out["logits"] if isinstance(out, dict) else out
        g = accelerator.gather_for_metrics((out.float(), batch["label"], batch["index"]))
        logits.append(g[0].cpu())
        labels.append(g[1].cpu())
        index.append(g[2].cpu())
    z = torch.cat(logits) if logits else torch.zeros(0, 1)
    y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    idx = torch.cat(index) if index else torch.zeros(0, dtype=torch.long)
    order = torch.argsort(idx)
    z, y, idx = z[order], y[order], idx[order]
    loss = float(F.cross_entropy(z, y)) if len(y) else float("nan")
    acc = float((z.argmax(1) == y).float().mean()) if len(y) else float("nan")
    return {"loss": loss, "acc": acc, "logits": z.numpy(), "labels": y.numpy(), "index": idx.numpy()}


# --- one training run (a fold, or the final model) ------------------------------------------------------


def make_accelerator(args: argparse.Namespace):
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    if args.precision == "fp32":
        mixed = "no"
    elif args.precision == "bf16":
        mixed = "bf16"
    else:
        from tumorlib.inference import native_bf16

        mixed = "bf16" if native_bf16(torch.device("cuda" if cuda else "cpu")) else "no"
    return Accelerator(cpu=not cuda, mixed_precision=mixed)


def fit(
    train_records: list[Record],
    eval_records: list[Record],
    labels: list[str],
    args: argparse.Namespace,
    run_dir: Path,
    accelerator,
    tag: str,
) -> dict:
    """Train one model; checkpoint every epoch; return its evaluation on ``eval_records`` and the model."""
    torch.manual_seed(args.seed)
    kwargs = {"drop_rate": args.drop_rate} if args.drop_rate else {}
    if args.drop_path:
        kwargs["drop_path_rate"] = args.drop_path
    net = create_model(args.model, len(labels), args.pretrained, **kwargs, **architecture_args(args))
    # Keep the ImageNet mean/std of the weights we start from; our size, interpolation, preprocessing.
    data = data_config(args, net.pretrained_cfg.get("mean"), net.pretrained_cfg.get("std"))
    net.pretrained_cfg = {**net.pretrained_cfg, **data.to_pretrained_cfg()}
    teacher = Teacher(args.teacher, labels, data, accelerator.device) if args.teacher else None
    model = TrainModel(
        net, mask_head=args.mask_loss > 0, hint_channels=teacher.channels if teacher and args.hint_loss else None
    )
    model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, args)

    with_masks = args.mask_loss > 0
    train_ds = SliceDataset(
        train_records, labels, create_transform(data, augment_config(args)), seed=args.seed, with_masks=with_masks
    )
    eval_ds = SliceDataset(eval_records, labels, create_transform(data))
    weights = balanced_weights(train_ds.targets, len(labels)) if args.balance == "sampler" else None
    sampler = EpochSampler(len(train_ds), seed=args.seed, weights=weights)
    train_loader = DataLoader(
        train_ds,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        drop_last=len(train_ds) > args.batch_size,
    )
    eval_loader = DataLoader(eval_ds, batch_size=args.batch_size * 2, num_workers=args.workers)
    class_weights = None
    if args.balance == "loss":
        counts = np.bincount(train_ds.targets, minlength=len(labels)).astype(np.float32)
        class_weights = torch.tensor(counts.sum() / (len(labels) * np.maximum(counts, 1)))
    mixup = None
    if args.mixup or args.cutmix:
        from timm.data import Mixup

        mixup = Mixup(
            mixup_alpha=args.mixup,
            cutmix_alpha=args.cutmix,
            label_smoothing=args.label_smoothing,
            num_classes=len(labels),
        )

    ckpt = run_dir / CHECKPOINT
    start_epoch, step, history = 0, 0, []
    if args.resume and ckpt.exists():
        meta = load_checkpoint(ckpt, model, optimizer)
        start_epoch, step, history = meta["epoch"], meta["step"], meta["history"]
        accelerator.print(f"[{tag}] resumed after epoch {start_epoch}")
    progress = not args.no_progress and accelerator.is_main_process
    if accelerator.is_main_process and progress:
        print(f"[{tag}] caching {len(train_ds) + len(eval_ds)} images...", file=sys.stderr)
    train_ds.warm()
    eval_ds.warm()

    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if len(eval_ds):
        eval_loader = accelerator.prepare(eval_loader)
    steps_per_epoch = (
        len(train_loader) if not args.max_steps_per_epoch else min(len(train_loader), args.max_steps_per_epoch)
    )
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = round(args.warmup_epochs * steps_per_epoch)
    raw = accelerator.unwrap_model(model)
    for epoch in range(start_epoch, args.epochs):
        t0 = time.perf_counter()
        set_backbone_trainable(raw, epoch >= args.freeze_epochs)
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        np.random.seed((args.seed * 100_003 + epoch) % 2**32)  # timm's Mixup draws from numpy's global RNG
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        stats, step = train_one_epoch(
            model,
            train_loader,
            optimizer,
            accelerator,
            epoch,
            args,
            step=step,
            total_steps=total_steps,
            warmup_steps=warmup_steps,
            class_weights=class_weights,
            teacher=teacher,
            mixup=mixup,
            progress=progress,
        )
        row = {"epoch": epoch + 1, "fold": tag, **stats}
        if len(eval_ds):
            ev = evaluate(model, eval_loader, accelerator)
            row.update(val_loss=ev["loss"], val_acc=ev["acc"])
        else:
            row.update(val_loss=None, val_acc=None)
        row.update(lr=max(g["lr"] for g in optimizer.param_groups), seconds=time.perf_counter() - t0)
        history.append(row)
        if accelerator.is_main_process:
            save_checkpoint(ckpt, raw, optimizer, {"epoch": epoch + 1, "step": step, "history": history, "tag": tag})
            write_history(run_dir / "history.csv", history)
            val = f" val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.4f}" if row["val_acc"] is not None else ""
            print(
                f"[{tag}] epoch {epoch + 1}/{args.epochs} loss {row['train_loss']:.4f} "
                f"acc {row['train_acc']:.4f}{val} ({row['seconds']:.0f} s)",
                file=sys.stderr,
            )
        accelerator.wait_for_everyone()
    if args.recalibrate_bn:
        # raw.model is the plain timm module: accelerate's autocast wraps only the prepared TrainModel.
        recalibrate_bn(raw.model, train_records, labels, data, args.batch_size * 2, args.workers)
    result = {"history": history, "model": raw.model, "mask_head": raw.mask_head, "mask_stage": raw.mask_index}
    if len(eval_ds):
        # The recorded scores are the served model's, in float32. accelerate's bf16 wraps the prepared
        # model's forward in autocast (a context around the call cannot turn that off), so unwrap it.
        plain = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
        ev = evaluate(plain, eval_loader, accelerator, fp32=True)
        result.update(logits=ev["logits"], labels=ev["labels"], index=ev["index"])
    return result


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, records: list[Record], labels: list[str], data: DataConfig, batch_size: int, workers: int = 0
) -> int:
    """Replace every BatchNorm layer's running statistics by their average over one float32 pass of
    ``records`` through the serving transform (no augmentation); returns the number of layers.

    The statistics a run ends with are momentum averages of augmented batches under bf16 autocast; the
    served model sees unaugmented slices in float32. For the MobileNetV2 recipe that gap cost points.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers or not records:
        return 0
    was_training = model.training
    model.eval()
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the pass, not an exponential one
        m.train()
    device = next(model.parameters()).device
    ds = SliceDataset(records, labels, create_transform(data), cache=False)
    for batch in DataLoader(ds, batch_size=batch_size, num_workers=workers):
        model(batch["image"].to(device).float())
    for m, momentum in zip(layers, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return len(layers)


# --- files -------------------------------------------------------------------------------------------------

HISTORY_COLUMNS = ["epoch", "fold", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


def write_history(path: Path, rows: list[dict]) -> None:
    lines = [",".join(HISTORY_COLUMNS)]
    for r in rows:
        lines.append(",".join("" if r.get(c) is None else str(r[c]) for c in HISTORY_COLUMNS))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_history(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_predictions(
    path: Path, records: list[Record], labels: list[str], logits: np.ndarray, probs: np.ndarray, y: np.ndarray
) -> None:
    """One row per image: id, file, patient, true and predicted label, served probabilities, raw logits."""
    header = ["id", "path", "patient", "true_label", "pred_label"]
    header += [f"prob_{c}" for c in labels] + [f"logit_{c}" for c in labels]
    lines = [",".join(header)]
    for rec, z, p, t in zip(records, logits, probs, y, strict=True):
        cells = [rec.id, str(rec.path), rec.group, labels[int(t)], labels[int(np.argmax(p))]]
        cells += [f"{v:.6f}" for v in p] + [f"{v:.6f}" for v in z]
        lines.append(",".join(_csv_cell(c) for c in cells))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _csv_cell(value: str) -> str:
    return f'"{value}"' if any(ch in value for ch in ',"\n') else value


def read_predictions(path: Path, labels: list[str]) -> dict:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        "ids": [r["id"] for r in rows],
        "paths": [r["path"] for r in rows],
        "groups": [r["patient"] for r in rows],
        "y": np.array([labels.index(r["true_label"]) for r in rows]),
        "logits": np.array([[float(r[f"logit_{c}"]) for c in labels] for r in rows]),
    }


def fold_metrics(
    logits: np.ndarray, y: np.ndarray, groups: list[str], labels: list[str], probs: np.ndarray | None = None
) -> dict:
    uncal = softmax(logits)
    return M.compute_metrics(y, uncal if probs is None else probs, labels, groups, probs_uncalibrated=uncal)


def resolved_config(args: argparse.Namespace) -> dict:
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
    cfg["_environment"] = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "host_cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
    }
    return cfg


def export_bundle(
    model: nn.Module,
    out_dir: Path,
    labels: list[str],
    args: argparse.Namespace,
    records: list[Record],
    temperature: float,
    extra: dict,
    mask_head: nn.Module | None = None,
    mask_stage: int | None = None,
) -> None:
    """Save the bundle (with the mask head as its tumour localiser, if trained) and record whether bf16
    inference agrees with fp32 on a few of the run's images."""
    data = data_config(args, model.pretrained_cfg.get("mean"), model.pretrained_cfg.get("std"))
    model = model.float().to(memory_format=torch.contiguous_format).cpu().eval()
    save_bundle(
        model,
        out_dir,
        label_names=labels,
        data=data,
        temperature=temperature,
        extra=extra,
        model_args=architecture_args(args),
    )
    if mask_head is not None:
        localise.export(out_dir, mask_head, mask_stage, model)
    check_images = [r.path for r in records[:: max(1, len(records) // 16)][:16] if r.kind == "file"]
    if check_images:
        update_config(out_dir, inference=check_bf16(load_bundle(out_dir), check_images))


def write_model_card(run_dir: Path, metrics: dict | None, extra: dict) -> None:
    try:
        from tumorlib.modelcard import model_card
    except ImportError:  # the model card module ships with the Hub tooling
        return
    config = load_json(run_dir / "config.json")
    atomic_write_text(run_dir / "README.md", model_card(config, metrics, extra=extra))


def set_status(run_dir: Path, state: str, **info) -> None:
    save_json({"state": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}, run_dir / "status.json")


# --- main -----------------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
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


def run_cross_validation(records, labels, args, run_dir: Path, accelerator, recipe) -> str:
    folds = make_folds(records, args.folds, args.seed)
    todo = [args.fold] if args.fold is not None else list(range(args.folds))
    for k in todo:
        fold_dir = run_dir / f"fold{k}"
        if (fold_dir / "metrics.json").exists():
            accelerator.print(f"[fold {k}] already complete")
            test_r = [r for r, f in zip(records, folds, strict=True) if f == k]
            train_r = [r for r, f in zip(records, folds, strict=True) if f != k]
            if accelerator.is_main_process:
                rescore_fold(args, fold_dir, test_r, labels, accelerator, train_r)
            if accelerator.is_main_process and not args.no_cam:
                add_fold_checks(args, fold_dir, test_r, labels, train_r)
            continue
        fold_dir.mkdir(parents=True, exist_ok=True)
        train_r = [r for r, f in zip(records, folds, strict=True) if f != k]
        test_r = [r for r, f in zip(records, folds, strict=True) if f == k]
        out = fit(train_r, test_r, labels, args, fold_dir, accelerator, f"fold{k}")
        if accelerator.is_main_process:
            ordered = [test_r[i] for i in out["index"]]
            write_predictions(
                fold_dir / "predictions.csv", ordered, labels, out["logits"], softmax(out["logits"]), out["labels"]
            )
            m = fold_metrics(out["logits"], out["labels"], [r.group for r in ordered], labels)
            m.update(fold=k, precision="fp32", bn_recalibrated=bool(args.recalibrate_bn))
            if not args.no_cam:
                m.update(fold_checks(out["model"], out["mask_head"], out["mask_stage"], args, fold_dir, test_r, labels))
            save_json(m, fold_dir / "metrics.json")  # written last: its presence marks the fold complete
        accelerator.wait_for_everyone()
    done = [k for k in range(args.folds) if (run_dir / f"fold{k}" / "metrics.json").exists()]
    if len(done) < args.folds:
        return f"partial: folds {done} of {args.folds} complete"
    if not accelerator.is_main_process:
        return "complete"
    temperature, metrics = aggregate_folds(run_dir, labels, args.folds)
    extra = {"training": recipe, "split": f"{args.folds}-fold cross-validation grouped by patient (seed {args.seed})"}
    if args.final:
        out = fit(records, [], labels, args, run_dir / "final", accelerator, "final")
        export_bundle(
            out["model"], run_dir, labels, args, records, temperature, extra, out["mask_head"], out["mask_stage"]
        )
        fit_bundle_gate(run_dir, records, None)
        write_model_card(run_dir, metrics, extra)
    return "complete"


def _fold_model(args, fold_dir: Path, labels: list[str], train_records: list[Record] | None = None) -> TrainModel:
    """The fold's model (with its training heads) from its verified checkpoint, float32, eval mode, with
    its BatchNorm statistics recalibrated on ``train_records`` when the recipe asks for it (as fit does)."""
    net = create_model(args.model, len(labels), None, **architecture_args(args))
    model = TrainModel(net, mask_head=args.mask_loss > 0)
    own = load_model_state(fold_dir / CHECKPOINT)
    model.load_state_dict({k: v for k, v in own.items() if not k.startswith("hint.")}, strict=False)
    model = model.float().eval()
    if args.recalibrate_bn and train_records:
        data = data_config(args, net.pretrained_cfg.get("mean"), net.pretrained_cfg.get("std"))
        recalibrate_bn(model.model, train_records, labels, data, args.batch_size * 2, args.workers)
    return model


def rescore_fold(
    args, fold_dir: Path, test_records: list[Record], labels: list[str], accelerator, train_records=None
) -> None:
    """For a fold scored before its scores were float32 (bf16 autocast leaked into the final evaluation),
    or with other BatchNorm statistics than the recipe now asks for (``--recalibrate-bn``): score its
    held-out patients again from the fold checkpoint in float32, as served. A change of statistics also
    drops the fold's mask checks, so that they are redone on the model that is scored."""
    path = fold_dir / "metrics.json"
    metrics = load_json(path)
    recalibrate = bool(args.recalibrate_bn)
    same_bn = bool(metrics.get("bn_recalibrated")) == recalibrate
    if (metrics.get("precision") == "fp32" and same_bn) or not (fold_dir / CHECKPOINT).exists():
        return
    try:
        model = _fold_model(args, fold_dir, labels, train_records).model
    except CheckpointError as err:
        print(f"warning: {fold_dir.name} keeps its bf16 scores: {err}", file=sys.stderr)
        return
    data = data_config(args, model.pretrained_cfg.get("mean"), model.pretrained_cfg.get("std"))
    ds = SliceDataset(test_records, labels, create_transform(data), cache=False)
    ev = evaluate(
        model, DataLoader(ds, batch_size=args.batch_size * 2, num_workers=args.workers), accelerator, fp32=True
    )
    ordered = [test_records[i] for i in ev["index"]]
    write_predictions(fold_dir / "predictions.csv", ordered, labels, ev["logits"], softmax(ev["logits"]), ev["labels"])
    rescored = fold_metrics(ev["logits"], ev["labels"], [r.group for r in ordered], labels)
    kept = {key: metrics[key] for key in (("fold", "cam", "localiser") if same_bn else ("fold",)) if key in metrics}
    save_json({**rescored, **kept, "precision": "fp32", "bn_recalibrated": recalibrate}, path)
    print(
        f"[{fold_dir.name}] rescored in float32{' with recalibrated BatchNorm' if recalibrate else ''}: "
        f"accuracy {metrics['accuracy']:.4f} -> {rescored['accuracy']:.4f}",
        file=sys.stderr,
    )


def fold_checks(
    model: nn.Module,
    mask_head: nn.Module | None,
    mask_stage: int | None,
    args,
    fold_dir: Path,
    test_records: list[Record],
    labels: list[str],
    want: tuple[str, ...] = ("cam", "localiser"),
) -> dict:
    """The fold's model on its held-out patients against their tumour masks: Grad-CAM (``cam``) and, when
    the recipe trains a mask head, the tumour localiser (``localiser``); only the keys in ``want``."""
    from tumorlib.inference import Classifier

    from .evaluate import cam_report, localiser_report, tumour_free

    masked = [i for i, r in enumerate(test_records) if r.mask_path is not None or r.kind == "mat"]
    if not masked:
        return {}
    data = data_config(args, model.pretrained_cfg.get("mean"), model.pretrained_cfg.get("std"))
    model = model.float().to(memory_format=torch.contiguous_format).cpu().eval()
    bundle_dir = fold_dir / "bundle"
    save_bundle(
        model, bundle_dir, label_names=labels, data=data, dtype=torch.float32, model_args=architecture_args(args)
    )
    if mask_head is not None:
        localise.export(bundle_dir, mask_head, mask_stage, model)
    clf = Classifier(load_bundle(bundle_dir), device="cpu", variant="fp32")
    checks = {}
    if "cam" in want:
        preds = np.zeros(len(test_records), dtype=int)  # only used to caption exported overlays, none here
        checks["cam"] = cam_report(clf, test_records, masked, preds, "gradcam", None, 0, False)
    if "localiser" in want and mask_head is not None:
        checks["localiser"] = localiser_report(clf, test_records, masked, tumour_free(test_records))
    return checks


def add_fold_checks(
    args, fold_dir: Path, test_records: list[Record], labels: list[str], train_records: list[Record] | None = None
) -> None:
    """For a fold finished before the trainer made a check (Grad-CAM, the localiser): that check, from the
    fold checkpoint."""
    path = fold_dir / "metrics.json"
    metrics = load_json(path)
    want = tuple(k for k in ("cam", "localiser") if k not in metrics and (k == "cam" or args.mask_loss > 0))
    if not want or not (fold_dir / CHECKPOINT).exists():
        return
    try:
        model = _fold_model(args, fold_dir, labels, train_records)
    except CheckpointError as err:
        # The fold's predictions and metrics stand; only its checks against the masks are missing.
        print(f"warning: no mask checks for {fold_dir.name}: {err}", file=sys.stderr)
        return
    checks = fold_checks(model.model, model.mask_head, model.mask_index, args, fold_dir, test_records, labels, want)
    if checks:
        metrics.update(checks)
        save_json(metrics, path)


def aggregate_folds(run_dir: Path, labels: list[str], k: int) -> tuple[float, dict]:
    """Pool out-of-fold predictions: pooled metrics, per-fold metrics, mean ± std, and the temperature."""
    preds = [read_predictions(run_dir / f"fold{f}" / "predictions.csv", labels) for f in range(k)]
    logits = np.concatenate([p["logits"] for p in preds])
    y = np.concatenate([p["y"] for p in preds])
    groups = [g for p in preds for g in p["groups"]]
    ids = [i for p in preds for i in p["ids"]]
    paths = [i for p in preds for i in p["paths"]]
    fold_of = np.concatenate([np.full(len(p["y"]), f) for f, p in enumerate(preds)])
    probs, fold_temps = crossfit_probabilities(logits, y, fold_of)
    temperature = fit_temperature(logits, y)
    pooled = fold_metrics(logits, y, groups, labels, probs)
    folds = [load_json(run_dir / f"fold{f}" / "metrics.json") for f in range(k)]
    pooled["folds"] = folds
    pooled["cv_summary"] = M.summarize_folds(folds)
    if all(f.get("precision") == "fp32" for f in folds):
        pooled["precision"] = "fp32"
    cams = [f["cam"] for f in folds if f.get("cam") and f["cam"].get("n")]
    if cams:
        n = sum(c["n"] for c in cams)
        pooled["cam"] = {
            "pointing_game": sum(c["pointing_game"] * c["n"] for c in cams) / n,
            "energy_in_mask": sum(c["energy_in_mask"] * c["n"] for c in cams) / n,
            "n": n,
            "method": cams[0]["method"],
            "target": "true class, each fold's model on its held-out patients",
        }
        base = [c["baseline"] for c in cams if isinstance(c.get("baseline"), dict)]
        if len(base) == len(cams):
            pooled["cam"]["baseline"] = {
                key: sum(b[key] * c["n"] for b, c in zip(base, cams, strict=True)) / n
                for key in ("pointing_game", "energy_in_mask")
            } | {"how": base[0].get("how", "")}
        ceil = [
            c["ceiling"]
            for c in cams
            if isinstance(c.get("ceiling"), dict) and c["ceiling"].get("pointing_game") is not None
        ]
        if len(ceil) == len(cams):
            pooled["cam"]["ceiling"] = {
                "pointing_game": sum(e["pointing_game"] * c["n"] for e, c in zip(ceil, cams, strict=True)) / n,
                "grid": ceil[0].get("grid"),
            }
    locs = [f["localiser"] for f in folds if f.get("localiser") and f["localiser"].get("n")]
    if locs:
        pooled["localiser"] = pool_localiser(locs)
    pooled["temperature"] = temperature
    pooled["calibration"] = {
        "method": "temperature scaling, cross-fitted across folds",
        "fold_temperatures": fold_temps,
    }
    save_json(pooled, run_dir / "metrics.json")
    recs = [
        Record(id=i, label=labels[t], group=g, path=Path(p)) for i, p, t, g in zip(ids, paths, y, groups, strict=True)
    ]
    write_predictions(run_dir / "predictions.csv", recs, labels, logits, probs, y)
    rows = [r for f in range(k) for r in read_history(run_dir / f"fold{f}" / "history.csv")]
    write_history(run_dir / "history.csv", rows)
    return temperature, pooled


def pool_localiser(folds: list[dict]) -> dict:
    """The folds' localiser checks pooled over slices (each fold's model on its own held-out patients)."""
    n = sum(f["n"] for f in folds)
    keys = ("pointing_game", "energy_in_mask", "soft_dice", "peak")
    pooled = {key: sum(f[key] * f["n"] for f in folds) / n for key in keys}
    pooled.update(n=n, target="each fold's model on its held-out patients")
    pooled["baseline"] = {
        "pointing_game": sum(f["baseline"]["pointing_game"] * f["n"] for f in folds) / n,
        "how": folds[0]["baseline"]["how"],
    }
    neg = [f["no_tumor"] for f in folds if f["no_tumor"]["n"]]
    n_neg = sum(f["n"] for f in neg)
    pooled["no_tumor"] = {"peak": sum(f["peak"] * f["n"] for f in neg) / n_neg if n_neg else None, "n": n_neg}
    return pooled


def cli(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return main(args)
    except TumorlibError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
