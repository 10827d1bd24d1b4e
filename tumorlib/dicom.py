"""DICOM files: the slice's pixels, through the file's modality and VOI transforms as a viewer shows them,
decoded where it is safe; the header facts that group slices into series.

Part of :func:`tumorlib.decode.decode_image`: a DICOM file (found by its preamble or its ``.dcm`` name) is
read here, its pixel data only when needed and from the open file; images over
:data:`tumorlib.shrink.MAX_SIDE` are reduced strip by strip, as the other formats are. A multi-frame file
decodes to its middle frame there; :class:`DicomFrames` reads every frame, for a batch that answers per
series. :func:`read_header` gives what groups slices (series and study, as keyed digests) without keeping
any identifier.
"""

from __future__ import annotations

import hashlib
import io
import logging
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import CorruptImageError, TumorlibError
from .pixels import alpha_top, check_array, check_size, composite, describe, finish, layout
from .shrink import BUDGET, array_strips, check_reduced, estimate, factor_for, reduce_strips

log = logging.getLogger(__name__)

#: DICOM elements larger than this (the pixel data) are read only when asked for, from the open file.
_DICOM_DEFER = "256 KB"
#: Keys the digests of patient, study and series identifiers: they group slices within this process and
#: mean nothing outside it (a plain hash of a patient id could be matched against guessed ids).
_GROUP_KEY = secrets.token_bytes(32)
#: The longest series description kept (the standard's limit for its value representation, LO).
_DESCRIPTION_CHARS = 64


