"""Which models an app offers, and each loaded once on first use.

Models are every bundle folder under ``models/`` (``models/default`` first), and the folder or Hugging
Face Hub repo id in ``TUMORLIB_MODEL``, which becomes the default when set. Nothing is loaded until a
model is first asked for.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import pipeline
from .bundle import CONFIG_NAME
from .decode import decode_image
from .errors import NoModelError, TumorlibError, user_message
from .inference import DEFAULT_MODEL_DIR, Classifier, reference_images

log = logging.getLogger(__name__)

#: The project's model folders: one bundle per subfolder.
MODELS_DIR = DEFAULT_MODEL_DIR.parent
#: A bundle folder or Hub repo id offered first (the default) when set.
MODEL_ENV = "TUMORLIB_MODEL"

NO_MODEL_MESSAGE = (
    "No model is installed, so nothing can be classified yet. Put a model bundle folder (model.safetensors "
    f"and config.json) under {MODELS_DIR.name}/, or set {MODEL_ENV} to a bundle folder or a Hugging Face "
    "Hub model id, and restart the app."
)


@dataclass(frozen=True)
class ModelSpec:
    """A model on offer: the name shown for it, and a bundle folder or Hub repo id."""

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
    """The offered models, each loaded once on first use (each :class:`Classifier` has its own lock).

    One model run at a time per model: on a 2-core machine a single run already uses both cores, and a
    long batch takes the lock image by image, so single uploads are not stuck behind it.
    """

    def __init__(self, specs: Sequence[ModelSpec], device: str | None = None, optimise: bool = False) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.device = device
        self.optimise = optimise
        self._loaded: dict[str, Classifier] = {}
        self._load_lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    @property
    def default(self) -> str | None:
        return next(iter(self.specs), None)

    def resolve(self, name: str | None) -> str:
        """The offered model's name for ``name`` (None: the default); raises NoModelError."""
        if not self.specs:
            raise NoModelError(NO_MODEL_MESSAGE)
        if not name:
            return self.default  # type: ignore[return-value]
        if name not in self.specs:
            raise NoModelError(f"Unknown model {name!r}; on offer: {', '.join(self.specs)}.")
        return name

    def get(self, name: str | None = None) -> tuple[str, Classifier]:
        """``(name, classifier)``, loading it on first use; raises NoModelError or BundleError."""
        name = self.resolve(name)
        with self._load_lock:
            if name not in self._loaded:
                started = time.perf_counter()
                clf = Classifier.from_pretrained(self.specs[name].source, device=self.device)
                log.info("Loaded model %s in %.1f s", name, time.perf_counter() - started)
                if self.optimise:
                    choose_variant(clf)
                self._loaded[name] = clf
            return name, self._loaded[name]

    def loaded(self, name: str) -> Classifier | None:
        return self._loaded.get(name)

    def preload(self, example: Path | None = None) -> None:
        """Load the default model and run the whole answer once on ``example`` (kernels picked, caches warm);
        failures are logged, never raised: the page comes up and says what is wrong."""
        if not self.specs:
            log.warning(NO_MODEL_MESSAGE)
            return
        try:
            _, clf = self.get()
        except TumorlibError as err:
            log.error("The default model could not be loaded: %s", user_message(err))
            return
        try:
            analysis = pipeline.analyse(clf, example if example else np.zeros((256, 256), np.float32), check=False)
            grad = pipeline.gradcam(clf, analysis.working, analysis.top, analysis.maps)
            done = f"Grad-CAM {grad.seconds * 1000:.0f} ms"
            if analysis.heatmap is not None and analysis.heatmap.kind == "map":
                done += f", tumour map {analysis.heatmap.seconds * 1000:.0f} ms"
            log.info("Warm-up done (%s)", done)
        except TumorlibError as err:
            log.warning("Warm-up on %s: %s", example, user_message(err))


def choose_variant(clf: Classifier) -> None:
    """Switch ``clf`` to the fastest forward pass that gives fp32's answers on the project's real slices."""
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
