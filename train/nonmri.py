"""The not-an-MRI image sets the gate is measured on, when a model ships and in the tests; never fitted on.

``non_mri_images``: the photographs and drawings that ship inside scikit-image (those that need no
download, without ``brain`` and ``shepp_logan_phantom``, which are head images), screenshots of
rendered text, noise, blank and gradient images. The gate's choice of stages was made looking at
these, so they flatter it. ``medical_images``: other medical images from pydicom's test files (CT of
the head and spine, a nuclear bone scan, abdominal MR, ultrasound), chosen after the gate was
designed and never used to tune it. ``python -m train.nonmri [MODEL_DIR]`` prints how many of each
the gate refuses. scikit-image comes with the training requirements, pydicom with the runtime ones.
"""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HEAD_IMAGES = {"brain", "shepp_logan_phantom"}


def skimage_images() -> dict[str, np.ndarray]:
    """Every 2-D or RGB image in skimage.data that loads offline."""
    from skimage import data

    images = {}
    for name in sorted(getattr(data, "__all__", dir(data))):
        if (
            name.startswith("_")
            or name in HEAD_IMAGES
            or name in ("download_all", "data_dir", "lbp_frontal_face_cascade_filename")
        ):
            continue
        fn = getattr(data, name, None)
        if not callable(fn):
            continue
        try:
            image = fn()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # noqa: BLE001 - needs a download; under pytest skimage raises Skipped for that
            continue
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or min(image.shape[:2]) < 32:
            continue
        if image.ndim == 3 and image.shape[2] not in (3, 4):
            continue
        images[name] = image
    return images


def text_screenshot(lines: list[str], size: tuple[int, int] = (480, 320), dark: bool = False) -> np.ndarray:
    im = Image.new("L", size, 0 if dark else 255)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=18)
    for i, line in enumerate(lines):
        draw.text((12, 12 + 26 * i), line, fill=255 if dark else 0, font=font)
    return np.asarray(im)


def synthetic_images(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    report = ["MRI report", "Patient: anonymous", "Findings: see attached", "Impression: none", "Signed"]
    code = ["def classify(x):", "    return model(x)", "", "for f in files:", "    print(classify(f))"]
    return {
        "text_report": text_screenshot(report),
        "text_code_dark": text_screenshot(code, dark=True),
        "noise_uniform": rng.random((256, 256)),
        "noise_gaussian_rgb": np.clip(rng.normal(0.5, 0.2, (256, 256, 3)), 0, 1),
        "blank_black": np.zeros((256, 256)),
        "blank_white": np.ones((256, 256)),
        "blank_grey": np.full((256, 256), 0.5),
        "gradient_horizontal": np.tile(np.linspace(0, 1, 256), (256, 1)),
        "gradient_radial": np.hypot(*np.meshgrid(np.linspace(-1, 1, 256), np.linspace(-1, 1, 256))),
    }


def non_mri_images() -> dict[str, np.ndarray]:
    return {**skimage_images(), **synthetic_images()}


#: pydicom's test files that hold one image of something other than a brain MRI. Left out: MR_small
#: (a 64 x 64 crop of a head MR), files without pixels, tiny ones (the decoder refuses those) and multi-frame
#: ones (series, not one image).
MEDICAL_FILES = {
    "693_J2KI.dcm": "CT, head (brain window)",
    "J2K_pixelrep_mismatch.dcm": "CT, head",
    "CT_small.dcm": "CT, spine",
    "JPEG2000.dcm": "nuclear medicine, whole-body bone scan",
    "examples_overlay.dcm": "MR, abdomen",
    "examples_palette.dcm": "ultrasound",
    "examples_rgb_color.dcm": "ultrasound, colour",
    "examples_jpeg2k.dcm": "ultrasound, colour Doppler",
    "ExplVR_BigEnd.dcm": "ultrasound, colour",
    "liver_1frame.dcm": "segmentation mask, liver",
    "image_dfl.dcm": "test pattern",
    "GDCMJ2K_TextGBR.dcm": "colour text",
    "SC_rgb_jpeg.dcm": "secondary capture, near blank",
}


def medical_images() -> dict[str, np.ndarray]:
    """Each of :data:`MEDICAL_FILES`, decoded as the app decodes an upload."""
    from pydicom.data import get_testdata_file

    from tumorlib import decode_image

    return {name: decode_image(get_testdata_file(name)) for name in MEDICAL_FILES}


SETS = {"non_mri_test": non_mri_images, "other_medical_test": medical_images}


def refusal_rate(
    model_dir: str | None = None, images: dict[str, np.ndarray] | None = None
) -> tuple[float, int, list[str]]:
    """(share refused, count, names accepted) of ``images`` (default: :func:`non_mri_images`)."""
    from tumorlib import Classifier
    from tumorlib.errors import ImageError
    from tumorlib.gate import check

    clf = Classifier.from_pretrained(model_dir)
    accepted = []
    images = non_mri_images() if images is None else images
    for name, image in images.items():
        try:
            if check(clf, image).is_mri:
                accepted.append(name)
        except ImageError:
            pass  # refused by the decoder itself (too small, ...): refused all the same
    return 1 - len(accepted) / len(images), len(images), accepted


def main(argv: list[str]) -> int:
    """Print the share of each set the gate of the model folder ``argv[0]`` (default: the bundled one) refuses."""
    for key, build in SETS.items():
        rate, n, accepted = refusal_rate(argv[0] if argv else None, build())
        print(f"{key}: refused {rate:.4f} of {n} images; accepted: {accepted}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
