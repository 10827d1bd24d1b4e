"""The not-an-MRI test set: built here, never used to fit or tune the gate.

The photographs and drawings that ship inside scikit-image (those that need no download, without
``brain`` and ``shepp_logan_phantom``, which are head images), screenshots of rendered text, noise,
blank and gradient images. ``python -m tests.nonmri [MODEL_DIR]`` prints how many the gate refuses.
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


def refusal_rate(model_dir: str | None = None) -> tuple[float, int, list[str]]:
    from tumorlib import Classifier
    from tumorlib.errors import ImageError
    from tumorlib.gate import check

    clf = Classifier.from_pretrained(model_dir)
    accepted = []
    images = non_mri_images()
    for name, image in images.items():
        try:
            if check(clf, image).is_mri:
                accepted.append(name)
        except ImageError:
            pass  # refused by the decoder itself (too small, ...): refused all the same
    return 1 - len(accepted) / len(images), len(images), accepted


if __name__ == "__main__":
    rate, n, accepted = refusal_rate(sys.argv[1] if len(sys.argv) > 1 else None)
    print(f"refused {rate:.4f} of {n} non-MRI images; accepted: {accepted}")
