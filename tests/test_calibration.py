"""Temperature scaling lowers the calibration error of an over-confident model."""

from __future__ import annotations

import numpy as np
import pytest

from tumorlib.calibration import crossfit_probabilities, fit_temperature, softmax
from tumorlib.metrics import expected_calibration_error


def _overconfident(n: int = 4000, seed: int = 0, scale: float = 3.0):
    """Labels drawn from softmax(z) (so z is calibrated by construction), logits reported as scale * z:
    the over-confidence of a network trained to near-zero loss."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, 3))
    y = np.array([rng.choice(3, p=p) for p in softmax(z)])
    return z * scale, y


def test_temperature_lowers_ece():
    logits, y = _overconfident()
    before, _ = expected_calibration_error(softmax(logits), y)
    t = fit_temperature(logits, y)
    after, _ = expected_calibration_error(softmax(logits, t), y)
    assert t == pytest.approx(3.0, rel=0.15) and before > 0.1 and after < 0.03 and after < before / 4


def test_crossfit_is_close_and_honest():
    logits, y = _overconfident()
    folds = np.arange(len(y)) % 5
    probs, temps = crossfit_probabilities(logits, y, folds)
    assert len(temps) == 5 and np.ptp(temps) < 0.5 * np.mean(temps)
    ece, _ = expected_calibration_error(probs, y)
    assert ece < 0.04
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-9)


def test_well_calibrated_stays_near_one():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (5000, 4))
    y = np.array([rng.choice(4, p=p) for p in softmax(logits)])
    assert fit_temperature(logits, y) == pytest.approx(1.0, abs=0.1)
