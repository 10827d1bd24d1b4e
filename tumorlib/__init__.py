"""tumorlib: the shared core of the brain-tumour MRI classifier.

Decoding (:mod:`tumorlib.decode`), dataset readers (:mod:`tumorlib.data`), patient-level splits
(:mod:`tumorlib.splits`), the paper's preprocessing and the model transform
(:mod:`tumorlib.preprocess`, :mod:`tumorlib.transforms`), model bundles (:mod:`tumorlib.bundle`),
inference (:mod:`tumorlib.inference`), metrics (:mod:`tumorlib.metrics`) and report figures
(:mod:`tumorlib.report`). No UI toolkit is imported here, and nothing touches the network on import.

Research software: not a medical device, not for diagnosis.
"""

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
    TumorlibError,
    UnsupportedFormatError,
)
from .inference import DEFAULT_MODEL_DIR, Classifier
from .transforms import AugmentConfig, DataConfig, create_transform, resolve_data_config

__version__ = "0.1.0"

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_MODEL_DIR",
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
