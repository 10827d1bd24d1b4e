"""The model transform: built from the model's config, one object everywhere, masks follow the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tumorlib import AugmentConfig, Classifier, DataConfig, create_transform, load_bundle, resolve_data_config
from tumorlib.data import read_figshare
from tumorlib.errors import TumorlibError
from tumorlib.preprocess import PreprocessConfig, apply_filters, brain_bbox, equalize

from .conftest import FIGSHARE


def test_same_object_for_every_entry_point(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    from_config = create_transform(resolve_data_config(bundle.config))
    from_model = create_transform(resolve_data_config(model=bundle.model))
    assert from_config is from_model is Classifier(bundle).transform is create_transform(bundle.data_config)
    assert from_config.data.input_size == (3, 64, 64)


@pytest.mark.parametrize(
    "architecture, pretrained_cfg",
    [
        ("test_resnet", None),
        ("mobilenetv2_100", None),
        ("resnet50", {}),
        ("resnet50", {"input_size": [3, 160, 192], "mean": [0.5] * 3, "std": [0.25] * 3, "interpolation": "bilinear"}),
    ],
)
def test_data_config_reads_what_timm_reads(architecture, pretrained_cfg):
    """Our reader (no timm import, so serving needs no timm) resolves a config as timm's own does."""
    import timm
    from timm.data import resolve_data_config as timm_resolve

    with torch.device("meta"):
        model = timm.create_model(architecture, pretrained=False)
    if pretrained_cfg is None:
        ours, theirs = resolve_data_config(model=model), timm_resolve(model=model)
    else:
        ours = resolve_data_config({"pretrained_cfg": pretrained_cfg})
        theirs = timm_resolve({}, pretrained_cfg=pretrained_cfg or {"architecture": architecture})
    assert ours.input_size == tuple(theirs["input_size"])
    assert ours.mean == pytest.approx(tuple(theirs["mean"])) and ours.std == pytest.approx(tuple(theirs["std"]))
    assert ours.interpolation == theirs["interpolation"]


def test_eval_transform_is_deterministic_and_normalised(slice_path):
    from tumorlib import decode_image

    t = create_transform(DataConfig(input_size=(3, 96, 96)))
    image = decode_image(slice_path)
    a, b = t(image), t(image)
    assert a.shape == (3, 96, 96) and a.dtype == torch.float32 and torch.equal(a, b)
    # greyscale replicated into the three ImageNet channels, each normalised with its own mean/std
    std = torch.tensor(t.data.std)[:, None, None]
    mean = torch.tensor(t.data.mean)[:, None, None]
    raw = a * std + mean
    assert torch.allclose(raw[0], raw[1], atol=1e-5) and raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_non_square_is_padded_not_stretched():
    t = create_transform(DataConfig(input_size=(3, 64, 64)))
    wide = np.ones((100, 200), np.float32)
    raw = t(wide)[0] * t.data.std[0] + t.data.mean[0]
    assert raw[:12].max() < 0.01 and raw[20:44].min() > 0.99  # black bands top and bottom


def test_augmentation_is_seeded_and_moves_mask_with_image():
    record = read_figshare(FIGSHARE)[0]
    image, mask = record.load_image(), record.load_mask()
    t = create_transform(DataConfig(input_size=(3, 128, 128)), AugmentConfig(rotate=30, hflip=0.5))
    a, ma = t(image, mask, rng=np.random.default_rng(7))
    b, mb = t(image, mask, rng=np.random.default_rng(7))
    c, _ = t(image, mask, rng=np.random.default_rng(8))
    assert torch.equal(a, b) and torch.equal(ma, mb) and not torch.equal(a, c)
    assert ma.shape == (128, 128) and ma.dtype == torch.bool and ma.any()
    # the tumour is bright on T1-CE: the mask must still cover brighter-than-average pixels
    assert a[0][ma].mean() > a[0].mean()


def test_brain_crop_finds_the_head(slice_path):
    from tumorlib import decode_image

    image = decode_image(slice_path)
    top, bottom, left, right = brain_bbox(image)
    assert 0 <= top < bottom <= 512 and 0 <= left < right <= 512
    inside = image[top:bottom, left:right].sum()
    assert inside > 0.99 * image.sum()  # nothing bright cut away
    assert (bottom - top) * (right - left) < 0.95 * image.size  # and the empty border gone


def test_paper_filters():
    rng = np.random.default_rng(0)
    img = (rng.random((64, 64)) * 0.3).astype(np.float32)
    eq = equalize(img, "global")
    assert eq.min() == 0 and eq.max() == 1 and abs(np.median(eq) - 0.5) < 0.05
    assert equalize(img, "clahe").std() > img.std()
    cfg = PreprocessConfig(sharpen=1.0, equalize="clahe", binarize="otsu", morphology="open", binarize_mode="replace")
    out = apply_filters(img, cfg)
    assert set(np.unique(out)) <= {0.0, 1.0}
    masked = apply_filters(img, PreprocessConfig(binarize="0.15"))
    assert np.all((masked == 0) | (masked == img))


def test_invalid_preprocess_settings():
    with pytest.raises(TumorlibError):
        PreprocessConfig(equalize="sometimes")
    with pytest.raises(TumorlibError, match="binarize"):
        PreprocessConfig(morphology="open")
