"""The decoder: every image kind a user may bring gives the slice's pixels; everything else a clear error."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pydicom
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tumorlib import decode_image
from tumorlib.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    MultiFrameError,
    UnsupportedFormatError,
)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _reference(slice_u8: np.ndarray) -> np.ndarray:
    """What the decoder must give for the 8-bit slice: its own range mapped onto [0, 1]."""
    a = slice_u8.astype(np.float32)
    return (a - a.min()) / (a.max() - a.min())


def dicom_bytes(pixels: np.ndarray, *, window: tuple[float, float] | None = None, with_pixels: bool = True) -> bytes:
    """A minimal but valid MR DICOM file holding ``pixels`` (uint16)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if with_pixels:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# --- accepted: the same slice in every container --------------------------------------------------


def test_jpeg_path_bytes_and_file_object_agree(slice_path, slice_u8):
    ref = _reference(slice_u8)
    for source in (slice_path, str(slice_path), slice_path.read_bytes(), open(slice_path, "rb")):  # noqa: SIM115
        out = decode_image(source)
        assert out.dtype == np.float32 and out.shape == slice_u8.shape
        np.testing.assert_allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize("scale", [257, 16])  # full 16-bit range, and 12-bit data as scanners store it
def test_png16_keeps_every_level(slice_u8, scale):
    data = _encode(Image.fromarray(slice_u8.astype(np.uint16) * scale), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    np.testing.assert_allclose(decode_image(data), _reference(slice_u8), atol=1e-6)


def test_png16_is_not_clipped_to_8_bit():
    ramp = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (64, 1))  # 12-bit ramp, all above 255 but the first
    out = decode_image(_encode(Image.fromarray(ramp), "PNG"))
    assert len(np.unique(out)) == 256  # PIL's convert("L") would have clipped 255 of them to white


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
def test_tiff_16_bit_and_float(slice_u8, dtype):
    buf = io.BytesIO()
    pixels = slice_u8.astype(dtype) * (100 if dtype == np.uint16 else 0.37)
    tifffile.imwrite(buf, pixels)
    np.testing.assert_allclose(decode_image(buf.getvalue()), _reference(slice_u8), atol=1e-5)


def test_lossless_containers_are_exact(slice_u8):
    ref = _reference(slice_u8)
    grey = Image.fromarray(slice_u8)
    for im, fmt, kw in [
        (grey, "PNG", {}),
        (grey, "BMP", {}),
        (grey, "WEBP", {"lossless": True}),
        (grey.convert("RGB"), "PNG", {}),
        (grey.convert("RGBA"), "PNG", {}),
        (grey.convert("P"), "PNG", {}),  # palette
        (grey.convert("LA"), "PNG", {}),
        (grey, "GIF", {}),  # one frame
    ]:
        out = decode_image(_encode(im, fmt, **kw))
        grey_out = out if out.ndim == 2 else out.mean(axis=2)
        np.testing.assert_allclose(grey_out, ref, atol=1e-6, err_msg=f"{fmt} {im.mode}")


def test_cmyk_jpeg(slice_u8):
    data = _encode(Image.fromarray(slice_u8).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data)
    assert out.shape == (*slice_u8.shape, 3)
    assert np.abs(out.mean(axis=2) - _reference(slice_u8)).mean() < 0.02


def test_exif_orientation_is_applied(slice_u8):
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(slice_u8, 1)))  # pixels as the sensor saw them
    out = decode_image(_encode(stored, "JPEG", quality=98, exif=exif))
    assert out.shape == slice_u8.shape
    assert np.abs(out - _reference(slice_u8)).mean() < 0.01


def test_rgba_transparency_becomes_black():
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, :32, 3] = 255  # left half opaque, right half transparent
    out = decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out[:, :32].min() == 1.0 and out[:, 32:].max() == 0.0


def test_dicom_windowed(slice_u8):
    pixels = slice_u8.astype(np.uint16) * 16  # 12-bit
    # A LINEAR window one wider than the 12-bit range (the standard's definition) maps it linearly.
    out = decode_image(dicom_bytes(pixels, window=(2048, 4097)))
    np.testing.assert_allclose(out, _reference(slice_u8), atol=1e-6)
    # A narrow window saturates what lies outside it, as a viewer shows it.
    narrow = decode_image(dicom_bytes(pixels, window=(1000, 500)))
    assert (narrow == 1.0).mean() > (out == 1.0).mean()


def test_dicom_without_preamble_by_extension(tmp_path, slice_u8):
    path = tmp_path / "slice.dcm"
    path.write_bytes(dicom_bytes(slice_u8.astype(np.uint16)))
    assert decode_image(path).shape == slice_u8.shape


