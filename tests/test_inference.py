"""One predict for every kind of input; calibrated, in label order; precision chosen by the recorded check."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from tumorlib import DEFAULT_MODEL_DIR, BundleError, Classifier, ImageError, NotBrainMRIError, load_bundle
from tumorlib.bundle import update_config
from tumorlib.inference import check_bf16

from .conftest import LABELS3


def test_every_input_kind_gives_the_same_answer(tiny_bundle, slice_path):
    clf = Classifier.from_pretrained(tiny_bundle, variant="fp32")
    ref = clf.predict(slice_path)
    assert list(ref) == LABELS3 and sum(ref.values()) == pytest.approx(1.0, abs=1e-6)
    with Image.open(slice_path) as im:
        pil = im.copy()
    for source in (str(slice_path), slice_path.read_bytes(), io.BytesIO(slice_path.read_bytes()), pil, np.asarray(pil)):
        got = clf.predict(source)
        assert got == pytest.approx(ref, abs=1e-6), type(source)


def test_batch_equals_single(tiny_bundle, sample_paths):
    clf = Classifier.from_pretrained(tiny_bundle, variant="fp32")
    batch = clf.predict_batch(sample_paths[:5], batch_size=2)
    for path, probs in zip(sample_paths[:5], batch, strict=True):
        assert probs == pytest.approx(clf.predict(path), abs=1e-5)


def test_temperature_is_applied(tiny_bundle, tmp_path, slice_path):
    import shutil

    folder = shutil.copytree(tiny_bundle, tmp_path / "b")
    plain = Classifier.from_pretrained(folder, variant="fp32")
    logits = plain.logits(plain.preprocess(slice_path)[None])[0]
    update_config(folder, temperature=3.0)
    warm = Classifier.from_pretrained(folder, variant="fp32")
    expected = torch.softmax(logits / 3.0, 0).tolist()
    assert list(warm.predict(slice_path).values()) == pytest.approx(expected, abs=1e-6)


def test_precision_follows_the_recorded_check(tiny_bundle, tmp_path, sample_paths):
    import shutil

    folder = shutil.copytree(tiny_bundle, tmp_path / "b")
    assert Classifier.from_pretrained(folder).precision == "fp32"  # nothing recorded: the safe choice
    check = check_bf16(load_bundle(folder), sample_paths[:4], repeats=1)
    assert {"bf16_agrees", "max_abs_diff", "fp32_ms_per_image", "bf16_ms_per_image", "bf16_faster"} <= set(check)
    update_config(folder, inference={**check, "bf16_agrees": False})
    assert Classifier.from_pretrained(folder).precision == "fp32"
    bf16 = Classifier.from_pretrained(folder, variant="bf16")
    fp32 = Classifier.from_pretrained(folder, variant="fp32")
    a, b = bf16.predict(sample_paths[0]), fp32.predict(sample_paths[0])
    assert max(abs(a[k] - b[k]) for k in a) < 0.05


def test_bad_input_raises_image_error(tiny_bundle, slice_path):
    clf = Classifier.from_pretrained(tiny_bundle)
    with pytest.raises(ImageError):
        clf.predict(b"")
    # A batch reports each unreadable item in its place and goes on.
    bad, good = clf.predict_batch([b"%PDF-1.4 not an image", slice_path])
    assert isinstance(bad, ImageError) and "PDF" in str(bad)
    assert good == pytest.approx(clf.predict(slice_path), abs=1e-6)


def test_a_colour_photo_is_refused_by_a_gated_model(slice_path):
    """The shipped model carries gate statistics: a colour picture raises NotBrainMRIError with the reason."""
    clf = Classifier.from_pretrained(DEFAULT_MODEL_DIR, variant="fp32")
    photo = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    with pytest.raises(NotBrainMRIError, match="colour picture") as excinfo:
        clf.predict(photo)
    assert isinstance(excinfo.value, ImageError) and excinfo.value.result.is_mri is False
    unchecked = clf.predict(photo, check=False)
    assert list(unchecked) == clf.labels and sum(unchecked.values()) == pytest.approx(1.0, abs=1e-5)
    assert unchecked.gate is None and not unchecked.checked and "skipped" in unchecked.check_note
    checked = clf.predict(slice_path, check=False)
    refused, answered = clf.predict_batch([photo, slice_path])
    assert isinstance(refused, NotBrainMRIError)
    assert isinstance(answered, ImageError) or answered == pytest.approx(checked, abs=1e-5)


def test_a_model_without_gate_statistics_says_no_check_was_made(tiny_bundle, slice_path):
    p = Classifier.from_pretrained(tiny_bundle).predict(slice_path)
    assert p.gate is None and not p.checked and "without a brain-MRI check" in p.check_note
    assert p.label == max(p, key=p.get) and p.confidence == p[p.label]


def test_no_source_without_the_bundled_model_says_what_to_pass(tmp_path, monkeypatch):
    """An installed package has no models/ folder beside it: the message names the missing folder and the
    two things to pass instead."""
    import tumorlib.inference

    monkeypatch.setattr(tumorlib.inference, "DEFAULT_MODEL_DIR", tmp_path / "models" / "default")
    with pytest.raises(BundleError) as caught:
        Classifier.from_pretrained()
    message = str(caught.value)
    assert str(tmp_path / "models" / "default") in message
    assert "bundle folder" in message and "Hub model id" in message and "your-name/brain-mri-resnet50" in message
