"""The not-an-MRI test sets, for the tests: built by :mod:`train.nonmri`, where shipping measures the gate on them.

``python -m tests.nonmri [MODEL_DIR]`` is ``python -m train.nonmri [MODEL_DIR]``.
"""

from __future__ import annotations

import sys

from train.nonmri import (
    HEAD_IMAGES,
    MEDICAL_FILES,
    SETS,
    medical_images,
    non_mri_images,
    refusal_rate,
    skimage_images,
    synthetic_images,
    text_screenshot,
)

__all__ = [
    "HEAD_IMAGES",
    "MEDICAL_FILES",
    "SETS",
    "medical_images",
    "non_mri_images",
    "refusal_rate",
    "skimage_images",
    "synthetic_images",
    "text_screenshot",
]

if __name__ == "__main__":
    from train.nonmri import main

    sys.exit(main(sys.argv[1:]))
