"""The paper's preprocessing steps, each optional, on float32 images in [0, 1].

Sahaai et al. (2022) convert to greyscale, resize, sharpen with a high-pass filter, equalise the
histogram, binarise and apply morphology. Each step is a switch in :class:`PreprocessConfig`, which
travels in the model's ``config.json`` so that training, evaluation and serving apply the same ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

from .errors import TumorlibError

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class PreprocessConfig:
    """Which of the paper's steps run, in order: greyscale, brain crop, (resize), sharpen, equalise,
    binarise, morphology. The defaults are what our models use: greyscale only."""

    grayscale: bool = True
    crop_brain: bool = False
    crop_margin: float = 0.04  # of the box size, kept around the head
    sharpen: float = 0.0  # weight of the high-pass (image - blur) added back; 0 = off
    sharpen_sigma: float = 1.0  # in pixels of the model input
    equalize: str = "none"  # "none", "global" or "clahe"
    clahe_clip: float = 2.0
    clahe_grid: int = 8
    binarize: str = "none"  # "none", "otsu" or a threshold in [0, 1] such as "0.2"
    binarize_mode: str = "mask"  # "mask": keep intensities where the binary image is on; "replace": the binary image
    morphology: str = "none"  # "none", "dilate", "erode", "open" or "close" (on the binary image)
    morph_size: int = 3

    def __post_init__(self) -> None:
        if self.equalize not in ("none", "global", "clahe"):
            raise TumorlibError(f"equalize must be none, global or clahe, not {self.equalize!r}")
        if self.binarize not in ("none", "otsu"):
            try:
                value = float(self.binarize)
            except ValueError:
                raise TumorlibError(f"binarize must be none, otsu or a number, not {self.binarize!r}") from None
            if not 0 <= value <= 1:
                raise TumorlibError("a binarize threshold must lie in [0, 1]")
        if self.binarize_mode not in ("mask", "replace"):
            raise TumorlibError("binarize_mode must be mask or replace")
        if self.morphology not in ("none", "dilate", "erode", "open", "close"):
            raise TumorlibError(f"morphology must be none, dilate, erode, open or close, not {self.morphology!r}")
        if self.morphology != "none" and self.binarize == "none":
            raise TumorlibError("morphology works on the binary image: set binarize too")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> PreprocessConfig:
        """Build from a config.json section, ignoring keys a newer version may have added."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in known})

    @property
    def has_filters(self) -> bool:
        return self.sharpen > 0 or self.equalize != "none" or self.binarize != "none"


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """Luminance (ITU-R 601) of an RGB image; greyscale passes through."""
    return image if image.ndim == 2 else image @ _LUMA


def brain_bbox(image: np.ndarray, margin: float = 0.04) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the head: the largest bright blob after a light opening."""
    grey = to_grayscale(image)
    u8 = np.round(grey * 255).astype(np.uint8)
    thresh, fg = cv2.threshold(u8, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Otsu on a dark-background slice lands between background and tissue; halve it so faint
    # scalp and CSF stay inside the box.
    fg = (u8 > max(thresh * 0.5, 8)).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    h, w = grey.shape
    if n <= 1:
        return 0, h, 0, w
    big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh = (int(v) for v in stats[big, :4])
    if bw * bh < 0.05 * h * w:  # nothing head-sized: keep the whole image
        return 0, h, 0, w
    pad_y, pad_x = int(bh * margin), int(bw * margin)
    return max(0, y - pad_y), min(h, y + bh + pad_y), max(0, x - pad_x), min(w, x + bw + pad_x)


def sharpen(image: np.ndarray, amount: float, sigma: float = 1.0) -> np.ndarray:
    """Add ``amount`` times the high-pass part (image minus its Gaussian blur)."""
    blur = cv2.GaussianBlur(image, (0, 0), sigma)
    return np.clip(image + amount * (image - blur), 0.0, 1.0)


def equalize(image: np.ndarray, method: str, clip: float = 2.0, grid: int = 8) -> np.ndarray:
    """Global histogram equalisation or CLAHE, at 16-bit precision so no grey levels are merged."""
    u16 = np.round(np.clip(image, 0, 1) * 65535).astype(np.uint16)
    if method == "clahe":
        out = cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid, grid)).apply(u16)
        return out.astype(np.float32) / 65535.0
    hist = np.bincount(u16.ravel(), minlength=65536)
    cdf = np.cumsum(hist).astype(np.float64)
    nonzero = cdf[cdf > 0]
    cdf_min = nonzero[0] if len(nonzero) else 0.0
    lut = (cdf - cdf_min) / max(cdf[-1] - cdf_min, 1.0)
    return np.clip(lut[u16], 0, 1).astype(np.float32)


def binarize(image: np.ndarray, method: str) -> np.ndarray:
    """A boolean foreground by Otsu's threshold or a fixed one."""
    if method == "otsu":
        u8 = np.round(image * 255).astype(np.uint8)
        thresh, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        return u8 > thresh
    return image > float(method)


def morphology(binary: np.ndarray, op: str, size: int = 3) -> np.ndarray:
    """Dilate, erode, open or close a boolean image with a square kernel."""
    kernel = np.ones((size, size), np.uint8)
    cv_op = {"dilate": cv2.MORPH_DILATE, "erode": cv2.MORPH_ERODE, "open": cv2.MORPH_OPEN, "close": cv2.MORPH_CLOSE}
    return cv2.morphologyEx(binary.astype(np.uint8), cv_op[op], kernel).astype(bool)


def apply_filters(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """The steps after resizing: sharpen, equalise, binarise, morphology (each only if switched on)."""
    out = image
    if cfg.sharpen > 0:
        out = sharpen(out, cfg.sharpen, cfg.sharpen_sigma)
    if cfg.equalize != "none":
        out = equalize(out, cfg.equalize, cfg.clahe_clip, cfg.clahe_grid)
    if cfg.binarize != "none":
        grey = to_grayscale(out)
        fg = binarize(grey, cfg.binarize)
        if cfg.morphology != "none":
            fg = morphology(fg, cfg.morphology, cfg.morph_size)
        if cfg.binarize_mode == "replace":
            out = fg.astype(np.float32)
        else:
            out = out * (fg if out.ndim == 2 else fg[..., None])
    return out.astype(np.float32, copy=False)
