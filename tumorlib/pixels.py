"""Pixel arrays as every decoder hands them on: shape checks, alpha compositing, the rescale to [0, 1].

Shared by :mod:`tumorlib.decode` and :mod:`tumorlib.dicom`; also the one place an exception's text is
made fit for a message (:func:`describe`).
"""

from __future__ import annotations

import re

import numpy as np

from .errors import CorruptImageError, ImageError, ImageTooLargeError, ImageTooSmallError

#: An object's repr in an exception's text (``<_io.BytesIO object at 0x7f...>``): never shown to a user.
_OBJECT_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>")


def describe(err: BaseException) -> str:
    """An exception's text fit for a message: object reprs (with their heap addresses) and line breaks removed."""
    text = _OBJECT_REPR.sub("the file", str(err))
    return re.sub(r"\s+", " ", text).strip() or type(err).__name__


def check_size(width: int, height: int, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"The image is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels); "
            f"images over {max_pixels / 1e6:.0f} megapixels are refused."
        )
    if min(width, height) < min_side:
        raise ImageTooSmallError(
            f"The image is {width} x {height} pixels; an MRI slice needs at least {min_side} pixels a side."
        )


def layout(arr: np.ndarray, max_pixels: int, min_side: int) -> np.ndarray:
    """``arr`` as (H, W) or (H, W, C) with C in 2-4, numbers only, within the size limits (no copy made)."""
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ImageError(f"An image array must hold numbers, not {arr.dtype}.")
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channels first, as torch keeps them
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (2, 3, 4))):
        shape = arr.shape if arr.ndim != 3 else (*arr.shape[:2], arr.shape[2] - (arr.shape[2] in (2, 4)))
        raise ImageError(f"An image array must be (H, W), (H, W, C) or (C, H, W); got shape {shape}.")
    check_size(arr.shape[1], arr.shape[0], max_pixels, min_side)
    return arr


def alpha_top(arr: np.ndarray) -> float | None:
    """What full opacity is in ``arr``'s last channel, if it has alpha: its type's maximum, or for floats
    the channel's own maximum (at least 1)."""
    if not (arr.ndim == 3 and arr.shape[2] in (2, 4)):
        return None
    if np.issubdtype(arr.dtype, np.integer):
        return float(np.iinfo(arr.dtype).max)
    return max(float(arr[..., -1].max()), 1.0)


def composite(arr: np.ndarray, top: float | None = None) -> np.ndarray:
    """Colour over black by the alpha channel, if there is one ((H, W, 2) -> (H, W); (H, W, 4) -> (H, W, 3))."""
    if arr.ndim == 3 and arr.shape[2] in (2, 4):  # with alpha: composite over black
        alpha = arr[..., -1:].astype(np.float32)
        if top is None:
            top = alpha_top(arr)
        arr = arr[..., :-1].astype(np.float32) * (alpha / top)
        if arr.shape[2] == 1:
            arr = arr[..., 0]
    return arr


def check_array(arr: np.ndarray, max_pixels: int, min_side: int) -> np.ndarray:
    return composite(layout(arr, max_pixels, min_side))


def finish(arr: np.ndarray, min_side: int, owned: bool = False) -> np.ndarray:
    """Rescale to float32 in [0, 1] by the image's own range; non-finite values count as its minimum.

    ``owned``: ``arr`` is a float32 array nobody else holds, rescaled in place instead of copied.
    """
    if min(arr.shape[:2]) < min_side:
        raise ImageTooSmallError(
            f"The image is {arr.shape[1]} x {arr.shape[0]} pixels; an MRI slice needs at least {min_side} a side."
        )
    out = arr if owned and arr.dtype == np.float32 else arr.astype(np.float32, copy=True)
    finite = np.isfinite(out)
    if not finite.all():
        if not finite.any():
            raise CorruptImageError("The image holds no finite pixel values.")
        out[~finite] = out[finite].min()
    del finite
    lo, hi = float(out.min()), float(out.max())
    if hi > lo:
        out -= lo
        out *= 1.0 / (hi - lo)
    else:
        out[...] = 0.0
    return np.clip(out, 0.0, 1.0, out=out)


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply a TIFF/EXIF orientation tag (1-8) to an (H, W[, C]) array."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(int(orientation or 1))
    return np.ascontiguousarray(op(arr)) if op else arr
