"""Turn whatever a user or a dataset hands us into one float image.

Every entry point (dataset readers, both apps, evaluation) decodes through :func:`decode_image`, so a
slice gives the same pixels whether it arrives as an 8-bit JPEG, a 16-bit PNG, a float TIFF or a DICOM.
The output is ``float32`` in ``[0, 1]``, shaped ``(H, W)`` for greyscale or ``(H, W, 3)`` for colour
(kept so the not-an-MRI gate can see colour). Intensities are min-max rescaled per image: that maps
16-bit and float data onto the full range without clipping, and makes an 8-bit copy and a 16-bit copy
of one slice decode to the same values.

Images larger than :data:`tumorlib.shrink.MAX_SIDE` a side are box-averaged while they are decoded,
strip by strip, and every decode reserves its memory from one process-wide budget first (see
:mod:`tumorlib.shrink`): a small file that decodes to 49 megapixels costs a bounded amount of memory.
Files are read from disk as the decoders need them, never whole into memory.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .dicom import decode_dicom
from .errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    MultiFrameError,
    TumorlibError,
    UnsupportedFormatError,
)
from .pixels import alpha_top, apply_orientation, check_array, check_size, composite, describe, finish, layout
from .shrink import (
    BUDGET,
    MAX_SIDE,
    Strips,
    array_strips,
    check_reduced,
    estimate,
    factor_for,
    reduce_strips,
    strip_rows,
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
#: What :func:`sniff` reads of a file: enough for every signature it knows (DICOM's is at 128, HDF5's at 512).
_HEAD_BYTES = 1024
log = logging.getLogger(__name__)


def decode_image(
    source: ImageInput,
    *,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
) -> np.ndarray:
    """Decode ``source`` into a float32 array in ``[0, 1]``, ``(H, W)`` or ``(H, W, 3)``.

    ``source`` may be a path, raw bytes, a binary file object, a PIL image or a numpy array. The result
    is at most :data:`~tumorlib.shrink.MAX_SIDE` pixels a side. Raises a subclass of
    :class:`tumorlib.errors.ImageError` with a message fit to show a user.
    """
    if isinstance(source, Image.Image):
        check_size(source.width, source.height, max_pixels, min_side)
        return _from_pil(source, min_side)
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels, min_side)

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
            file = path.open("rb")
            head = file.read(_HEAD_BYTES)
            file.seek(0)
        except OSError as err:
            raise ImageError(f"Cannot read {path}: {err.strerror or err}") from None
        with file:  # read as the decoders need it: a 100 MB DICOM is not copied into memory first
            if not head:
                raise EmptyImageError(f"{name} is empty (0 bytes).")
            return _decode_stream(file, head, name, max_pixels, min_side)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_bytes(bytes(source), max_pixels=max_pixels, min_side=min_side)
    if hasattr(source, "read"):
        name = Path(getattr(source, "name", "") or "").name
        data = source.read(MAX_FILE_BYTES + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError("The file object must be opened in binary mode.")
        if len(data) > MAX_FILE_BYTES:
            raise ImageTooLargeError(f"Files over {MAX_FILE_BYTES // 2**20} MB are refused.")
        return decode_bytes(bytes(data), name=name, max_pixels=max_pixels, min_side=min_side)
    raise ImageError(f"Cannot read an image from a {type(source).__name__}.")


def decode_bytes(data: bytes, *, name: str = "", max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> np.ndarray:
    """Decode an encoded image held in memory; ``name`` only improves messages and finds ``.dcm``."""
    if len(data) == 0:
        raise EmptyImageError(f"{f'{name} ' if name else 'The upload '}is empty (0 bytes).")
    return _decode_stream(io.BytesIO(data), data[:_HEAD_BYTES], name, max_pixels, min_side)


def _decode_stream(file: BinaryIO, head: bytes, name: str, max_pixels: int, min_side: int) -> np.ndarray:
    """Decode the seekable binary ``file``, whose first bytes are ``head``."""
    what = f"{name} " if name else "The upload "
    kind = sniff(head, name)
    if kind not in ("dicom", "tiff", "image"):
        raise UnsupportedFormatError(f"{what}is {kind}, not an image. Please upload {SUPPORTED_FORMATS}.")
    try:
        if kind == "dicom":
            return decode_dicom(file, max_pixels, min_side)
        if kind == "tiff":
            return _decode_tiff(file, max_pixels, min_side)
        return _decode_pil(file, what, max_pixels, min_side)
    except (ImageTooLargeError, ImageTooSmallError) as err:
        # Size checks run where the pixels are known, which is after the name is out of reach.
        if name and not str(err).startswith(name):
            raise type(err)(f"{name}: {err}") from None
        raise


def sniff(data: bytes, name: str = "") -> str:
    """Name what ``data`` (a file's first kilobyte is enough) holds: 'dicom', 'tiff', 'image' or a description."""
    head = data[:_HEAD_BYTES]
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


# --------------------------------------------------------------------------- Pillow's formats

#: Bytes per pixel Pillow holds for an image of each mode (multi-band modes take 4).
_PIL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
#: What Pillow's format plugins raise for a damaged file, besides OSError (a DDS with unknown flags raises
#: NotImplementedError, a bad header struct.error or IndexError): each becomes a CorruptImageError.
_PIL_FAILURES = (OSError, SyntaxError, ValueError, EOFError, NotImplementedError, struct.error, IndexError, KeyError,
                 TypeError, ZeroDivisionError, OverflowError)  # fmt: skip
_PIL_GREY = ("1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")


def _pil_estimate(im: Image.Image, factor: int) -> int:
    channels = 1 if im.mode in _PIL_GREY else 3
    native = im.width * im.height * _PIL_BYTES.get(im.mode, 4)
    return estimate(native, im.width, im.height, channels, factor)


def _draft(im: Image.Image) -> None:
    """Let a large JPEG decode at 1/2, 1/4 or 1/8 scale (its DCT allows it), still above MAX_SIDE."""
    if im.format in ("JPEG", "MPO"):
        longest = max(im.size)
        im.draft(im.mode, (max(1, im.width * MAX_SIDE // longest), max(1, im.height * MAX_SIDE // longest)))


def _decode_pil(file: BinaryIO, what: str, max_pixels: int, min_side: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data": the pixels may still decode
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(file)
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
        except _PIL_FAILURES as err:
            raise CorruptImageError(f"{what}could not be read as an image ({describe(err)}).") from None
    with im:
        check_size(im.width, im.height, max_pixels, min_side)  # header only: nothing decoded yet
        if getattr(im, "n_frames", 1) > 1 and im.format != "MPO":  # MPO: camera JPEG + preview
            raise MultiFrameError(
                f"{what}is an animation or multi-page image ({im.n_frames} frames); upload a single slice."
            )
        large = factor_for(im.width, im.height) > 1
        if large:
            check_reduced(im.width, im.height, factor_for(im.width, im.height), min_side)
            _draft(im)
        with BUDGET.reserve(_pil_estimate(im, factor_for(im.width, im.height))):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data": the pixels still decode
                    im.load()
                    orientation = int(im.getexif().get(0x0112, 1) or 1) if large else 1
                    if not large:
                        im = ImageOps.exif_transpose(im)
            except (*_PIL_FAILURES, Image.DecompressionBombError) as err:
                raise CorruptImageError(f"{what}is damaged or truncated ({describe(err)}).") from None
            factor = factor_for(im.width, im.height)
            if factor == 1:  # small, or a JPEG its draft brought within MAX_SIDE
                return finish(apply_orientation(_pil_to_array(im), orientation), min_side)
            reduced = reduce_strips(_pil_strips(im, factor), im.width, im.height, factor)
            return finish(apply_orientation(reduced, orientation), min_side, owned=True)


def _pil_strips(im: Image.Image, factor: int) -> Strips:
    """Strips of a PIL image as arrays, each converted by :func:`_pil_to_array` on its own."""

    def strips() -> Iterator[tuple[int, np.ndarray]]:
        rows = strip_rows(im.width, 4, factor)
        for first in range(0, im.height, rows):
            yield first, _pil_to_array(im.crop((0, first, im.width, min(im.height, first + rows))))

    return strips


def _from_pil(im: Image.Image, min_side: int) -> np.ndarray:
    factor = factor_for(im.width, im.height)
    with BUDGET.reserve(_pil_estimate(im, factor)):
        if factor == 1:
            return finish(_pil_to_array(im), min_side)
        check_reduced(im.width, im.height, factor, min_side)
        return finish(reduce_strips(_pil_strips(im, factor), im.width, im.height, factor), min_side, owned=True)


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


# --------------------------------------------------------------------------- number arrays


def _from_array(arr: np.ndarray, max_pixels: int, min_side: int) -> np.ndarray:
    arr = layout(arr, max_pixels, min_side)
    height, width = arr.shape[:2]
    channels = 1 if arr.ndim == 2 or arr.shape[2] == 2 else 3
    factor = factor_for(width, height)
    with BUDGET.reserve(estimate(0, width, height, channels, factor)):
        if factor == 1:
            return finish(composite(arr), min_side)
        check_reduced(width, height, factor, min_side)
        top = alpha_top(arr)
        reduced = reduce_strips(array_strips(arr, lambda a: composite(a, top), factor), width, height, factor)
        return finish(reduced, min_side, owned=True)


# --------------------------------------------------------------------------- TIFF


def _decode_tiff(file: BinaryIO, max_pixels: int, min_side: int) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(file) as tif:
            pages = tif.pages
            if len(pages) > 1:
                raise MultiFrameError(f"The TIFF holds {len(pages)} pages; upload a single slice.")
            page = pages.first
            width, height = page.imagewidth, page.imagelength
            if width * height > max_pixels or min(width, height) < min_side:
                check_size(width, height, max_pixels, min_side)
            photometric = int(page.photometric)
            orientation = page.tags.valueof(274, 1)
            extra = len(page.extrasamples) if page.extrasamples else 0
            samples = int(page.samplesperpixel or 1)
            native = width * height * samples * (page.dtype.itemsize if page.dtype is not None else 8)
            factor = factor_for(width, height)
            if factor == 1:
                with BUDGET.reserve(estimate(native, width, height, min(samples, 3), 1)):
                    arr = page.asarray()
                    return finish(_tiff_pixels(arr, photometric, orientation, extra, max_pixels, min_side), min_side)
            check_reduced(width, height, factor, min_side)
            rows = _tiff_rows(tif, page, file) or _tiff_strip_rows(tif, page)
            with BUDGET.reserve(estimate(0 if rows else native, width, height, min(samples, 3), factor)):
                if rows is None:
                    arr = page.asarray()
                    if arr.ndim == 3 and arr.shape[0] in (2, 3, 4) and arr.shape[-1] not in (2, 3, 4):
                        arr = np.moveaxis(arr, 0, -1)
                    rows = _array_rows(arr)
                return _tiff_reduced(rows, photometric, orientation, extra, width, height, factor, min_side)
    except TumorlibError:
        raise
    except Exception:  # noqa: BLE001 - a codec tifffile lacks: PIL may still read it
        file.seek(0)
        try:
            return _decode_pil(file, "The TIFF ", max_pixels, min_side)
        except UnsupportedFormatError:  # neither reader knows it: a TIFF, but damaged or oddly encoded
            raise CorruptImageError(
                "The TIFF could not be read: it is damaged, or uses a compression or layout not read here."
            ) from None


def _tiff_pixels(
    arr: np.ndarray, photometric: int, orientation: int, extra: int, max_pixels: int, min_side: int
) -> np.ndarray:
    """A whole TIFF page's pixels as the other formats give them (before the rescale)."""
    if arr.ndim == 3 and arr.shape[0] in (2, 3, 4) and arr.shape[-1] not in (2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if photometric == 0:  # MINISWHITE: 0 is white
        arr = arr.max() - arr if np.issubdtype(arr.dtype, np.integer) else -arr
    elif photometric == 5 and arr.ndim == 3 and arr.shape[2] >= 4:  # separated (CMYK)
        arr = _cmyk_to_rgb(arr)
        extra = 0
    if extra and arr.ndim == 3 and arr.shape[2] in (2, 4):
        pass  # alpha handled by check_array
    elif arr.ndim == 3 and arr.shape[2] > 3:
        arr = arr[..., :3]
    arr = apply_orientation(arr, orientation)
    return check_array(arr, max_pixels, min_side)


def _cmyk_to_rgb(arr: np.ndarray) -> np.ndarray:
    cmyk = arr[..., :4].astype(np.float32) / float(np.iinfo(arr.dtype).max if arr.dtype.kind in "ui" else 1.0)
    return (1 - cmyk[..., :3]) * (1 - cmyk[..., 3:4])


def _array_rows(arr: np.ndarray) -> tuple:
    """(a reader of ``arr``'s rows from first to stop, the array's shape, its dtype)."""
    return (lambda first, stop: arr[first:stop]), arr.shape, arr.dtype


def _tiff_rows(tif: Any, page: Any, file: BinaryIO) -> tuple | None:
    """Like :func:`_array_rows`, but for an uncompressed, contiguous page read straight from the file by
    strips (no full-size copy); None for other pages."""
    try:
        dtype = np.dtype(page.dtype).newbyteorder(tif.byteorder)
        contiguous = (
            page.is_contiguous
            and not page.is_tiled
            and page.compression == 1
            and page.predictor == 1
            and page.fillorder == 1
            and page.imagedepth == 1
            and (page.planarconfig == 1 or page.samplesperpixel == 1)
            and page.bitspersample == dtype.itemsize * 8
            and tuple(page.shape[:2]) == (page.imagelength, page.imagewidth)
        )
    except (AttributeError, TypeError, ValueError):
        return None
    if not contiguous:
        return None
    shape = tuple(page.shape)
    offset, row_bytes = int(page.dataoffsets[0]), int(np.prod(shape[1:])) * dtype.itemsize

    def rows(first: int, stop: int) -> np.ndarray:
        file.seek(offset + first * row_bytes)
        data = file.read((stop - first) * row_bytes)
        if len(data) < (stop - first) * row_bytes:
            raise CorruptImageError("The TIFF is truncated: its pixel data ends early.")
        return np.frombuffer(data, dtype).reshape(stop - first, *shape[1:])

    return rows, shape, dtype


def _tiff_strip_rows(tif: Any, page: Any) -> tuple | None:
    """Like :func:`_array_rows` for a compressed page stored in strips: each strip is read and decoded
    when its rows are asked for, so a small file that inflates to hundreds of MB never does so whole.
    None for tiled, planar or multi-plane pages."""
    try:
        striped = (
            not page.is_tiled
            and page.imagedepth == 1
            and (page.planarconfig == 1 or page.samplesperpixel == 1)
            and int(page.rowsperstrip) > 0
            and tuple(page.shape[:2]) == (page.imagelength, page.imagewidth)
        )
        per, shape, dtype = int(page.rowsperstrip), tuple(page.shape), np.dtype(page.dtype)
        offsets, counts = page.dataoffsets, page.databytecounts
    except (AttributeError, TypeError, ValueError):
        return None
    if not striped or len(offsets) < -(-shape[0] // per):
        return None
    handle = tif.filehandle

    def strip(index: int) -> np.ndarray:
        rows = min(per, shape[0] - index * per)
        if not counts[index]:  # a strip the writer left out: its pixels are zero
            return np.zeros((rows, *shape[1:]), dtype)
        handle.seek(offsets[index])
        data = handle.read(counts[index])
        if len(data) < counts[index]:
            raise CorruptImageError("The TIFF is truncated: its pixel data ends early.")
        values = page.decode(data, index)[0]
        if values is None:
            raise CorruptImageError("The TIFF holds a strip that cannot be decoded.")
        return values.reshape(-1, *shape[1:])[:rows]

    def rows(first: int, stop: int) -> np.ndarray:
        pieces = [strip(i) for i in range(first // per, (stop - 1) // per + 1)]
        start = first - (first // per) * per
        return np.concatenate(pieces)[start : start + stop - first]

    return rows, shape, dtype


def _tiff_reduced(
    source: tuple, photometric: int, orientation: int, extra: int, width: int, height: int, factor: int, min_side: int
) -> np.ndarray:
    """A large TIFF page box-reduced strip by strip, converted as :func:`_tiff_pixels` converts a whole one."""
    read, shape, dtype = source
    samples = shape[2] if len(shape) == 3 else 1
    cmyk = photometric == 5 and samples >= 4
    # As a whole page: two samples are grey + alpha; four with an extra sample are RGB + alpha.
    alpha = not cmyk and (samples == 2 or (bool(extra) and samples == 4))
    rows_per = strip_rows(width, samples, factor)
    top = None
    if alpha:
        top = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0
        if not np.issubdtype(dtype, np.integer):
            for first in range(0, height, rows_per):
                top = max(top, float(read(first, min(height, first + rows_per))[..., -1].max()))

    def convert(piece: np.ndarray) -> np.ndarray:
        if cmyk:
            return _cmyk_to_rgb(piece)
        values = piece
        if alpha:
            values = composite(piece, top)
        elif values.ndim == 3 and values.shape[2] > 3:
            values = values[..., :3]
        if photometric == 0:  # MINISWHITE: only the order matters, the rescale does the rest
            values = -np.asarray(values, dtype=np.float32)
        return values

    def strips() -> Iterator[tuple[int, np.ndarray]]:
        for first in range(0, height, rows_per):
            yield first, convert(read(first, min(height, first + rows_per)))

    reduced = reduce_strips(strips, width, height, factor)
    return finish(apply_orientation(reduced, orientation), min_side, owned=True)
