"""One transform from a decoded image to the model's input tensor, built from the model's own config.

:func:`resolve_data_config` reads the input size, mean, std and interpolation from timm's
``pretrained_cfg`` and our preprocessing switches from the ``tumorlib`` section of ``config.json``;
:func:`create_transform` turns that into a transform and caches it, so the trainer's validation,
``train.evaluate``, both apps and the benchmarks all hold the very same object for a model.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field, fields

import cv2
import numpy as np
import torch

from .preprocess import PreprocessConfig, apply_filters, brain_bbox, to_grayscale

# timm's defaults (timm.data.constants), written out: serving must not import timm (and with it torchvision
# and torch._dynamo, ~160 MB resident) just to read four keys of a config.
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)

_CV_INTERP = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}


@dataclass(frozen=True)
class DataConfig:
    """What the model expects: timm's data config plus our preprocessing."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_DEFAULT_MEAN
    std: tuple[float, ...] = IMAGENET_DEFAULT_STD
    interpolation: str = "bicubic"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def to_pretrained_cfg(self) -> dict:
        """The keys timm keeps in ``pretrained_cfg`` (crop_pct 1: MRI slices are not centre-cropped)."""
        return {
            "input_size": list(self.input_size),
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "crop_pct": 1.0,
            "crop_mode": "center",
        }


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation: the paper's rotation and flips, plus scale, shift and intensity jitter."""

    hflip: float = 0.5
    vflip: float = 0.0
    rotate: float = 15.0  # degrees, uniform in [-rotate, rotate]
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.06  # fraction of the side
    contrast: float = 0.15  # intensity multiplied by 1 +- this
    gamma: tuple[float, float] = (0.8, 1.25)
    noise: float = 0.0  # std of added Gaussian noise

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> AugmentConfig:
        known = {f.name for f in fields(cls)}
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in (d or {}).items() if k in known}
        return cls(**d)


def resolve_data_config(config: dict | None = None, model: torch.nn.Module | None = None) -> DataConfig:
    """The DataConfig of a bundle's ``config.json`` dict, or of a timm model's ``pretrained_cfg``.

    Reads the keys as ``timm.data.resolve_data_config`` does (same defaults; tests/test_transforms.py
    compares the two), without importing timm.
    """
    config = config or {}
    cfg = dict(config.get("pretrained_cfg") or getattr(model, "pretrained_cfg", None) or {})
    pre = PreprocessConfig.from_dict((config.get("tumorlib") or {}).get("preprocess"))
    return DataConfig(
        input_size=tuple(int(v) for v in cfg.get("input_size") or (3, 224, 224)),
        mean=tuple(float(v) for v in cfg.get("mean") or IMAGENET_DEFAULT_MEAN),
        std=tuple(float(v) for v in cfg.get("std") or IMAGENET_DEFAULT_STD),
        interpolation=str(cfg.get("interpolation") or "bicubic"),
        preprocess=pre,
    )


