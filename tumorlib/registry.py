"""Which models an app offers, and each loaded once on first use.

Models are every bundle folder under ``models/`` (``models/default`` first), and the folder or Hugging
Face Hub repo id in ``TUMORLIB_MODEL``, which becomes the default when set. Nothing is loaded until a
model is first asked for.

The forward-pass variant is chosen when a bundle is shipped (:func:`record_forward_pass`, stored in its
config.json as ``forward_pass`` with the timings that decided it and the fp32 answers on a few real
slices). A start rebuilds that variant and rechecks it cheaply on those slices (:func:`prepare`); it
measures every variant again only where the record is missing, was made on another CPU, or fails.
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
import torch

from . import gate, pipeline
from .bundle import CONFIG_NAME, read_bundle, read_tensors, weights_digest
from .decode import decode_image
from .errors import NoModelError, TumorlibError, user_message
from .inference import DEFAULT_MODEL_DIR, Classifier, reference_images
from .runtime import (
    TOLERANCE,
    OnnxEngine,
    agrees,
    available_variants,
    bundle_export_key,
    machine_signature,
    recall_export,
    remember_export,
)

log = logging.getLogger(__name__)

#: The project's model folders: one bundle per subfolder.
MODELS_DIR = DEFAULT_MODEL_DIR.parent
#: A bundle folder or Hub repo id offered first (the default) when set.
MODEL_ENV = "TUMORLIB_MODEL"
#: The config.json section holding the shipped forward-pass decision.
FORWARD_PASS = "forward_pass"
#: Real slices a start rechecks the recorded variant on (one batch: well under a second).
RECHECK_IMAGES = 4
_ROOT = DEFAULT_MODEL_DIR.parent.parent

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
                source = self.specs[name].source
                clf = serve_recorded(source, self.device) if self.optimise else None
                clf = clf or Classifier.from_pretrained(source, device=self.device)
                log.info("Loaded model %s in %.1f s", name, time.perf_counter() - started)
                if self.optimise:
                    prepare(clf)
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


def prepare(clf: Classifier) -> None:
    """Serve with the bundle's recorded variant when it still gives the recorded answers here, else with
    the fastest measured now; then drop the eager module if another engine serves."""
    started = time.perf_counter()
    why = use_recorded(clf)
    if why is None:
        log.info("Forward pass: %s, as recorded at shipping (rechecked in %.1f s)", clf.variant,
                 time.perf_counter() - started)  # fmt: skip
    else:
        log.info("Forward pass measured at start: %s", why)
        choose_variant(clf)
    if isinstance(clf.engine, OnnxEngine) and clf.bundle.model is not None:
        remember(clf)
    if clf.release_eager():
        log.info("Serving with %s: the eager module is dropped (loaded again only for gradients)", clf.variant)


def _export_key(bundle) -> str | None:
    """The export cache's key for ``bundle`` (None when its config records no SHA-256 of its weights)."""
    from .transforms import resolve_data_config

    digest = weights_digest(bundle.config)
    if not digest:
        return None
    localiser = bundle.section.get("localiser") or {}
    stage = int(localiser["stage"]) if "stage" in localiser else None
    return bundle_export_key(digest, resolve_data_config(bundle.config).input_size[1:], stage)


def remember(clf: Classifier) -> None:
    """Note the ONNX export serving ``clf`` for the next start (see :func:`serve_recorded`): the stages'
    channels and strides, and where the weights keep a linear head (closed-form Grad-CAM reads it)."""
    from .explain import head_of

    key = _export_key(clf.bundle)
    if key is None:
        return
    head = None
    found = head_of(clf)
    name = (clf.bundle.config.get("pretrained_cfg") or {}).get("classifier")
    state = clf.model.state_dict()
    if found is not None and name and torch.equal(state.get(f"{name}.weight", torch.empty(0)).float(), found[0]):
        head = {"weight": f"{name}.weight", "bias": f"{name}.bias" if f"{name}.bias" in state else None}
    info = [{k: f[k] for k in ("num_chs", "reduction", "module") if k in f} for f in clf.feature_info]
    remember_export(key, clf.engine, {"feature_info": info, "head": head})


