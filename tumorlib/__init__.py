"""tumorlib: the shared core of the brain-tumour MRI classifier.

The answer for one image: :class:`Classifier` (:mod:`tumorlib.inference`) over the one analysis
pipeline (:mod:`tumorlib.pipeline`: decode, forward pass, the not-an-MRI check of :mod:`tumorlib.gate`,
calibrated probabilities, the heatmap of :mod:`tumorlib.explain` or :mod:`tumorlib.localise`), its
words (:mod:`tumorlib.summary`), batches (:mod:`tumorlib.batch`), the models on offer
(:mod:`tumorlib.registry`). Around it: decoding (:mod:`tumorlib.decode`), datasets and splits
(:mod:`tumorlib.data`, :mod:`tumorlib.splits`), preprocessing and the model transform
(:mod:`tumorlib.preprocess`, :mod:`tumorlib.transforms`), model bundles (:mod:`tumorlib.bundle`),
metrics (:mod:`tumorlib.metrics`), and the one reader of results files (:mod:`tumorlib.results`).
No UI toolkit is imported here, and nothing touches the network on import.

Research software: not a medical device, not for diagnosis.
"""

import importlib
from typing import TYPE_CHECKING

# Names resolve on first use (PEP 562), so `import tumorlib.report` or `tumorlib.metrics` does not
# pull in torch and timm: the dashboard starts in a fraction of the time.
_EXPORTS = {
    "Bundle": "bundle",
    "create_model": "bundle",
    "load_bundle": "bundle",
    "save_bundle": "bundle",
    "CLASS_NAMES": "data",
    "Record": "data",
    "Sample": "data",
    "read_dataset": "data",
    "read_datasets": "data",
    "decode_image": "decode",
    "BundleError": "errors",
    "CorruptImageError": "errors",
    "DatasetError": "errors",
    "EmptyImageError": "errors",
    "ImageError": "errors",
    "ImageTooLargeError": "errors",
    "ImageTooSmallError": "errors",
    "MultiFrameError": "errors",
    "NoModelError": "errors",
    "NotBrainMRIError": "errors",
    "TumorlibError": "errors",
    "UnsupportedFormatError": "errors",
    "DEFAULT_MODEL_DIR": "inference",
    "Analysis": "pipeline",
    "Prediction": "pipeline",
    "Classifier": "inference",
    "AugmentConfig": "transforms",
    "DataConfig": "transforms",
    "create_transform": "transforms",
    "resolve_data_config": "transforms",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tumorlib' has no attribute {name!r}")


if TYPE_CHECKING:
    from .bundle import Bundle, create_model, load_bundle, save_bundle
    from .data import CLASS_NAMES, Record, Sample, read_dataset, read_datasets
    from .decode import decode_image
    from .errors import (
        BundleError,
        CorruptImageError,
        DatasetError,
        EmptyImageError,
        ImageError,
        ImageTooLargeError,
        ImageTooSmallError,
        MultiFrameError,
        NoModelError,
        NotBrainMRIError,
        TumorlibError,
        UnsupportedFormatError,
    )
    from .inference import DEFAULT_MODEL_DIR, Classifier
    from .pipeline import Analysis, Prediction
    from .transforms import AugmentConfig, DataConfig, create_transform, resolve_data_config

__version__ = "0.1.0"

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_MODEL_DIR",
    "Analysis",
    "AugmentConfig",
    "Bundle",
    "BundleError",
    "Classifier",
    "CorruptImageError",
    "DataConfig",
    "DatasetError",
    "EmptyImageError",
    "ImageError",
    "ImageTooLargeError",
    "ImageTooSmallError",
    "MultiFrameError",
    "NoModelError",
    "NotBrainMRIError",
    "Prediction",
    "Record",
    "Sample",
    "TumorlibError",
    "UnsupportedFormatError",
    "create_model",
    "create_transform",
    "decode_image",
    "load_bundle",
    "read_dataset",
    "read_datasets",
    "resolve_data_config",
    "save_bundle",
]
