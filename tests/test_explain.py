"""Grad-CAM points where the evidence is; the mask check scores it; overlays line up with the input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tumorlib import Classifier, DataConfig, create_model, save_bundle
from tumorlib.explain import gradcam, mask_scores, overlay_with_mask

SIZE = 64


def _synthetic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list]:
    """Class 0: dark noise with a bright 12-px square somewhere; class 1: dark noise only."""
    images = rng.random((n, SIZE, SIZE), dtype=np.float32) * 0.3
    labels = rng.integers(0, 2, n)
    boxes = []
    for i in range(n):
        top, left = rng.integers(4, SIZE - 16, 2)
        if labels[i] == 0:
            images[i, top : top + 12, left : left + 12] = 1.0
        boxes.append((top, left))
    return images, labels, boxes


@pytest.fixture(scope="module")
def square_classifier(tmp_path_factory) -> Classifier:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = DataConfig(input_size=(3, SIZE, SIZE), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    # output_stride 8: an 8 x 8 last feature map, so a 12-px square is resolvable at 64 px.
    model = create_model("test_resnet", num_classes=2, data=data, output_stride=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(80):
        images, labels, _ = _synthetic(32, rng)
        x = torch.from_numpy((images[:, None] - 0.5) / 0.25).repeat(1, 3, 1, 1)
        loss = torch.nn.functional.cross_entropy(model(x), torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path = save_bundle(model, tmp_path_factory.mktemp("sq") / "b", label_names=["square", "plain"], data=data,
                       dtype=torch.float32, model_args={"output_stride": 8})  # fmt: skip
    return Classifier.from_pretrained(path, variant="fp32")


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_heatmap_peaks_on_the_square(square_classifier, method):
    rng = np.random.default_rng(123)
    images, labels, boxes = _synthetic(40, rng)
    hits = 0
    tested = 0
    for image, label, (top, left) in zip(images, labels, boxes, strict=True):
        if label != 0:
            continue
        exp = gradcam(square_classifier, image, target="square", method=method)
        assert exp.heatmap.shape == image.shape and exp.target == "square"
        mask = np.zeros(image.shape, bool)
        mask[top : top + 12, left : left + 12] = True
        hits += mask_scores(exp.heatmap, mask)["pointing_hit"]
        tested += 1
    assert tested >= 10 and hits / tested >= 0.8


def test_mask_scores_by_hand():
    heat = np.zeros((512, 512), np.float32)
    mask = np.zeros((512, 512), bool)
    mask[100:150, 100:150] = True
    heat[160, 125] = 1.0  # 10 px below the mask: inside the 15-px tolerance
    assert mask_scores(heat, mask) == {"pointing_hit": True, "energy_in_mask": 0.0}
    heat[:] = 0
    heat[200, 125] = 1.0  # 50 px away: a miss
    heat[120, 120] = 0.5
    s = mask_scores(heat, mask)
    assert s["pointing_hit"] is False and s["energy_in_mask"] == pytest.approx(0.5 / 1.5)
    small = mask_scores(np.ones((256, 256), np.float32), np.pad(np.ones((64, 64), bool), 96))
    assert small["energy_in_mask"] == pytest.approx(64 * 64 / 256**2)
    assert small["pointing_hit"] is True  # a flat map's peak is its centre, not the corner argmax gives


def test_pointing_peak_of_an_upsampled_border_cell_is_the_cell_not_the_edge():
    grid = np.zeros((4, 4), np.float32)
    grid[0, 0] = 1.0  # the top-left cell: cv2's clamped upsampling makes a plateau out to the corner
    heat = cv2.resize(grid, (512, 512), interpolation=cv2.INTER_LINEAR)
    assert np.unravel_index(int(np.argmax(heat)), heat.shape) == (0, 0)
    mask = np.zeros((512, 512), bool)
    mask[55:75, 55:75] = True  # around the cell's centre (64, 64)
    assert mask_scores(heat, mask)["pointing_hit"] is True
    for top, left in ((0, 0), (20, 20), (0, 60)):  # the edge, and the plateau short of the centre
        elsewhere = np.zeros((512, 512), bool)
        elsewhere[top : top + 10, left : left + 10] = True
        assert mask_scores(heat, elsewhere)["pointing_hit"] is False


def test_real_slice_overlay_aligned(tiny_bundle, slice_path):
    clf = Classifier.from_pretrained(tiny_bundle)
    exp = gradcam(clf, slice_path)
    assert exp.heatmap.shape == (512, 512) and exp.heatmap.max() == pytest.approx(1.0)
    assert set(exp.probabilities) == set(clf.labels)
    over = exp.overlay(0.6)
    assert over.size == (512, 512) and over.mode == "RGB"
    assert exp.overlay(0.0).getpixel((256, 256))[0] == exp.overlay(0.0).getpixel((256, 256))[1]  # no colour at 0
    outlined = overlay_with_mask(exp, np.pad(np.ones((100, 100), bool), 206))
    assert outlined.size == (256, 256)
    with pytest.raises(ValueError, match="Unknown class"):
        gradcam(clf, slice_path, target="astrocytoma")


def test_grid_ceiling_is_whether_some_cell_centre_can_point_inside(tiny_bundle):
    from tumorlib.explain import grid_ceiling

    clf = Classifier.from_pretrained(tiny_bundle)  # 64 px input, no brain crop: cell centres at (i + 0.5) / g
    image = np.zeros((512, 512), np.uint8)
    small = np.zeros((512, 512), bool)
    small[240:272, 240:272] = True  # at the image centre: 4 x 4 centres sit 64 px away, 2 x 2 and 8 x 8 miss too
    assert not grid_ceiling(clf, image, small, (4, 4))
    assert grid_ceiling(clf, image, small, (5, 5))  # the middle cell of an odd grid is the centre
    corner = np.zeros((512, 512), bool)
    corner[62:90, 62:90] = True  # holds the top-left cell centre of a 4 x 4 grid, not of a 5 x 5
    assert grid_ceiling(clf, image, corner, (4, 4)) and not grid_ceiling(clf, image, corner, (5, 5))
