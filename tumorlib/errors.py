"""The exceptions tumorlib raises on purpose.

Every failure a user can cause (a bad upload, a broken dataset, a damaged model folder) comes out as a
subclass of :class:`TumorlibError` with a message written for that user, never a stack trace from
PIL, h5py or torch. Apps catch ``TumorlibError`` and show ``str(err)``.
"""

from __future__ import annotations


class TumorlibError(Exception):
    """Base class of every error tumorlib raises for bad input or data."""


class ImageError(TumorlibError, ValueError):
    """The input could not be turned into an image we can classify."""


class EmptyImageError(ImageError):
    """The file or upload holds no bytes."""


class UnsupportedFormatError(ImageError):
    """The bytes are not an image format we read (a PDF, text, a zip, ...)."""


class CorruptImageError(ImageError):
    """The format was recognised but the data is truncated or damaged."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than the configured limit (decompression-bomb guard)."""


class NotBrainMRIError(ImageError):
    """The not-an-MRI gate refused the image: it does not look like the brain MRI slices the model knows.

    ``result`` is the gate's :class:`tumorlib.gate.GateResult` (its ``reason`` is the message) and
    ``image`` the decoded image, so a caller can still show what was refused.
    """

    def __init__(self, result, image=None) -> None:
        reason = str(getattr(result, "reason", "") or "the image does not look like a brain MRI slice.")
        super().__init__(f"Not a brain MRI: {reason}")
        self.result = result
        self.image = image


class ImageTooSmallError(ImageError):
    """The image is too small to hold a brain MRI slice."""


class MultiFrameError(ImageError):
    """An animation or a multi-page TIFF: we classify one slice at a time (a multi-frame DICOM is read as
    a series of slices instead)."""


class DatasetError(TumorlibError):
    """A dataset folder or file is missing, malformed or has unknown labels."""


class BundleError(TumorlibError):
    """A model folder is missing files, fails its checksum or does not match its config."""


class NoModelError(TumorlibError):
    """No model is installed, or the requested one is not among those offered."""


def user_message(err: BaseException) -> str:
    """The text a user sees for a tumorlib error: the library's own message, with a short lead-in."""
    if isinstance(err, (NotBrainMRIError, NoModelError)):
        return str(err)
    if isinstance(err, ImageError):
        return f"Cannot read this file: {err}"
    if isinstance(err, BundleError):
        return f"The model could not be loaded: {err}"
    return str(err)
