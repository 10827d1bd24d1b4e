"""The network being trained: the timm classifier with its training-only heads, the teacher it may learn
from, its optimiser (parameter groups, learning-rate schedule, frozen backbone) and its weight average."""

from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.nn.functional as F
from torch import nn

from tumorlib.bundle import load_bundle
from tumorlib.errors import TumorlibError
from tumorlib.transforms import DataConfig


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


def teacher_sources(value: str | list[str] | None) -> list[str]:
    """``--teacher`` as a list. One teacher is recorded as a plain string (as recipes and model cards name
    it), several as a list."""
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


class Teachers:
    """The teacher, or an ensemble of them, as the student sees it: the mean of their softened probabilities
    (Beyer et al. 2022 distil from an ensemble this way), plus the last-stage features of a single teacher
    for the hint loss (an ensemble's features differ in shape and have no one mean)."""

    def __init__(self, sources: list[str], labels: list[str], student: DataConfig, device: torch.device) -> None:
        self.members = [Teacher(s, labels, student, device) for s in sources]
        self.channels = self.members[0].channels if len(self.members) == 1 else None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        outs = [member(x) for member in self.members]
        probs = torch.stack([F.softmax(logits / temperature, 1) for logits, _ in outs]).mean(0)
        return probs, (outs[0][1] if len(outs) == 1 else None)


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


def make_ema(model: TrainModel, decay: float):
    """timm's ``ModelEmaV3``: a moving average of ``model``'s weights and buffers (None at decay 0: off).

    Made from the plain module, before ``accelerator.prepare`` wraps its forward in autocast: the copy's
    forward is never wrapped, so it can be scored in float32 as the served model is."""
    if not decay:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay)
