"""DICOM pixels through the file's own modality and VOI transforms (tumorlib/dicom.py), and its frames."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from tumorlib import decode_image
from tumorlib.decode import MAX_PIXELS, MIN_SIDE
from tumorlib.dicom import open_frames, read_header

from .dicom_files import file_bytes, mr_dataset


def _rescaled(values: np.ndarray) -> np.ndarray:
    """What the decoder gives for ``values``: their own range mapped onto [0, 1]."""
    v = values.astype(np.float64)
    return (v - v.min()) / (v.max() - v.min())


@pytest.fixture(scope="module")
def pixels(slice_u8) -> np.ndarray:
    return slice_u8.astype(np.uint16) * 16  # 12-bit, as scanners store it


def test_a_voi_lut_sequence_is_applied_before_any_window(pixels):
    """The file's VOI LUT (here a gamma curve) maps the stored values; its window, also present, yields."""
    lut = np.round((np.arange(4096) / 4095.0) ** 0.5 * 65535).astype(np.uint16)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 16])
    item.add_new("LUTData", "US", lut.tolist())
    ds = mr_dataset([pixels], WindowCenter=1000, WindowWidth=500)
    ds.VOILUTSequence = Sequence([item])
    out = decode_image(file_bytes(ds))
    np.testing.assert_allclose(out, _rescaled(lut[pixels]), atol=1e-6)
    assert np.abs(out - _rescaled(pixels)).max() > 0.1  # the curve changed the slice: it was not ignored


def test_a_sigmoid_voi_function_is_not_read_as_a_linear_window(pixels):
    center, width = 1200.0, 800.0
    sigmoid = decode_image(
        file_bytes(mr_dataset([pixels], WindowCenter=center, WindowWidth=width, VOILUTFunction="SIGMOID"))
    )
    expected = 1.0 / (1.0 + np.exp(-4.0 * (pixels.astype(np.float64) - center) / width))
    np.testing.assert_allclose(sigmoid, _rescaled(expected), atol=1e-5)
    linear = decode_image(file_bytes(mr_dataset([pixels], WindowCenter=center, WindowWidth=width)))
    # The linear window saturates what lies outside it; the sigmoid only flattens it.
    assert (linear == 1.0).mean() > 10 * max((sigmoid == 1.0).mean(), 1e-4)


def test_the_window_is_read_in_rescaled_units(pixels):
    """Rescale slope and intercept apply first: a window given in their units means the same slice."""
    plain = decode_image(file_bytes(mr_dataset([pixels], WindowCenter=1500, WindowWidth=1000)))
    stored = (pixels // 2).astype(np.uint16)  # rescaled, 2 * stored - 1024: the plain value less 1024
    rescaled = mr_dataset([stored], RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=1500 - 1024, WindowWidth=1000)
    out = decode_image(file_bytes(rescaled))
    # Halving loses the lowest bit; the window still cuts at the same places.
    assert np.abs(out - plain).max() < 2e-3 and ((out == 1.0) == (plain == 1.0)).mean() > 0.999


def test_a_window_of_width_one_or_less_is_no_window(pixels):
    for width in (0, 1):
        out = decode_image(file_bytes(mr_dataset([pixels], WindowCenter=2000, WindowWidth=width)))
        np.testing.assert_allclose(out, _rescaled(pixels), atol=1e-6)


def test_frames_read_one_by_one_with_their_own_window(pixels):
    """An enhanced file keeps each frame's window in its functional groups; every frame is read apart."""
    frames = [pixels, np.roll(pixels, 9, axis=1), np.flipud(pixels)]
    ds = mr_dataset(frames)
    per_frame = []
    for center, width in ((600, 400), (2000, 4000), (1200, 1200)):
        window = Dataset()
        window.WindowCenter, window.WindowWidth = center, width
        group = Dataset()
        group.FrameVOILUTSequence = Sequence([window])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    data = file_bytes(ds)
    with open_frames(data, MAX_PIXELS, MIN_SIDE) as opened:
        assert opened.count == 3
        out = [opened.frame(i) for i in range(3)]
    for i, (one, (center, width)) in enumerate(zip(frames, ((600, 400), (2000, 4000), (1200, 1200)), strict=True)):
        alone = decode_image(file_bytes(mr_dataset([one], WindowCenter=center, WindowWidth=width)))
        np.testing.assert_allclose(out[i], alone, atol=1e-6, err_msg=f"frame {i}")
    assert decode_image(data).shape == pixels.shape  # a single upload: the middle frame
    np.testing.assert_allclose(decode_image(data), out[1], atol=1e-6)


def test_the_header_groups_without_keeping_identifiers(pixels):
    study, series = generate_uid(), generate_uid()
    one = read_header(
        file_bytes(mr_dataset([pixels], PatientID="P1", StudyInstanceUID=study, SeriesInstanceUID=series))
    )
    same = read_header(
        file_bytes(mr_dataset([pixels], PatientID="P1", StudyInstanceUID=study, SeriesInstanceUID=series))
    )
    other = read_header(
        file_bytes(mr_dataset([pixels], PatientID="P2", StudyInstanceUID=study, SeriesInstanceUID=series))
    )
    assert one.series == same.series and one.series != other.series and one.study != other.study
    assert not {study, series, "P1"} & {one.series, one.study, one.description}
    assert read_header(file_bytes(mr_dataset([pixels]))).series is None
    garbage = read_header(b"not a DICOM file at all")
    assert garbage is None or garbage.series is None
    described = read_header(file_bytes(mr_dataset([pixels, pixels], SeriesDescription="  AX   T1  POST ")))
    assert described.description == "AX T1 POST" and described.frames == 2


@pytest.mark.timeout(60)
def test_a_jp2_header_that_does_not_advance_is_refused_not_walked_forever():
    from pydicom.encaps import encapsulate

    from tumorlib.errors import CorruptImageError

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "MR", 64, 64, 1
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "MONOCHROME2", 16, 12, 11
    ds.PixelRepresentation = 0
    # the JP2 signature box, then a box of length 0 that is not the codestream
    ds.PixelData = encapsulate([b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(40)])
    ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(CorruptImageError, match="JPEG 2000"):
        decode_image(out.getvalue())
