"""How strongly the answers of two regions go together across a set of annotations.

Each annotation a gives region r a vector x_a (the share of each class in the region) and
region s a vector y_a. The association is the squared *distance correlation* (Szekely,
Rizzo & Bakirov 2007) of the pairs (x_a, y_a): 0 exactly when the two are independent, 1 when
one determines the other up to a similarity (two objects that share one coin); for two
binary answers it is the squared correlation phi^2. Two estimators:

* ``weights`` given (modes with their probabilities): the population value of that
  distribution (double centring with the weights);
* uniform annotations (raters): the bias-corrected estimator (U-centring, Szekely & Rizzo
  2014), which is near 0 on average for independent regions even with four raters (the plain
  estimator is biased far above 0 with few samples); clipped to [0, 1], needs n >= 4.
"""

from __future__ import annotations

import numpy as np


def _distances(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))


def _weighted_centre(d: np.ndarray, w: np.ndarray) -> np.ndarray:
    row = d @ w
    return d - row[:, None] - row[None, :] + w @ d @ w


def _u_centre(d: np.ndarray) -> np.ndarray:
    n = len(d)
    row = d.sum(1)
    out = d - row[:, None] / (n - 2) - row[None, :] / (n - 2) + d.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(out, 0.0)
    return out


def association(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float | None:
    """Squared distance correlation of paired samples x [n, ...], y [n, ...] (module
    docstring); None where it is undefined (a constant side, or fewer than 4 uniform
    annotations)."""
    a, b = _distances(x), _distances(y)
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        w = w / w.sum()
        ca, cb = _weighted_centre(a, w), _weighted_centre(b, w)
        outer = np.outer(w, w)
        cov, va, vb = (outer * ca * cb).sum(), (outer * ca * ca).sum(), (outer * cb * cb).sum()
    else:
        if len(a) < 4:
            return None
        ca, cb = _u_centre(a), _u_centre(b)
        cov, va, vb = (ca * cb).sum(), (ca * ca).sum(), (cb * cb).sum()
    if va <= 1e-12 or vb <= 1e-12:
        return None
    return float(np.clip(cov / np.sqrt(va * vb), 0.0, 1.0))
