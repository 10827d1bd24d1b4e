"""Grad-CAM and Grad-CAM++ explanations, and their check against tumour masks.

A heatmap is only worth showing if it points at the tumour. :func:`gradcam` computes the map from the
model's last convolutional stage on the eager float32 model (whatever precision classification uses)
and maps it back onto the decoded input image; :func:`mask_scores` checks it against a tumour mask
with the pointing game and the share of heatmap energy inside the mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .decode import ImageInput, decode_image
from .preprocess import to_grayscale

#: Pointing-game tolerance: the mask is dilated by this many pixels at 512 x 512, scaled with the image.
POINTING_TOLERANCE_512 = 15

_JET = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1].copy()  # RGB


@dataclass
class Explanation:
    """A heatmap (float32 in [0, 1], the decoded image's size) for one class of one image."""

    heatmap: np.ndarray
    target: str
    target_index: int
    probabilities: dict[str, float]
    image: np.ndarray = field(repr=False)
    method: str = "gradcam"

    def overlay(self, opacity: float = 0.5) -> Image.Image:
        """The greyscale input with the heatmap blended on top (jet colours, more opaque where hotter)."""
        return blend(self.image, self.heatmap, opacity)


def blend(image: np.ndarray, heatmap: np.ndarray, opacity: float = 0.5) -> Image.Image:
    """``heatmap`` (values in [0, 1], the image's size) in jet colours over the greyscale ``image``."""
    grey = to_grayscale(image)
    base = np.repeat(grey[..., None], 3, axis=2)
    colour = _JET[np.clip(heatmap * 255, 0, 255).astype(np.uint8)].astype(np.float32) / 255.0
    alpha = float(np.clip(opacity, 0, 1)) * np.clip(heatmap, 0, 1)[..., None] ** 0.5
    blended = base * (1 - alpha) + colour * alpha
    return Image.fromarray(np.round(blended * 255).astype(np.uint8), "RGB")


def _target_index(classifier, target: int | str) -> int:
    if isinstance(target, str):
        if target not in classifier.labels:
            raise ValueError(f"Unknown class {target!r}; the model knows {classifier.labels}.")
        return classifier.labels.index(target)
    if not 0 <= int(target) < len(classifier.labels):
        raise ValueError(f"Class index {target} out of range for {len(classifier.labels)} classes.")
    return int(target)


def cam_tensor(model: torch.nn.Module, x: torch.Tensor, target: int | None = None, method: str = "gradcam"):
    """Heatmap over the model's last feature map for input batch ``x`` (1, C, H, W): (cam (h, w), logits)."""
    with torch.enable_grad():
        features = model.forward_features(x.float())
        logits = model.forward_head(features)
        index = int(logits[0].argmax()) if target is None else int(target)
        # autograd.grad, not backward(): no parameter .grad is touched, so concurrent requests are safe.
        (grad,) = torch.autograd.grad(logits[0, index], features)
    a = features.detach()[0]
    g = grad[0]
    if method == "gradcam++":
        # Chattopadhyay et al. (2018): pixel-wise weights from 2nd/3rd powers of the gradient.
        g2, g3 = g.pow(2), g.pow(3)
        denom = 2 * g2 + (a.sum(dim=(1, 2), keepdim=True) * g3)
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        weights = (alpha * F.relu(g)).sum(dim=(1, 2))
    elif method == "gradcam":
        weights = g.mean(dim=(1, 2))
    else:
        raise ValueError(f"method must be gradcam or gradcam++, not {method!r}")
    cam = F.relu((weights[:, None, None] * a).sum(0))
    return cam.numpy(), logits.detach()[0]


def linear_head(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(weight, bias) when the model's head is global average pooling then one linear layer, else None.

    For such a head the gradient of a logit with respect to the last feature map is the class's
    weight row divided by the map's area, so Grad-CAM equals CAM (Zhou et al. 2016) and needs no
    backward pass. Checked numerically once per model, not assumed from its class name.
    """
    cached = model.__dict__.get("_linear_head")
    if cached is not None:
        return cached or None
    found: tuple = ()
    fc = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(fc, torch.nn.Linear) and hasattr(model, "forward_head"):
        probe = torch.randn(2, fc.in_features, 3, 5, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            expected = model.forward_head(probe.to(fc.weight.device)).float().cpu()
            w, b = fc.weight.detach().float().cpu(), fc.bias.detach().float().cpu() if fc.bias is not None else None
            b = b if b is not None else torch.zeros(w.shape[0])
            got = probe.mean(dim=(2, 3)) @ w.T + b
        if torch.allclose(got, expected, atol=1e-4, rtol=1e-4):
            found = (w, b)
    model.__dict__["_linear_head"] = found
    return found or None


def head_of(classifier) -> tuple[torch.Tensor, torch.Tensor] | None:
    """:func:`linear_head` of the classifier's model, kept on the classifier (it outlives a released
    eager module: closed-form Grad-CAM needs only the head's weights and the pass's map)."""
    if "_head" not in classifier.__dict__:
        classifier.__dict__["_head"] = linear_head(classifier.model)
    return classifier.__dict__["_head"]


def gradcam(
    classifier,
    image: ImageInput,
    target: int | str | None = None,
    method: str = "gradcam",
    maps: torch.Tensor | None = None,
) -> Explanation:
    """Explain ``classifier``'s output for ``target`` (default: the predicted class) on ``image``.

    Grad-CAM of a model with an average-pool + linear head is computed in closed form from the last
    feature map of the classifier's own forward pass (``maps``, (1, D, h, w), from
    :func:`tumorlib.pipeline.classify`, or one pass of its engine); anything else, and
    Grad-CAM++, back-propagates through the eager float32 model.
    """
    decoded = decode_image(image)
    x = classifier.transform(decoded)[None]
    index = None if target is None else _target_index(classifier, target)
    head = head_of(classifier) if method == "gradcam" else None
    if head is not None:
        if maps is None:
            maps = classifier.forward(x).maps
        a = maps[0].float()
        logits = a.mean(dim=(1, 2)) @ head[0].T + head[1]
        index = int(logits.argmax()) if index is None else index
        cam = F.relu(torch.einsum("k,khw->hw", head[0][index] / (a.shape[1] * a.shape[2]), a)).numpy()
    else:
        # The eager float32 model, whatever the classifier serves with (bf16 is too coarse for gradients).
        cam, logits = cam_tensor(classifier.model, x, index, method)  # None: the predicted class
        index = int(logits.argmax()) if index is None else index
    heat = to_heatmap(classifier, cam, decoded)
    probs = torch.softmax(logits / classifier.temperature, 0).tolist()
    return Explanation(
        heatmap=heat.astype(np.float32),
        target=classifier.labels[index],
        target_index=index,
        probabilities=dict(zip(classifier.labels, probs, strict=True)),
        image=decoded,
        method=method,
    )


def to_heatmap(classifier, cam: np.ndarray, decoded: np.ndarray, normalise: bool = True) -> np.ndarray:
    """A map over the model's feature grid -> the decoded image's frame, scaled to peak at 1 if ``normalise``."""
    h, w = classifier.transform.height, classifier.transform.width
    cam = cv2.resize(np.asarray(cam, dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    heat = classifier.transform.to_image_frame(cam, decoded)
    if not normalise:
        return heat
    peak = float(heat.max())
    return heat / peak if peak > 0 else heat


def grid_ceiling(classifier, decoded: np.ndarray, mask: np.ndarray, grid: tuple[int, int]) -> bool:
    """Could any heatmap on this feature grid hit the pointing game on this slice?

    A heatmap upsampled from a coarse grid peaks at a cell's centre, so the pointing game can only
    be won when some cell's centre lands inside the (dilated) mask: at 4 x 4 most small tumours miss
    every centre. Each cell is tried through the same mapping :func:`gradcam` uses.
    """
    target = _pointing_target(mask)  # dilated once, not once per cell
    for i in range(grid[0]):
        for j in range(grid[1]):
            one = np.zeros(grid, dtype=np.float32)
            one[i, j] = 1.0
            if target[_peak(to_heatmap(classifier, one, decoded))]:
                return True
    return False


def overlay_with_mask(explanation, mask: np.ndarray, opacity: float = 0.5, size: int = 256) -> Image.Image:
    """The overlay of an :class:`Explanation` (or a :class:`~tumorlib.localise.Localisation`) with the
    tumour mask outlined in green, shrunk to ``size`` for galleries."""
    image = np.asarray(explanation.overlay(opacity)).copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(image, contours, -1, (0, 255, 0), max(1, round(max(mask.shape) / 256)))
    scale = size / max(image.shape[:2])
    small = cv2.resize(
        image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA
    )
    return Image.fromarray(small, "RGB")


def _peak(heatmap: np.ndarray) -> tuple[int, int]:
    """The heatmap's maximum; for a flat-topped maximum, its member farthest from the image border.

    Upsampling a coarse map clamps at the borders, so a border cell's maximum is a plateau from the
    cell's centre out to the image edge; ``argmax`` would return the plateau's first pixel, on the
    edge. The most interior member is the cell's centre (and the middle of a flat map).
    """
    ys, xs = np.nonzero(heatmap >= heatmap.max())
    h, w = heatmap.shape
    inner = np.minimum(np.minimum(ys, h - 1 - ys), np.minimum(xs, w - 1 - xs))
    best = int(np.argmax(inner))
    return int(ys[best]), int(xs[best])


def _pointing_target(mask: np.ndarray) -> np.ndarray:
    """The mask dilated by the pointing game's tolerance (15 px at 512, scaled with the image)."""
    radius = max(1, round(POINTING_TOLERANCE_512 * max(mask.shape) / 512))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def mask_scores(heatmap: np.ndarray, mask: np.ndarray) -> dict[str, float | bool]:
    """Pointing game (is the heatmap's peak inside the mask, dilated by 15 px at 512?) and energy share."""
    mask = mask.astype(bool)
    if heatmap.shape != mask.shape:
        raise ValueError(f"heatmap {heatmap.shape} and mask {mask.shape} differ in size")
    dilated = _pointing_target(mask)
    peak = _peak(heatmap)
    total = float(heatmap.sum())
    return {
        "pointing_hit": bool(dilated[peak]) if total > 0 else False,
        "energy_in_mask": float(heatmap[mask].sum() / total) if total > 0 else 0.0,
    }