def serve_recorded(source: str | os.PathLike, device: str | None = None) -> Classifier | None:
    """``source`` served by the ONNX export its recorded forward pass chose, when this machine exported
    it before (:func:`remember`): the weights are verified but no eager model is built, so timm (and
    torchvision with it) is not even imported. None when that is not the case: load it the usual way.
    :func:`prepare` still rechecks the answers."""
    if device is not None and torch.device(device).type != "cpu":
        return None
    try:
        bundle = read_bundle(source)
    except TumorlibError:
        return None  # the usual load says what is wrong
    record = bundle.section.get(FORWARD_PASS) or {}
    if record.get("chosen") != "onnx" or record.get("machine") != machine_signature():
        return None
    key = _export_key(bundle)
    found = recall_export(key) if key else None
    if found is None or found.get("variant") != "onnx":
        return None
    started = time.perf_counter()
    try:
        engine = OnnxEngine(found["path"], "onnx", threads=torch.get_num_threads(), grid_stage=found.get("grid_stage"))
        clf = Classifier(bundle, "cpu", engine=engine, feature_info=found.get("feature_info"))
        head = found.get("head")
        if head:  # what explain.head_of would take from the module
            tensors = read_tensors(bundle, [n for n in (head["weight"], head["bias"]) if n])
            weight = tensors[head["weight"]]
            bias = tensors[head["bias"]] if head["bias"] else torch.zeros(weight.shape[0])
            clf.__dict__["_head"] = (weight, bias)
    except Exception as err:  # noqa: BLE001 - a damaged cache entry: the usual load rebuilds it
        log.warning("Could not serve %s from its cached export: %s", source, err)
        return None
    log.info("Serving %s from its cached ONNX export (no eager model) in %.1f s", source, time.perf_counter() - started)
    return clf


def use_recorded(clf: Classifier) -> str | None:
    """Switch ``clf`` to its bundle's recorded variant after a recheck; None on success, else why not
    (``clf`` is then left on its starting engine)."""
    record = clf.bundle.section.get(FORWARD_PASS)
    if not record or "chosen" not in record:
        return "the bundle records no choice"
    variant, recheck = record["chosen"], record.get("recheck") or {}
    if clf.device.type != "cpu" or record.get("machine") != machine_signature():
        return "the choice was recorded on another machine"
    if variant not in available_variants(clf.device, [variant]):
        return f"{variant} is not available here"
    paths = [_ROOT / p for p in recheck.get("images", [])]
    if not paths or not all(p.is_file() for p in paths):
        return "the recheck slices are missing"
    previous = clf.engine
    try:
        calibration = _calibration(clf) if variant == "onnx-int8" else None
        if variant != clf.variant:
            clf.use(variant, calibration)
        outputs = clf.forward(torch.stack([clf.preprocess(p) for p in paths]))
        ok, diff = agrees(torch.tensor(recheck["probabilities"]), clf.calibrate(outputs.logits), TOLERANCE)
        scores = gate.batch_scores(clf, outputs) if recheck.get("gate_scores") is not None else None
        if scores is not None:
            ok = ok and float(np.abs(scores - np.asarray(recheck["gate_scores"])).max()) <= gate.SCORE_TOLERANCE
    except Exception as err:  # noqa: BLE001 - an optional runtime that fails must not stop the app
        clf.engine = previous
        return f"{variant} failed: {type(err).__name__}: {err}"
    if not ok:
        clf.engine = previous
        return f"{variant} no longer gives the recorded answers (max difference {diff:.4f})"
    clf.selection = {"chosen": variant, "recorded": True, "recheck_max_abs_diff": diff, "n_images": len(paths)}
    return None


def _calibration(clf: Classifier) -> torch.Tensor:
    """The int8 calibration batch :func:`choose_variant` uses (the same slices, so the same cached export)."""
    return torch.stack([clf.preprocess(p) for p in reference_images()])


def record_forward_pass(clf: Classifier) -> dict:
    """Measure every start-up variant on the project's real slices and return what a bundle records as
    its ``forward_pass`` section: the choice, its evidence, the machine, and fp32's answers on
    :data:`RECHECK_IMAGES` slices for the start's recheck."""
    paths = reference_images()
    if not paths:
        raise NoModelError("No real slices (examples/, samples/) to measure the forward pass on.")
    probe = paths[:RECHECK_IMAGES]
    clf.use("fp32")
    outputs = clf.forward(torch.stack([clf.preprocess(p) for p in probe]))
    scores = gate.batch_scores(clf, outputs)
    selection = clf.optimise([decode_image(p) for p in paths])
    return {
        "chosen": selection["chosen"],
        "machine": machine_signature(),
        "n_images": selection["n_images"],
        "variants": selection["variants"],
        "recheck": {
            "images": [p.relative_to(_ROOT).as_posix() for p in probe],
            "probabilities": clf.calibrate(outputs.logits).tolist(),
            "gate_scores": None if scores is None else np.asarray(scores).tolist(),
        },
    }


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
