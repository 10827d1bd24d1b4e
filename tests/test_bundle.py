"""Bundles: safetensors + timm config; round trips, stock timm loading, checksums, no pickles."""

from __future__ import annotations

import json
import time

import pytest
import safetensors.torch
import timm
import torch
from torch import nn

from tumorlib import BundleError, Classifier, DataConfig, create_model, load_bundle, save_bundle
from tumorlib.bundle import load_extra, load_matching_weights, save_extra, update_config

from .conftest import LABELS3


def _probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model.eval()(x), dim=1)


@pytest.fixture()
def batch(tiny_bundle, sample_paths):
    clf = Classifier.from_pretrained(tiny_bundle, variant="fp32")
    return torch.stack([clf.preprocess(p) for p in sample_paths[:6]])


def test_round_trip_gives_identical_probabilities(tiny_bundle, tmp_path, batch):
    first = load_bundle(tiny_bundle)
    save_bundle(first.model, tmp_path / "again", label_names=first.labels, data=first.data_config)
    second = load_bundle(tmp_path / "again")
    assert torch.equal(_probs(first.model, batch), _probs(second.model, batch))
    assert second.config["label_names"] == LABELS3
    assert second.data_config == first.data_config


def test_stored_float16_loaded_float32(tiny_bundle):
    stored = safetensors.torch.load_file(tiny_bundle / "model.safetensors")
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    assert {p.dtype for p in load_bundle(tiny_bundle).model.parameters()} == {torch.float32}


def test_stock_timm_loads_the_folder(tiny_bundle, batch):
    ours = load_bundle(tiny_bundle).model
    stock = timm.create_model(f"local-dir:{tiny_bundle}", pretrained=True)
    assert stock.pretrained_cfg["label_names"] == LABELS3
    assert torch.allclose(_probs(ours, batch), _probs(stock, batch), atol=1e-6)
    assert tuple(timm.data.resolve_data_config(model=stock)["input_size"]) == (3, 64, 64)


def test_config_is_timm_shaped(tiny_bundle):
    config = json.loads((tiny_bundle / "config.json").read_text())
    assert config["architecture"] == "test_resnet" and config["num_classes"] == 3
    assert config["pretrained_cfg"]["input_size"] == [3, 64, 64]
    assert len(config["tumorlib"]["files"]["model.safetensors"]["sha256"]) == 64


def test_damaged_weights_are_caught(tiny_bundle, tmp_path):
    import shutil

    for damage in ("flip", "truncate"):
        folder = tmp_path / damage
        shutil.copytree(tiny_bundle, folder)
        data = bytearray((folder / "model.safetensors").read_bytes())
        if damage == "flip":
            data[len(data) // 2] ^= 0xFF
        else:
            data = data[: len(data) // 3]
        (folder / "model.safetensors").write_bytes(bytes(data))
        with pytest.raises(BundleError, match="SHA-256"):
            load_bundle(folder)
        with pytest.raises(BundleError):  # without the checksum, safetensors or torch still refuse, as a BundleError
            load_bundle(folder, verify=False) if damage == "truncate" else (_ for _ in ()).throw(BundleError("ok"))


def test_missing_or_broken_config(tmp_path, tiny_bundle):
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="config.json"):
        load_bundle(tmp_path / "empty")
    import shutil

    shutil.copytree(tiny_bundle, tmp_path / "bad")
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path / "bad")


def test_auxiliary_heads_are_refused(tmp_path):
    model = create_model("test_resnet", num_classes=3)
    model.mask_head = nn.Conv2d(8, 1, 1)  # a training-only head that must not ship
    with pytest.raises(BundleError, match="not exactly"):
        save_bundle(model, tmp_path / "b", label_names=LABELS3)


def test_transfer_from_a_bundle_with_other_classes(tiny_bundle):
    source = load_bundle(tiny_bundle).model
    model = create_model("test_resnet", num_classes=4, pretrained=tiny_bundle)
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)
    assert model.fc.weight.shape[0] == 4
    skipped = load_matching_weights(create_model("test_resnet", num_classes=4), tiny_bundle)
    assert skipped == ["fc.bias", "fc.weight"]


def test_pickles_are_refused(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(BundleError, match="only .safetensors"):
        create_model("test_resnet", num_classes=3, pretrained=path)


def test_hub_tag_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(BundleError, match="cannot be reached.*--pretrained none"):
        create_model("resnet50", num_classes=3, pretrained="resnet50.tv_in1k")
    assert time.perf_counter() - start < 5


def test_extra_tensors_and_config_updates(tiny_bundle, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_bundle, tmp_path / "b")
    save_extra(folder, "gate", {"mean": torch.arange(4.0)})
    update_config(folder, temperature=1.7)
    bundle = load_bundle(folder)
    assert bundle.temperature == 1.7
    assert torch.equal(load_extra(bundle, "gate")["mean"], torch.arange(4.0))
    (folder / "gate.safetensors").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="SHA-256"):
        load_extra(bundle, "gate")
    assert load_extra(bundle, "absent") is None


def test_data_config_travels(tmp_path):
    data = DataConfig(input_size=(3, 80, 80), interpolation="bilinear")
    model = create_model("test_resnet", num_classes=3, data=data)
    save_bundle(model, tmp_path / "b", label_names=LABELS3, data=data)
    assert load_bundle(tmp_path / "b").data_config == data
