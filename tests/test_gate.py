"""The not-an-MRI gate: the statistics behave, and the bundled model refuses what is not a brain MRI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train.nonmri import MEDICAL_FILES, medical_images, non_mri_images
from tumorlib import DEFAULT_MODEL_DIR, Classifier
from tumorlib import gate as G

WIDTHS = [16, 32]


def _fitted(seed: int) -> tuple[np.ndarray, dict, dict, np.random.Generator]:
    """Three classes in two stages of 16 and 32 features: held-out rows, statistics and settings."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (3, 48))
    y = rng.integers(0, 3, 3000)
    x = centres[y] + rng.normal(0, 1, (3000, 48))
    stats = G.fit_stages(x[:2000], y[:2000], WIDTHS, dims=12)
    settings = G.thresholds(G.stage_statistics(stats, x[2000:], WIDTHS), WIDTHS, quantile=0.99)
    return x[2000:], stats, settings, rng


def test_statistics_separate_shifted_features():
    held, stats, settings, rng = _fitted(0)
    accepted = G.scores(settings, G.stage_statistics(stats, held, WIDTHS)) <= 1.0
    assert 0.98 <= np.mean(accepted) <= 1.0
    far = held[:100] + rng.normal(0, 6, (100, 48))  # other images: far from every class
    assert np.mean(G.scores(settings, G.stage_statistics(stats, far, WIDTHS)) > 1.0) > 0.95
    assert set(stats) == {f"{i}.{k}" for i in range(2) for k in ("mean", "basis", "proj", "class_means", "precision")}
    assert all(isinstance(v, torch.Tensor) for v in stats.values())
    assert settings["method"] == G.METHOD and len(settings["scales"]) == 4


def test_a_shift_in_an_early_stage_alone_is_refused():
    # What a last-layer-only gate misses: the last stage looks like an MRI, an earlier one does not.
    held, stats, settings, rng = _fitted(1)
    odd = held[:100].copy()
    odd[:, :16] += rng.normal(0, 6, (100, 16))
    values = G.stage_statistics(stats, odd, WIDTHS)
    assert np.mean(G.scores(settings, values) > 1.0) > 0.95
    last = np.asarray(settings["scales"][2:])
    assert np.mean((values[:, 2:] / last).max(axis=1) <= settings["threshold"]) > 0.9  # the last stage alone passes


def test_gate_input_must_match_the_stage_widths():
    with pytest.raises(ValueError, match="does not match stage widths"):
        G.stage_statistics({}, np.zeros((2, 10)), [4, 4])


def test_colourfulness_and_blank_images():
    grey = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    assert G.colourfulness(grey) == 0.0
    assert G.colourfulness(np.repeat(grey[..., None], 3, axis=2)) < 1.0
    red = np.zeros((64, 64, 3), np.float32)
    red[..., 0] = 1.0
    assert G.colourfulness(red) > G.COLOURFULNESS_LIMIT
    settings = {"scales": [1.0, 1.0], "threshold": 1.0}
    verdict = G.decide(settings, [0.1, 0.1], colour=90.0)
    assert not verdict.is_mri and "colour" in verdict.reason
    verdict = G.decide(settings, [0.1, 0.1], contrast=0.0)
    assert not verdict.is_mri and "blank" in verdict.reason
    assert G.decide(settings, [0.1, 0.1], contrast=float(grey.std())).is_mri
    assert not G.decide(settings, [0.1, 1.5]).is_mri


def test_model_without_gate_says_so(tiny_bundle):
    clf = Classifier.from_pretrained(tiny_bundle)
    assert not G.has_gate(clf)
    with pytest.raises(LookupError, match="no not-an-MRI gate"):
        G.check(clf, np.zeros((64, 64)))


def test_gate_of_an_older_kind_says_so(tiny_bundle, tmp_path):
    import shutil

    from tumorlib.bundle import update_config

    folder = shutil.copytree(tiny_bundle, tmp_path / "old")
    update_config(folder, gate={"method": "mahalanobis+residual", "distance_threshold": 1.0})
    with pytest.raises(LookupError, match="older kind"):
        G.check(Classifier.from_pretrained(folder), np.zeros((64, 64)))


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


def test_bundled_model_refuses_most_other_medical_images(bundled):
    """CT, nuclear, abdominal MR, ultrasound (train/nonmri.py): a set the gate was never tuned on.

    Measured: the default refuses 10 of 13 (it accepts the bone scan and the abdominal MR, scores 0.8-0.9,
    and one head CT at 0.99); fewer would be a regression. The head CTs sit at the threshold (0.99-1.24).
    """
    images = medical_images()
    assert len(images) == len(MEDICAL_FILES)
    refused = sum(not G.check(bundled, image).is_mri for image in images.values())
    assert refused >= 10, refused


def test_bundled_model_accepts_the_sample_mris(bundled, sample_paths):
    verdicts = [G.check(bundled, p) for p in sample_paths]
    refused = [(p.name, v.score) for p, v in zip(sample_paths, verdicts, strict=True) if not v.is_mri]
    # The thresholds refuse about 1-3% of real MRI slices by design (cross-fitted: 1.2% for the default
    # ResNet-50, 1.5% for the MobileNetV2), so 0 of 32 is not guaranteed: the default refuses none (highest
    # score 0.89; the 80/20 one refused 56.jpg at 1.03). More than one refused, or one far past, is a regression.
    assert len(refused) <= 1 and all(score < 1.2 for _, score in refused), refused
    assert all(v.is_mri == (v.score <= v.threshold) for v in verdicts)
