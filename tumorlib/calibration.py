"""Temperature scaling: one scalar T so that softmax(logits / T) means what it says.

T is fitted by minimising the negative log-likelihood on held-out (out-of-fold) logits, stored in
the bundle's config and applied by :class:`tumorlib.Classifier`. To report an honest calibrated ECE,
:func:`crossfit_probabilities` fits T without the fold it is applied to.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def fit_temperature(logits: np.ndarray, y_true: Sequence[int], bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature minimising NLL of ``softmax(logits / T)`` on ``y_true``, within ``bounds``."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y_true), dtype=torch.long)
    if len(z) == 0:
        return 1.0
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")
    lo, hi = np.log(bounds[0]), np.log(bounds[1])

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.clamp(lo, hi).exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(np.exp(np.clip(log_t.item(), lo, hi)))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def crossfit_probabilities(logits: np.ndarray, y_true: Sequence[int], folds: Sequence[int]) -> tuple[np.ndarray, list]:
    """Calibrated probabilities where each fold's temperature was fitted on the other folds only.

    Returns the probabilities and the per-fold temperatures. With a single fold there is nothing
    held out, so the probabilities stay uncalibrated (T = 1).
    """
    logits, y, folds = np.asarray(logits), np.asarray(y_true), np.asarray(folds)
    probs = np.empty_like(logits, dtype=np.float64)
    temps = []
    for f in np.unique(folds):
        out = folds == f
        t = fit_temperature(logits[~out], y[~out]) if (~out).any() else 1.0
        probs[out] = softmax(logits[out], t)
        temps.append(t)
    return probs, temps
