"""The not-an-MRI gate: refuse inputs unlike the slices the model was trained on, before naming a tumour.

Measured statistics on the model's own features (Lee et al. 2018, Mahalanobis OOD, on several
layers): for the pooled outputs of the last three stages, the distance to the nearest class mean in
a whitened principal subspace, and the share of the feature vector that subspace cannot explain
(photos and drawings light up directions MRI slices never use). Earlier stages see texture and
contrast that the last one has learnt to ignore, which is what lets a star field or a photograph in
greyscale through a last-layer-only gate. Each statistic is scaled by its high quantile on held-out
MRI slices; the largest scaled statistic is the score, and its own held-out quantile is the
threshold (about 1% of real slices refused). Two cheap checks run first: a blank image, and colour
(MRI slices carry none). Statistics live in the bundle's ``gate.safetensors``, settings in the
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
#: How far a faster forward pass may move a real slice's gate score from fp32's and still count as the same
#: gate (measured on the 48 reference slices: bf16 0.006 on the ResNet-50; int8 0.22, and bf16 0.54 on the
#: MobileNetV2, each flipping verdicts).
SCORE_TOLERANCE = 0.05
#: Hasler & Süsstrunk colourfulness (0-255 scale) above which an image is a colour picture, not an MRI.
COLOURFULNESS_LIMIT = 20.0
#: Standard deviation of the decoded image (0-1 scale) below which it is blank: one flat shade.
BLANK_LIMIT = 0.01
METHOD = "multi-stage mahalanobis+residual"
#: Scores are scaled so that the threshold is 1: above it the image is refused.
REFUSE_ABOVE = 1.0
STATISTICS = ("distance", "residual")


class GateUnavailableError(TumorlibError, LookupError):
    """The model was exported without gate statistics, so it cannot say whether an input is an MRI."""


@dataclass
class GateResult:
    """Whether the input looks like a brain MRI slice of the kind the model knows, and why not."""

    is_mri: bool
    score: float  # the largest scaled statistic divided by the threshold: see refuses()
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


def gate_input(outputs) -> np.ndarray:
    """The gate's input (N, S + D) from one forward pass's :class:`~tumorlib.runtime.Outputs`: the
    pooled early stages, then the pre-logit features."""
    return torch.cat([outputs.stages.float(), outputs.features.float()], dim=1).numpy()


@torch.no_grad()
def model_input(model: torch.nn.Module, batch: torch.Tensor) -> tuple[np.ndarray, list[int]]:
    """:func:`gate_input` of a transformed batch through the eager model, and the width of each stage."""
    from .runtime import Heads, Outputs

    heads = Heads(model).eval()
    out = Outputs(*heads(batch.float()))
    return gate_input(out), [*heads.stage_widths(), int(out.features.shape[1])]


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


def _blocks(x: np.ndarray, widths: Sequence[int]) -> list[np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != sum(widths):
        raise ValueError(f"gate input of shape {x.shape} does not match stage widths {list(widths)}")
    return np.split(x, np.cumsum(widths)[:-1], axis=1)


def fit_stages(x: np.ndarray, labels: Sequence[int], widths: Sequence[int], dims: int = 64) -> dict[str, torch.Tensor]:
    """:func:`fit` on each stage's block of the gate input; keys ``"<stage>.<name>"``. A subspace keeps at most
    half of its stage's dimensions: one spanning a narrow stage whole would leave a residual of rounding noise."""
    return {
        f"{i}.{k}": v
        for i, block in enumerate(_blocks(x, widths))
        for k, v in fit(block, labels, min(dims, max(1, block.shape[1] // 2))).items()
    }


def stage_statistics(stats: dict[str, torch.Tensor], x: np.ndarray, widths: Sequence[int]) -> np.ndarray:
    """Every statistic of every stage, (N, 2 x stages): distance then residual, stage by stage."""
    columns = []
    for i, block in enumerate(_blocks(x, widths)):
        columns += statistics({k.split(".", 1)[1]: v for k, v in stats.items() if k.startswith(f"{i}.")}, block)
    return np.stack(columns, axis=1)


def thresholds(
    heldout: np.ndarray, widths: Sequence[int], quantile: float = 0.99, scale_quantile: float = 0.995
) -> dict:
    """Settings for the config's ``tumorlib.gate`` from the :func:`stage_statistics` of held-out MRI slices:
    each statistic's ``scale_quantile`` as its scale, the ``quantile`` of the largest scaled one as the threshold."""
    heldout = np.asarray(heldout, dtype=np.float64)
    scales = np.quantile(heldout, scale_quantile, axis=0)
    threshold = float(np.quantile((heldout / scales).max(axis=1), quantile))
    return {
        "method": METHOD,
        "stage_widths": [int(w) for w in widths],
        "scales": [float(v) for v in scales],
        "threshold": threshold,
        "quantile": quantile,
        "scale_quantile": scale_quantile,
        "n_heldout": len(heldout),
        "colourfulness_limit": COLOURFULNESS_LIMIT,
        "blank_limit": BLANK_LIMIT,
    }


def scores(settings: dict, values: np.ndarray) -> np.ndarray:
    """The gate score of each row of :func:`stage_statistics`: over 1 refuses."""
    return (np.atleast_2d(values) / np.asarray(settings["scales"])).max(axis=1) / settings["threshold"]


def refuses(score):
    """Whether a gate score (or an array of them) refuses: the one place the rule is written."""
    return np.asarray(score) > REFUSE_ABOVE


def decide(settings: dict, values: np.ndarray, colour: float = 0.0, contrast: float = 1.0) -> GateResult:
    """Apply the stored settings to one image's statistics, colourfulness and contrast (std, 0-1)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    names = [f"stage{i}_{s}" for i in range(len(values) // 2) for s in STATISTICS]
    checks = {**dict(zip(names, map(float, values), strict=True)), "colourfulness": colour, "contrast": contrast}
    score = float(scores(settings, values)[0])
    if contrast < settings.get("blank_limit", BLANK_LIMIT):
        reason = "This image is blank (one flat shade): there is nothing to classify. Please upload a brain MRI slice."
        return GateResult(False, score, REFUSE_ABOVE, reason, checks)
    if colour > settings.get("colourfulness_limit", COLOURFULNESS_LIMIT):
        reason = "This is a colour picture; MRI slices are greyscale. Please upload a brain MRI slice."
        return GateResult(False, score, REFUSE_ABOVE, reason, checks)
    if refuses(score):
        reason = (
            "This image does not look like the brain MRI slices the model was trained on "
            "(T1-weighted contrast-enhanced axial, coronal or sagittal slices), so no tumour class is given."
        )
        return GateResult(False, score, REFUSE_ABOVE, reason, checks)
    return GateResult(
        True, score, REFUSE_ABOVE, "Looks like a brain MRI slice of the kind the model was trained on.", checks
    )


def current_settings(settings: dict | None) -> dict | None:
    """A bundle's gate settings, or an error saying how to refit them when they are of an older kind."""
    if settings and settings.get("method") != METHOD:
        raise GateUnavailableError(
            f"This model's gate statistics are of an older kind ({settings.get('method')!r}); "
            "refit them with `python -m train.gate`."
        )
    return settings


def _loaded(classifier) -> tuple[dict, dict[str, torch.Tensor]]:
    """The classifier's gate settings and statistics (read and verified once per loaded model)."""
    from .bundle import load_extra

    settings = current_settings(classifier.bundle.section.get("gate"))
    cached = classifier.__dict__.get("_gate_stats")
    stats = cached if cached is not None else (load_extra(classifier.bundle, GATE_NAME) if settings else None)
    classifier.__dict__["_gate_stats"] = stats
    if stats is None:
        raise GateUnavailableError("This model has no not-an-MRI gate statistics (gate.safetensors).")
    return settings, stats


def input_scores(classifier, x: np.ndarray) -> np.ndarray:
    """Gate scores (over 1 refuses) of rows of :func:`gate_input`; raises GateUnavailableError without a gate."""
    settings, stats = _loaded(classifier)
    return scores(settings, stage_statistics(stats, x, settings["stage_widths"]))


def batch_scores(classifier, outputs) -> np.ndarray | None:
    """Gate scores of a batch's :class:`~tumorlib.runtime.Outputs`; None for a model without a current gate.

    :meth:`Classifier.optimise` compares these across forward-pass variants: the thresholds were set on
    float32 features, and int8 (or bf16 on some models) can move a score by 0.2-0.8 with the
    probabilities still within tolerance, refusing real slices.
    """
    try:
        return input_scores(classifier, gate_input(outputs))
    except GateUnavailableError:
        return None


def check(classifier, image: ImageInput, outputs=None) -> GateResult:
    """Decide whether ``image`` may be classified by ``classifier`` (needs a bundle with gate statistics).

    ``outputs``: this image's :class:`~tumorlib.runtime.Outputs` from the classifier's own forward pass
    (:func:`tumorlib.pipeline.classify`), so the check costs no second pass.
    """
    settings, stats = _loaded(classifier)
    decoded = decode_image(image)
    if outputs is None:
        outputs = classifier.forward(classifier.transform(decoded)[None])
    values = stage_statistics(stats, gate_input(outputs)[:1], settings["stage_widths"])
    return decide(settings, values[0], colourfulness(decoded), float(decoded.std()))


def has_gate(classifier) -> bool:
    return (
        bool(classifier.bundle.section.get("gate")) and (classifier.bundle.path / f"{GATE_NAME}.safetensors").is_file()
    )
