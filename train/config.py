"""What the trainer's flags mean to the library: the model's input, its architecture switches, augmentation."""

from __future__ import annotations

import argparse

from tumorlib.preprocess import PreprocessConfig
from tumorlib.transforms import AugmentConfig, DataConfig


def architecture_args(args: argparse.Namespace) -> dict:
    """timm arguments that change the network's shape of computation: saved with the bundle's weights."""
    stride = getattr(args, "output_stride", 32)
    return {"output_stride": stride} if stride != 32 else {}


def finetunes(args: argparse.Namespace) -> bool:
    """Whether the run ends with epochs at another input size (``--finetune-size`` / ``--finetune-epochs``)."""
    return bool(getattr(args, "finetune_epochs", 0)) and bool(getattr(args, "finetune_size", None))


def total_epochs(args: argparse.Namespace) -> int:
    """The main schedule's epochs plus the fine-tuning ones."""
    return int(args.epochs) + (int(args.finetune_epochs) if finetunes(args) else 0)


def served_size(args: argparse.Namespace) -> int:
    """The input side the finished model is scored and shipped at: the fine-tuning size, if the run has one."""
    return int(args.finetune_size) if finetunes(args) else int(args.input_size)


def data_config(args: argparse.Namespace, mean=None, std=None, size: int | None = None) -> DataConfig:
    """The model's input as the flags describe it, at ``size`` pixels (default: :func:`served_size`)."""
    pre = PreprocessConfig(
        crop_brain=args.crop_brain,
        sharpen=args.sharpen,
        equalize=args.equalize,
        binarize=str(args.binarize),
        binarize_mode=args.binarize_mode,
        morphology=args.morphology,
    )
    side = served_size(args) if size is None else int(size)
    extra = {} if mean is None else {"mean": tuple(mean), "std": tuple(std)}
    return DataConfig(input_size=(3, side, side), interpolation=args.interpolation, preprocess=pre, **extra)


def augment_config(args: argparse.Namespace) -> AugmentConfig | None:
    """The training augmentation the flags ask for (None with ``--no-augment``)."""
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
