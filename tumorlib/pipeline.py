"""The one analysis pipeline: any input to the full answer.

decode -> one forward pass -> the not-an-MRI gate -> a refusal, or calibrated probabilities -> the
heatmap the model offers -> timings. The heatmap comes from the same pass: the tumour map from the
stage map it returns, Grad-CAM (average-pool + linear head) from its last map; only Grad-CAM++ and
Grad-CAM of other heads back-propagate through the eager model.

The apps (single uploads and batches), ``train.evaluate``, the benchmarks and library users
(:meth:`tumorlib.Classifier.predict`, :meth:`~tumorlib.Classifier.analyse`) all go through
:func:`analyse` and :func:`classify`, so the refusal is decided here and nowhere else.

The heatmap is secondary: when it fails the answer stands, with a note saying why there is none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from . import explain, gate, localise
from .decode import ImageInput, decode_image
from .errors import BundleError, NotBrainMRIError

if TYPE_CHECKING:
    from .inference import Classifier
    from .runtime import Outputs

log = logging.getLogger(__name__)

#: The heatmap target naming the tumour map (any other target is a class, whose Grad-CAM is drawn).
TUMOUR_MAP = "__tumour_map__"
#: Heatmaps are drawn on a copy at most this many pixels a side: the network sees a ~128-224 px resize
#: either way, and a 50-megapixel upload would otherwise hold 200 MB per heatmap.
WORKING_SIDE = 1024
#: Longest side of the copies shown to a person (the model saw the full image).
DISPLAY_SIDE = 640

NO_CHECK_NOTE = "This model comes without a brain-MRI check: any image, MRI or not, gets one of its classes."
UNCHECKED_NOTE = "The brain-MRI check was skipped on request: any image, MRI or not, gets one of the classes."


class Prediction(dict):
    """``{label: calibrated probability}`` in label order, plus what the not-an-MRI check said and the
    conformal prediction sets.

    ``gate`` is the check's :class:`~tumorlib.gate.GateResult`, or None when no check was made;
    ``check_note`` then says why (the model has no gate statistics, or ``check=False``). ``sets`` maps each
    coverage level to its prediction set, most probable class first (``{0.9: [...], 0.95: [...], 0.99:
    [...]}``, see :mod:`tumorlib.conformal`), or is None when the model carries no conformal thresholds.
    """

    def __init__(
        self,
        probabilities: dict[str, float],
        gate_result: Any = None,
        check_note: str = "",
        sets: dict[float, list[str]] | None = None,
    ) -> None:
        super().__init__(probabilities)
        self.gate = gate_result
        self.check_note = check_note
        self.sets = sets

    def prediction_set(self, level: float = 0.95) -> list[str] | None:
        """The classes the model cannot rule out at ``level`` (0.9, 0.95 or 0.99); None without thresholds
        (or for a level they were not fitted for)."""
        if not self.sets:
            return None
        found = [labels for stored, labels in self.sets.items() if abs(stored - level) < 1e-9]
        return list(found[0]) if found else None

    @property
    def label(self) -> str:
        """The most probable class."""
        return max(self, key=self.__getitem__)

    @property
    def confidence(self) -> float:
        return self[self.label]

    @property
    def checked(self) -> bool:
        """Whether the not-an-MRI check ran (and passed: a refusal raises instead)."""
        return self.gate is not None


@dataclass
class Heatmap:
    """A heatmap, or why there is none, and how long it took.

    ``kind`` is "gradcam" (``explanation`` is a :class:`tumorlib.explain.Explanation`) or "map" (a
    :class:`tumorlib.localise.Localisation`, the tumour map); both draw with ``overlay(opacity)``.
    """

    explanation: Any = None
    seconds: float = 0.0
    note: str = ""
    kind: str = "gradcam"

    @property
    def target(self) -> str | None:
        """:data:`TUMOUR_MAP` or the class whose Grad-CAM this is (None when there is no heatmap)."""
        if self.explanation is None:
            return None
        return TUMOUR_MAP if self.kind == "map" else str(self.explanation.target)


@dataclass
class Analysis:
    """The full answer for one image."""

    probabilities: Prediction
    labels: list[str]
    image: np.ndarray  # the decoded image, float32 in [0, 1]
    working: np.ndarray  # the same, at most WORKING_SIDE a side: what heatmaps are drawn on
    maps: Any = None  # the last feature map of the classifying pass: Grad-CAM reuses it
    grid: Any = None  # the same pass's map of the stage the tumour-map head reads
    heatmap: Heatmap | None = None
    precision: str = "fp32"
    device: str = "cpu"
    model: str = ""  # the name the app offers the model under
    timings: dict[str, float] = field(default_factory=dict)  # seconds: decode, forward, gate, heatmap

    @property
    def top(self) -> str:
        return self.probabilities.label

    @property
    def gate(self) -> Any:
        return self.probabilities.gate

    @property
    def seconds(self) -> float:
        """From the file to the calibrated answer (decode, forward pass and gate)."""
        return sum(self.timings.get(k, 0.0) for k in ("decode", "forward", "gate"))


def working_copy(image: np.ndarray, side: int = WORKING_SIDE) -> np.ndarray:
    """``image`` at most ``side`` pixels a side (INTER_AREA), for heatmaps and what a session holds."""
    height, width = image.shape[:2]
    if max(height, width) <= side:
        return image
    import cv2

    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)


def to_display(image: np.ndarray | Image.Image | None, side: int = DISPLAY_SIDE) -> Image.Image | None:
    """An 8-bit PIL copy for the page, at most ``side`` pixels a side (the model saw the full image)."""
    if image is None:
        return None
    if isinstance(image, np.ndarray):
        arr = np.clip(np.nan_to_num(image.astype(np.float32)), 0.0, 1.0)
        image = Image.fromarray((arr * 255.0 + 0.5).astype(np.uint8))
    image = image.copy()
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return image


def gate_verdict(clf: Classifier, image: np.ndarray, outputs: Outputs) -> Any:
    """The not-an-MRI check of ``image`` from its own forward pass, or None when the model has no gate."""
    if not gate.has_gate(clf):
        return None
    try:
        return gate.check(clf, image, outputs=outputs)
    except gate.GateUnavailableError as err:  # the statistics are unusable: classify, and say no check ran
        log.warning("Classifying without the not-an-MRI check: %s", err)
        return None


def decide(clf: Classifier, image: np.ndarray, outputs: Outputs, check: bool = True) -> Prediction:
    """Calibrated probabilities of one image's forward pass, with their prediction sets when the model
    carries conformal thresholds, after the not-an-MRI check when ``check``.

    Raises :class:`NotBrainMRIError` (with the gate's reason and the image) when the check refuses.
    """
    row = clf.calibrate(outputs.logits)[0].tolist()
    probs = dict(zip(clf.labels, row, strict=True))
    sets = clf.conformal.sets(row) if clf.conformal is not None else None  # thresholds read once, at load
    if not check:
        return Prediction(probs, None, UNCHECKED_NOTE, sets)
    verdict = gate_verdict(clf, image, outputs)
    if verdict is None:
        return Prediction(probs, None, NO_CHECK_NOTE, sets)
    if not verdict.is_mri:
        raise NotBrainMRIError(verdict, image)
    return Prediction(probs, verdict, sets=sets)


def classify(clf: Classifier, image: np.ndarray, check: bool = True) -> tuple[Prediction, Outputs, dict]:
    """One forward pass over a decoded image and the check: (prediction, the pass's outputs, timings)."""
    started = time.perf_counter()
    with clf.lock:
        outputs = clf.forward(clf.transform(image)[None])
        passed = time.perf_counter()
        prediction = decide(clf, image, outputs, check)
    done = time.perf_counter()
    return prediction, outputs, {"forward": passed - started, "gate": done - passed}


def classify_batch(
    clf: Classifier, images: Sequence[np.ndarray], check: bool = True
) -> tuple[list[Prediction | NotBrainMRIError], Outputs]:
    """One forward pass over decoded images and each one's check: (the answer, or the refusal, of each image;
    the pass's outputs). A refusal takes only its own place: the rest of the batch is answered."""
    with clf.lock:
        outputs = clf.forward(torch.stack([clf.transform(image) for image in images]))
        answers: list[Prediction | NotBrainMRIError] = []
        for row, image in enumerate(images):
            one = type(outputs)(*(t[row : row + 1] for t in outputs))
            try:
                answers.append(decide(clf, image, one, check))
            except NotBrainMRIError as err:
                answers.append(err)
    return answers, outputs


def analyse(
    clf: Classifier, image: ImageInput, *, check: bool = True, heatmap: bool = True, name: str = ""
) -> Analysis:
    """The full answer for any input :func:`~tumorlib.decode.decode_image` reads.

    ``check=False`` skips the not-an-MRI check; ``heatmap=False`` skips the heatmap (what
    :meth:`Classifier.predict` does). Raises :class:`~tumorlib.errors.ImageError` subclasses with a message
    for the user: unreadable input, or :class:`NotBrainMRIError` when the check refuses.
    """
    started = time.perf_counter()
    decoded = decode_image(image)
    timings = {"decode": time.perf_counter() - started}
    prediction, outputs, more = classify(clf, decoded, check)
    timings.update(more)
    analysis = Analysis(
        probabilities=prediction,
        labels=list(clf.labels),
        image=decoded,
        working=working_copy(decoded),
        maps=outputs.maps,
        grid=outputs.grid,
        precision=clf.variant,
        device=str(clf.device),
        model=name,
        timings=timings,
    )
    if heatmap:
        analysis.heatmap = default_heatmap(clf, analysis)
        analysis.timings["heatmap"] = analysis.heatmap.seconds
    return analysis


# --------------------------------------------------------------------------- heatmaps


def has_localiser(clf: Classifier) -> bool:
    """Whether the model's bundle carries a tumour-mask head (a malformed config counts as none)."""
    try:
        return bool(localise.has_localiser(clf))
    except Exception:  # a malformed config must not stop classification
        log.exception("Could not tell whether the model has a tumour localiser")
        return False


def gradcam(clf: Classifier, image: np.ndarray, target: str | None, maps: Any = None) -> Heatmap:
    """Grad-CAM of ``target`` (a class; None: the predicted one), or a note saying why there is none."""
    started = time.perf_counter()
    extra = {"maps": maps} if maps is not None else {}
    try:
        with clf.lock:
            explanation = explain.gradcam(clf, image, target, **extra)
    except Exception:  # the heatmap is secondary: the prediction stands without it
        log.exception("Grad-CAM failed")
        return Heatmap(note="Grad-CAM could not be computed for this image.")
    return Heatmap(explanation, time.perf_counter() - started)


def tumour_map(clf: Classifier, image: np.ndarray, grid: Any = None) -> Heatmap:
    """The tumour map of ``image`` (from ``grid``, the classifying pass's stage map, when given), or a note
    saying why there is none (never raises)."""
    started = time.perf_counter()
    try:
        with clf.lock:
            located = localise.localise(clf, image, grid)
    except Exception as err:  # the heatmap is secondary: the prediction stands without it
        if isinstance(err, BundleError):  # a damaged or unfitting localiser file: the same for every image
            log.error("The tumour map is unavailable: %s", err)
            return Heatmap(note="The tumour map could not be loaded for this model.", kind="map")
        log.exception("The tumour map failed")
        return Heatmap(note="The tumour map could not be drawn for this image.", kind="map")
    return Heatmap(located, time.perf_counter() - started, kind="map")


def heatmap_of(clf: Classifier, analysis: Analysis, target: str | None = None) -> Heatmap:
    """The heatmap of ``analysis`` for ``target``: a class (its Grad-CAM), :data:`TUMOUR_MAP`, or None.

    None is the model's default: its tumour map when it has a localiser (the heatmap measured to find
    tumours), else Grad-CAM of the predicted class. A tumour map that fails falls back to Grad-CAM of
    the predicted class, with a note saying so. Drawn on ``analysis.working``, where the classifying
    pass's feature map still holds (the network saw the same resize).
    """
    if target != TUMOUR_MAP and not (target is None and has_localiser(clf)):
        return gradcam(clf, analysis.working, target or analysis.top, analysis.maps)
    if has_localiser(clf):
        mapped = tumour_map(clf, analysis.working, analysis.grid)
        if mapped.explanation is not None:
            return mapped
        note = mapped.note
    else:
        note = "This model has no tumour map."
    fallback = gradcam(clf, analysis.working, analysis.top, analysis.maps)
    instead = "Grad-CAM of the predicted class is shown instead." if fallback.explanation is not None else ""
    fallback.note = " ".join(x for x in (note, instead, fallback.note) if x)
    return fallback


def default_heatmap(clf: Classifier, analysis: Analysis) -> Heatmap:
    """The heatmap a model shows first (see :func:`heatmap_of`)."""
    return heatmap_of(clf, analysis, None)
