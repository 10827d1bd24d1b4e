"""Turn whatever a user or a dataset hands us into one float image.

Every entry point (dataset readers, both apps, evaluation) decodes through :func:`decode_image`, so a
slice gives the same pixels whether it arrives as an 8-bit JPEG, a 16-bit PNG, a float TIFF or a DICOM.
The output is ``float32`` in ``[0, 1]``, shaped ``(H, W)`` for greyscale or ``(H, W, 3)`` for colour
(kept so the not-an-MRI gate can see colour). Intensities are min-max rescaled per image: that maps
16-bit and float data onto the full range without clipping, and makes an 8-bit copy and a 16-bit copy
of one slice decode to the same values.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    MultiFrameError,
    UnsupportedFormatError,
)

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray

#: More pixels than this is refused before any pixel is decoded (about 7000 x 7000).
MAX_PIXELS = 50_000_000
#: The shorter side must be at least this long: smaller is no MRI slice we can read.
MIN_SIDE = 32
#: Files larger than this are refused before they are read into memory.
MAX_FILE_BYTES = 200 * 1024 * 1024

SUPPORTED_FORMATS = "JPEG, PNG, TIFF, BMP, WebP, GIF (one frame) or DICOM"

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def decode_image(
    source: ImageInput,
    *,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
) -> np.ndarray:
    """Decode ``source`` into a float32 array in ``[0, 1]``, ``(H, W)`` or ``(H, W, 3)``.

    ``source`` may be a path, raw bytes, a binary file object, a PIL image or a numpy array.
    Raises a subclass of :class:`tumorlib.errors.ImageError` with a message fit to show a user.
    """
    if isinstance(source, Image.Image):
        _check_size(source.width, source.height, max_pixels, min_side)
        return _finish(_pil_to_array(source), min_side)
    if isinstance(source, np.ndarray):
        return _finish(_check_array(source, max_pixels, min_side), min_side)

    name = ""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = path.name
        try:
            info = path.stat()
        except FileNotFoundError:
            raise ImageError(f"File not found: {path}") from None
        except OSError as err:
            raise ImageError(f"Cannot read {path}: {err.strerror or err}") from None
        except ValueError as err:  # a NUL byte in the name
            raise ImageError(f"{str(path)!r} is not a valid file name ({err}).") from None
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"{path} is a folder, not an image file.")
        if not stat.S_ISREG(info.st_mode):  # a device or pipe (/dev/zero) would be read forever
            raise ImageError(f"{path} is not a regular file.")
        if info.st_size > MAX_FILE_BYTES:
            raise ImageTooLargeError(
                f"{name} is {info.st_size / 2**20:.0f} MB; files over {MAX_FILE_BYTES // 2**20} MB are refused."
            )
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ImageError(f"Cannot read {path}: {err.strerror or err}") from None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        name = Path(getattr(source, "name", "") or "").name
        data = source.read(MAX_FILE_BYTES + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError("The file object must be opened in binary mode.")
        if len(data) > MAX_FILE_BYTES:
            raise ImageTooLargeError(f"Files over {MAX_FILE_BYTES // 2**20} MB are refused.")
    else:
        raise ImageError(f"Cannot read an image from a {type(source).__name__}.")
    return decode_bytes(bytes(data), name=name, max_pixels=max_pixels, min_side=min_side)


def decode_bytes(data: bytes, *, name: str = "", max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> np.ndarray:
    """Decode an encoded image held in memory; ``name`` only improves messages and finds ``.dcm``."""
    what = f"{name} " if name else "The upload "
    if len(data) == 0:
        raise EmptyImageError(f"{what}is empty (0 bytes).")
    kind = sniff(data, name)
    if kind not in ("dicom", "tiff", "image"):
        raise UnsupportedFormatError(f"{what}is {kind}, not an image. Please upload {SUPPORTED_FORMATS}.")
    try:
        if kind == "dicom":
            return _finish(_decode_dicom(data, max_pixels, min_side), min_side)
        if kind == "tiff":
            return _finish(_decode_tiff(data, max_pixels, min_side), min_side)
        return _finish(_decode_pil(data, what, max_pixels, min_side), min_side)
    except (ImageTooLargeError, ImageTooSmallError) as err:
        # Size checks run where the pixels are known, which is after the name is out of reach.
        if name and not str(err).startswith(name):
            raise type(err)(f"{name}: {err}") from None
        raise


def sniff(data: bytes, name: str = "") -> str:
    """Name what ``data`` holds from its first bytes: 'dicom', 'tiff', 'image' or a description."""
    head = data[:1024]
    if data[128:132] == b"DICM" or (name.lower().endswith((".dcm", ".dicom")) and not _looks_like_text(head)):
        return "dicom"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "a zip archive"
    if head.startswith(b"MATLAB") or head.startswith(_HDF5_MAGIC) or data[512:520] == _HDF5_MAGIC:
        return "a MATLAB/HDF5 data file (read datasets with tumorlib.data)"
    if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"7z\xbc\xaf")):
        return "a compressed archive"
    if _looks_like_text(head):
        return "a text file"
    return "image"


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable / len(text) > 0.95


def _check_size(width: int, height: int, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"The image is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels); "
            f"images over {max_pixels / 1e6:.0f} megapixels are refused."
        )
    if min(width, height) < min_side:
        raise ImageTooSmallError(
            f"The image is {width} x {height} pixels; an MRI slice needs at least {min_side} pixels a side."
        )


def _decode_pil(data: bytes, what: str, max_pixels: int, min_side: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data": the pixels may still decode
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            found = re.search(r"\((\d+) pixels\)", str(err))
            size = f"declares {int(found.group(1)) / 1e6:.0f} megapixels" if found else "declares too many pixels"
            raise ImageTooLargeError(
                f"{what}{size} (a decompression bomb?); images over {max_pixels / 1e6:.0f} megapixels are refused."
            ) from None
        except UnidentifiedImageError:
            raise UnsupportedFormatError(
                f"{what}is not an image format we can read. Please upload {SUPPORTED_FORMATS}."
            ) from None
        except (OSError, SyntaxError, ValueError) as err:
            raise CorruptImageError(f"{what}could not be read as an image ({err}).") from None
    with im:
        _check_size(im.width, im.height, max_pixels, min_side)  # header only: nothing decoded yet
        if getattr(im, "n_frames", 1) > 1 and im.format != "MPO":  # MPO: camera JPEG + preview
            raise MultiFrameError(
                f"{what}is an animation or multi-page image ({im.n_frames} frames); upload a single slice."
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data": the pixels still decode
                im.load()
                im = ImageOps.exif_transpose(im)
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
            raise CorruptImageError(f"{what}is damaged or truncated ({err}).") from None
        return _pil_to_array(im)


def _pil_to_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode in ("L", "RGB", "F") or mode.startswith("I"):
        arr = np.asarray(im)
        if mode.startswith("I;16"):
            arr = arr.astype(np.uint16)
        return arr
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode not in ("LA", "RGBA", "La", "RGBa"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV
    if im.mode in ("LA", "La", "RGBA", "RGBa"):
        arr = np.asarray(im).astype(np.float32)
        # Transparent pixels become black, the background of an MRI slice.
        out = arr[..., :-1] * (arr[..., -1:] / 255.0)
        return out[..., 0] if out.shape[-1] == 1 else out  # greyscale + alpha: (H, W), not (H, W, 1)
    return np.asarray(im)


def _check_array(arr: np.ndarray, max_pixels: int, min_side: int) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ImageError(f"An image array must hold numbers, not {arr.dtype}.")
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channels first, as torch keeps them
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] in (2, 4):  # with alpha: composite over black
        alpha = arr[..., -1:].astype(np.float32)
        top = float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else max(float(alpha.max()), 1.0)
        arr = arr[..., :-1].astype(np.float32) * (alpha / top)
        if arr.shape[2] == 1:
            arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ImageError(f"An image array must be (H, W), (H, W, C) or (C, H, W); got shape {arr.shape}.")
    _check_size(arr.shape[1], arr.shape[0], max_pixels, min_side)
    return arr


def _finish(arr: np.ndarray, min_side: int) -> np.ndarray:
    """Rescale to float32 in [0, 1] by the image's own range; non-finite values count as its minimum."""
    if min(arr.shape[:2]) < min_side:
        raise ImageTooSmallError(
            f"The image is {arr.shape[1]} x {arr.shape[0]} pixels; an MRI slice needs at least {min_side} a side."
        )
    out = arr.astype(np.float32, copy=True)
    finite = np.isfinite(out)
    if not finite.all():
        if not finite.any():
            raise CorruptImageError("The image holds no finite pixel values.")
        out[~finite] = out[finite].min()
    lo, hi = float(out.min()), float(out.max())
    if hi > lo:
        out -= lo
        out *= 1.0 / (hi - lo)
    else:
        out[...] = 0.0
    return np.clip(out, 0.0, 1.0, out=out)


