"""The not-an-MRI gate: refuse inputs unlike the slices the model was trained on, before naming a tumour.

Two measured statistics on the model's own pooled features (Lee et al. 2018, Mahalanobis OOD):
the distance to the nearest class mean in a whitened principal subspace, and the share of the
feature vector that subspace cannot explain (photos and drawings light up directions MRI slices
never use). Each has a threshold set on held-out MRI slices (a high quantile, so about 1% of real
slices would be refused at most); an input over either is refused. A cheap colour check runs first:
MRI slices carry no colour. Statistics live in the bundle's ``gate.safetensors``, settings in the
config's ``tumorlib.gate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .decode import ImageInput, decode_image
from .errors import TumorlibError

GATE_NAME = "gate"
#: Hasler & Süsstrunk colourfulness (0-255 scale) above which an image is a colour picture, not an MRI.
COLOURFULNESS_LIMIT = 20.0


class GateUnavailableError(TumorlibError, LookupError):
    """The model was exported without gate statistics, so it cannot say whether an input is an MRI."""


@dataclass
class GateResult:
    """Whether the input looks like a brain MRI slice of the kind the model knows, and why not."""

    is_mri: bool
    score: float  # the larger of the two statistics, each divided by its threshold: > 1 refuses
    threshold: float
    reason: str
    checks: dict = field(default_factory=dict)


def colourfulness(image: np.ndarray) -> float:
    """Hasler & Süsstrunk (2003) colourfulness on a 0-255 scale; 0 for greyscale."""
    if image.ndim == 2:
        return 0.0
    r, g, b = (image[..., i].astype(np.float64) * 255 for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


@torch.no_grad()
def pooled_features(model: torch.nn.Module, batch: torch.Tensor) -> np.ndarray:
    """The pre-logit pooled features (N, D) of a transformed batch, in float32."""
    return model.forward_head(model.forward_features(batch.float()), pre_logits=True).float().numpy()


def fit(features: np.ndarray, labels: Sequence[int], dims: int = 64) -> dict[str, torch.Tensor]:
    """Statistics of in-distribution features: mean, whitening projection, class means, shared precision."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = int(min(dims, len(s), max(len(x) - 1, 1)))
    scale = s[:k] / np.sqrt(max(len(x) - 1, 1))
    proj = vt[:k].T / np.maximum(scale, 1e-8)
    z = (x - mean) @ proj
    classes = np.unique(y)
    class_means = np.stack([z[y == c].mean(axis=0) for c in classes])
    within = z - class_means[np.searchsorted(classes, y)]
    cov = within.T @ within / max(len(z) - len(classes), 1)
    precision = np.linalg.inv(cov + 1e-3 * np.eye(k))
    return {
        "mean": torch.tensor(mean, dtype=torch.float32),
        "basis": torch.tensor(vt[:k].T, dtype=torch.float32),
        "proj": torch.tensor(proj, dtype=torch.float32),
        "class_means": torch.tensor(class_means, dtype=torch.float32),
        "precision": torch.tensor(precision, dtype=torch.float32),
    }


def statistics(stats: dict[str, torch.Tensor], features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Mahalanobis distance to the nearest class, unexplained share of the centred feature) per row."""
    x = np.asarray(features, dtype=np.float64) - stats["mean"].double().numpy()
    z = x @ stats["proj"].double().numpy()
    diff = z[:, None, :] - stats["class_means"].double().numpy()[None]
    d2 = np.einsum("nck,kl,ncl->nc", diff, stats["precision"].double().numpy(), diff)
    basis = stats["basis"].double().numpy()
    residual = x - (x @ basis) @ basis.T
    share = np.linalg.norm(residual, axis=1) / np.maximum(np.linalg.norm(x, axis=1), 1e-12)
    return np.sqrt(np.maximum(d2.min(axis=1), 0)), share


def thresholds(stats: dict[str, torch.Tensor], heldout_features: np.ndarray, quantile: float = 0.995) -> dict:
    """Thresholds at the ``quantile`` of held-out in-distribution slices, for the config's ``tumorlib.gate``."""
    dist, share = statistics(stats, heldout_features)
    return {
        "distance_threshold": float(np.quantile(dist, quantile)),
        "residual_threshold": float(np.quantile(share, quantile)),
        "quantile": quantile,
        "n_heldout": len(dist),
        "colourfulness_limit": COLOURFULNESS_LIMIT,
    }


def decide(settings: dict, distance: float, residual: float, colour: float) -> GateResult:
    """Apply the stored thresholds to one image's statistics."""
    dist_t, res_t = settings["distance_threshold"], settings["residual_threshold"]
    checks = {"distance": distance, "residual": residual, "colourfulness": colour}
    score = max(distance / dist_t, residual / res_t)
    if colour > settings.get("colourfulness_limit", COLOURFULNESS_LIMIT):
        reason = "This is a colour picture; MRI slices are greyscale. Please upload a brain MRI slice."
        return GateResult(False, score, 1.0, reason, checks)
    if score > 1.0:
        reason = (
            "This image does not look like the brain MRI slices the model was trained on "
            "(T1-weighted contrast-enhanced axial, coronal or sagittal slices), so no tumour class is given."
        )
        return GateResult(False, score, 1.0, reason, checks)
    return GateResult(True, score, 1.0, "Looks like a brain MRI slice of the kind the model was trained on.", checks)


def check(classifier, image: ImageInput, features: np.ndarray | None = None) -> GateResult:
    """Decide whether ``image`` may be classified by ``classifier`` (needs a bundle with gate statistics).

    ``features``: the pooled features of this image from the classifier's own forward pass
    (:meth:`Classifier.predict_with_features`), so the check costs no second pass.
    """
    from .bundle import load_extra

    settings = classifier.bundle.section.get("gate")
    cached = classifier.__dict__.get("_gate_stats")
    stats = cached if cached is not None else (load_extra(classifier.bundle, GATE_NAME) if settings else None)
    classifier.__dict__["_gate_stats"] = stats  # verified and read once per loaded model
    if stats is None:
        raise GateUnavailableError("This model has no not-an-MRI gate statistics (gate.safetensors).")
    decoded = decode_image(image)
    if features is None:
        features = pooled_features(classifier.bundle.model, classifier.transform(decoded)[None])
    dist, share = statistics(stats, np.asarray(features, dtype=np.float32).reshape(1, -1))
    return decide(settings, float(dist[0]), float(share[0]), colourfulness(decoded))


def has_gate(classifier) -> bool:
    return (
        bool(classifier.bundle.section.get("gate")) and (classifier.bundle.path / f"{GATE_NAME}.safetensors").is_file()
    )
