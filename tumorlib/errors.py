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


class ImageTooSmallError(ImageError):
    """The image is too small to hold a brain MRI slice."""


class MultiFrameError(ImageError):
    """An animation, a multi-page TIFF or a multi-frame DICOM: we classify one slice at a time."""


class DatasetError(TumorlibError):
    """A dataset folder or file is missing, malformed or has unknown labels."""


class BundleError(TumorlibError):
    """A model folder is missing files, fails its checksum or does not match its config."""