class MRITransform:
    """Decoded image (float32 [0, 1], (H, W) or (H, W, 3)) -> normalised tensor (C, H, W).

    Split in two so training can cache the expensive, deterministic part: :meth:`prepare`
    (greyscale, brain crop, pad to square) and :meth:`finish` (resize or random affine, the paper's
    filters, intensity jitter, normalisation). Masks, where given, follow every geometric step.
    """

    def __init__(self, data: DataConfig, augment: AugmentConfig | None = None) -> None:
        self.data = data
        self.augment = augment
        self.channels, self.height, self.width = data.input_size
        self._mean = np.asarray(data.mean, dtype=np.float32)[:, None, None]
        self._std = np.asarray(data.std, dtype=np.float32)[:, None, None]

    def __repr__(self) -> str:
        return f"MRITransform({self.data!r}, augment={self.augment!r})"

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None, rng: np.random.Generator | None = None):
        image, mask = self.prepare(image, mask)
        return self.finish(image, mask, rng)

    def prepare(self, image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Greyscale, crop to the head if configured, and pad to a square with black (no distortion)."""
        pre = self.data.preprocess
        if pre.grayscale:
            image = to_grayscale(image)
        if pre.crop_brain:
            top, bottom, left, right = brain_bbox(image, pre.crop_margin)
            image = image[top:bottom, left:right]
            mask = None if mask is None else mask[top:bottom, left:right]
        return _pad_square(image), None if mask is None else _pad_square(mask)

    def to_image_frame(self, values: np.ndarray, image: np.ndarray) -> np.ndarray:
        """Map a 2-D map over the model's input (e.g. a Grad-CAM heatmap) back onto the decoded ``image``:
        undo the resize, the square padding and the brain crop. Outside the crop it is 0."""
        h, w = image.shape[:2]
        top, bottom, left, right = (
            brain_bbox(image, self.data.preprocess.crop_margin) if self.data.preprocess.crop_brain else (0, h, 0, w)
        )
        ch, cw = bottom - top, right - left
        side = max(ch, cw)
        square = cv2.resize(values.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
        pad_top, pad_left = (side - ch) // 2, (side - cw) // 2
        out = np.zeros((h, w), dtype=np.float32)
        out[top:bottom, left:right] = square[pad_top : pad_top + ch, pad_left : pad_left + cw]
        return out

    def finish(
        self, image: np.ndarray, mask: np.ndarray | None = None, rng: np.random.Generator | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Geometry, filters, jitter and normalisation; returns the tensor, and the mask tensor if a mask was given."""
        image, mask = self.finish_array(image, mask, rng)
        tensor = self.to_tensor(image)
        if mask is None:
            return tensor
        return tensor, torch.from_numpy(np.ascontiguousarray(mask))

    def finish_array(
        self, image: np.ndarray, mask: np.ndarray | None = None, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Everything but normalisation, at the model's input size: what evaluation can cache exactly."""
        size = (self.width, self.height)
        if self.augment is not None:
            rng = rng if rng is not None else np.random.default_rng()
            matrix = self._random_affine(image.shape[:2], rng)
            image = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)
            if mask is not None:
                mask = cv2.warpAffine(mask.astype(np.uint8), matrix, size, flags=cv2.INTER_NEAREST) > 0
        else:
            image = self._resize(image)
            if mask is not None:
                mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        image = apply_filters(np.clip(image, 0, 1), self.data.preprocess)
        if self.augment is not None:
            image = self._jitter(image, rng)
        return image, mask

    def _resize(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if (h, w) == (self.height, self.width):
            return image
        # INTER_AREA when shrinking: it averages, where cubic/linear would alias a 512-pixel slice.
        shrink = h > self.height or w > self.width
        interp = cv2.INTER_AREA if shrink else _CV_INTERP.get(self.data.interpolation, cv2.INTER_CUBIC)
        return cv2.resize(image, (self.width, self.height), interpolation=interp)

    def _random_affine(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        aug = self.augment
        h, w = shape
        angle = math.radians(rng.uniform(-aug.rotate, aug.rotate))
        scale = rng.uniform(*aug.scale)
        sx = scale * self.width / w * (-1 if rng.random() < aug.hflip else 1)
        sy = scale * self.height / h * (-1 if rng.random() < aug.vflip else 1)
        tx, ty = rng.uniform(-aug.translate, aug.translate, size=2) * (self.width, self.height)
        cos, sin = math.cos(angle), math.sin(angle)
        to_origin = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]])
        rot_scale = np.array([[cos * sx, -sin * sy, 0], [sin * sx, cos * sy, 0], [0, 0, 1]])
        to_out = np.array([[1, 0, self.width / 2 + tx], [0, 1, self.height / 2 + ty], [0, 0, 1]])
        return (to_out @ rot_scale @ to_origin)[:2].astype(np.float64)

    def _jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        aug = self.augment
        gamma = math.exp(rng.uniform(math.log(aug.gamma[0]), math.log(aug.gamma[1])))
        image = np.power(np.clip(image, 0, 1), gamma) * rng.uniform(1 - aug.contrast, 1 + aug.contrast)
        if aug.noise > 0:
            image = image + rng.normal(0, aug.noise, image.shape).astype(np.float32)
        return np.clip(image, 0, 1).astype(np.float32)

    def to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """Channels first, greyscale repeated into the model's channels, normalised with its mean and std."""
        if image.ndim == 3 and self.channels != 3:
            image = to_grayscale(image)
        chw = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
        if chw.shape[0] == 1 and self.channels > 1:
            chw = np.repeat(chw, self.channels, axis=0)  # greyscale into an RGB-shaped (ImageNet) stem
        return torch.from_numpy(np.ascontiguousarray((chw - self._mean) / self._std, dtype=np.float32))


def _pad_square(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    if h == w:
        return image
    side = max(h, w)
    out = np.zeros((side, side, *image.shape[2:]), dtype=image.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = image
    return out


@functools.lru_cache(maxsize=32)
def create_transform(data: DataConfig, augment: AugmentConfig | None = None) -> MRITransform:
    """The transform for ``data`` (with ``augment`` for training); the same object for equal configs."""
    return MRITransform(data, augment)
