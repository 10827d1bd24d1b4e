"""The public Gradio app: upload a brain MRI slice, get its class, see why, read how good the model is.

A thin shell over :mod:`tumorlib`: the uploaded file itself goes to tumorlib's decoder (never a copy
Gradio converted to 8-bit RGB), one :meth:`tumorlib.Classifier.predict` classifies it, the trust layer
(:mod:`tumorlib.gate`, :mod:`tumorlib.explain`, :mod:`tumorlib.localise`, used when installed) refuses
non-MRI images and draws the heatmap, and :mod:`tumorlib.report` draws the Model tab from the bundle's
``metrics.json``.

Two heatmaps: a model whose bundle carries a tumour localiser (a head trained on tumour masks) shows its
tumour map by default, because that map is the one measured to find tumours; Grad-CAM of a class (where
the network looked) is one click away, and is the default for models without a localiser. The summary
says which one is shown and what the model's ``metrics.json`` measured it to do on held-out patients.

Models: every bundle folder under ``models/`` (``models/default`` first), and the folder or Hugging Face
Hub repo id in ``TUMORLIB_MODEL``, which becomes the default when set. Nothing is loaded on import;
``python app.py`` loads the default model once, then serves on ``GRADIO_SERVER_NAME``:``GRADIO_SERVER_PORT``.

API (see the README): ``/predict`` takes one image file and returns the ``gr.Label`` value, the heatmap
overlay (the tumour map, or Grad-CAM of the top class) and a Markdown summary; ``/batch`` takes files
(images, zips) and a model name and returns a table and a CSV. Any unreadable or refused input raises
``gr.Error`` with a message saying why.

Research demo: not a medical device, not for diagnosis. Uploads are not stored.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib
import importlib.util
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from gradio.utils import NamedString
from PIL import Image

from tumorlib import BundleError, Classifier, ImageError, TumorlibError, decode_image, report
from tumorlib.batch import BatchItem, BatchLimits, iter_batch, plan_batch
from tumorlib.bundle import CONFIG_NAME, WEIGHTS_NAME, resolve_bundle_dir
from tumorlib.decode import SUPPORTED_FORMATS, decode_bytes
from tumorlib.inference import reference_images
from tumorlib.modelcard import split_front_matter

log = logging.getLogger("tumorlib.app")

ROOT = Path(__file__).resolve().parent
MODELS_DIR = ROOT / "models"
EXAMPLES_DIR = ROOT / "examples"
MODEL_ENV = "TUMORLIB_MODEL"

#: What one batch may hold on a 2-core Space: images (zip members included), archive sizes and ratios.
BATCH_LIMITS = BatchLimits(max_files=100, max_total_bytes=256 * 2**20)
#: Gradio refuses larger uploads before they reach us (the decoder's own per-file limit is the same).
MAX_UPLOAD = "200mb"
#: Gradio deletes uploads and generated files from its cache when older than this, checked this often.
CACHE_SECONDS = 900
#: Model work runs at most this many requests at a time (one per core); the rest wait in the queue.
CONCURRENCY = 2
QUEUE_SIZE = 32
#: Images shown in the page are downscaled to this many pixels a side (the model sees the full image).
DISPLAY_SIDE = 640
DEFAULT_OPACITY = 0.5
#: Grad-CAM runs on (and a session keeps) a copy of the decoded image at most this many pixels a side.
WORKING_SIDE = 1024
#: The class selector's value for the tumour map (no class is called this: labels are plain identifiers).
TUMOUR_MAP = "__tumour_map__"
TUMOUR_MAP_CHOICE = ("Tumour map (localiser)", TUMOUR_MAP)

TITLE = "Brain tumour MRI classifier"
NOTICE = (
    "**Research demo: not a medical device, not for diagnosis.** It classifies a single 2-D MRI slice into "
    "one of a few tumour types it was trained on and can be confidently wrong. Never use it to make or "
    "rule out a diagnosis; talk to a doctor. **Uploads are not stored:** images are processed in memory, "
    "never logged or used for training, and Gradio's temporary copy is deleted within "
    f"{2 * CACHE_SECONDS // 60} minutes."
)
NO_MODEL_MESSAGE = (
    "No model is installed, so nothing can be classified yet. Put a model bundle folder (model.safetensors "
    f"and config.json) under {MODELS_DIR.name}/, or set {MODEL_ENV} to a bundle folder or a Hugging Face "
    "Hub model id, and restart the app."
)
UNEXPECTED_MESSAGE = (
    "Something went wrong while processing this file. The error has been logged on the server; "
    "please try another image."
)

#: One plain-language line per class, shown under the prediction.
CLASS_DESCRIPTIONS = {
    "glioma": "A tumour that grows from the glial cells, the cells that support the brain's nerve cells.",
    "meningioma": (
        "A tumour of the meninges, the membranes around the brain and spinal cord; most are slow-growing and benign."
    ),
    "pituitary": "A tumour of the pituitary gland at the base of the brain, most often a benign adenoma.",
    "no_tumor": (
        "The model found none of the tumour types it knows on this slice. That is not an all-clear: it "
        "only knows these few classes and sees one slice."
    ),
}

CSS = """
.notice {border-left: 6px solid #D55E00; background: rgba(213, 94, 0, 0.08); padding: 10px 14px;
         border-radius: 6px;}
.no-model {border-left: 6px solid #CC0000; background: rgba(204, 0, 0, 0.08); padding: 10px 14px;
           border-radius: 6px;}