def _transcode(plain: bytes, syntax: str, tmp_path) -> bytes:
    """``plain`` re-encoded by GDCM (the library that decodes these syntaxes for pydicom)."""
    import gdcm

    src, dst = tmp_path / "plain.dcm", tmp_path / f"{syntax}.dcm"
    src.write_bytes(plain)
    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    return dst.read_bytes()


@pytest.mark.parametrize("syntax", ["JPEGLosslessProcess14_1", "JPEGLSLossless", "JPEG2000Lossless", "RLELossless"])
def test_compressed_dicom_gives_the_same_slice(tmp_path, slice_u8, syntax):
    """The lossless syntaxes archives export (JPEG Lossless and JPEG-LS need GDCM: Pillow reads neither)."""
    plain = dicom_bytes(slice_u8.astype(np.uint16) * 16)
    packed = _transcode(plain, syntax, tmp_path)
    assert pydicom.dcmread(io.BytesIO(packed)).file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(decode_image(packed), decode_image(plain))


@pytest.mark.parametrize("name", ["SC_ybr_full_422_uncompressed.dcm", "SC_rgb_jpeg_dcmtk.dcm", "GDCMJ2K_TextGBR.dcm"])
def test_colour_dicom_in_ycbcr_is_rgb_once(name):
    """pydicom's YCbCr test files: pixel_array is RGB already, so it must not be converted a second time.

    The first two hold the same picture as an RGB file beside them (dcmtk's test set); the third is
    JPEG 2000 with the reversible colour transform (YBR_RCT), which once raised.
    """
    from pydicom.data import get_testdata_file

    out = decode_image(get_testdata_file(name))
    assert out.ndim == 3 and out.shape[2] == 3
    if name.startswith("SC_"):
        rgb = decode_image(get_testdata_file("SC_rgb_dcmtk_+eb+cr.dcm"))
        assert np.abs(out - rgb).max() < 0.03  # chroma subsampling and JPEG rounding, not a colour shift


def test_12_bit_jpeg_dicom_gets_a_message_not_a_crash():
    """JPEG Extended at 12 bits: GDCM and Pillow refuse it in pydicom; the user is asked for an export."""
    from pydicom.data import get_testdata_file

    with pytest.raises(CorruptImageError, match=r"JPEG Extended.*Export the slice uncompressed or as PNG"):
        decode_image(get_testdata_file("JPGExtended.dcm"))


def test_pil_and_numpy_inputs(slice_u8):
    ref = _reference(slice_u8)
    np.testing.assert_allclose(decode_image(Image.fromarray(slice_u8)), ref, atol=1e-6)
    np.testing.assert_allclose(decode_image(slice_u8), ref, atol=1e-6)
    chw = np.repeat(slice_u8[None], 3, axis=0)  # torch layout
    np.testing.assert_allclose(decode_image(chw).mean(axis=2), ref, atol=1e-6)
    np.testing.assert_allclose(decode_image(slice_u8.astype(np.int16) - 500), ref, atol=1e-6)


# --- refused, each with its own exception and message ----------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size in a few dozen bytes: a decompression bomb's calling card."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_empty_input(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for source in (b"", empty):
        with pytest.raises(EmptyImageError, match="empty"):
            decode_image(source)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(slice_u8, fmt):
    data = _encode(Image.fromarray(slice_u8), fmt)
    with pytest.raises(CorruptImageError, match="truncated|damaged|could not be read"):
        decode_image(data[: len(data) // 2])


def test_pdf_and_text_renamed_as_jpg(tmp_path):
    pdf = tmp_path / "scan.jpg"
    pdf.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n")
    with pytest.raises(UnsupportedFormatError, match="PDF"):
        decode_image(pdf)
    text = tmp_path / "notes.jpg"
    text.write_text("patient notes, not an image\n" * 20)
    with pytest.raises(UnsupportedFormatError, match="text file"):
        decode_image(text)


def test_zip_and_mat_are_named():
    with pytest.raises(UnsupportedFormatError, match="zip"):
        decode_image(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(UnsupportedFormatError, match="MATLAB"):
        decode_image(b"MATLAB 7.3 MAT-file" + b"\0" * 600)


def test_decompression_bomb_refused_before_decoding():
    with pytest.raises(ImageTooLargeError, match="megapixels"):
        decode_image(_png_header_only(20000, 20000))
    with pytest.raises(ImageTooLargeError):
        decode_image(_png_header_only(9000, 9000))
    with pytest.raises(ImageTooLargeError):
        decode_image(_encode(Image.new("L", (300, 300)), "PNG"), max_pixels=10_000)


def test_tiny_image_refused():
    with pytest.raises(ImageTooSmallError, match="1 x 1"):
        decode_image(_encode(Image.new("L", (1, 1)), "PNG"))


def test_animated_gif_refused():
    frames = [Image.new("L", (64, 64), c) for c in (0, 128, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(MultiFrameError, match="3 frames"):
        decode_image(buf.getvalue())


def test_dicom_without_pixel_data(slice_u8):
    with pytest.raises(CorruptImageError, match="Pixel Data"):
        decode_image(dicom_bytes(slice_u8.astype(np.uint16), with_pixels=False))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        decode_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        decode_image(tmp_path)


# --- only documented exceptions, whatever the input -------------------------------------------------

_PREFIXES = [
    b"",
    b"\xff\xd8\xff\xe0",
    b"\x89PNG\r\n\x1a\n",
    b"II*\x00",
    b"GIF89a",
    b"BM",
    b"RIFF\0\0\0\0WEBP",
    b"\0" * 128 + b"DICM",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(_PREFIXES), body=st.binary(max_size=2048))
def test_random_bytes_raise_only_image_errors(prefix, body):
    try:
        out = decode_image(prefix + body)
    except ImageError:
        return
    assert out.dtype == np.float32 and 0.0 <= out.min() <= out.max() <= 1.0


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        dtype=st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64, np.bool_]),
        shape=array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=70),
    )
)
def test_random_arrays_raise_only_image_errors(arr):
    try:
        out = decode_image(arr)
    except ImageError:
        return
    assert out.dtype == np.float32 and out.ndim in (2, 3)
    assert np.isfinite(out).all() and 0.0 <= out.min() <= out.max() <= 1.0


