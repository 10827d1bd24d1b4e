"""The offline ImageNet weights convert to timm models and still recognise ImageNet pictures."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tumorlib import BundleError, create_model
from tumorlib.weights import convert_by_order, offline_imagenet_weights

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUMORLIB_CACHE", str(tmp_path))


def test_efficientnet_lite0_recognises_a_cat_and_an_espresso():
    from timm.data import create_transform, resolve_data_config

    model = create_model("tf_efficientnet_lite0", num_classes=1000, pretrained="imagenet-offline").eval()
    transform = create_transform(**resolve_data_config(model=model))
    with torch.no_grad():
        cat = model(transform(Image.fromarray(skimage_data.chelsea()))[None]).softmax(1)[0]
        cup = model(transform(Image.fromarray(skimage_data.coffee()))[None]).softmax(1)[0]
    assert cat[281:286].sum() > 0.8  # tabby, tiger, Persian, Siamese, Egyptian cat
    assert int(cup.argmax()) == 967  # espresso


def test_mobilenetv2_matches_torchvision():
    import torchvision

    from tumorlib.weights import source_file

    ours = create_model("mobilenetv2_100", num_classes=4, pretrained="imagenet-offline").eval()
    reference = torchvision.models.mobilenet_v2().features.eval()
    state = torch.load(source_file("mobilenetv2_100"), map_location="cpu", weights_only=True)
    reference.load_state_dict(dict(zip(reference.state_dict().keys(), state.values(), strict=True)))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), reference(x), atol=1e-5, rtol=1e-5)
    assert offline_imagenet_weights("mobilenetv2_100").suffix == ".safetensors"


def test_shape_mismatch_and_unknown_architecture():
    with pytest.raises(BundleError, match="Shape mismatch"):
        convert_by_order({"a": torch.zeros(3)}, {"b": torch.zeros(4)})
    with pytest.raises(BundleError, match="No offline ImageNet weights"):
        create_model("resnet50", num_classes=3, pretrained="imagenet-offline")
