"""DICOM files: the slice's pixels, rescaled and windowed as a viewer shows them, decoded where it is safe.

Part of :func:`tumorlib.decode.decode_image`: a DICOM file (found by its preamble or its ``.dcm`` name) is
read here, its pixel data only when needed and from the open file; images over
:data:`tumorlib.shrink.MAX_SIDE` are reduced strip by strip, as the other formats are.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np

from .errors import CorruptImageError, MultiFrameError, TumorlibError
from .pixels import alpha_top, check_array, check_size, composite, describe, finish, layout
from .shrink import BUDGET, array_strips, check_reduced, estimate, factor_for, reduce_strips

log = logging.getLogger(__name__)

#: DICOM elements larger than this (the pixel data) are read only when asked for, from the open file.
_DICOM_DEFER = "256 KB"


def decode_dicom(file: BinaryIO, max_pixels: int, min_side: int) -> np.ndarray:
    # pydicom parses elements lazily, so a damaged header can raise almost anything (BytesLengthException,
    # NotImplementedError for an unknown VR, ...) at any attribute access, not only in dcmread.
    try:
        return _read_dicom(file, max_pixels, min_side)
    except (TumorlibError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - see above
        raise CorruptImageError(f"The DICOM file could not be read ({type(err).__name__}: {describe(err)}).") from None


def _read_dicom(file: BinaryIO, max_pixels: int, min_side: int) -> np.ndarray:
    import pydicom

    # The pixel data is read from the file only when pixel_array asks for it.
    ds = pydicom.dcmread(file, force=True, defer_size=_DICOM_DEFER)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise CorruptImageError("The DICOM file holds no image (it has no Pixel Data element).")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise CorruptImageError("The DICOM file lacks the Rows/Columns of its image.") from None
    check_size(cols, rows, max_pixels, min_side)
    if frames > 1:
        raise MultiFrameError(f"The DICOM file holds {frames} frames; export the one slice to classify.")
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    item = max(1, int(getattr(ds, "BitsAllocated", 16) or 16) // 8)
    factor = factor_for(cols, rows)
    if factor > 1:
        check_reduced(cols, rows, factor, min_side)
    # The file's pixel bytes and the array made of them; unreduced, three float64 copies while windowing.
    native = 2 * rows * cols * samples * item + (24 * rows * cols if factor == 1 and samples == 1 else 0)
    with BUDGET.reserve(estimate(native, cols, rows, 3 if samples >= 3 else 1, factor)):
        try:
            arr = _dicom_pixels(ds, file)
        except Exception as err:  # noqa: BLE001 - pydicom raises many types for codecs and bad lengths
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            name = getattr(syntax, "name", syntax) or "unknown"
            log.info("DICOM pixel data not decoded (%s): %s", name, describe(err))
            raise CorruptImageError(
                f"The DICOM pixel data could not be decoded (transfer syntax: {name}): it is damaged, or "
                "compressed in a way this server cannot read. Export the slice uncompressed or as PNG."
            ) from None
        # Colour comes back as RGB already: pydicom 3 converts YBR_FULL/_422 itself and the JPEG 2000
        # decoders undo YBR_RCT/ICT, while the dataset keeps its YBR tag. Converting again ruined colours.
        photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
        if factor == 1:
            if arr.ndim == 2:
                arr = _dicom_window(ds, arr)
                if photometric == "MONOCHROME1":  # 0 is white
                    arr = arr.max() - arr
            return finish(check_array(arr, max_pixels, min_side), min_side)
        arr = layout(arr, max_pixels, min_side)
        top = alpha_top(arr)

        def convert(piece: np.ndarray) -> np.ndarray:
            return _dicom_window(ds, piece) if piece.ndim == 2 else composite(piece, top)

        reduced = reduce_strips(array_strips(arr, convert, factor), cols, rows, factor)
        if reduced.ndim == 2 and photometric == "MONOCHROME1":
            reduced = reduced.max() - reduced
        return finish(reduced, min_side, owned=True)


#: Decodes a DICOM file read from stdin with GDCM and writes its pixel array (.npy) to stdout.
_GDCM_CHILD = """
import io, sys
import numpy as np, pydicom
ds = pydicom.dcmread(io.BytesIO(sys.stdin.buffer.read()), force=True)
ds.pixel_array_options(decoding_plugin="gdcm")
out = io.BytesIO()
np.save(out, ds.pixel_array, allow_pickle=False)
sys.stdout.buffer.write(out.getvalue())
"""
#: How long the GDCM child may take to decode one file.
GDCM_SECONDS = 120


def _dicom_pixels(ds: Any, file: BinaryIO) -> np.ndarray:
    """``ds.pixel_array``, never decoded by GDCM inside this process where another decoder could do it.

    GDCM throws C++ exceptions nobody catches on some damaged JPEG and JPEG 2000 data, which aborts the
    whole process: one crafted upload would stop the server. So JPEG and JPEG 2000 go to Pillow, which
    raises a Python error instead; what Pillow cannot read (some valid JPEG 2000) is then tried by GDCM
    in a child process, which may die alone. JPEG Lossless and JPEG-LS, which only GDCM reads here,
    stay in process: no damaged file of theirs was seen to abort it.
    """
    from pydicom.pixels.decoders.base import get_decoder

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        plugins = get_decoder(syntax).available_plugins if syntax is not None else ()
    except (NotImplementedError, ValueError, KeyError, TypeError):
        plugins = ()
    if not ("pillow" in plugins and "gdcm" in plugins):
        return ds.pixel_array
    ds.pixel_array_options(decoding_plugin="pillow")
    try:
        return ds.pixel_array
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for codecs and bad lengths
        log.info("Pillow could not decode the DICOM pixel data (%s); trying GDCM in a child process", describe(err))
    file.seek(0)
    try:
        child = subprocess.run(
            [sys.executable, "-c", _GDCM_CHILD], input=file.read(), capture_output=True, timeout=GDCM_SECONDS
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"GDCM took over {GDCM_SECONDS} s") from None
    if child.returncode != 0:
        lines = child.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"the GDCM decoder stopped (exit status {child.returncode})")
    return np.load(io.BytesIO(child.stdout), allow_pickle=False)


def _dicom_window(ds, arr: np.ndarray) -> np.ndarray:
    """Apply the rescale slope/intercept, then the stored window, if any, as a viewer would."""
    arr = arr.astype(np.float64)
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    arr = arr * slope + intercept
    center, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    try:
        center, width = float(_first(center)), float(_first(width))
    except (TypeError, ValueError, IndexError):
        return arr
    if width <= 1:
        return arr
    lo, hi = center - width / 2, center + width / 2
    return np.clip(arr, lo, hi)


def _first(value):
    """The first of a multi-valued DICOM element, or the value itself."""
    return value[0] if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else value
