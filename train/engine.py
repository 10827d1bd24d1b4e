"""One epoch of training, one evaluation, and one whole training run (:func:`fit`) of a fold or a final model.

Nothing here writes but the run's checkpoint and history: the callers in :mod:`train.cv` and
:mod:`train.train` turn the returned logits and model into predictions, metrics and bundles.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from tumorlib.bundle import create_model
from tumorlib.data import Record
from tumorlib.results.names import HISTORY_CSV
from tumorlib.torchdata import EpochSampler, SliceDataset, balanced_weights
from tumorlib.transforms import DataConfig, create_transform

from .checkpoint import load_checkpoint, save_checkpoint
from .config import architecture_args, augment_config, data_config, finetunes, total_epochs
from .model import Teachers, TrainModel, build_optimizer, lr_factor, make_ema, set_backbone_trainable, teacher_sources
from .runfiles import CHECKPOINT, MAIN_CHECKPOINT, write_history


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
    teacher: Teachers | None = None,
    mixup=None,
    progress: bool = True,
    ema=None,
    fixed_lr: float | None = None,
) -> tuple[dict, int]:
    """Train for one epoch; returns the epoch's mean loss and accuracy, and the global step reached.

    ``fixed_lr``: this learning rate at every step (the fine-tuning epochs) instead of the schedule's.
    ``ema``: a ``ModelEmaV3`` of the unwrapped model, updated after every optimiser step."""
    model.train()
    raw = accelerator.unwrap_model(model) if ema is not None else None
    loss_sum = correct = seen = 0.0
    start = time.perf_counter()
    desc = f"epoch {epoch + 1}/{total_epochs(args)}"
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True)
    for i, batch in enumerate(bar):
        if args.max_steps_per_epoch and i >= args.max_steps_per_epoch:
            break
        factor = lr_factor(step, total_steps, warmup_steps, args.sched, args.min_lr_ratio)
        for g in optimizer.param_groups:
            g["lr"] = args.lr * g["lr_scale"] * factor if fixed_lr is None else fixed_lr * g["lr_scale"]
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
                temp = args.distill_temperature
                t_probs, t_features = teacher(x, temp)
                kd = F.kl_div(F.log_softmax(logits / temp, 1), t_probs, reduction="batchmean")
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
        if ema is not None:
            ema.update(raw, step=step)
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


def make_accelerator(args: argparse.Namespace):
    """The run's Accelerator; a process may train more than once (train.stages, a notebook, the tests)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, is_initialized

    # accelerate keeps one state per process and refuses a second Accelerator with another precision,
    # which "auto" can pick differently per machine; each run starts from its own. The process group
    # (PartialState) is kept: it belongs to the launch, not to the run.
    if is_initialized():
        AcceleratorState._reset_state()
    cuda = torch.cuda.is_available()
    if args.precision == "fp32":
        mixed = "no"
    elif args.precision == "bf16":
        mixed = "bf16"
    else:
        from tumorlib.inference import native_bf16

        mixed = "bf16" if native_bf16(torch.device("cuda" if cuda else "cpu")) else "no"
    return Accelerator(cpu=not cuda, mixed_precision=mixed)


def time_left(history: list[dict], epochs: int) -> str:
    """``", ~1 h 05 min left"`` for the log line: the epochs still to run at the median epoch so far.

    On a CPU a fold takes hours; the median ignores the slow first epoch (warm-up, caches) and a
    paused one. A fine-tune phase at a larger size runs slower than this predicts until it has epochs.
    """
    left = epochs - len(history)
    if left <= 0 or not history:
        return ""
    minutes = round(left * float(np.median([r["seconds"] for r in history])) / 60)
    hours, minutes = divmod(minutes, 60)
    return f", ~{hours} h {minutes:02d} min left" if hours else f", ~{minutes} min left"


@dataclass
class _Phase:
    """One stretch of training at one input size: its datasets, sampler and prepared loaders."""

    train_ds: SliceDataset
    eval_ds: SliceDataset
    sampler: EpochSampler
    train_loader: DataLoader
    eval_loader: DataLoader


def _phase(train_records, eval_records, labels, args, data: DataConfig, accelerator, note: str) -> _Phase:
    """Datasets at ``data``'s input size, decoded into the cache now, and their loaders prepared."""
    augment = create_transform(data, augment_config(args))
    train_ds = SliceDataset(train_records, labels, augment, seed=args.seed, with_masks=args.mask_loss > 0)
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
    if note:
        print(note.format(n=len(train_ds) + len(eval_ds)), file=sys.stderr)
    train_ds.warm()
    eval_ds.warm()
    train_loader = accelerator.prepare(train_loader)
    if len(eval_ds):
        eval_loader = accelerator.prepare(eval_loader)
    return _Phase(train_ds, eval_ds, sampler, train_loader, eval_loader)