def decode_dicom(file: BinaryIO, max_pixels: int, min_side: int) -> np.ndarray:
    """The image of a DICOM file; of a multi-frame file, its middle frame (the one most likely through the
    brain of a head series)."""
    with _errors():
        ds, frames = _open(file, max_pixels, min_side)
        return _decode_frame(ds, file, frames, frames // 2, max_pixels, min_side)


class DicomFrames:
    """A DICOM file opened once, its frames decoded one at a time, each as :func:`decode_dicom` decodes a slice.

    ``frame(i)`` raises a :class:`~tumorlib.errors.TumorlibError` for that frame alone.
    """

    def __init__(self, file: BinaryIO, max_pixels: int, min_side: int) -> None:
        self._file, self._limits = file, (max_pixels, min_side)
        with _errors():
            self._ds, self.count = _open(file, max_pixels, min_side)

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based), windowed as a viewer shows it, float32 in [0, 1]."""
        with _errors():
            return _decode_frame(self._ds, self._file, self.count, index, *self._limits)


@contextmanager
def open_frames(source: Path | bytes, max_pixels: int, min_side: int) -> Iterator[DicomFrames]:
    """:class:`DicomFrames` of a file on disk or in memory, the file open for the block."""
    with open(source, "rb") if isinstance(source, Path) else io.BytesIO(source) as file:
        yield DicomFrames(file, max_pixels, min_side)


@dataclass(frozen=True)
class DicomHeader:
    """What groups a DICOM slice: keyed digests (None without the UIDs), never the identifiers themselves."""

    series: str | None  # the patient, study and series identifiers, digested together
    study: str | None  # the patient and study identifiers, digested together
    description: str  # SeriesDescription, as the scanner wrote it ("" without one)
    frames: int


def read_header(source: Path | bytes) -> DicomHeader | None:
    """The grouping facts of a DICOM file's header (its pixel data is not read); None when unreadable.

    PatientID is read only into the digests, so two patients who share UIDs (copied files, careless
    anonymisation) stay apart; no identifier is kept or returned.
    """
    import pydicom

    try:
        with open(source, "rb") if isinstance(source, Path) else io.BytesIO(source) as file:
            ds = pydicom.dcmread(file, force=True, stop_before_pixels=True)
            keys = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")
            patient, study, series = (str(ds.get(k, "") or "") for k in keys)
            description = " ".join(str(ds.get("SeriesDescription", "") or "").split())[:_DESCRIPTION_CHARS]
            frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception as err:  # noqa: BLE001 - pydicom parses lazily and raises many types on a damaged header
        log.info("DICOM header not read for grouping: %s", describe(err))
        return None
    return DicomHeader(
        series=_digest(patient, study, series) if series else None,
        study=_digest(patient, study) if study else None,
        description=description,
        frames=max(frames, 1),
    )


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\x00".join(parts).encode("utf-8", "replace"), key=_GROUP_KEY, digest_size=16).hexdigest()


@contextmanager
def _errors() -> Iterator[None]:
    # pydicom parses elements lazily, so a damaged header can raise almost anything (BytesLengthException,
    # NotImplementedError for an unknown VR, ...) at any attribute access, not only in dcmread.
    try:
        yield
    except (TumorlibError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - see above
        raise CorruptImageError(f"The DICOM file could not be read ({type(err).__name__}: {describe(err)}).") from None


def _open(file: BinaryIO, max_pixels: int, min_side: int) -> tuple[Any, int]:
    """The dataset (pixel data deferred) and its frame count, its size checked."""
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
    return ds, max(frames, 1)


def _decode_frame(ds: Any, file: BinaryIO, frames: int, index: int, max_pixels: int, min_side: int) -> np.ndarray:
    rows, cols = int(ds.Rows), int(ds.Columns)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    item = max(1, int(getattr(ds, "BitsAllocated", 16) or 16) // 8)
    factor = factor_for(cols, rows)
    if factor > 1:
        check_reduced(cols, rows, factor, min_side)
    # The file's pixel bytes (every frame's: pydicom holds the element whole) and the array made of them;
    # unreduced, three float64 copies while windowing.
    frame_bytes = rows * cols * samples * item
    native = frame_bytes * (frames + 1) + (24 * rows * cols if factor == 1 and samples == 1 else 0)
    with BUDGET.reserve(estimate(native, cols, rows, 3 if samples >= 3 else 1, factor)):
        try:
            arr = _dicom_pixels(ds, file, index if frames > 1 else None)
        except Exception as err:  # noqa: BLE001 - pydicom raises many types for codecs and bad lengths
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            name = getattr(syntax, "name", syntax) or "unknown"
            log.info("DICOM pixel data not decoded (%s): %s", name, describe(err))
            raise CorruptImageError(
                f"The DICOM pixel data could not be decoded (transfer syntax: {name}): it is damaged, or "
                "compressed in a way this server cannot read. Export the slice uncompressed or as PNG."
            ) from None
        view = _frame_view(ds, index) if frames > 1 else ds
        # Colour comes back as RGB already: pydicom 3 converts YBR_FULL/_422 itself and the JPEG 2000
        # decoders undo YBR_RCT/ICT, while the dataset keeps its YBR tag. Converting again ruined colours.
        photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
        if factor == 1:
            if arr.ndim == 2:
                arr = _dicom_window(view, arr)
                if photometric == "MONOCHROME1":  # 0 is white
                    arr = arr.max() - arr
            return finish(check_array(arr, max_pixels, min_side), min_side)
        arr = layout(arr, max_pixels, min_side)
        top = alpha_top(arr)

        def convert(piece: np.ndarray) -> np.ndarray:
            return _dicom_window(view, piece) if piece.ndim == 2 else composite(piece, top)

        reduced = reduce_strips(array_strips(arr, convert, factor), cols, rows, factor)
        if reduced.ndim == 2 and photometric == "MONOCHROME1":
            reduced = reduced.max() - reduced
        return finish(reduced, min_side, owned=True)


#: Decodes a DICOM file read from stdin with GDCM and writes its pixel array (.npy) to stdout; argv[1] is
#: the frame to decode ("" for all).
_GDCM_CHILD = """
import io, sys
import numpy as np, pydicom
ds = pydicom.dcmread(io.BytesIO(sys.stdin.buffer.read()), force=True)
ds.pixel_array_options(decoding_plugin="gdcm", index=int(sys.argv[1]) if sys.argv[1] else None)
out = io.BytesIO()
np.save(out, ds.pixel_array, allow_pickle=False)
sys.stdout.buffer.write(out.getvalue())
"""
#: How long the GDCM child may take to decode one file.
GDCM_SECONDS = 120


#: JPEG 2000 transfer syntaxes (Part 1 and High-Throughput), whose frames may carry a JP2 file header.
_JPEG2000 = frozenset(f"1.2.840.10008.1.2.4.{n}" for n in (90, 91, 92, 93, 201, 202, 203))
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


def _check_jp2_boxes(ds: Any) -> None:
    """Refuse JP2 headers whose boxes do not advance. Before decoding, pydicom walks each frame's JP2
    boxes by their lengths, and a box of length 0 that is not the codestream (legal only as the last box)
    keeps it walking forever: a tiny upload would pin a CPU for good. This walks the frames the same way."""
    from pydicom.encaps import generate_frames

    try:
        frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
    except Exception:  # noqa: BLE001 - damaged encapsulation: the decoder reports it in its own words
        return
    for frame in frames:
        if not frame.startswith(_JP2_SIGNATURE[:8]):
            continue
        offset = 12  # the signature box is always 12 bytes long
        while offset < len(frame):
            length = int.from_bytes(frame[offset : offset + 4], "big")
            if frame[offset + 4 : offset + 8] == b"jp2c":
                break
            if length == 0:
                raise CorruptImageError("The JPEG 2000 data in this DICOM file has a damaged file header.")
            offset += length


def _dicom_pixels(ds: Any, file: BinaryIO, index: int | None = None) -> np.ndarray:
    """``ds.pixel_array`` (of frame ``index`` only, when given), never decoded by GDCM inside this process
    where another decoder could do it.

    GDCM throws C++ exceptions nobody catches on some damaged JPEG and JPEG 2000 data, which aborts the
    whole process: one crafted upload would stop the server. So JPEG and JPEG 2000 go to Pillow, which
    raises a Python error instead; what Pillow cannot read (some valid JPEG 2000) is then tried by GDCM
    in a child process, which may die alone. JPEG Lossless and JPEG-LS, which only GDCM reads here,
    stay in process: no damaged file of theirs was seen to abort it.
    """
    from pydicom.pixels.decoders.base import get_decoder

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and str(syntax) in _JPEG2000:
        _check_jp2_boxes(ds)
    try:
        plugins = get_decoder(syntax).available_plugins if syntax is not None else ()
    except (NotImplementedError, ValueError, KeyError, TypeError):
        plugins = ()
    if not ("pillow" in plugins and "gdcm" in plugins):
        ds.pixel_array_options(index=index)
        return ds.pixel_array
    ds.pixel_array_options(decoding_plugin="pillow", index=index)
    try:
        return ds.pixel_array
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for codecs and bad lengths
        log.info("Pillow could not decode the DICOM pixel data (%s); trying GDCM in a child process", describe(err))
    file.seek(0)
    try:
        child = subprocess.run(
            [sys.executable, "-c", _GDCM_CHILD, "" if index is None else str(index)],
            input=file.read(),
            capture_output=True,
            timeout=GDCM_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"GDCM took over {GDCM_SECONDS} s") from None
    if child.returncode != 0:
        lines = child.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"the GDCM decoder stopped (exit status {child.returncode})")
    return np.load(io.BytesIO(child.stdout), allow_pickle=False)


#: What a frame of an enhanced multi-frame file takes from its functional groups: (sequence, attributes).
_FRAME_MACROS = (
    ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
    ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction")),
)
#: Dataset attributes the modality and VOI transforms read besides those.
_PIXEL_MODULE = (
    "PhotometricInterpretation",
    "BitsStored",
    "PixelRepresentation",
    "ModalityLUTSequence",
    "VOILUTSequence",
    "RescaleSlope",
    "RescaleIntercept",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
)


def _frame_view(ds: Any, index: int) -> Any:
    """The attributes that transform frame ``index``: an enhanced file keeps its rescale and window in
    functional groups (shared by all frames, or per frame), which pydicom's LUT functions do not read."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not shared and not per_frame:
        return ds
    from pydicom.dataset import Dataset

    view = Dataset()
    if hasattr(ds, "file_meta"):
        view.file_meta = ds.file_meta  # LUT data stored as OW needs the transfer syntax's byte order
    for keyword in _PIXEL_MODULE:
        if keyword in ds:
            setattr(view, keyword, ds[keyword].value)
    groups = [shared[0] if shared else None, per_frame[index] if per_frame and index < len(per_frame) else None]
    for group in groups:  # per frame overrides shared
        for sequence, keywords in _FRAME_MACROS:
            items = group.get(sequence) if group is not None else None
            if items:
                for keyword in keywords:
                    if keyword in items[0]:
                        setattr(view, keyword, items[0][keyword].value)
    return view


