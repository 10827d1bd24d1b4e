"""A batch of uploads, zip archives included, read safely.

The apps hand us whatever a visitor uploaded: image files, and zip archives of image files. An archive
is checked as a whole from its central directory before a single member is decompressed: how many
members, their total and individual uncompressed size, their compression ratio (zip bombs), and names
that try to leave the archive's folder (absolute paths, ``..``, drive letters). A refused archive
raises :class:`ArchiveError` with a message written for the user. Members are then inflated one at a
time into memory, never extracted to disk, in chunks whose size and compression ratio are checked as
they stream: an archive whose directory misstates a member's sizes is refused as soon as that shows.

A member that is merely not an image (a text file, a damaged JPEG, a nested zip) is not an archive
problem: it is handed on like any other file, so the decoder rejects that one file and the rest of the
batch goes ahead. :func:`result_row` classifies one item through :mod:`tumorlib.pipeline` into a row of
the results table (a refusal or an unreadable file fills only its own row). No UI toolkit is imported here.
"""

from __future__ import annotations

import atexit
import bz2
import logging
import lzma
import math
import os
import re
import shutil
import stat
import struct
import tempfile
import threading
import time
import uuid
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

from . import pipeline, uploads
from .decode import MAX_FILE_BYTES, decode_bytes, decode_image
from .errors import ImageError, TumorlibError, user_message
from .pixels import describe

if TYPE_CHECKING:
    import pandas as pd

    from .inference import Classifier

log = logging.getLogger(__name__)

__all__ = [
    "ArchiveError",
    "BatchItem",
    "BatchLimits",
    "ResultStore",
    "TooManyFilesError",
    "UnsafeArchiveError",
    "ZipBombError",
    "batch_summary",
    "blank_row",
    "check_zip",
    "decode_item",
    "error_row",
    "is_zip",
    "iter_batch",
    "plan_batch",
    "prediction_row",
    "require_upload",
    "result_columns",
    "result_row",
    "upload_path",
    "write_csv",
]

#: The note of a row whose file broke something we did not foresee (the log has the traceback).
UNEXPECTED_MESSAGE = (
    "Something went wrong while processing this file. The error has been logged on the server; "
    "please try another image."
)

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# Operating-system litter inside archives: skipped without a row in the results.
_LITTER_DIRS = {"__MACOSX"}
_LITTER_FILES = {".ds_store", "thumbs.db", "desktop.ini"}
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(TumorlibError, ValueError):
    """A zip archive is damaged, or refused as a whole for one of the reasons below."""


class ZipBombError(ArchiveError):
    """The archive would expand beyond the size or compression-ratio limits."""


class UnsafeArchiveError(ArchiveError):
    """A member name points outside the archive (absolute path, ``..``, drive letter)."""


class TooManyFilesError(ArchiveError):
    """More files in the batch (archive members included) than the limit."""


@dataclass(frozen=True)
class BatchLimits:
    """How much one batch may hold. The defaults suit a small shared CPU server."""

    #: Images in one batch, counting every archive member that would be classified.
    max_files: int = 200
    #: Total uncompressed size of all members of one archive.
    max_total_bytes: int = 512 * 2**20
    #: Uncompressed size of one member (the decoder's own limit for a single file).
    max_member_bytes: int = MAX_FILE_BYTES
    #: Uncompressed / compressed size of a member (checked above ``ratio_floor_bytes``). Image formats
    #: barely compress; a mostly black BMP or DICOM slice may reach 20-50x, a zip bomb 1000x.
    max_ratio: float = 100.0
    #: Members smaller than this are not ratio-checked: the total limit already bounds them.
    ratio_floor_bytes: int = 1 * 2**20


