"""Small MR DICOM files built in memory for the tests (uncompressed, 12 bits stored in 16)."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def mr_dataset(frames: list[np.ndarray], **attrs) -> Dataset:
    """An MR dataset of the uint16 ``frames`` (several: a multi-frame file), with ``attrs`` set."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = frames[0].shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = np.stack(frames).astype(np.uint16).tobytes()
    return ds


def file_bytes(ds: Dataset) -> bytes:
    """``ds`` as the bytes of a DICOM file."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