def _dicom_window(ds: Any, arr: np.ndarray) -> np.ndarray:
    """The stored values through the modality LUT or rescale, then the VOI LUT or window, as a viewer
    shows them (pydicom's own functions, which follow the standard: LUT sequences, VOI LUT Function)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    arr = apply_modality_lut(arr, ds)
    if ds.get("VOILUTSequence"):
        if not np.issubdtype(arr.dtype, np.integer):  # a LUT is indexed by whole values
            arr = np.rint(arr).astype(np.int64)
    elif not _usable_window(ds):
        return arr.astype(np.float64, copy=False)
    try:
        arr = apply_voi_lut(arr, ds)
    except (ValueError, NotImplementedError, IndexError, KeyError, TypeError, AttributeError) as err:
        # A malformed VOI module: the slice is still shown, over its full range.
        log.info("DICOM VOI transform not applied: %s", describe(err))
    return arr.astype(np.float64, copy=False)


def _usable_window(ds: Any) -> bool:
    """Whether the file carries a window worth applying: scanners write a width of 0 or 1 to mean none,
    and at width 1 the standard's LINEAR window is a threshold that leaves no slice to classify."""
    try:
        width = ds["WindowWidth"].value
        width = width[0] if ds["WindowWidth"].VM > 1 else width
        return float(width) > 1 and "WindowCenter" in ds
    except (KeyError, TypeError, ValueError, IndexError):
        return False
