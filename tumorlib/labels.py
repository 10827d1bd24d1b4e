"""The classes the project knows, the spellings datasets use for them, and what marks an image without a
patient id (no dependencies: any module may import it)."""

from __future__ import annotations

#: Every class the project knows, in the order models list them.
CLASS_NAMES: tuple[str, ...] = ("glioma", "meningioma", "pituitary", "no_tumor")

#: Folder and label names of public datasets (lower case, ``_`` for spaces and dashes) -> our class.
ALIASES = {
    "glioma": "glioma",
    "glioma_tumor": "glioma",
    "gliomas": "glioma",
    "meningioma": "meningioma",
    "meningioma_tumor": "meningioma",
    "meningiomas": "meningioma",
    "pituitary": "pituitary",
    "pituitary_tumor": "pituitary",
    "pituitary_tumour": "pituitary",
    "no_tumor": "no_tumor",
    "no_tumour": "no_tumor",
    "notumor": "no_tumor",
    "notumour": "no_tumor",
    "no": "no_tumor",
    "normal": "no_tumor",
    "healthy": "no_tumor",
}

#: Every spelling that means "no tumour".
NO_TUMOUR_LABELS = frozenset(name for name, label in ALIASES.items() if label == "no_tumor")

#: In a record's group, marks images grouped only with their near-duplicates (no patient id in the source).
NO_PATIENT_MARKER = "/dup:"


def has_patient_id(group: str) -> bool:
    """Whether a record's group is a real patient, not an image grouped only with its near-duplicates."""
    return NO_PATIENT_MARKER not in str(group)