# --- large images: reduced while they decode, within a memory budget ------------------------------


def _box(values: np.ndarray, factor: int) -> np.ndarray:
    """The box average the decoder must give for ``values`` (sides divisible by ``factor``), rescaled."""
    h, w = values.shape[:2]
    out = values.astype(np.float64).reshape(h // factor, factor, w // factor, factor, *values.shape[2:]).mean((1, 3))
    return ((out - out.min()) / (out.max() - out.min())).astype(np.float32)


@pytest.fixture(scope="module")
def large_u16() -> np.ndarray:
    """A 4608 x 3072 16-bit slice with detail at every scale (decoded at a third of its size)."""
    rng = np.random.default_rng(0)
    return (rng.random((3072, 4608)) * 65535).astype(np.uint16)


def test_large_images_are_box_reduced_alike_in_every_container(large_u16):
    """PNG, raw and compressed TIFF, and an array all give the same box reduction, at most MAX_SIDE a side."""
    from tumorlib.shrink import MAX_SIDE, factor_for

    factor = factor_for(large_u16.shape[1], large_u16.shape[0])
    assert factor == 3 and max(large_u16.shape) // factor <= MAX_SIDE
    expected = _box(large_u16, factor)
    sources = {
        "png": _encode(Image.fromarray(large_u16), "PNG", compress_level=1),
        "tiff": _tiff(large_u16),
        "tiff, zlib strips": _tiff(large_u16, compression="zlib", rowsperstrip=5),  # strips across block edges
        "array": large_u16,
    }
    for name, source in sources.items():
        out = decode_image(source)
        assert out.shape == expected.shape, name
        np.testing.assert_allclose(out, expected, atol=2e-5, err_msg=name)


def test_large_colour_with_alpha_is_composited_then_reduced():
    """RGBA over black, then averaged: the same as compositing the full image first."""
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (2100 * 2, 2050 * 2, 4), dtype=np.uint8)  # factor 3 (4200 / 2048)
    rgba = rgba[: 4200 - 4200 % 3, : 4100 - 4100 % 3]
    comp = rgba[..., :3].astype(np.float64) * (rgba[..., 3:] / 255.0)
    out = decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG", compress_level=1))
    np.testing.assert_allclose(out, _box(comp, 3), atol=2e-5)


def _tiff(pixels: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, pixels, **kw)
    return buf.getvalue()


def test_memory_budget_refuses_what_can_never_fit_and_queues_the_rest():
    """One reservation over the capacity is refused with a message; two that fit only in turn run in turn."""
    import threading
    import time

    from tumorlib.shrink import MemoryBudget, ServerBusyError

    budget = MemoryBudget(100, wait_seconds=5)
    with pytest.raises(ImageTooLargeError, match="would need about"), budget.reserve(101):
        pass
    held = []

    def hold(n: int) -> None:
        with budget.reserve(60):
            held.append(budget.in_use)
            time.sleep(0.2)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert held == [60, 60] and budget.in_use == 0  # never both at once
    impatient, errors = MemoryBudget(100, wait_seconds=0.1), []

    def wait() -> None:
        try:
            with impatient.reserve(60):
                pass
        except ServerBusyError as err:
            errors.append(str(err))

    with impatient.reserve(60):  # another thread's reservation waits 0.1 s for room, then gives up
        waiter = threading.Thread(target=wait)
        waiter.start()
        waiter.join()
    assert len(errors) == 1 and "busy" in errors[0]
