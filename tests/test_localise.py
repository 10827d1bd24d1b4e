"""The tumour localiser: a mask head exported with the bundle finds what it was trained to find, runs only
the stages it needs, and a bundle without one (or with a damaged one) says so."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tumorlib import BundleError, Classifier, DataConfig, create_model, load_bundle, localise, save_bundle
from tumorlib.explain import mask_scores

from .test_explain import SIZE, _synthetic

STAGE = 3  # test_resnet's layer3; output_stride 8 keeps it at 8 x 8 for 64 px inputs


def _masks(boxes, labels) -> np.ndarray:
    masks = np.zeros((len(boxes), SIZE, SIZE), np.float32)
    for i, ((top, left), label) in enumerate(zip(boxes, labels, strict=True)):
        if label == 0:
            masks[i, top : top + 12, left : left + 12] = 1.0
    return masks


@pytest.fixture(scope="module")
def square_bundle(tmp_path_factory):
    """test_resnet trained jointly to classify 'square'/'plain' and to segment the square from layer3."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = DataConfig(input_size=(3, SIZE, SIZE), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    model = create_model("test_resnet", num_classes=2, data=data, output_stride=8)
    head = torch.nn.Conv2d(model.feature_info[STAGE]["num_chs"], 1, kernel_size=1)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=3e-3)
    model.train()
    for _ in range(80):
        images, labels, boxes = _synthetic(32, rng)
        x = torch.from_numpy((images[:, None] - 0.5) / 0.25).repeat(1, 3, 1, 1)
        final, (inter,) = model.forward_intermediates(x, indices=[STAGE])
        target = F.adaptive_avg_pool2d(torch.from_numpy(_masks(boxes, labels))[:, None], inter.shape[-2:])[:, 0]
        loss = F.cross_entropy(model.forward_head(final), torch.from_numpy(labels))
        loss = loss + F.binary_cross_entropy_with_logits(head(inter)[:, 0], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path = save_bundle(model, tmp_path_factory.mktemp("loc") / "b", label_names=["square", "plain"], data=data,
                       dtype=torch.float32, model_args={"output_stride": 8})  # fmt: skip
    settings = localise.export(path, head, STAGE, model)
    assert settings["stage"] == STAGE and settings["reduction"] == model.feature_info[STAGE]["reduction"]
    return path, head


def test_localiser_finds_held_out_squares_and_not_plain_noise(square_bundle):
    clf = Classifier.from_pretrained(square_bundle[0], variant="fp32")
    assert localise.has_localiser(clf)
    images, labels, boxes = _synthetic(40, np.random.default_rng(7))
    masks = _masks(boxes, labels)
    hits, dice, peaks_square, peaks_plain = [], [], [], []
    for image, label, mask in zip(images, labels, masks, strict=True):
        loc = localise.localise(clf, image)
        assert loc.heatmap.shape == image.shape and 0 <= loc.heatmap.min() <= loc.heatmap.max() <= 1
        if label == 0:
            hits.append(mask_scores(loc.heatmap, mask > 0)["pointing_hit"])
            dice.append(localise.soft_dice(loc.heatmap, mask > 0))
            peaks_square.append(loc.peak)
        else:
            peaks_plain.append(loc.peak)
    assert len(hits) >= 10 and np.mean(hits) >= 0.8
    assert np.mean(dice) > 0.2
    assert np.median(peaks_plain) < np.median(peaks_square)


def test_grid_stops_after_the_stage_and_matches_the_full_pass(square_bundle):
    path, head = square_bundle
    clf = Classifier.from_pretrained(path, variant="fp32")
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        _, (inter,) = clf.model.forward_intermediates(x, indices=[STAGE])
        expected = torch.sigmoid(head(inter))[:, 0].numpy()
    calls = []
    hook = clf.model.layer4.register_forward_hook(lambda *a: calls.append(1))
    try:
        got = localise.grid_probabilities(clf, x)
    finally:
        hook.remove()
    assert got.shape == expected.shape == (2, 8, 8) and not calls  # layer4 never ran
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_shares_are_unscaled_and_a_faint_map_is_drawn_faint(square_bundle):
    clf = Classifier.from_pretrained(square_bundle[0], variant="fp32")
    plain = np.random.default_rng(3).random((SIZE, SIZE), dtype=np.float32) * 0.3
    loc = localise.localise(clf, plain)
    assert loc.peak < 1.0  # not rescaled to peak at 1 like Grad-CAM
    assert loc.overlay(0.0).size == (SIZE, SIZE)

    def drawn(peak: float) -> np.ndarray:
        heat = np.zeros((SIZE, SIZE), np.float32)
        heat[20:30, 20:30] = peak
        over = np.asarray(localise.Localisation(heatmap=heat, image=plain).overlay(1.0)).astype(int)
        return np.abs(over[25, 25] - over[25, 25].mean())  # colourfulness where the map peaks

    assert (drawn(0.0) == 0).all()  # zero share draws no colour at any opacity
    assert drawn(0.3).tolist() == drawn(0.6).tolist()  # above the floor: scaled to the peak
    assert drawn(localise.DISPLAY_FLOOR / 4).sum() < drawn(0.3).sum()  # below it: drawn faint, not blown up


def test_bundles_without_or_with_a_damaged_localiser(tiny_bundle, square_bundle, tmp_path, slice_path):
    clf = Classifier.from_pretrained(tiny_bundle)
    assert not localise.has_localiser(clf)
    with pytest.raises(BundleError, match="no tumour localiser"):
        localise.localise(clf, slice_path)
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(square_bundle[0], damaged)
    blob = bytearray((damaged / "localiser.safetensors").read_bytes())
    blob[-3] ^= 0xFF
    (damaged / "localiser.safetensors").write_bytes(bytes(blob))
    with pytest.raises(BundleError, match="SHA-256"):
        localise.localise(Classifier(load_bundle(damaged), variant="fp32"), slice_path)


def test_a_head_for_another_stage_is_refused(square_bundle, tmp_path):
    model = load_bundle(square_bundle[0]).model
    with pytest.raises(BundleError, match="does not fit stage"):
        localise.export(tmp_path, torch.nn.Conv2d(7, 1, 1), STAGE, model)


def test_soft_dice_by_hand():
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    heat = np.zeros((10, 10), np.float32)
    heat[:5, :5] = 0.4  # a faint map over half the mask, nothing outside it
    assert localise.soft_dice(heat, mask) == pytest.approx(2 * 25 * 0.4 / (25 * 0.4 + 50))
    assert localise.soft_dice(mask.astype(np.float32), mask) == pytest.approx(1.0)
    assert localise.soft_dice(np.zeros((4, 4)), np.zeros((4, 4), bool)) == 0.0


@pytest.mark.parametrize("variant", ["fp32", "channels_last", "onnx"])
def test_the_map_from_the_classifying_pass_equals_the_two_pass_map(square_bundle, variant, tmp_path, monkeypatch):
    from tumorlib import pipeline, runtime
    from tumorlib.explain import to_heatmap

    if variant == "onnx" and not runtime.onnx_available():
        pytest.skip("onnxruntime is not installed")
    monkeypatch.setenv("TUMORLIB_CACHE", str(tmp_path / "cache"))
    clf = Classifier.from_pretrained(square_bundle[0], variant=variant)
    assert clf.engine.grid_stage == STAGE
    passes = []
    forward = clf.forward
    monkeypatch.setattr(clf, "forward", lambda batch: passes.append(len(batch)) or forward(batch))
    images, labels, _ = _synthetic(6, np.random.default_rng(11))
    for image in images:
        passes.clear()
        analysis = pipeline.analyse(clf, image, check=False)
        assert analysis.heatmap.kind == "map" and passes == [1]  # the answer and its map: one pass
        # The two-pass way: the eager float32 model again, stopped after the head's stage.
        decoded = analysis.working  # the decoded slice (under the working size: not resized)
        eager = localise.grid_probabilities(clf, clf.transform(decoded)[None])[0]
        expected = np.clip(to_heatmap(clf, eager, decoded, normalise=False), 0, 1)
        np.testing.assert_allclose(analysis.heatmap.explanation.heatmap, expected, atol=1e-4)
    assert labels.min() != labels.max()  # squares and plain noise both drawn
