"""The not-an-MRI gate: the statistics behave, and the bundled model refuses what is not a brain MRI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tumorlib import DEFAULT_MODEL_DIR, Classifier
from tumorlib import gate as G

from .nonmri import non_mri_images


def test_statistics_separate_shifted_features():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 32))
    y = rng.integers(0, 3, 3000)
    x = centres[y] + rng.normal(0, 1, (3000, 32))
    stats = G.fit(x[:2000], y[:2000], dims=16)
    settings = G.thresholds(stats, x[2000:], quantile=0.99)
    accepted = [G.decide(settings, d, r, 0.0).is_mri for d, r in zip(*G.statistics(stats, x[2000:]), strict=True)]
    assert 0.98 <= np.mean(accepted) <= 1.0
    far = x[2000:2100] + rng.normal(0, 6, (100, 32))  # other images: far from every class
    refused = [not G.decide(settings, d, r, 0.0).is_mri for d, r in zip(*G.statistics(stats, far), strict=True)]
    assert np.mean(refused) > 0.95
    assert set(stats) == {"mean", "basis", "proj", "class_means", "precision"}
    assert all(isinstance(v, torch.Tensor) for v in stats.values())


def test_colourfulness():
    grey = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    assert G.colourfulness(grey) == 0.0
    assert G.colourfulness(np.repeat(grey[..., None], 3, axis=2)) < 1.0
    red = np.zeros((64, 64, 3), np.float32)
    red[..., 0] = 1.0
    assert G.colourfulness(red) > G.COLOURFULNESS_LIMIT
    verdict = G.decide({"distance_threshold": 1.0, "residual_threshold": 1.0}, 0.1, 0.1, 90.0)
    assert not verdict.is_mri and "colour" in verdict.reason


def test_model_without_gate_says_so(tiny_bundle):
    clf = Classifier.from_pretrained(tiny_bundle)
    assert not G.has_gate(clf)
    with pytest.raises(LookupError, match="no not-an-MRI gate"):
        G.check(clf, np.zeros((64, 64)))


@pytest.fixture(scope="module")
def bundled() -> Classifier:
    if not (DEFAULT_MODEL_DIR / "gate.safetensors").is_file():
        pytest.skip("the bundled model has no gate statistics")
    return Classifier.from_pretrained()


def test_bundled_model_refuses_non_mri_images(bundled):
    images = non_mri_images()
    assert len(images) >= 25
    refused = 0
    for image in images.values():
        try:
            refused += not G.check(bundled, image).is_mri
        except Exception as err:  # noqa: BLE001 - the decoder refusing (too small) also counts
            assert isinstance(err, ValueError), err
            refused += 1
    assert refused / len(images) >= 0.95


def test_bundled_model_accepts_the_sample_mris(bundled, sample_paths):
    verdicts = [G.check(bundled, p) for p in sample_paths]
    refused = [(p.name, v.score) for p, v in zip(sample_paths, verdicts, strict=True) if not v.is_mri]
    # The thresholds refuse about 1% of held-out MRI slices by design (1.3% measured for both shipped
    # models), so 0 of 32 is not guaranteed; the default ResNet-50 refuses one sample (56.jpg, score
    # 1.14). More than one refused, or one scored far past the threshold, is a regression.
    assert len(refused) <= 1 and all(score < 1.2 for _, score in refused), refused
    assert all(v.is_mri == (v.score <= v.threshold) for v in verdicts)
