"""A model loaded once and ready to classify: :class:`Classifier`, over :mod:`tumorlib.pipeline`."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from . import conformal, gate, localise, pipeline
from .bundle import Bundle, load_bundle
from .decode import ImageInput, decode_image
from .errors import BundleError, ImageError
from .pipeline import Analysis, Prediction
from .runtime import (
    STARTUP_VARIANTS,
    TOLERANCE,
    EagerEngine,
    Engine,
    Outputs,
    agrees,
    available_variants,
    make_engine,
    median_ms,
    native_bf16,
    time_calls,
    trim_heap,
)
from .transforms import MRITransform, create_transform

#: The model shipped with the project; ``TUMORLIB_MODEL`` (a folder or Hub repo id) overrides it in the apps.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parent.parent
#: Real slices shipped with the project: the agreement check (and int8 calibration) of :meth:`Classifier.optimise`.
REFERENCE_GLOBS = ("examples/*.jpg", "samples/figshare/images/*.jpg", "samples/class_folders/*/*.jpg")


def reference_images(limit: int = 48) -> list[Path]:
    """The project's real example and sample slices, where the project's files are present.

    Eight images let int8 through on the ResNet-50 (0.001 from fp32) where 32 others showed 0.016:
    the more real slices the agreement check sees, the fewer variants slip through it.
    """
    found = [p for pattern in REFERENCE_GLOBS for p in sorted(_ROOT.glob(pattern))]
    return found[:limit]


# A bf16 answer counts as the same as fp32's when the top class agrees and no probability moves more.
BF16_TOLERANCE = TOLERANCE


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Classifier:
    """A bundle loaded once, ready to classify images.

    ``variant`` is how the forward pass runs (see :mod:`tumorlib.runtime`): "fp32", "channels_last",
    "bf16", "compile", "onnx", "onnx-int8", or "auto": bf16 where the bundle's recorded check found
    it gives fp32's answers faster and this machine runs bf16 natively, otherwise fp32.
    :meth:`optimise` then measures what this machine offers and keeps the fastest variant that
    gives fp32's answers. Every engine's pass also returns the map the tumour-map head reads
    (:attr:`grid_stage`). Grad-CAM of an average-pool + linear head is computed from the pass's last map;
    Grad-CAM++ (and Grad-CAM of any other head) back-propagates through the eager float32 module,
    ``self.model``, which :meth:`release_eager` drops when another engine serves and which is then
    loaded again from the bundle on first use. ``engine`` (with ``feature_info``) serves a bundle read
    without its model (:func:`~tumorlib.bundle.read_bundle`): what
    :func:`tumorlib.registry.serve_recorded` builds from an export this machine made before.

    :meth:`predict` and :meth:`analyse` refuse an image that does not look like a brain MRI slice
    (:class:`~tumorlib.errors.NotBrainMRIError`) when the bundle carries gate statistics; ``check=False``
    skips that check. ``lock`` serialises use of the model across threads (one run already uses every core).
    """

    def __init__(
        self,
        bundle: Bundle,
        device: str | torch.device | None = None,
        variant: str = "auto",
        *,
        engine: Engine | None = None,
        feature_info: Sequence[dict] | None = None,
    ) -> None:
        self.bundle = bundle
        self.labels: list[str] = bundle.labels
        self.temperature = bundle.temperature
        #: The conformal thresholds of the prediction sets (None: the model carries none, no sets).
        self.conformal: conformal.Thresholds | None = conformal.from_bundle(bundle.section, self.labels)
        self.device = torch.device(device) if device is not None else default_device()
        self.transform: MRITransform = create_transform(bundle.data_config)
        self.size = (self.transform.height, self.transform.width)
        self.lock = threading.RLock()
        self.selection: dict | None = None
        if engine is not None:  # served from an export (see tumorlib.registry.serve_recorded): no eager model yet
            self.feature_info: list[dict] = [dict(f) for f in feature_info or []]
            self.engine: Engine = engine
            return
        bundle.model = bundle.model.to(self.device).eval()
        #: timm's per-stage channels and strides, kept apart from the module (which may be released).
        self.feature_info = [dict(f) for f in getattr(bundle.model, "feature_info", [])]
        if variant == "auto":
            check = bundle.section.get("inference") or {}
            ok = check.get("bf16_agrees") is True and check.get("bf16_faster", True) is True
            variant = "bf16" if ok and native_bf16(self.device) else "fp32"
        self.engine = make_engine(variant, self.model, self.device, self.size, grid_stage=self.grid_stage)

    @property
    def model(self) -> torch.nn.Module:
        """The eager float32 timm module (loaded again from the bundle if :meth:`release_eager` dropped it)."""
        if self.bundle.model is None:
            with self.lock:
                if self.bundle.model is None:
                    started = time.perf_counter()
                    self.bundle.model = load_bundle(self.bundle.path).model.to(self.device).eval()
                    log.info("Loaded the eager model again (for gradients) in %.1f s", time.perf_counter() - started)
        return self.bundle.model

    @property
    def grid_stage(self) -> int | None:
        """The stage whose map the forward pass returns: the localiser's when the bundle has one."""
        settings = self.bundle.section.get("localiser") or {}
        return int(settings["stage"]) if "stage" in settings else None

    def release_eager(self) -> bool:
        """Drop the eager module when another engine (ONNX Runtime) serves: one copy of the weights in
        memory. What the answer needs from it (the linear head for closed-form Grad-CAM) is kept.
        Returns whether it was dropped."""
        from .explain import head_of

        if isinstance(self.engine, EagerEngine) or self.bundle.model is None:
            return False
        with self.lock:
            head_of(self)
            self.bundle.model = None
        gc.collect()
        trim_heap()
        return True

    @property
    def variant(self) -> str:
        return self.engine.name

    @property
    def precision(self) -> str:
        """The arithmetic of the forward pass: fp32, bf16 or int8."""
        return self.engine.precision

    @classmethod
    def from_pretrained(
        cls, source: str | os.PathLike | None = None, device: str | None = None, variant: str = "auto"
    ) -> Classifier:
        """Load from a bundle folder or Hub repo id (default: the bundled model of a checkout)."""
        if source is None and not DEFAULT_MODEL_DIR.is_dir():
            # An installed package carries no weights: say what to pass instead of a bare missing path.
            raise BundleError(
                f"No model given, and the bundled default model is not here ({DEFAULT_MODEL_DIR} does not exist; "
                "an installed package ships no weights). Pass a bundle folder or a Hugging Face Hub model id, "
                "e.g. Classifier.from_pretrained('your-name/brain-mri-resnet50')."
            )
        return cls(load_bundle(source if source is not None else DEFAULT_MODEL_DIR), device, variant)

    def use(self, variant: str, calibration: torch.Tensor | None = None) -> None:
        """Switch the forward pass to ``variant`` (int8 needs ``calibration``: transformed real slices)."""
        self.engine = make_engine(variant, self.model, self.device, self.size, calibration, self.grid_stage)

    def preprocess(self, image: ImageInput) -> torch.Tensor:
        """Decode anything :func:`decode_image` accepts and apply the model's transform: (C, H, W)."""
        return self.transform(decode_image(image))

    def forward(self, batch: torch.Tensor) -> Outputs:
        """Raw (uncalibrated) logits, pooled features and last feature maps of a transformed batch,
        float32 on the CPU, from one forward pass."""
        return self.engine(batch)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw (uncalibrated) logits for a batch of transformed images, as float32 on the CPU."""
        return self.engine(batch)[0]

    def calibrate(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities from logits: softmax of logits / temperature."""
        return torch.softmax(logits / self.temperature, dim=1)

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities (softmax of logits / temperature) for a transformed batch."""
        return self.calibrate(self.logits(batch))

    def predict(self, image: ImageInput, check: bool = True) -> Prediction:
        """``{label: calibrated probability}`` in label order for one image (path, bytes, PIL, array).

        Raises :class:`~tumorlib.errors.NotBrainMRIError` when the not-an-MRI check refuses the image, and
        other :class:`~tumorlib.errors.ImageError` subclasses for unreadable input. The result's ``gate``
        is the check's verdict, or None with ``check_note`` saying why no check was made.
        """
        return pipeline.analyse(self, image, check=check, heatmap=False).probabilities

    def analyse(self, image: ImageInput, check: bool = True, heatmap: bool = True) -> Analysis:
        """The full answer (see :func:`tumorlib.pipeline.analyse`): probabilities, gate, heatmap, timings."""
        return pipeline.analyse(self, image, check=check, heatmap=heatmap)

    def predict_batch(
        self, images: Sequence[ImageInput], batch_size: int = 16, check: bool = True
    ) -> list[Prediction | ImageError]:
        """:meth:`predict` for many images, batched; an image that is unreadable or refused by the check
        gets its error in its place and the rest go on."""
        out: list[Prediction | ImageError] = []
        for start in range(0, len(images), batch_size):
            decoded: list = []
            for image in images[start : start + batch_size]:
                try:
                    decoded.append(decode_image(image))
                except ImageError as err:
                    decoded.append(err)
            ready = [i for i, d in enumerate(decoded) if not isinstance(d, ImageError)]
            answers = pipeline.classify_batch(self, [decoded[i] for i in ready], check)[0] if ready else []
            by_index = dict(zip(ready, answers, strict=True))
            out += [by_index.get(i, d) for i, d in enumerate(decoded)]
        return out

    def optimise(
        self,
        images: Sequence[ImageInput],
        candidates: Sequence[str] = STARTUP_VARIANTS,
        repeats: int = 5,
    ) -> dict:
        """Time each available variant on single images; keep the fastest that gives fp32's answers.

        fp32's answers: the same top class, every calibrated probability within ``TOLERANCE`` and, for a
        model with a not-an-MRI gate, every gate score within ``gate.SCORE_TOLERANCE``.

        ``images`` are real slices: they are both the agreement check and the int8 calibration set.
        Returns the measurements (also kept in ``self.selection``). A variant that fails to build is
        skipped with its error recorded, so this never leaves the classifier worse than fp32.
        """
        batch = torch.stack([self.preprocess(im) for im in images])
        one = batch[:1]
        results: dict[str, dict] = {}
        reference = gate_reference = map_reference = None
        best = None
        for variant in ["fp32"] + [v for v in available_variants(self.device, candidates) if v != "fp32"]:
            started = time.perf_counter()
            try:
                engine = make_engine(variant, self.model, self.device, self.size, batch, self.grid_stage)
                outputs = engine(batch)
                probs = self.calibrate(outputs[0])
                gate_scores = gate.batch_scores(self, outputs)
            except Exception as err:  # noqa: BLE001 - an optional runtime that fails must not stop the app
                log.warning("Variant %s unavailable: %s", variant, err)
                results[variant] = {"error": f"{type(err).__name__}: {err}"}
                continue
            setup = time.perf_counter() - started
            ms = median_ms(time_calls(lambda engine=engine: engine(one), repeats))
            if reference is None:
                reference = probs
            ok, diff = agrees(reference, probs)
            results[variant] = {"ms": ms, "agrees": ok, "max_abs_diff": diff, "setup_s": setup}
            if gate_scores is not None:
                # The same answers include the gate's: its thresholds hold for fp32's features only.
                gate_reference = gate_scores if gate_reference is None else gate_reference
                gate_diff = float(abs(gate_scores - gate_reference).max())
                ok = ok and gate_diff <= gate.SCORE_TOLERANCE
                results[variant].update(agrees=ok, gate_max_abs_diff=gate_diff)
            cells = localise.pass_cells(self, engine, outputs.grid)
            if cells is not None:  # and the tumour map's, drawn from the same pass
                map_reference = cells if map_reference is None else map_reference
                map_diff = float(abs(cells - map_reference).max())
                ok = ok and map_diff <= TOLERANCE
                results[variant].update(agrees=ok, map_max_abs_diff=map_diff)
            if ok and (best is None or ms < results[best[0]]["ms"]):
                best = (variant, engine)
        assert best is not None  # fp32 is its own reference
        self.engine = best[1]
        if best[0] in ("channels_last", "bf16"):
            self.model.to(memory_format=torch.channels_last)
        else:
            self.model.to(memory_format=torch.contiguous_format)
        self.selection = {"chosen": best[0], "n_images": len(images), "variants": results}
        return self.selection

    def _as_dict(self, probs: torch.Tensor) -> dict[str, float]:
        return {label: float(p) for label, p in zip(self.labels, probs.tolist(), strict=True)}


def check_bf16(bundle: Bundle, images: Sequence[ImageInput], repeats: int = 3) -> dict:
    """Compare bf16 autocast + channels_last with fp32 on ``images``: same answers, and faster?

    The result goes into the bundle's config (``tumorlib.inference``) when a model is exported, and
    :class:`Classifier` reads it for ``variant="auto"`` before (or without) :meth:`Classifier.optimise`.
    """
    fp32 = Classifier(bundle, device="cpu", variant="fp32")
    batch = torch.stack([fp32.preprocess(im) for im in images])
    p32 = fp32.probabilities(batch)
    t32 = _time_per_image(fp32.engine, batch, repeats)
    bf16 = make_engine("bf16", bundle.model, torch.device("cpu"), fp32.size)
    p16 = fp32.calibrate(bf16(batch)[0])
    t16 = _time_per_image(bf16, batch, repeats)
    bundle.model.to(memory_format=torch.contiguous_format)
    ok, diff = agrees(p32, p16, BF16_TOLERANCE)
    return {
        "bf16_agrees": ok,
        "max_abs_diff": diff,
        "same_top_class": bool((p32.argmax(1) == p16.argmax(1)).all()),
        "n_images": len(images),
        "fp32_ms_per_image": t32,
        "bf16_ms_per_image": t16,
        "bf16_faster": t16 < t32,
        "native_bf16": native_bf16(torch.device("cpu")),
    }


def _time_per_image(engine: Engine, batch: torch.Tensor, repeats: int) -> float:
    """Best over ``repeats`` of the mean single-image time over ``batch``, in ms."""

    def one_pass() -> None:
        for i in range(len(batch)):
            engine(batch[i : i + 1])

    return min(time_calls(one_pass, n=repeats, warmup=1)) * 1000 / len(batch)
