"""Where the tumour is: the ResNet-50 recipe's auxiliary tumour-mask head, shipped and checked against masks.

Grad-CAM of our from-scratch models does not point at tumours: its peak lands inside the mask less
often than a fixed point at the image centre does (the pointing game in each bundle's metrics). The
ResNet-50 recipe also trains a 1 x 1 convolution on the stride-16 stage to predict the tumour mask
(``--mask-loss``), on the training patients' masks only: its target is the share of each grid cell the
tumour covers. Shipped as ``localiser.safetensors``, it draws that share over the image, scored on
held-out patients with the same pointing game. The classifying forward pass returns that stage's map
(:class:`tumorlib.runtime.Outputs` ``grid``, whatever engine runs it), so the map costs no second pass.
Its values are not thresholded: a small tumour covers
little of any 16-pixel cell, so even a well-placed map stays below 0.5 on most slices (the overlay
scales it up, but never from a peak below :data:`DISPLAY_FLOOR`). It is a segmentation output, not an
account of why the model chose a class: the app says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import nn

from .decode import ImageInput, decode_image
from .errors import BundleError

LOCALISER_NAME = "localiser"
#: For display a map is scaled to its peak, but by at most 1 / DISPLAY_FLOOR: a peak under a tenth of a cell
#: is not blown up into a bright spot, so a tumour-free slice stays faint (held-out no-tumour slices peak at
#: about 0.01 on the default model, tumour slices at about 0.27; see its metrics.json).
DISPLAY_FLOOR = 0.1
METHOD = "auxiliary tumour-mask head: 1 x 1 convolution + sigmoid on the stride-16 stage, trained with the classifier"


@dataclass
class Localisation:
    """Estimated tumour share per pixel of the decoded image (float32 in [0, 1]; 0 outside the brain crop)."""

    heatmap: np.ndarray
    image: np.ndarray = field(repr=False)

    @property
    def peak(self) -> float:
        return float(self.heatmap.max()) if self.heatmap.size else 0.0

    def overlay(self, opacity: float = 0.5) -> Image.Image:
        """The greyscale input with the map in jet colours, scaled to its peak or :data:`DISPLAY_FLOOR`,
        whichever is higher, so a faint map stays faint."""
        from .explain import blend

        return blend(self.image, self.heatmap / max(self.peak, DISPLAY_FLOOR), opacity)


def export(bundle_dir, head: nn.Conv2d, stage: int, model: nn.Module) -> dict:
    """Write a trained mask head into a bundle as its localiser; returns the settings stored in the config."""
    from .bundle import save_extra, update_config

    info = model.feature_info[stage]
    weight = head.weight.detach().float().cpu().reshape(1, -1)
    if weight.shape[1] != info["num_chs"]:
        raise BundleError(f"A mask head over {weight.shape[1]} channels does not fit stage {stage}: {info['num_chs']}.")
    save_extra(bundle_dir, LOCALISER_NAME, {"weight": weight, "bias": head.bias.detach().float().cpu().reshape(1)})
    settings = {"method": METHOD, "stage": int(stage), "reduction": int(info["reduction"])}
    update_config(bundle_dir, localiser=settings)
    return settings


def has_localiser(classifier) -> bool:
    return (
        bool(classifier.bundle.section.get("localiser"))
        and (classifier.bundle.path / f"{LOCALISER_NAME}.safetensors").is_file()
    )


def _loaded(classifier) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(stage, weight (C,), bias) of the classifier's localiser, read and verified once per loaded model."""
    from .bundle import load_extra

    cached = classifier.__dict__.get("_localiser")
    if cached is not None:
        return cached
    settings = classifier.bundle.section.get("localiser")
    tensors = load_extra(classifier.bundle, LOCALISER_NAME) if settings else None
    if not tensors or "weight" not in tensors or "bias" not in tensors:
        raise BundleError("This model has no tumour localiser (localiser.safetensors).")
    stage = int(settings["stage"])
    channels = classifier.feature_info[stage]["num_chs"]
    weight = tensors["weight"].float().reshape(-1)
    if weight.numel() != channels or tensors["bias"].numel() != 1:
        raise BundleError(f"localiser.safetensors does not fit stage {stage} of this model ({channels} channels).")
    loaded = (stage, weight.to(classifier.device), tensors["bias"].float().reshape(()).to(classifier.device))
    classifier.__dict__["_localiser"] = loaded
    return loaded


def head_probabilities(classifier, features: torch.Tensor) -> np.ndarray:
    """The head on the stage's feature map (N, C, h, w): estimated tumour share of each cell, (N, h, w)."""
    _, weight, bias = _loaded(classifier)
    logits = torch.einsum("nchw,c->nhw", features.float().to(weight.device), weight) + bias
    return torch.sigmoid(logits).cpu().numpy()


def grid_probabilities(classifier, batch: torch.Tensor) -> np.ndarray:
    """Estimated tumour share of each cell of the stage's grid, (N, h, w), for a transformed batch; the
    eager float32 model stops after that stage (the rest of the network is not run)."""
    stage, _, _ = _loaded(classifier)
    with torch.inference_mode():
        (features,) = classifier.model.forward_intermediates(
            batch.float().to(classifier.device), indices=[stage], stop_early=True, intermediates_only=True
        )
        return head_probabilities(classifier, features)


def pass_cells(classifier, engine, grid: torch.Tensor) -> np.ndarray | None:
    """The head on ``engine``'s ``grid`` output, (N, h, w), or None when the model has no localiser or that
    engine's pass returns another stage (what :meth:`~tumorlib.Classifier.optimise` compares)."""
    try:
        if not has_localiser(classifier):
            return None
        stage, _, _ = _loaded(classifier)
    except BundleError:  # a damaged localiser: no map to compare (the pipeline says so per image)
        return None
    return head_probabilities(classifier, grid) if getattr(engine, "grid_stage", None) == stage else None


def reads_pass(classifier) -> bool:
    """Whether the classifier's forward pass returns the map of the stage its localiser reads."""
    stage, _, _ = _loaded(classifier)
    return getattr(classifier.engine, "grid_stage", None) == stage


def localise(classifier, image: ImageInput, grid: torch.Tensor | None = None) -> Localisation:
    """Where ``classifier``'s localiser puts a tumour in ``image`` (raises BundleError without one).

    ``grid`` is the stage's map from the pass that classified ``image`` (``Outputs.grid``, (1, C, h, w));
    without it the classifier's engine runs once, or, where its pass returns another stage, the eager
    float32 model up to the head's stage.
    """
    from .explain import to_heatmap

    decoded = decode_image(image)
    if grid is None and reads_pass(classifier):
        grid = classifier.forward(classifier.transform(decoded)[None]).grid
    if grid is not None and reads_pass(classifier):
        cells = head_probabilities(classifier, grid[:1])[0]
    else:
        cells = grid_probabilities(classifier, classifier.transform(decoded)[None])[0]
    heat = np.clip(to_heatmap(classifier, cells, decoded, normalise=False), 0, 1)
    return Localisation(heatmap=heat.astype(np.float32), image=decoded)


def soft_dice(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Soft Dice of the map with the mask, 2 * sum(map * mask) / (sum(map) + sum(mask)): no threshold to pick."""
    truth = np.asarray(mask, dtype=np.float64)
    total = float(heatmap.sum()) + float(truth.sum())
    return 0.0 if total == 0 else 2.0 * float((heatmap * truth).sum()) / total