@dataclass(frozen=True)
class BatchItem:
    """One file of a batch: a path on disk, the bytes of an archive member, or why the member is unreadable.

    ``name`` is what a user recognises: the upload's file name, or ``archive.zip/folder/slice.png``.
    """

    name: str
    path: Path | None = None
    data: bytes | None = None
    error: ArchiveError | None = None

    @property
    def source(self) -> Path | bytes:
        """What to hand to :func:`tumorlib.decode_image`."""
        return self.path if self.path is not None else (self.data or b"")


def is_zip(path: str | os.PathLike) -> bool:
    """Whether the file starts like a zip archive (its name does not matter)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) in _ZIP_MAGIC
    except OSError:
        return False


def _unsafe_name(name: str) -> bool:
    text = name.replace("\\", "/")
    if "\x00" in text or text.startswith("/") or _DRIVE.match(text):
        return True
    return any(part == ".." for part in text.split("/"))


def _is_litter(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts:
        return True
    if any(part in _LITTER_DIRS for part in parts):
        return True
    base = parts[-1]
    return base.lower() in _LITTER_FILES or base.startswith("._")


def _members(zf: zipfile.ZipFile, label: str, limits: BatchLimits) -> list[zipfile.ZipInfo]:
    """The members worth reading, after checking the whole archive against ``limits``."""
    infos = zf.infolist()
    members, total = [], 0
    for info in infos:
        if _unsafe_name(info.filename):
            raise UnsafeArchiveError(
                f"{label} was refused: it holds a file named {info.filename!r}, which points outside the "
                "archive's folder (a path-traversal name). Re-create the archive with plain relative names."
            )
        if info.is_dir() or _is_litter(info.filename):
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeArchiveError(
                f"{label} was refused: {info.filename!r} is a symbolic link. Archive the image files themselves."
            )
        size, packed = int(info.file_size), int(info.compress_size)
        if size > limits.max_member_bytes:
            raise ZipBombError(
                f"{label} was refused: {info.filename!r} would expand to {size / 2**20:,.0f} MB; "
                f"one file may be at most {limits.max_member_bytes / 2**20:,.0f} MB."
            )
        if size > limits.ratio_floor_bytes and size > limits.max_ratio * max(packed, 1):
            raise ZipBombError(
                f"{label} was refused: {info.filename!r} is compressed {size / max(packed, 1):,.0f} to 1, "
                f"more than the {limits.max_ratio:g} to 1 any image reaches (a zip bomb?)."
            )
        total += size
        if total > limits.max_total_bytes:
            raise ZipBombError(
                f"{label} was refused: its files would expand to more than "
                f"{limits.max_total_bytes / 2**20:,.0f} MB in total. Split it into smaller archives."
            )
        members.append(info)
    if len(members) > limits.max_files:
        raise TooManyFilesError(
            f"{label} holds {len(members)} files; at most {limits.max_files} images are classified in one batch."
        )
    return members


def _open_zip(path: Path, label: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as err:
        raise ArchiveError(f"{label} is not a readable zip archive ({describe(err)}).") from None


def check_zip(path: str | os.PathLike, limits: BatchLimits | None = None, *, label: str | None = None) -> int:
    """Check an archive against ``limits`` without decompressing anything; returns its member count."""
    path = Path(path)
    label = label or path.name
    with _open_zip(path, label) as zf:
        return len(_members(zf, label, limits or BatchLimits()))


def _read_member(raw: BinaryIO, info: zipfile.ZipInfo, label: str, limits: BatchLimits) -> bytes:
    """A member's bytes, inflated from the archive file ``raw`` in chunks, its size and ratio checked as it goes.

    The directory's sizes were checked before, but they are the archive's own claims: a member whose
    entry overstates its compressed size passes that check. So the inflated size is held against the
    compressed bytes actually consumed while streaming, and the read stops (ZipBombError) as soon as it
    passes ``limits.max_ratio`` times them or the size the entry declares. Raises ArchiveError for a
    damaged, encrypted or unreadable member.
    """
    name = info.filename
    if info.flag_bits & 0x1:
        raise ArchiveError(f"{label}: {name!r} is encrypted; password-protected archives are not read.")
    try:
        stream = _MemberStream(raw, info)
        pieces, size, crc = [], 0, 0
        for piece in stream:
            size += len(piece)
            if size > info.file_size:
                raise ZipBombError(f"{label}: {name!r} expands beyond the size its header declares.")
            if size > limits.ratio_floor_bytes and size > limits.max_ratio * max(stream.consumed, 1):
                raise ZipBombError(
                    f"{label} was refused: {name!r} expands more than {limits.max_ratio:g} to 1 while it is read, "
                    "though its directory entry claims less: the archive misstates its sizes (a zip bomb?)."
                )
            crc = zlib.crc32(piece, crc)
            pieces.append(piece)
    except ArchiveError:
        raise
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as err:
        raise ArchiveError(f"{label}: {name!r} could not be decompressed ({describe(err)}).") from None
    if crc != info.CRC:
        raise ArchiveError(f"{label}: {name!r} is damaged (its checksum does not match its contents).")
    return b"".join(pieces)


#: Compressed bytes read from an archive at a time, and the most one inflating step may produce.
_CHUNK, _STEP = 64 * 2**10, 2**20


class _MemberStream:
    """Iterate over a member's inflated data in pieces of at most ``_STEP`` bytes, reading the archive
    itself (stored, deflate, bzip2 or LZMA); ``consumed`` is how many compressed bytes went in so far."""

    def __init__(self, raw: BinaryIO, info: zipfile.ZipInfo) -> None:
        raw.seek(info.header_offset)
        header = raw.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise ArchiveError(f"{info.filename!r} has no local header where the directory says (damaged?).")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        if raw.read(name_length) != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"):
            raise ArchiveError(f"{info.filename!r}: its local header names another file (damaged?).")
        raw.seek(extra_length, os.SEEK_CUR)
        self.raw, self.left, self.consumed = raw, int(info.compress_size), 0
        self.method = info.compress_type
        if self.method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
            raise ArchiveError(
                f"{info.filename!r} uses compression method {self.method}, which is not read; "
                "re-create the archive with standard (deflate) compression."
            )

    def _read(self, n: int = _CHUNK) -> bytes:
        data = self.raw.read(min(n, self.left))
        if len(data) < min(n, self.left):
            raise EOFError("the archive ends inside this file")
        self.left -= len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        if self.method == zipfile.ZIP_STORED:
            while self.left > 0:
                piece = self._read()
                self.consumed += len(piece)
                yield piece
            return
        if self.method == zipfile.ZIP_DEFLATED:
            inflater = zlib.decompressobj(-15)
            while not inflater.eof:
                fed = inflater.unconsumed_tail or self._read()
                if not fed:
                    raise EOFError("the compressed data ends early")
                before = len(fed)
                piece = inflater.decompress(fed, _STEP)
                self.consumed += before - len(inflater.unconsumed_tail) - len(inflater.unused_data)
                yield piece
            return
        decoder = bz2.BZ2Decompressor() if self.method == zipfile.ZIP_BZIP2 else self._lzma()
        while not decoder.eof:
            fed = b""
            if decoder.needs_input:
                fed = self._read()
                if not fed:
                    raise EOFError("the compressed data ends early")
                self.consumed += len(fed)  # at most one chunk more than went in: the ratio is not overstated
            yield decoder.decompress(fed, _STEP)

    def _lzma(self) -> lzma.LZMADecompressor:
        """Zip's LZMA: a version, the properties' length, the LZMA1 properties, then the raw stream."""
        head = self._read(4)
        props = self._read(struct.unpack("<H", head[2:4])[0])
        self.consumed += 4 + len(props)
        if len(props) < 5:
            raise EOFError("the LZMA header is damaged")
        code, dict_size = props[0], struct.unpack("<I", props[1:5])[0]
        pb, rest = divmod(code, 45)
        lp, lc = divmod(rest, 9)
        lzma1 = {"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": dict_size}
        return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma1])


def plan_batch(
    paths: Sequence[str | os.PathLike], limits: BatchLimits | None = None, *, names: Sequence[str] | None = None
) -> int:
    """Check a whole batch before any work: every archive against ``limits``, the file count overall.

    Returns how many images the batch holds. ``names`` are display names for ``paths`` (default: the
    file names). Raises :class:`ArchiveError` for the first refused archive, or
    :class:`TooManyFilesError` when the batch holds more than ``limits.max_files`` images.
    """
    limits = limits or BatchLimits()
    total = 0
    for path, name in zip(paths, names or [Path(p).name for p in paths], strict=True):
        total += check_zip(path, limits, label=name) if is_zip(path) else 1
    if total > limits.max_files:
        raise TooManyFilesError(
            f"The batch holds {total} images; at most {limits.max_files} are classified at once. "
            "Split it into smaller batches."
        )
    return total


def iter_batch(
    paths: Sequence[str | os.PathLike], limits: BatchLimits | None = None, *, names: Sequence[str] | None = None
) -> Iterator[BatchItem]:
    """Every image of a batch in upload order, archives expanded; call :func:`plan_batch` first.

    A member that cannot be decompressed (damaged, encrypted) comes out with ``error`` set and no
    bytes, so the caller reports that one file and carries on. An archive refused as a whole raises
    :class:`ArchiveError` before any of its members is yielded.
    """
    limits = limits or BatchLimits()
    for path, name in zip(paths, names or [Path(p).name for p in paths], strict=True):
        path = Path(path)
        if not is_zip(path):
            yield BatchItem(name=name, path=path)
            continue
        with _open_zip(path, name) as zf, path.open("rb") as raw:
            for info in _members(zf, name, limits):
                member_name = f"{name}/{info.filename}"
                try:
                    data = _read_member(raw, info, name, limits)
                except ZipBombError:  # the archive lied about itself: refused as a whole
                    raise
                except ArchiveError as err:
                    yield BatchItem(name=member_name, error=err)
                else:
                    yield BatchItem(name=member_name, data=data)


# --------------------------------------------------------------------------- classifying a batch


def result_columns(labels: Sequence[str]) -> list[str]:
    """The columns of the results table: file, group (the series or folder it was pooled with, empty for a
    loose file; see :mod:`tumorlib.groups`), prediction, confidence, one probability per class, the 95%
    prediction set (``set_95``: its classes joined by ``|``, empty when the model has no thresholds), note."""
    return ["file", "group", "prediction", "confidence", *(f"p_{label}" for label in labels), "set_95", "note"]


def blank_row(name: str, labels: Sequence[str], note: str = "") -> dict[str, Any]:
    """A row with no prediction: ``note`` says why."""
    row: dict[str, Any] = {"file": name, "group": "", "prediction": "", "confidence": math.nan, "set_95": ""}
    row.update({f"p_{label}": math.nan for label in labels})
    row["note"] = note
    return row


def error_row(name: str, labels: Sequence[str], err: BaseException) -> dict[str, Any]:
    """The row of a file that was refused or could not be read (an unforeseen error gets a general note)."""
    return blank_row(name, labels, user_message(err) if isinstance(err, TumorlibError) else UNEXPECTED_MESSAGE)


def prediction_row(name: str, labels: Sequence[str], prediction: pipeline.Prediction) -> dict[str, Any]:
    """The row of a classified file: its prediction, probabilities and 95% prediction set."""
    row = blank_row(name, labels)
    row["prediction"] = prediction.label
    row["confidence"] = prediction.confidence
    row.update({f"p_{label}": p for label, p in prediction.items()})
    row["set_95"] = "|".join(prediction.prediction_set(0.95) or [])
    return row


def decode_item(item: BatchItem) -> Any:
    """The decoded image of a batch item (raises the decoder's ImageError, or the item's own error)."""
    if item.error is not None:
        raise item.error
    if item.path is not None:
        return decode_image(item.path)
    return decode_bytes(item.data or b"", name=Path(item.name).name)


def result_row(clf: Classifier, item: BatchItem, check: bool = True) -> dict[str, Any]:
    """One item's row: its prediction, probabilities and 95% prediction set, or in ``note`` why there are none."""
    try:
        prediction, _, _ = pipeline.classify(clf, decode_item(item), check)
    except TumorlibError as err:
        return error_row(item.name, clf.labels, err)
    except Exception as err:  # one bad file must not sink the batch
        log.exception("Unexpected error on one batch file")
        return error_row(item.name, clf.labels, err)
    return prediction_row(item.name, clf.labels, prediction)


