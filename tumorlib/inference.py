"""The one prediction path both apps, evaluation and the benchmarks use."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from .bundle import Bundle, load_bundle
from .decode import ImageInput, decode_image
from .transforms import MRITransform, create_transform

#: The model shipped with the project; ``TUMORLIB_MODEL`` (a folder or Hub repo id) overrides it in the apps.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"

# A bf16 answer counts as the same as fp32's when the top class agrees and no probability moves more.
BF16_TOLERANCE = 0.01


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively (AVX512-BF16/AMX on CPU, Ampere+ on GPU), i.e. faster, not emulated."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Classifier:
    """A bundle loaded once, ready to classify images.

    ``precision`` is "fp32", "bf16" (autocast + channels_last) or "auto": bf16 only where the
    bundle's recorded check found it gives the same answers as fp32 and was faster, and this
    machine runs bf16 natively; otherwise fp32.
    """

    def __init__(self, bundle: Bundle, device: str | torch.device | None = None, precision: str = "auto") -> None:
        self.bundle = bundle
        self.labels: list[str] = bundle.labels
        self.temperature = bundle.temperature
        self.device = torch.device(device) if device is not None else default_device()
        self.transform: MRITransform = create_transform(bundle.data_config)
        check = bundle.section.get("inference") or {}
        if precision == "auto":
            ok = check.get("bf16_agrees") is True and check.get("bf16_faster", True) is True
            precision = "bf16" if ok and native_bf16(self.device) else "fp32"
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
        self.precision = precision
        self.model = bundle.model.to(self.device).eval()
        if precision == "bf16":
            self.model = self.model.to(memory_format=torch.channels_last)

    @classmethod
    def from_pretrained(
        cls, source: str | os.PathLike | None = None, device: str | None = None, precision: str = "auto"
    ) -> Classifier:
        """Load from a bundle folder or Hub repo id (default: the bundled model)."""
        return cls(load_bundle(source if source is not None else DEFAULT_MODEL_DIR), device, precision)

    def preprocess(self, image: ImageInput) -> torch.Tensor:
        """Decode anything :func:`decode_image` accepts and apply the model's transform: (C, H, W)."""
        return self.transform(decode_image(image))

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw (uncalibrated) logits for a batch of transformed images, as float32 on the CPU."""
        batch = batch.to(self.device)
        autocast = nullcontext()
        if self.precision == "bf16":
            batch = batch.contiguous(memory_format=torch.channels_last)
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16)
        with torch.inference_mode(), autocast:
            return self.model(batch).float().cpu()

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities (softmax of logits / temperature) for a transformed batch."""
        return torch.softmax(self.logits(batch) / self.temperature, dim=1)

    def predict(self, image: ImageInput) -> dict[str, float]:
        """``{label: probability}`` in label order for one image (path, bytes, PIL, array)."""
        return self._as_dict(self.probabilities(self.preprocess(image)[None])[0])

    def predict_batch(self, images: Sequence[ImageInput], batch_size: int = 16) -> list[dict[str, float]]:
        """:meth:`predict` for many images, run in batches; raises on the first unreadable image."""
        out: list[dict[str, float]] = []
        for start in range(0, len(images), batch_size):
            batch = torch.stack([self.preprocess(im) for im in images[start : start + batch_size]])
            out += [self._as_dict(p) for p in self.probabilities(batch)]
        return out

    def _as_dict(self, probs: torch.Tensor) -> dict[str, float]:
        return {label: float(p) for label, p in zip(self.labels, probs.tolist(), strict=True)}


def check_bf16(bundle: Bundle, images: Sequence[ImageInput], repeats: int = 3) -> dict:
    """Compare bf16 autocast + channels_last with fp32 on ``images``: same answers, and faster?

    The result goes into the bundle's config (``tumorlib.inference``) when a model is exported, and
    :class:`Classifier` reads it to choose its precision.
    """
    fp32 = Classifier(bundle, device="cpu", precision="fp32")
    batch = torch.stack([fp32.preprocess(im) for im in images])
    p32 = fp32.probabilities(batch)
    t32 = _time_per_image(fp32, batch, repeats)
    bf16 = Classifier(bundle, device="cpu", precision="bf16")
    p16 = bf16.probabilities(batch)
    t16 = _time_per_image(bf16, batch, repeats)
    bundle.model.to(memory_format=torch.contiguous_format)
    diff = float((p32 - p16).abs().max())
    same_top = bool((p32.argmax(1) == p16.argmax(1)).all())
    return {
        "bf16_agrees": same_top and diff <= BF16_TOLERANCE,
        "max_abs_diff": diff,
        "same_top_class": same_top,
        "n_images": len(images),
        "fp32_ms_per_image": t32,
        "bf16_ms_per_image": t16,
        "bf16_faster": t16 < t32,
        "native_bf16": native_bf16(torch.device("cpu")),
    }


def _time_per_image(clf: Classifier, batch: torch.Tensor, repeats: int) -> float:
    clf.logits(batch[:1])  # warm-up: first calls pick kernels
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(len(batch)):
            clf.logits(batch[i : i + 1])
        best = min(best, (time.perf_counter() - start) / len(batch))
    return best * 1000
