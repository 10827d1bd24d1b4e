"""Decoding within bounds: the largest image kept, the memory all decodes may hold at once, box reduction.

An upload can be a small file that decodes to tens of megapixels (a mostly black 7000 x 7000 PNG is
200 KB). Nothing downstream needs that many pixels: the network sees a resize of about 128-224 px,
and heatmaps and the page work on a copy of at most 1024 px a side. So :mod:`tumorlib.decode` keeps an
image of at most :data:`MAX_SIDE` pixels a side, box-averaging larger ones by an integer factor strip
by strip while it decodes (:func:`reduce_strips`), so that no full-size float copy ever exists, and
every decode first reserves an estimate of the memory it will hold from one process-wide
:class:`MemoryBudget`: decodes that would not fit wait their turn, and one that could never fit is
refused with a message instead of growing the process.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from .errors import CorruptImageError, ImageTooLargeError, ImageTooSmallError, TumorlibError

#: Decoded images are at most this many pixels a side; larger ones are box-averaged by the smallest
#: integer factor that fits. The model sees a ~128-224 px resize and the tumour map, Grad-CAM and the
#: page a copy of at most 1024 px (tumorlib.pipeline.WORKING_SIDE), so 2048 leaves every consumer more
#: pixels than it uses (a reduced side is always over 1024) while a decoded colour image stays under
#: 50 MB as float32. Images up to this size decode exactly as they always did.
MAX_SIDE = 2048
#: Bytes of decoding work all threads of a process may hold at once (one 50-megapixel RGBA image
#: needs about 330 MB); a decode that does not fit waits for others to finish.
DECODE_BUDGET_BYTES = 384 * 2**20
#: How long a decode waits for room in the budget before giving up with :class:`ServerBusyError`.
BUDGET_WAIT_SECONDS = 120.0
#: Values converted at once while reducing (8 MB as float32): the strips a large image is read in.
STRIP_VALUES = 1 << 21
#: What a strip costs at most, in bytes, for the estimates below (its native copy and float copies).
STRIP_BYTES = 4 * STRIP_VALUES * 4


class ServerBusyError(TumorlibError):
    """Other large images hold the decoding memory for longer than a request may wait."""


class MemoryBudget:
    """A semaphore counted in bytes: :meth:`reserve` blocks until its bytes fit under ``capacity``."""

    def __init__(self, capacity: int, wait_seconds: float = BUDGET_WAIT_SECONDS) -> None:
        self.capacity, self.wait_seconds = int(capacity), wait_seconds
        self.in_use = 0
        self._cond = threading.Condition()
        self._held = threading.local()  # a decode inside a decode (the gate re-reading an array) reserves once

    @contextmanager
    def reserve(self, nbytes: int, what: str = "The image") -> Iterator[None]:
        """Hold ``nbytes`` of the budget for the block; raises ImageTooLargeError when it can never fit."""
        nbytes = int(nbytes)
        if getattr(self._held, "depth", 0):
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        if nbytes > self.capacity:
            raise ImageTooLargeError(
                f"{what} would need about {nbytes / 2**20:,.0f} MB of memory to decode, more than the "
                f"{self.capacity / 2**20:,.0f} MB one image may use here. Save it smaller (at most "
                f"{MAX_SIDE} pixels a side) or as 8- or 16-bit greyscale."
            )
        with self._cond:
            if not self._cond.wait_for(lambda: self.in_use + nbytes <= self.capacity, self.wait_seconds):
                raise ServerBusyError("The server is busy decoding other large images; please try again in a minute.")
            self.in_use += nbytes
        self._held.depth = 1
        try:
            yield
        finally:
            self._held.depth = 0
            with self._cond:
                self.in_use -= nbytes
                self._cond.notify_all()


#: The budget every decode of this process shares.
BUDGET = MemoryBudget(DECODE_BUDGET_BYTES)


def factor_for(width: int, height: int, side: int = MAX_SIDE) -> int:
    """The integer box factor that brings the longer side to at most ``side`` (1: keep as it is)."""
    return max(1, math.ceil(max(width, height) / side))


def reduced_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """(width, height) after a ``factor`` box reduction (a partial block at an edge still counts)."""
    return math.ceil(width / factor), math.ceil(height / factor)


def check_reduced(width: int, height: int, factor: int, min_side: int) -> None:
    """Refuse an image so long and narrow that its reduction would be thinner than ``min_side``."""
    if min(reduced_size(width, height, factor)) < min_side:
        raise ImageTooSmallError(
            f"The image is {width} x {height} pixels: too long and narrow for an MRI slice "
            f"(one side may be at most {MAX_SIDE // min_side} times the other)."
        )


def strip_rows(width: int, channels: int, factor: int) -> int:
    """Rows per strip: about :data:`STRIP_VALUES` values, a whole number of blocks where that fits."""
    rows = max(1, STRIP_VALUES // max(1, width * channels))
    return max(factor, rows - rows % factor) if rows >= factor else rows


def estimate(native_bytes: int, width: int, height: int, channels: int, factor: int) -> int:
    """Bytes a decode holds at its peak: the native pixels, then float copies of what is kept.

    Unreduced, the float path makes up to four float32 copies of the image (conversion, compositing,
    rescaling, the finite mask); reduced, the output is written once and rescaled in place, plus a strip.
    """
    kept_w, kept_h = reduced_size(width, height, factor)
    values = kept_w * kept_h * max(1, channels)
    if factor == 1:
        return native_bytes + 16 * values
    return native_bytes + 8 * values + STRIP_BYTES


Strips = Callable[[], Iterator[tuple[int, np.ndarray]]]


def reduce_strips(strips: Strips, width: int, height: int, factor: int) -> np.ndarray:
    """Box-average the image that ``strips()`` yields as (first row, rows as a number array) pieces.

    Each piece is converted to float32 on its own, so no full-size float copy is made. Non-finite
    values (a float TIFF's NaN) become the image's smallest finite value before averaging, as
    :func:`tumorlib.decode.decode_image` treats them in an image it keeps whole.
    """
    out = _reduce(strips, width, height, factor, fill=None)
    if out is None:  # a non-finite value: find the smallest finite one, then average again
        fill = None
        for _, piece in strips():
            values = np.asarray(piece, dtype=np.float32)
            finite = values[np.isfinite(values)]
            if finite.size:
                low = float(finite.min())
                fill = low if fill is None else min(fill, low)
        if fill is None:
            raise CorruptImageError("The image holds no finite pixel values.")
        out = _reduce(strips, width, height, factor, fill=fill)
    assert out is not None
    return out


def _reduce(strips: Strips, width: int, height: int, factor: int, fill: float | None) -> np.ndarray | None:
    cols = np.arange(0, width, factor)
    out: np.ndarray | None = None
    for first, piece in strips():
        values = np.array(piece, dtype=np.float32)  # a copy: changed in place below
        if not np.isfinite(values).all():
            if fill is None:
                return None
            values[~np.isfinite(values)] = fill
        sums = np.add.reduceat(values, cols, axis=1)
        blocks = (first + np.arange(values.shape[0])) // factor
        starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
        if out is None:
            out = np.zeros((math.ceil(height / factor), len(cols), *values.shape[2:]), np.float32)
        out[blocks[starts]] += np.add.reduceat(sums, starts, axis=0)
    if out is None:
        raise CorruptImageError("The image holds no pixels.")
    rows_in = np.minimum(factor, height - np.arange(out.shape[0]) * factor).astype(np.float32)
    cols_in = np.minimum(factor, width - cols).astype(np.float32)
    area = rows_in[:, None] * cols_in[None, :]
    out /= area[..., None] if out.ndim == 3 else area
    return out


def array_strips(arr: np.ndarray, convert: Callable[[np.ndarray], np.ndarray], factor: int) -> Strips:
    """:data:`Strips` of an array held in memory (``convert`` applied to each piece of rows)."""
    channels = arr.shape[2] if arr.ndim == 3 else 1

    def strips() -> Iterator[tuple[int, np.ndarray]]:
        rows = strip_rows(arr.shape[1], channels, factor)
        for first in range(0, arr.shape[0], rows):
            yield first, convert(arr[first : first + rows])

    return strips