def fit(
    train_records: list[Record],
    eval_records: list[Record],
    labels: list[str],
    args: argparse.Namespace,
    run_dir: Path,
    accelerator,
    tag: str,
) -> dict:
    """Train one model; checkpoint every epoch; return its evaluation on ``eval_records`` and the model.

    After the main schedule at ``--input-size``, ``--finetune-epochs`` more at ``--finetune-size`` and a
    constant low learning rate (FixRes): the model is scored, and returned for export, at that size.
    With ``--model-ema`` the weight average is what is evaluated, checkpointed beside the model and returned.
    """
    torch.manual_seed(args.seed)
    kwargs = {"drop_rate": args.drop_rate} if args.drop_rate else {}
    if args.drop_path:
        kwargs["drop_path_rate"] = args.drop_path
    net = create_model(args.model, len(labels), args.pretrained, **kwargs, **architecture_args(args))
    # Keep the ImageNet mean/std of the weights we start from; our size, interpolation, preprocessing.
    mean, std = net.pretrained_cfg.get("mean"), net.pretrained_cfg.get("std")
    data = data_config(args, mean, std, size=args.input_size)  # the main schedule's input
    served = data_config(args, mean, std)  # the input the model ends at, is scored at and ships with
    net.pretrained_cfg = {**net.pretrained_cfg, **served.to_pretrained_cfg()}
    sources = teacher_sources(args.teacher)
    teacher = Teachers(sources, labels, data, accelerator.device) if sources else None
    model = TrainModel(
        net, mask_head=args.mask_loss > 0, hint_channels=teacher.channels if teacher and args.hint_loss else None
    )
    model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, args)
    ema = make_ema(model, args.model_ema)

    class_weights = None
    if args.balance == "loss":
        counts = np.bincount([labels.index(r.label) for r in train_records], minlength=len(labels))
        counts = counts.astype(np.float32)
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
        meta = load_checkpoint(ckpt, model, optimizer, ema=None if ema is None else ema.module)
        start_epoch, step, history = meta["epoch"], meta["step"], meta["history"]
        accelerator.print(f"[{tag}] resumed after epoch {start_epoch}")
    progress = not args.no_progress and accelerator.is_main_process
    epochs = total_epochs(args)
    in_main = start_epoch < args.epochs or not finetunes(args)  # a resumed run may be past the main schedule
    note = f"[{tag}] caching {{n}} images..." if progress else ""
    phase = _phase(train_records, eval_records, labels, args, data if in_main else served, accelerator, note)

    model, optimizer = accelerator.prepare(model, optimizer)
    if ema is not None:
        ema.to(accelerator.device)
    n_batches = len(phase.train_loader)
    steps_per_epoch = n_batches if not args.max_steps_per_epoch else min(n_batches, args.max_steps_per_epoch)
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = round(args.warmup_epochs * steps_per_epoch)
    fine_lr = args.lr * args.min_lr_ratio if args.finetune_lr is None else args.finetune_lr
    raw = accelerator.unwrap_model(model)
    for epoch in range(start_epoch, epochs):
        fine = epoch >= args.epochs
        if fine and in_main:
            in_main = False
            side = served.input_size[-1]
            note = f"[{tag}] fine-tuning at {side} px: caching {{n}} images..." if progress else ""
            phase = _phase(train_records, eval_records, labels, args, served, accelerator, note)
        t0 = time.perf_counter()
        set_backbone_trainable(raw, epoch >= args.freeze_epochs)
        phase.sampler.set_epoch(epoch)
        phase.train_ds.set_epoch(epoch)
        np.random.seed((args.seed * 100_003 + epoch) % 2**32)  # timm's Mixup draws from numpy's global RNG
        if hasattr(phase.train_loader, "set_epoch"):
            phase.train_loader.set_epoch(epoch)
        stats, step = train_one_epoch(
            model,
            phase.train_loader,
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
            ema=ema,
            fixed_lr=fine_lr if fine else None,
        )
        row = {"epoch": epoch + 1, "fold": tag, **stats}
        if len(phase.eval_ds):
            ev = evaluate(model if ema is None else ema.module, phase.eval_loader, accelerator)
            row.update(val_loss=ev["loss"], val_acc=ev["acc"])
        else:
            row.update(val_loss=None, val_acc=None)
        row.update(lr=max(g["lr"] for g in optimizer.param_groups), seconds=time.perf_counter() - t0)
        history.append(row)
        if accelerator.is_main_process:
            meta = {"epoch": epoch + 1, "step": step, "history": history, "tag": tag}
            save_checkpoint(ckpt, raw, optimizer, meta, ema=None if ema is None else ema.module)
            if epoch + 1 == args.epochs and finetunes(args):
                shutil.copyfile(ckpt, run_dir / MAIN_CHECKPOINT)
            write_history(run_dir / HISTORY_CSV, history)
            val = f" val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.4f}" if row["val_acc"] is not None else ""
            print(
                f"[{tag}] epoch {epoch + 1}/{epochs} loss {row['train_loss']:.4f} "
                f"acc {row['train_acc']:.4f}{val} ({row['seconds']:.0f} s{time_left(history, epochs)})",
                file=sys.stderr,
            )
        accelerator.wait_for_everyone()
    final = raw if ema is None else ema.module
    if args.recalibrate_bn:
        # final.model is the plain timm module: accelerate's autocast wraps only the prepared TrainModel.
        recalibrate_bn(final.model, train_records, labels, served, args.batch_size * 2, args.workers)
    result = {"history": history, "model": final.model, "mask_head": final.mask_head, "mask_stage": final.mask_index}
    if len(phase.eval_ds):
        # The recorded scores are the served model's, in float32. accelerate's bf16 wraps the prepared
        # model's forward in autocast (a context around the call cannot turn that off), so unwrap it;
        # the weight average was copied before that wrapping, so its forward is plain.
        plain = accelerator.unwrap_model(model, keep_fp32_wrapper=False) if ema is None else ema.module
        ev = evaluate(plain, phase.eval_loader, accelerator, fp32=True)
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