def _decode_tiff(data: bytes, max_pixels: int, min_side: int) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            pages = tif.pages
            if len(pages) > 1:
                raise MultiFrameError(f"The TIFF holds {len(pages)} pages; upload a single slice.")
            page = pages.first
            if page.imagewidth * page.imagelength > max_pixels or min(page.imagewidth, page.imagelength) < min_side:
                _check_size(page.imagewidth, page.imagelength, max_pixels, min_side)
            arr = page.asarray()
            photometric = int(page.photometric)
            orientation = page.tags.valueof(274, 1)
            extra = len(page.extrasamples) if page.extrasamples else 0
    except ImageError:
        raise
    except Exception:  # noqa: BLE001 - a codec tifffile lacks: PIL may still read it
        return _decode_pil(data, "The TIFF ", max_pixels, min_side)
    if arr.ndim == 3 and arr.shape[0] in (2, 3, 4) and arr.shape[-1] not in (2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if photometric == 0:  # MINISWHITE: 0 is white
        arr = arr.max() - arr if np.issubdtype(arr.dtype, np.integer) else -arr
    elif photometric == 5 and arr.ndim == 3 and arr.shape[2] >= 4:  # separated (CMYK)
        cmyk = arr[..., :4].astype(np.float32) / float(np.iinfo(arr.dtype).max if arr.dtype.kind in "ui" else 1.0)
        arr = (1 - cmyk[..., :3]) * (1 - cmyk[..., 3:4])
        extra = 0
    if extra and arr.ndim == 3 and arr.shape[2] in (2, 4):
        pass  # alpha handled by _check_array
    elif arr.ndim == 3 and arr.shape[2] > 3:
        arr = arr[..., :3]
    arr = _apply_orientation(arr, orientation)
    return _check_array(arr, max_pixels, min_side)


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
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


def _decode_dicom(data: bytes, max_pixels: int, min_side: int) -> np.ndarray:
    # pydicom parses elements lazily, so a damaged header can raise almost anything (BytesLengthException,
    # NotImplementedError for an unknown VR, ...) at any attribute access, not only in dcmread.
    try:
        return _read_dicom(data, max_pixels, min_side)
    except (ImageError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - see above
        raise CorruptImageError(f"The DICOM file could not be read ({type(err).__name__}: {err}).") from None


def _read_dicom(data: bytes, max_pixels: int, min_side: int) -> np.ndarray:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise CorruptImageError("The DICOM file holds no image (it has no Pixel Data element).")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise CorruptImageError("The DICOM file lacks the Rows/Columns of its image.") from None
    _check_size(cols, rows, max_pixels, min_side)
    if frames > 1:
        raise MultiFrameError(f"The DICOM file holds {frames} frames; export the one slice to classify.")
    try:
        arr = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for codecs and bad lengths
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax) or "unknown"
        raise CorruptImageError(
            f"The DICOM pixel data could not be decoded (transfer syntax: {name}; {err}). "
            "Export the slice uncompressed or as PNG."
        ) from None
    # Colour comes back as RGB already: pydicom 3 converts YBR_FULL/_422 itself and the JPEG 2000
    # decoders undo YBR_RCT/ICT, while the dataset keeps its YBR tag. Converting again ruined colours.
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 2:
        arr = _dicom_window(ds, arr)
        if photometric == "MONOCHROME1":  # 0 is white
            arr = arr.max() - arr
    return _check_array(arr, max_pixels, min_side)


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
