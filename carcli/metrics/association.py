"""How strongly the answers of two regions go together across a set of annotations.

Each annotation a gives region r a vector x_a (the share of each class in the region) and
region s a vector y_a. The association is the squared *distance correlation* (Szekely,
Rizzo & Bakirov 2007) of the pairs (x_a, y_a): 0 exactly when the two are independent, 1 when
one determines the other up to a similarity (two objects that share one coin); for two
binary answers it is the squared correlation phi^2. Two estimators:

* ``weights`` given (modes with their probabilities): the population value of that
  distribution (double centring with the weights);
* uniform annotations (raters): the unbiased U-statistic of the distance covariance
  (Szekely & Rizzo 2014) over the plug-in distance variances. Its mean is exactly 0 for
  independent regions however few the raters (four coins give it a standard deviation near
  0.8, so it is a target to average over many pairs, not a verdict on one pair), and near 1
  for two regions that always agree (0.65 to 1.2 with 4 to 8 raters, by how often the coin
  shows); it is not clipped. Needs n >= 4.
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
    docstring: exact with ``weights``, else the raters' unbiased estimate); None where it is
    undefined (a constant side, or fewer than 4 uniform annotations)."""
    a, b = _distances(x), _distances(y)
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        w = w / w.sum()
        ca, cb = _weighted_centre(a, w), _weighted_centre(b, w)
        outer = np.outer(w, w)
        cov, va, vb = (outer * ca * cb).sum(), (outer * ca * ca).sum(), (outer * cb * cb).sum()
    else:
        n = len(a)
        if n < 4:
            return None
        w = np.full(n, 1.0 / n)
        outer = np.outer(w, w)
        va = (outer * _weighted_centre(a, w) ** 2).sum()
        vb = (outer * _weighted_centre(b, w) ** 2).sum()
        cov = (_u_centre(a) * _u_centre(b)).sum() / (n * (n - 3))
        if va <= 1e-12 or vb <= 1e-12:
            return None
        return float(cov / np.sqrt(va * vb))
    if va <= 1e-12 or vb <= 1e-12:
        return None
    return float(np.clip(cov / np.sqrt(va * vb), 0.0, 1.0))