def csv_safe(value: Any) -> Any:
    """Keep spreadsheet programs from running a cell as a formula (file names come from visitors)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """The results table as CSV, its text cells made formula-safe."""
    safe = frame.copy()
    for column in ("file", "group", "note", "best_slice", "refused", "description"):
        if column in safe:
            safe[column] = safe[column].map(csv_safe)
    safe.to_csv(path, index=False, float_format="%.6f")
    return path


def batch_summary(frame: pd.DataFrame) -> str:
    """One Markdown line on a results table: how many were classified, by class, and how many not."""
    ok = int((frame["prediction"] != "").sum())
    counts = frame.loc[frame["prediction"] != "", "prediction"].value_counts()
    text = f"**{ok} of {len(frame)} images classified**"
    if len(counts):
        text += " (" + ", ".join(f"{label}: {n}" for label, n in counts.items()) + ")"
    text += "."
    if ok < len(frame):
        text += f" {len(frame) - ok} could not be classified: see the note column."
    return text


class ResultStore:
    """A private folder for result files, each deleted ``keep_seconds`` after it was made (and at exit).

    The folder lies in this process's upload area (:func:`tumorlib.uploads.current`) when the app has one,
    so a crash leaves nothing the next start does not remove; else in the system's temp folder.
    """

    def __init__(self, keep_seconds: float, prefix: str = "tumour-app-") -> None:
        self.keep_seconds, self.prefix = keep_seconds, prefix
        self._root: Path | None = None

    def new_path(self, filename: str) -> Path:
        """A fresh path ``<store>/<random>/filename`` (its folder made); older files are swept first."""
        folder = self._folder() / uuid.uuid4().hex
        folder.mkdir()
        # Swept on the next call too, but a timer keeps the promise when no later call comes.
        timer = threading.Timer(self.keep_seconds, shutil.rmtree, args=(folder,), kwargs={"ignore_errors": True})
        timer.daemon = True
        timer.start()
        return folder / filename

    def _folder(self) -> Path:
        parent = uploads.current()
        if self._root is None or not self._root.is_dir() or (parent is not None and self._root.parent != parent):
            self._root = Path(tempfile.mkdtemp(prefix=self.prefix, dir=parent))
            atexit.register(shutil.rmtree, self._root, ignore_errors=True)
        cutoff = time.time() - self.keep_seconds
        for old in self._root.iterdir():
            try:
                if old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        return self._root


def upload_path(file: Any) -> Path | None:
    """The path of an upload as a web framework hands it over (a str, or an object with .path / .name)."""
    if file is None:
        return None
    if isinstance(file, (str, os.PathLike)):
        return Path(file)
    for attr in ("path", "name"):
        value = getattr(file, attr, None)
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
    if isinstance(file, dict) and isinstance(file.get("path"), str):
        return Path(file["path"])
    raise ImageError("The upload could not be read; please upload the file again.")


def require_upload(file: Any) -> Path:
    """:func:`upload_path` of an upload that must be there; ImageError saying what is missing."""
    path = upload_path(file)
    if path is None:
        raise ImageError("No image was uploaded. Upload an MRI slice or pick one of the examples first.")
    if not path.exists():
        raise ImageError(
            "The uploaded file is no longer on the server (uploads are deleted after a while); please upload it again."
        )
    return path