.refusal {border-left: 6px solid #CC0000; padding: 4px 12px;}
"""


# --------------------------------------------------------------------------- errors


class NoModelError(TumorlibError):
    """No model is installed, or the requested one is not among those offered."""


class NotBrainMRIError(TumorlibError):
    """The gate judged the image not to be a brain MRI slice; carries the decoded image and the result."""

    def __init__(self, result: Any, image: np.ndarray | None = None) -> None:
        reason = str(getattr(result, "reason", "") or "the image does not look like a brain MRI slice.")
        super().__init__(f"Not a brain MRI: {reason}")
        self.result = result
        self.image = image


def user_message(err: BaseException) -> str:
    """The text a visitor sees for a tumorlib error: the library's own message, with a short lead-in."""
    if isinstance(err, (NotBrainMRIError, NoModelError)):
        return str(err)
    if isinstance(err, ImageError):
        text = f"Cannot read this file: {err}"
        if "zip archive" in str(err):
            text += " To classify several images, use the Batch tab."
        return text
    if isinstance(err, BundleError):
        return f"The model could not be loaded: {err}"
    return str(err)


def _gr_error(err: BaseException) -> gr.Error:
    return gr.Error(user_message(err), print_exception=False)


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSpec:
    """A model the app offers: the name in the selector, and a bundle folder or Hub repo id."""

    name: str
    source: str


def _unique(name: str, taken: Sequence[ModelSpec]) -> str:
    names = {spec.name for spec in taken}
    candidate, n = name, 2
    while candidate in names:
        candidate, n = f"{name} ({n})", n + 1
    return candidate


def _same_folder(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def discover_models(models_dir: str | os.PathLike = MODELS_DIR, env_model: str | None = None) -> list[ModelSpec]:
    """Every bundle folder (a subfolder with config.json) under ``models_dir``, ``default`` first.

    ``env_model`` (default: the ``TUMORLIB_MODEL`` variable), a folder or Hub repo id, goes in front and so
    becomes the default; a folder already found under ``models_dir`` is moved there rather than repeated.
    """
    env_model = (os.environ.get(MODEL_ENV, "") if env_model is None else env_model).strip()
    root = Path(models_dir)
    folders = [d for d in root.iterdir() if (d / CONFIG_NAME).is_file()] if root.is_dir() else []
    folders.sort(key=lambda d: (d.name != "default", d.name.lower()))
    specs = [ModelSpec(d.name, str(d)) for d in folders]
    if env_model:
        match = next((s for s in specs if _same_folder(s.source, env_model)), None)
        if match is not None:
            specs.remove(match)
        else:
            local = Path(env_model).expanduser()
            name = local.name if local.is_dir() else env_model.removeprefix("hf-hub:")
            match = ModelSpec(_unique(name or env_model, specs), env_model)
        specs.insert(0, match)
    return specs


def specs_from(sources: Sequence[str | os.PathLike]) -> list[ModelSpec]:
    """Model specs for explicit folders or repo ids (the first becomes the default)."""
    specs: list[ModelSpec] = []
    for source in sources:
        text = str(source)
        name = Path(text).name if Path(text).expanduser().is_dir() else text.removeprefix("hf-hub:")
        specs.append(ModelSpec(_unique(name or text, specs), text))
    return specs


class ModelRegistry:
    """The offered models, each loaded once on first use; one lock per model serialises its use.

    One model run at a time: on a 2-core machine a single run already uses both cores, parallel runs
    would only slow each other down, and a long batch yields the lock between images so single
    uploads are not stuck behind it.
    """

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        device: str | None = None,
        on_load: Callable[[Classifier], Any] | None = None,
    ) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.device = device
        self.on_load = on_load
        self._loaded: dict[str, Classifier] = {}
        self._load_lock = threading.Lock()
        self._locks = {name: threading.RLock() for name in self.specs}

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    @property
    def default(self) -> str | None:
        return next(iter(self.specs), None)

    def resolve(self, name: str | None) -> str:
        if not self.specs:
            raise NoModelError(NO_MODEL_MESSAGE)
        if not name:
            return self.default  # type: ignore[return-value]
        if name not in self.specs:
            raise NoModelError(f"Unknown model {name!r}; this app offers: {', '.join(self.specs)}.")
        return name

    def get(self, name: str | None = None) -> tuple[str, Classifier]:
        """``(name, classifier)``, loading it on first use; raises NoModelError or BundleError."""
        name = self.resolve(name)
        with self._load_lock:
            if name not in self._loaded:
                started = time.perf_counter()
                clf = Classifier.from_pretrained(self.specs[name].source, device=self.device)
                log.info("Loaded model %s in %.1f s", name, time.perf_counter() - started)
                if self.on_load is not None:
                    self.on_load(clf)
                self._loaded[name] = clf
            return name, self._loaded[name]

    def loaded(self, name: str) -> Classifier | None:
        return self._loaded.get(name)

    def lock(self, name: str) -> threading.RLock:
        return self._locks[name]


# --------------------------------------------------------------------------- the trust layer (optional)

AUTO = "auto"


def _optional_module(name: str) -> Any:
    """The module if it exists; None when it is absent or cannot be imported (logged)."""
    try:
        if importlib.util.find_spec(name) is None:
            return None
        return importlib.import_module(name)
    except ImportError:
        log.warning("%s is present but could not be imported; the app runs without it", name, exc_info=True)
        return None


# --------------------------------------------------------------------------- one image


@dataclass
class Analysis:
    """What classifying one image produced."""

    model: str
    labels: list[str]
    probabilities: dict[str, float]
    image: np.ndarray
    seconds: float
    gate: Any = None
    precision: str = "fp32"
    device: str = "cpu"
    maps: Any = None  # the last feature map of the classifying pass: Grad-CAM reuses it

    @property
    def top(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)


@dataclass
class Explained:
    """A heatmap (or why there is none) and how long it took.

    ``kind`` is "gradcam" (``explanation`` is a Grad-CAM :class:`tumorlib.explain.Explanation`) or "map"
    (a :class:`tumorlib.localise.Localisation`, the tumour map); both draw with ``overlay(opacity)``.
    """

    explanation: Any = None
    seconds: float = 0.0
    note: str = ""
    kind: str = "gradcam"


def _path_of(file: Any) -> Path | None:
    """The path of an upload as Gradio hands it over (a str, or an object with .path / .name)."""
    if file is None:
        return None
    if isinstance(file, (str, os.PathLike)):
        return Path(file)
    for attr in ("path", "name"):
        value = getattr(file, attr, None)
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
    if isinstance(file, dict) and isinstance(file.get("path"), str):
        return Path(file["path"])
    raise ImageError("The upload could not be read; please upload the file again.")


def _require_file(file: Any) -> Path:
    path = _path_of(file)
    if path is None:
        raise ImageError("No image was uploaded. Upload an MRI slice or pick one of the examples first.")
    if not path.exists():
        raise ImageError(
            "The uploaded file is no longer on the server (uploads are deleted after a while); please upload it again."
        )
    return path


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


def working_copy(image: np.ndarray, side: int = WORKING_SIDE) -> np.ndarray:
    """The decoded image at most ``side`` pixels a side, for Grad-CAM and the session state.

    The network sees a 224-ish pixel resize either way; this only bounds the memory a session holds
    (a 50-megapixel upload would otherwise keep 200 MB per heatmap).
    """
    height, width = image.shape[:2]
    if max(height, width) <= side:
        return image
    import cv2

    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


# --------------------------------------------------------------------------- the service behind the page


@dataclass
class ModelInfo:
    """What the Model tab shows for one model."""

    facts: str
    headline: pd.DataFrame | None = None
    per_class: pd.DataFrame | None = None
    paper: pd.DataFrame | None = None
    confusion: Any = None
    reliability: Any = None
    card: str = ""
    metrics_note: str = ""


_EMPTY_TABLE = pd.DataFrame()


@dataclass
class DemoService:
    """Everything the page does, as plain methods the tests call directly.

    ``explain`` / ``gate`` / ``localise`` are the :mod:`tumorlib.explain` / :mod:`tumorlib.gate` /
    :mod:`tumorlib.localise` modules (or objects with the same ``gradcam`` / ``check`` /
    ``has_localiser`` + ``localise`` functions); "auto" uses them when they are installed, None turns
    them off.
    """

    models: Sequence[ModelSpec]
    explain: Any = AUTO
    gate: Any = AUTO
    localise: Any = AUTO
    batch_limits: BatchLimits = BATCH_LIMITS
    device: str | None = None
    optimise: bool = False
    registry: ModelRegistry = field(init=False)
    _info: dict[str, ModelInfo] = field(init=False, default_factory=dict)
    _metrics: dict[str, dict | None] = field(init=False, default_factory=dict)
    _csv_dir: Path | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.registry = ModelRegistry(self.models, self.device, self._optimise if self.optimise else None)
        if self.explain == AUTO:
            self.explain = _optional_module("tumorlib.explain")
        if self.gate == AUTO:
            self.gate = _optional_module("tumorlib.gate")
        if self.localise == AUTO:
            self.localise = _optional_module("tumorlib.localise")

    # ----------------------------------------------------------------- start-up

    def _optimise(self, clf: Classifier) -> None:
        """Pick the fastest forward pass that gives fp32's answers on the example slices (at load)."""
        images = [decode_image(p) for p in reference_images()]
        if not images:
            return
        started = time.perf_counter()
        try:
            sel = clf.optimise(images)
        except TumorlibError as err:
            log.warning("Could not choose a faster forward pass: %s", user_message(err))
            return
        timings = ", ".join(
            f"{v} {r['ms']:.1f} ms{'' if r['agrees'] else ' (changes answers)'}"
            for v, r in sel["variants"].items()
            if "ms" in r
        )
        log.info("Forward pass: %s [%s] chosen in %.1f s", sel["chosen"], timings, time.perf_counter() - started)

    def preload(self) -> None:
        """Load the default model and run it once (kernels picked, caches warm); failures are logged."""
        if not self.registry.names:
            log.warning(NO_MODEL_MESSAGE)
            return
        try:
            name, clf = self.registry.get()
        except TumorlibError as err:
            log.error("The default model could not be loaded: %s", user_message(err))
            return
        example = next(iter(sorted(EXAMPLES_DIR.glob("*.jpg"))), None)
        try:
            image = decode_image(example) if example else np.zeros((256, 256), np.float32)
            self._classify(name, clf, image, time.perf_counter())
            started = time.perf_counter()
            self._explain(name, clf, image, None)
            done = f"Grad-CAM {(time.perf_counter() - started) * 1000:.0f} ms"
            if self.has_localiser(clf):
                mapped = self._localise(name, clf, image)
                done += f", tumour map {_ms(mapped.seconds)}" if mapped.explanation is not None else ", no tumour map"
            log.info("Warm-up done (%s)", done)
        except TumorlibError as err:
            log.warning("Warm-up on %s: %s", example, user_message(err))

    # ----------------------------------------------------------------- core

    def analyse(self, file: Any, model: str | None = None) -> Analysis:
        """Decode, check with the gate, classify. Raises TumorlibError subclasses with user messages."""
        path = _require_file(file)
        name, clf = self.registry.get(model)
        started = time.perf_counter()
        image = decode_image(path)
        return self._classify(name, clf, image, started)

    def _classify(self, name: str, clf: Classifier, image: np.ndarray, started: float) -> Analysis:
        with self.registry.lock(name):
            # One forward pass: the gate reads the pooled features of the classifying pass.
            probabilities, out = clf.predict_with_features(image)
            result = self._check_gate(clf, image, out)
            if result is not None and not bool(result.is_mri):
                raise NotBrainMRIError(result, image)
        return Analysis(
            model=name,
            labels=list(clf.labels),
            probabilities=probabilities,
            image=image,
            seconds=time.perf_counter() - started,
            gate=result,
            precision=clf.variant,
            device=str(clf.device),
            maps=out.maps,
        )

    def has_gate(self, clf: Classifier) -> bool:
        """Whether the gate is installed and this model carries its statistics."""
        if self.gate is None:
            return False
        check = getattr(self.gate, "has_gate", None)
        return bool(check(clf)) if callable(check) else True

    def _check_gate(self, clf: Classifier, image: np.ndarray, outputs: Any = None) -> Any:
        """The gate's verdict, or None when there is no gate for this model."""
        if not self.has_gate(clf):
            return None
        try:
            return self.gate.check(clf, image, outputs=outputs)
        except LookupError as err:  # the model has no usable gate statistics after all
            log.warning("Classifying without the not-an-MRI gate: %s", err)
            return None

    def _explain(
        self, name: str, clf: Classifier, image: np.ndarray, target: str | None, maps: Any = None
    ) -> Explained:
        if self.explain is None:
            return Explained(note="Grad-CAM is not installed in this version of the app.")
        started = time.perf_counter()
        extra = {"maps": maps} if maps is not None else {}
        try:
            with self.registry.lock(name):
                explanation = self.explain.gradcam(clf, image, target, **extra)
        except Exception:  # the heatmap is secondary: the prediction stands without it
            log.exception("Grad-CAM failed")
            return Explained(note="Grad-CAM could not be computed for this image.")
        return Explained(explanation, time.perf_counter() - started)

    def has_localiser(self, clf: Classifier) -> bool:
        """Whether the localiser is installed and this model's bundle carries a tumour-mask head."""
        if self.localise is None:
            return False
        try:
            return bool(self.localise.has_localiser(clf))
        except Exception:  # a malformed config must not stop classification
            log.exception("Could not tell whether the model has a tumour localiser")
            return False

    def _localise(self, name: str, clf: Classifier, image: np.ndarray) -> Explained:
        """The tumour map of ``image``, or a note saying why there is none (never raises)."""
        started = time.perf_counter()
        try:
            with self.registry.lock(name):
                located = self.localise.localise(clf, image)
        except Exception as err:  # the heatmap is secondary: the prediction stands without it
            if isinstance(err, BundleError):  # a damaged or unfitting localiser file: the same for every image
                log.error("The tumour map of model %s is unavailable: %s", name, err)
                return Explained(note="The tumour map could not be loaded for this model.", kind="map")
            log.exception("The tumour map failed")
            return Explained(note="The tumour map could not be drawn for this image.", kind="map")
        return Explained(located, time.perf_counter() - started, kind="map")

    def explanation(self, analysis: Analysis, target: str | None = None, image: np.ndarray | None = None) -> Explained:
        """The heatmap of ``analysis`` on ``image`` (default: the working copy of the analysed image).

        ``target``: a class (its Grad-CAM), :data:`TUMOUR_MAP`, or None for the default: the tumour map
        when the model has a localiser, else Grad-CAM of the predicted class. A tumour map that fails
        falls back to Grad-CAM of the predicted class, with a note saying so.
        """
        name, clf = self.registry.get(analysis.model)
        image = working_copy(analysis.image) if image is None else image
        if target == TUMOUR_MAP or (target is None and self.has_localiser(clf)):
            if self.has_localiser(clf):
                mapped = self._localise(name, clf, image)
                if mapped.explanation is not None:
                    return mapped
                note = mapped.note
            else:
                note = "This model has no tumour map."
            fallback = self._explain(name, clf, image, analysis.top, analysis.maps)
            instead = "Grad-CAM of the predicted class is shown instead." if fallback.explanation is not None else ""
            fallback.note = " ".join(x for x in (note, instead, fallback.note) if x)
            return fallback
        # The working copy is the analysed image scaled down: the classifying pass's maps still hold.
        return self._explain(name, clf, image, target or analysis.top, analysis.maps)

    def summary(self, analysis: Analysis, explained: Explained | None = None) -> str:
        """The Markdown under the label: class, description, uncertainty, timing, gate, and which heatmap
        is shown with what it was measured to do (from the model's metrics.json)."""
        probs = sorted(analysis.probabilities.items(), key=lambda kv: kv[1], reverse=True)
        (top, p_top), second = probs[0], (probs[1] if len(probs) > 1 else None)
        lines = [f"### {top.replace('_', ' ').capitalize()}: {_pct(p_top)}"]
        if top in CLASS_DESCRIPTIONS:
            lines.append(CLASS_DESCRIPTIONS[top])
        if second is not None and p_top - second[1] < 0.2:
            lines.append(
                f"**The model is unsure:** {second[0].replace('_', ' ')} is close behind at {_pct(second[1])}."
            )
        timing = f"classified in {_ms(analysis.seconds)}"
        shown = explained is not None and explained.explanation is not None
        if shown:
            what = "tumour map" if explained.kind == "map" else "Grad-CAM"
            timing += f", {what} in {_ms(explained.seconds)}"
        lines.append(
            f"<small>Model `{analysis.model}` ({analysis.precision} on {analysis.device}); {timing}. "
            f"{self._gate_line(analysis)}</small>"
        )
        if shown:
            lines.append(f"<small>{self._heatmap_line(analysis, explained)}</small>")
        if explained is not None and explained.note:
            lines.append(f"<small>{explained.note}</small>")
        return "\n\n".join(lines)

    def _heatmap_line(self, analysis: Analysis, explained: Explained) -> str:
        """Which heatmap is shown, what it is, and what the model's metrics.json measured it to do."""
        metrics = self.metrics_of(analysis.model) or {}
        if explained.kind == "map":
            scores = metrics.get("localiser") if isinstance(metrics.get("localiser"), dict) else {}
            peak = getattr(explained.explanation, "peak", None)
            head = "**Heatmap: tumour map**" + (f" (peak {float(peak):.2f})" if _number(peak) is not None else "")
            text = f"{head}: a head trained on tumour masks estimates the share of tumour under each pixel."
            measured = _pointing_line(scores)
            if measured:
                text += f" {measured}"
                on_tumour, none = _number(scores.get("peak")), _number((scores.get("no_tumor") or {}).get("peak"))
                if on_tumour is not None and none is not None:
                    text += (
                        f" Its peak averages {on_tumour:.2f} on slices with a tumour and {none:.2f} on slices"
                        " without one."
                    )
            else:
                text += " This model's metrics.json has no check of the map against tumour masks."
            return text + (
                " It shows where a tumour is likely, not why the class was chosen, and it is not a segmentation"
                " for clinical use."
            )
        scores = metrics.get("cam") if isinstance(metrics.get("cam"), dict) else {}
        target = str(getattr(explained.explanation, "target", None) or analysis.top).replace("_", " ")
        text = (
            f"**Heatmap: Grad-CAM of {target}**: the regions that pushed the network towards this class. "
            "It shows where the network looked, not where a tumour is."
        )
        measured = _pointing_line(scores)
        return f"{text} {measured}" if measured else text

    def metrics_of(self, name: str) -> dict | None:
        """The model's ``metrics.json`` (cached), or None when it has none or it cannot be read."""
        if name not in self._metrics:
            try:
                self._metrics[name] = _read_metrics(self._bundle_folder(name))[0]
            except (TumorlibError, OSError):
                self._metrics[name] = None
        return self._metrics[name]

    def _gate_line(self, analysis: Analysis) -> str:
        result = analysis.gate
        if self.gate is None:
            return "No brain-MRI check is installed: any image, MRI or not, gets one of the model's classes."
        if result is None:
            return "This model comes without a brain-MRI check: any image, MRI or not, gets one of its classes."
        try:
            score, limit = float(result.score), float(result.threshold)
        except (AttributeError, TypeError, ValueError):
            return "Brain-MRI check passed."
        return f"Brain-MRI check passed (score {score:.2f}, limit {limit:.2f})."

    # ----------------------------------------------------------------- the /predict endpoint

    def predict(self, file: Any) -> tuple[dict[str, float], Image.Image | None, str]:
        """The API: (probabilities by class, heatmap overlay or None, Markdown summary).

        The overlay is the tumour map when the model has a localiser, else Grad-CAM of the top class;
        the summary says which.

        Raises gr.Error with the reason for anything unreadable, refused or broken.
        """
        try:
            analysis = self.analyse(file)
            explained = self.explanation(analysis)
            overlay = explained.explanation.overlay(DEFAULT_OPACITY) if explained.explanation is not None else None
            return analysis.probabilities, to_display(overlay), self.summary(analysis, explained)
        except TumorlibError as err:
            raise _gr_error(err) from None
        except gr.Error:
            raise
        except Exception:  # a visitor gets a message, the log gets the traceback
            log.exception("Unexpected error in /predict")
            raise gr.Error(UNEXPECTED_MESSAGE) from None

    # ----------------------------------------------------------------- the page

    def predict_ui(self, file: Any, model: str | None, opacity: float = DEFAULT_OPACITY) -> tuple:
        """The page's classify step: like :meth:`predict`, but errors are shown in place of the result.

        Returns (label, summary, input view, overlay view, class selector, state).
        """
        if file is None:
            return None, "", None, None, gr.Radio(choices=[], value=None), None
        try:
            analysis = self.analyse(file, model)
        except NotBrainMRIError as err:
            return self._refusal(err, to_display(err.image))
        except TumorlibError as err:
            return self._refusal(err)
        except Exception as err:  # a visitor gets a message, the log gets the traceback
            log.exception("Unexpected error in the classify step")
            return self._refusal(err)
        work = working_copy(analysis.image)
        explained = self.explanation(analysis, image=work)
        overlay = None
        explanations: dict[str, Any] = {}
        if explained.explanation is not None:
            overlay = to_display(explained.explanation.overlay(float(opacity)))
            explanations[TUMOUR_MAP if explained.kind == "map" else analysis.top] = explained.explanation
        state = {"model": analysis.model, "image": work, "maps": analysis.maps, "explanations": explanations}
        choices = [(label.replace("_", " "), label) for label in analysis.labels]
        if TUMOUR_MAP in explanations:  # a map that failed is not offered: the note says why
            selector = gr.Radio(
                choices=[TUMOUR_MAP_CHOICE, *choices],
                value=TUMOUR_MAP,
                info="The tumour map shows where a tumour is likely; a class shows its Grad-CAM, where the "
                "network looked.",
            )
        else:
            selector = gr.Radio(
                choices=choices, value=analysis.top, info="Grad-CAM of a class: where the network looked."
            )
        return (
            analysis.probabilities,
            self.summary(analysis, explained),
            to_display(analysis.image),
            overlay,
            selector,
            state,
        )

    def _refusal(self, err: BaseException, view: Image.Image | None = None) -> tuple:
        text = user_message(err) if isinstance(err, TumorlibError) else UNEXPECTED_MESSAGE
        title = "Not a brain MRI" if isinstance(err, NotBrainMRIError) else "No result"
        card = f"### ⚠️ {title}\n\n{text}"
        if isinstance(err, NotBrainMRIError):
            card += "\n\nNo diagnosis is given for images that do not look like a brain MRI slice."
        return None, card, view, None, gr.Radio(choices=[], value=None), None

    def explain_ui(self, state: dict | None, target: str | None, opacity: float) -> tuple:
        """Redraw the overlay for another heatmap or opacity: ``target`` is a class (its Grad-CAM) or
        :data:`TUMOUR_MAP`; each is computed once per session state."""
        if not state or not target:
            return None, state
        explanations = state.setdefault("explanations", {})
        explanation = explanations.get(target)
        if explanation is None:
            if (self.localise if target == TUMOUR_MAP else self.explain) is None:
                return None, state
            try:
                name, clf = self.registry.get(state["model"])
            except TumorlibError as err:
                raise _gr_error(err) from None
            if target == TUMOUR_MAP:
                explained = self._localise(name, clf, state["image"])
                if explained.explanation is None:  # the prediction stands; the overlay is left empty
                    gr.Warning(explained.note)
                    return None, state
            else:
                explained = self._explain(name, clf, state["image"], target, state.get("maps"))
                if explained.explanation is None:
                    raise gr.Error(explained.note, print_exception=False)
            explanation = explanations[target] = explained.explanation
        return to_display(explanation.overlay(float(opacity))), state

    # ----------------------------------------------------------------- batch

    def run_batch(
        self, files: Sequence[Any] | None, model: str | None = None, progress: Callable | None = None
    ) -> pd.DataFrame:
        """One row per image (archives expanded): prediction and probabilities, or why there is none.

        An archive refused as a whole (zip bomb, path traversal, too many files) or a batch over the limits
        raises gr.Error before any work; one unreadable image only fills its own row.
        """
        try:
            paths = [p for p in (_path_of(f) for f in files or []) if p is not None]
            if not paths:
                raise ImageError("No files were uploaded. Upload images, or a zip of images, first.")
            total = plan_batch(paths, self.batch_limits)
            name, clf = self.registry.get(model)
        except TumorlibError as err:
            raise _gr_error(err) from None
        labels = list(clf.labels)
        rows = []
        try:
            for index, item in enumerate(iter_batch(paths, self.batch_limits)):
                if progress is not None:
                    progress((index, total), desc="Classifying")
                rows.append(self._batch_row(name, clf, item, labels))
        except TumorlibError as err:  # an archive that changed or broke after it was checked
            raise _gr_error(err) from None
        columns = ["file", "prediction", "confidence", *(f"p_{label}" for label in labels), "note"]
        return pd.DataFrame.from_records(rows, columns=columns)

    def _batch_row(self, name: str, clf: Classifier, item: BatchItem, labels: list[str]) -> dict:
        row: dict[str, Any] = {"file": item.name, "prediction": "", "confidence": math.nan, "note": ""}
        row.update({f"p_{label}": math.nan for label in labels})
        if item.error is not None:
            row["note"] = user_message(item.error)
            return row
        try:
            if item.path is not None:
                image = decode_image(item.path)
            else:
                image = decode_bytes(item.data or b"", name=Path(item.name).name)
            analysis = self._classify(name, clf, image, time.perf_counter())
        except TumorlibError as err:
            row["note"] = user_message(err)
            return row
        except Exception:  # one bad file must not sink the batch
            log.exception("Unexpected error on one batch file")
            row["note"] = UNEXPECTED_MESSAGE
            return row
        row["prediction"] = analysis.top
        row["confidence"] = analysis.probabilities[analysis.top]
        row.update({f"p_{label}": p for label, p in analysis.probabilities.items()})
        return row

    def write_csv(self, frame: pd.DataFrame) -> Path:
        """The table as a CSV in a private temp folder, deleted after CACHE_SECONDS (and at exit)."""
        folder = self._csv_folder()
        out = folder / uuid.uuid4().hex
        out.mkdir()
        path = out / "tumour_predictions.csv"
        safe = frame.copy()
        safe["file"] = safe["file"].map(_csv_safe)
        safe["note"] = safe["note"].map(_csv_safe)
        safe.to_csv(path, index=False, float_format="%.6f")
        # Gradio serves its own cached copy; ours goes after CACHE_SECONDS even if no later batch prunes it.
        timer = threading.Timer(CACHE_SECONDS, shutil.rmtree, args=(out,), kwargs={"ignore_errors": True})
        timer.daemon = True
        timer.start()
        return path

    def _csv_folder(self) -> Path:
        if self._csv_dir is None or not self._csv_dir.is_dir():
            self._csv_dir = Path(tempfile.mkdtemp(prefix="tumour-app-"))
            atexit.register(shutil.rmtree, self._csv_dir, ignore_errors=True)
        cutoff = time.time() - CACHE_SECONDS
        for old in self._csv_dir.iterdir():
            try:
                if old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        return self._csv_dir

    def batch_ui(self, files: Sequence[Any] | None, model: str | None, progress=gr.Progress()) -> tuple:  # noqa: B008
        """The Batch tab: (table, CSV file path, summary). Also the /batch endpoint."""

        def report_progress(done_total: tuple[int, int], desc: str) -> None:
            progress(done_total, desc=desc)

        frame = self.run_batch(files, model, progress=report_progress)
        path = self.write_csv(frame)
        ok = int((frame["prediction"] != "").sum())
        counts = frame.loc[frame["prediction"] != "", "prediction"].value_counts()
        text = f"**{ok} of {len(frame)} images classified**"
        if len(counts):
            text += " (" + ", ".join(f"{label}: {n}" for label, n in counts.items()) + ")"
        text += "."
        if ok < len(frame):
            text += f" {len(frame) - ok} could not be classified: see the note column."
        shown = frame.copy()
        prob_columns = [c for c in shown.columns if c == "confidence" or c.startswith("p_")]
        shown[prob_columns] = shown[prob_columns].round(4)
        return shown, str(path), text

    # ----------------------------------------------------------------- model tab

    def model_info(self, name: str | None) -> ModelInfo:
        """The Model tab's content for ``name`` (cached): facts, metrics tables and figures, the card."""
        try:
            name = self.registry.resolve(name)
        except TumorlibError as err:
            return ModelInfo(facts=f"**{user_message(err)}**")
        if name not in self._info:
            self._info[name] = self._build_info(name)
        return self._info[name]

    def _bundle_folder(self, name: str) -> Path:
        loaded = self.registry.loaded(name)
        if loaded is not None:
            return Path(loaded.bundle.path)
        return resolve_bundle_dir(self.registry.specs[name].source)

    def _build_info(self, name: str) -> ModelInfo:
        try:
            folder = self._bundle_folder(name)
            config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        except (TumorlibError, OSError, ValueError) as err:
            text = user_message(err) if isinstance(err, TumorlibError) else f"config.json unreadable ({err})"
            return ModelInfo(facts=f"**Model `{name}`: {text}**")
        card_front, card_body = {}, ""
        readme = folder / "README.md"
        if readme.is_file():
            try:
                front, card_body = split_front_matter(readme.read_text(encoding="utf-8"))
                card_front = front or {}
            except (OSError, ValueError, UnicodeDecodeError) as err:
                card_body = f"The model card could not be read ({err})."
        metrics, metrics_note = _read_metrics(folder)
        self._metrics.setdefault(name, metrics)
        facts = _facts(
            name,
            self.registry.specs[name].source,
            config,
            card_front,
            metrics,
            self.gate is not None,
            self.localise is not None,
        )
        info = ModelInfo(facts=facts)
        info.card, info.metrics_note = card_body.strip(), metrics_note
        if metrics is not None:
            cards = report.headline(metrics)
            info.headline = pd.DataFrame(
                [[c["label"], c["value"], c["ci"], c["help"]] for c in cards],
                columns=["Metric", "Value", "Interval", "What it means"],
            )
            info.per_class = report.per_class_table(metrics)
            info.paper = report.paper_table1(metrics)
            info.confusion = report.confusion_matrix_figure(metrics)
            info.reliability = report.reliability_figure(metrics) if metrics.get("reliability") else None
        return info

    def model_tab(self, name: str | None) -> tuple:
        """(facts, headline, per-class, paper table, confusion matrix, reliability, card, note) for the tab."""
        info = self.model_info(name)
        has = info.headline is not None
        return (
            info.facts,
            gr.Dataframe(value=info.headline if has else _EMPTY_TABLE, visible=has),
            gr.Dataframe(value=info.per_class if has else _EMPTY_TABLE, visible=has),
            gr.Dataframe(value=info.paper if has else _EMPTY_TABLE, visible=has),
            gr.Plot(value=info.confusion, visible=info.confusion is not None),
            gr.Plot(value=info.reliability, visible=info.reliability is not None),
            info.card or "No model card (README.md) came with this model.",
            info.metrics_note or report.PAPER_CAVEAT,
        )


def _read_metrics(folder: Path) -> tuple[dict | None, str]:
    """(the bundle's metrics.json or None, a note for the Model tab when there is none to show)."""
    if not (folder / "metrics.json").is_file():
        return None, (
            "This model comes without a metrics.json: it has not been evaluated here, so no performance "
            "figures are shown."
        )
    try:
        return report.load_metrics(folder / "metrics.json"), ""
    except TumorlibError as err:
        return None, f"The metrics file could not be read: {err}"


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (metrics files may hold nulls)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _pointing_line(scores: dict) -> str:
    """The pointing game of a heatmap against tumour masks, with the image centre's, from metrics.json."""
    hit = _number(scores.get("pointing_game"))
    if hit is None:
        return ""
    n = scores.get("n")
    where = f" of {n:,} slices" if isinstance(n, int) and not isinstance(n, bool) and n > 0 else " of slices"
    text = f"On held-out patients its peak falls inside the tumour on {_pct(hit)}{where}"
    centre = _number((scores.get("baseline") or {}).get("pointing_game"))
    if centre is not None:
        text += f" (a fixed point at the image centre: {_pct(centre)})"
    return text + "."


def _csv_safe(value: Any) -> Any:
    """Keep spreadsheet programs from running a cell as a formula (file names come from visitors)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _facts(
    name: str,
    source: str,
    config: dict,
    front: dict,
    metrics: dict | None,
    gate_installed: bool,
    localise_installed: bool = True,
) -> str:
    """Key facts of a model as a Markdown table."""
    section = config.get("tumorlib") or {}
    cfg = config.get("pretrained_cfg") or {}
    rows = [("Model", f"`{name}`"), ("Architecture", f"{config.get('architecture', '?')} (timm)")]
    labels = config.get("label_names") or []
    rows.append(("Classes", ", ".join(f"`{label}`" for label in labels) or "?"))
    size = cfg.get("input_size")
    if isinstance(size, list) and len(size) == 3:
        rows.append(("Input", f"{size[1]} × {size[2]} px, {size[0]} channels"))
    steps = [key.replace("_", " ") for key, value in (section.get("preprocess") or {}).items() if value is True]
    if steps:
        rows.append(("Preprocessing", ", ".join(steps)))
    temperature = section.get("temperature")
    if isinstance(temperature, (int, float)):
        rows.append(("Calibration", f"temperature scaling, T = {float(temperature):.3g}"))
    weights = (section.get("files") or {}).get(WEIGHTS_NAME) or {}
    if weights:
        nbytes = weights.get("bytes")
        mb = f"{nbytes / 2**20:.1f} MB" if isinstance(nbytes, (int, float)) else ""
        sha = f"SHA-256 `{str(weights.get('sha256', ''))[:12]}…`" if weights.get("sha256") else ""
        dtype = section.get("weights_dtype", "")
        rows.append(("Weights", ", ".join(x for x in (f"{dtype} safetensors".strip(), mb, sha) if x)))
    gate = section.get("gate")
    if isinstance(gate, dict) and gate:
        held, fitted_on = gate.get("n_heldout"), gate.get("thresholds_from")
        where = f" set on {held} slices" if held else ""
        if held and fitted_on:
            where += f" ({fitted_on})"
        refused = gate.get("mri_refused_crossfit")
        if isinstance(refused, (int, float)):
            where += f"; refuses {100 * refused:.1f}% of real MRI slices (cross-fitted)"
        rows.append(
            ("Not-an-MRI check", f"yes, thresholds{where}" + ("" if gate_installed else " (not installed here)"))
        )
    else:
        rows.append(("Not-an-MRI check", "none: any image gets one of the classes"))
    localiser = section.get("localiser")
    if isinstance(localiser, dict) and localiser:
        where = f" on stage {localiser['stage']}" if isinstance(localiser.get("stage"), int) else ""
        rows.append(
            (
                "Tumour map",
                f"yes, a head trained on tumour masks{where}" + ("" if localise_installed else " (not installed here)"),
            )
        )
    else:
        rows.append(("Tumour map", "none: the heatmap is Grad-CAM"))
    if front.get("license"):
        rows.append(("Licence", str(front["license"])))
    if metrics is not None:
        n, groups = metrics.get("n"), metrics.get("n_groups")
        what = f"{n} test slices" if n is not None else "a held-out test set"
        if groups is not None:
            what += f" from {groups} patients"
        rows.append(("Evaluated on", what))
    rows.append(("Source", f"`{source}`"))
    body = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return "| | |\n|---|---|\n" + body


# --------------------------------------------------------------------------- the page


def _examples() -> list[tuple[str, str]]:
    """(path, caption) of the committed example slices (named ``<class>_<source>.jpg``), class by class."""
    order = list(CLASS_DESCRIPTIONS)
    items = []
    for path in EXAMPLES_DIR.glob("*.jpg"):
        label = next((c for c in order if path.name.startswith(c + "_")), "")
        rank = order.index(label) if label else len(order)
        items.append((rank, path.name, str(path), label.replace("_", " ") or path.stem))
    return [(path, caption) for _, _, path, caption in sorted(items)]


def api_snippet(url: str = "http://127.0.0.1:7860/") -> str:
    return (
        "```python\n"
        "from gradio_client import Client, handle_file\n\n"
        f'client = Client("{url}")  # or the Space id, e.g. "owner/space-name"\n'
        'label, overlay, summary = client.predict(handle_file("slice.png"), api_name="/predict")\n'
        'print(label["label"])  # the predicted class\n'
        'print({c["label"]: c["confidence"] for c in label["confidences"]})  # every class\n'
        "```"
    )


ABOUT = f"""
### How it works
1. Your file is decoded by `tumorlib` itself ({SUPPORTED_FORMATS}; 16-bit PNG and DICOM keep their full
   range), never through an 8-bit browser copy.
2. A check judges whether the image looks like a brain MRI slice at all; if not, no class is given.
3. A convolutional network fine-tuned on public brain MRI slices gives a probability for each class.
   The probabilities are calibrated (temperature scaling on held-out data), so 80% means the model is right
   about 80% of the time on data like its test set, not on your scanner.
4. A heatmap over your image, one of two kinds (the summary says which is shown, and what it was measured
   to do on held-out patients of the model's own evaluation):
   - **Grad-CAM** of a class shows which regions pushed the network towards that class. It shows where the
     network looked, not where a tumour is: checked against tumour masks, its peak often misses the tumour.
   - The **tumour map**, for models that have one, is drawn by a small head trained on tumour masks, and
     checked against the masks of patients it never saw. It is shown by default because it is the one
     measured to find tumours; it estimates where a tumour is likely, not why a class was chosen, and it is
     not a segmentation for clinical use.

### Limits
Single 2-D slices only; a closed set of classes (anything else still gets one of them); trained and
evaluated on public data from a few hospitals. See the Model tab for the figures and the model card.

### Privacy
Uploads are not stored: they are processed in memory, not logged, not used for training, and Gradio's
temporary copies are deleted within {2 * CACHE_SECONDS // 60} minutes. There is no flagging.

### Use it from Python
{api_snippet()}

Errors (an unreadable file, an image that is not a brain MRI) raise an exception in the client with
the reason, never a label. `/batch` takes a list of files (images or zips) and a model name and returns
the results table and a CSV.
"""


def limit_heap_growth() -> None:
    """Keep a long-running server's memory flat (glibc only; elsewhere a no-op).

    Gradio answers from a pool of threads, and glibc gives each thread its own heap and raises its
    mmap threshold after large frees, so image-sized buffers (decoded uploads, feature maps, ONNX
    Runtime outputs) end up parked in many heaps. A fixed 1 MB threshold returns them to the OS at
    once; two heaps are plenty when one model run holds the lock at a time.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, 2)  # M_ARENA_MAX
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def upload_box(**kwargs: Any) -> gr.File:
    """``gr.File(type="filepath", ...)`` that hands the handler the uploaded file's cached path and nothing more.

    Gradio 6.31's ``File`` preprocessing opens a ``NamedTemporaryFile`` in the cache for every file
    only to overwrite the object's name, so each upload left an empty file behind (and an open
    descriptor until garbage collection): on a public server, files without end. The fix is on the
    instance: a ``gr.File`` subclass would make Gradio write an ``app.pyi`` stub beside this file.
    """
    box = gr.File(type="filepath", **kwargs)
    gradio_own = box._process_single_file

    def cached_path(f: Any) -> Any:
        return gradio_own(f) if box.file_types else NamedString(f.path)  # with file_types: Gradio's check

    box._process_single_file = cached_path
    return box


def build_demo(
    model_dirs: Sequence[str | os.PathLike] | None = None,
    *,
    explain: Any = AUTO,
    gate: Any = AUTO,
    preload: bool = False,
    service: DemoService | None = None,
) -> gr.Blocks:
    """The whole page. ``model_dirs``: folders or Hub ids to offer (default: :func:`discover_models`).

    Nothing is loaded unless ``preload`` (what ``python app.py`` does). The returned Blocks has its
    queue configured; start it with :func:`launch`.
    """
    limit_heap_growth()
    if service is None:
        specs = specs_from(model_dirs) if model_dirs is not None else discover_models()
        service = DemoService(specs, explain=explain, gate=gate, optimise=preload)
    if preload:
        service.preload()
    names = service.registry.names
    default = service.registry.default
    has_heatmap = service.explain is not None or service.localise is not None
    analytics = os.environ.get("GRADIO_ANALYTICS_ENABLED", "False").strip().lower() in ("1", "true", "yes")

    with gr.Blocks(
        title=f"{TITLE} (research demo)", analytics_enabled=analytics, delete_cache=(CACHE_SECONDS, CACHE_SECONDS)
    ) as demo:
        demo.service = service  # for tests and scripts
        gr.Markdown(f"# {TITLE}\nUpload one 2-D brain MRI slice to see which tumour type a neural network reads.")
        gr.Markdown(NOTICE, elem_classes="notice", elem_id="notice")
        if not names:
            gr.Markdown(f"### No model is installed\n\n{NO_MODEL_MESSAGE}", elem_classes="no-model", elem_id="no-model")
        model_dd = gr.Dropdown(
            choices=names,
            value=default,
            label="Model",
            info="The bundled models; the first is the default.",
            interactive=len(names) > 1,
            visible=bool(names),
        )
        # The session's decoded image and heatmaps (for redraws): dropped with the upload, not kept for the
        # life of the tab (Gradio keeps up to 10000 sessions).
        state = gr.State(None, time_to_live=2 * CACHE_SECONDS)

        with gr.Tabs():
            with gr.Tab("Classify", id="classify"):
                with gr.Row():
                    with gr.Column(scale=4):
                        file_in = upload_box(
                            label=f"MRI slice ({SUPPORTED_FORMATS.replace('GIF (one frame) or ', '')})",
                            file_count="single",
                            elem_id="upload",
                        )
                        with gr.Accordion("…or paste a copied image (Ctrl+V / ⌘V)", open=False):
                            # Only for pasting: the pasted PNG's path is handed to the upload box above, so
                            # it is decoded by tumorlib like any upload.
                            paste_in = gr.Image(
                                sources=["clipboard"],
                                type="filepath",
                                image_mode=None,
                                format="png",
                                show_label=False,
                                height=160,
                            )
                        classify_btn = gr.Button("Classify", variant="primary", elem_id="classify")
                        gallery = gr.Gallery(
                            value=_examples(),
                            label="Examples: click one (real slices of each class, see examples/README.md)",
                            columns=4,
                            height="auto",
                            allow_preview=False,
                            object_fit="cover",
                            interactive=False,
                            elem_id="examples",
                        )
                    with gr.Column(scale=5):
                        label_out = gr.Label(label="Prediction (calibrated probabilities)", elem_id="prediction")
                        summary_out = gr.Markdown(label="Summary", elem_id="summary")
                        with gr.Row(equal_height=True):
                            input_view = gr.Image(label="Your image, as decoded", interactive=False, type="pil")
                            # The tumour map or a class's Grad-CAM: the selector and the summary say which.
                            overlay_view = gr.Image(
                                label="Heatmap over your image",
                                interactive=False,
                                type="pil",
                                visible=has_heatmap,
                            )
                        with gr.Row(visible=has_heatmap):
                            target = gr.Radio(label="Heatmap", choices=[], value=None)
                            opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Heatmap opacity")
                api_btn = gr.Button(visible=False)

            with gr.Tab("Batch", id="batch"):
                gr.Markdown(
                    f"Classify several images at once: select multiple files, or a zip of images (at most "
                    f"{service.batch_limits.max_files} images, "
                    f"{service.batch_limits.max_total_bytes // 2**20} MB uncompressed). A file that cannot be "
                    "read gets a note in its row; the rest are still classified."
                )
                batch_in = upload_box(label="Images or zip archives", file_count="multiple")
                batch_btn = gr.Button("Classify all", variant="primary")
                batch_summary = gr.Markdown(label="Batch summary")
                batch_table = gr.Dataframe(label="Results", interactive=False, wrap=True)
                batch_csv = gr.File(label="Results as CSV", interactive=False)

            with gr.Tab("Model", id="model"):
                facts = gr.Markdown()
                metrics_note = gr.Markdown()
                headline = gr.Dataframe(label="Headline metrics (patient-level test split)", interactive=False)
                with gr.Row():
                    confusion = gr.Plot(label="Confusion matrix")
                    reliability = gr.Plot(label="Calibration")
                per_class = gr.Dataframe(label="Per class (one vs rest)", interactive=False)
                paper = gr.Dataframe(label="Compared with the reference paper", interactive=False)
                with gr.Accordion("Full model card", open=False):
                    card = gr.Markdown()

            with gr.Tab("About", id="about"):
                gr.Markdown(ABOUT)

        model_outputs = [facts, headline, per_class, paper, confusion, reliability, card, metrics_note]
        ui_outputs = [label_out, summary_out, input_view, overlay_view, target, state]

        # The page: errors appear in place of the result. API clients use /predict below instead.
        gr.on(
            [file_in.change, classify_btn.click],
            service.predict_ui,
            inputs=[file_in, model_dd, opacity],
            outputs=ui_outputs,
            api_visibility="private",
            concurrency_id="model",
            concurrency_limit=CONCURRENCY,
            trigger_mode="always_last",
        )
        model_dd.change(
            service.model_tab, inputs=model_dd, outputs=model_outputs, api_visibility="private", queue=False
        ).then(
            service.predict_ui,
            inputs=[file_in, model_dd, opacity],
            outputs=ui_outputs,
            api_visibility="private",
            concurrency_id="model",
            concurrency_limit=CONCURRENCY,
        )
        for event in (target.input, opacity.release):  # another heatmap or opacity redraws the overlay
            event(
                service.explain_ui,
                inputs=[state, target, opacity],
                outputs=[overlay_view, state],
                api_visibility="private",
                concurrency_id="model",
                concurrency_limit=CONCURRENCY,
                trigger_mode="always_last",
            )
        examples = [path for path, _ in _examples()]

        def pick_example(evt: gr.SelectData) -> str | None:
            index = evt.index if isinstance(evt.index, int) else -1
            return examples[index] if 0 <= index < len(examples) else None

        paste_in.change(lambda path: path, inputs=paste_in, outputs=file_in, api_visibility="private", queue=False)
        gallery.select(
            pick_example,
            inputs=None,
            outputs=file_in,
            api_visibility="private",
            queue=False,
        )
        api_btn.click(
            service.predict,
            inputs=file_in,
            outputs=[label_out, overlay_view, summary_out],
            api_name="predict",
            api_description="Classify one brain MRI slice: (gr.Label value, heatmap overlay or None, Markdown).",
            concurrency_id="model",
            concurrency_limit=CONCURRENCY,
        )
        batch_btn.click(
            service.batch_ui,
            inputs=[batch_in, model_dd],
            outputs=[batch_table, batch_csv, batch_summary],
            api_name="batch",
            api_description="Classify several images or zips of images: (table, CSV file, Markdown summary).",
            concurrency_id="batch",
            concurrency_limit=1,
        )
        demo.load(service.model_tab, inputs=model_dd, outputs=model_outputs, api_visibility="private", queue=False)
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def launch(demo: gr.Blocks, **kwargs: Any) -> Any:
    """Start the server with the app's settings; ``kwargs`` override them (host/port default to the
    GRADIO_SERVER_NAME / GRADIO_SERVER_PORT variables, as Gradio reads them)."""
    options: dict[str, Any] = {
        "max_file_size": MAX_UPLOAD,
        "allowed_paths": [str(EXAMPLES_DIR)],
        "css": CSS,
        "theme": gr.themes.Soft(primary_hue="blue"),
        "footer_links": ["api", "gradio"],
    }
    options.update(kwargs)
    return demo.launch(**options)


def main() -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    demo = build_demo(preload=True)
    log.info("Start-up (model load, warm-up, page) took %.1f s", time.perf_counter() - started)
    launch(demo)


if __name__ == "__main__":
    main()
