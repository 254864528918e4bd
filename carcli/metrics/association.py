"""How strongly the answers of two regions go together across a set of annotations.

Each annotation a gives region r a vector x_a (the share of each class in the region) and
region s a vector y_a. The association is the squared *distance correlation* (Szekely,
Rizzo & Bakirov 2007) of the pairs (x_a, y_a): 0 exactly when the two are independent, 1 when
one determines the other up to a similarity (two objects that share one coin); for two
binary answers it is the squared correlation phi^2. Two estimators:

* ``weights`` given (modes with their probabilities): the population value of that
  distribution (double centring with the weights);
* uniform annotations (raters): the plug-in value A of the annotations standardised by its
  mean over every re-pairing of one region's answers with the other's (the permutation
  null), t = (A - E_pi A) / (1 - E_pi A). Raters are exchangeable, so for independent
  regions every pairing of the observed answers is equally likely and the mean of t is
  exactly 0 however few the raters; for two regions that share one coin, t is exactly 1
  whenever the coin shows both sides among the raters (A = 1 for every such sample, where
  the unbiased U-statistic of the distance covariance, Szekely & Rizzo 2014, is 0 for any
  3-to-1 split of four raters and 2.67 for a 2-to-2 split: most pairs carried no
  information). Exact over all n! pairings for n <= 7 raters, else the mean of
  ``PERMUTATIONS`` fixed random pairings. Needs n >= 3.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

EXACT_UP_TO = 7
"""Up to this many raters the permutation mean is over all n! pairings."""
PERMUTATIONS = 2000
"""Beyond EXACT_UP_TO raters: this many fixed random pairings (seeded, so targets repeat)."""


def _distances(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))


def _weighted_centre(d: np.ndarray, w: np.ndarray) -> np.ndarray:
    row = d @ w
    return d - row[:, None] - row[None, :] + w @ d @ w


@lru_cache(maxsize=16)
def _pairings(n: int) -> np.ndarray:
    """[P, n] re-pairings of n annotations: all of them up to EXACT_UP_TO, else fixed random
    ones (the identity first)."""
    if n <= EXACT_UP_TO:
        return np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    rng = np.random.default_rng(0)
    return np.stack([np.arange(n)] + [rng.permutation(n) for _ in range(PERMUTATIONS - 1)])


def _raters(a: np.ndarray, b: np.ndarray) -> float | None:
    """The permutation-standardised plug-in association of uniform annotations."""
    n = len(a)
    if n < 3:
        return None
    w = np.full(n, 1.0 / n)
    ca, cb = _weighted_centre(a, w), _weighted_centre(b, w)
    va, vb = (ca * ca).mean(), (cb * cb).mean()
    if va <= 1e-12 or vb <= 1e-12:
        return None
    perms = _pairings(n)
    shuffled = cb[perms[:, :, None], perms[:, None, :]]  # [P, n, n]: b's answers re-paired
    values = (ca[None] * shuffled).mean((1, 2)) / np.sqrt(va * vb)  # A for each pairing
    observed, null = float(values[0]), float(values.mean())
    if 1.0 - null <= 1e-12:  # every pairing fully associated (nothing to tell apart)
        return None
    return (observed - null) / (1.0 - null)


def association(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float | None:
    """Squared distance correlation of paired samples x [n, ...], y [n, ...] (module
    docstring: exact with ``weights``, else the raters' permutation-standardised estimate);
    None where it is undefined (a constant side, fewer than 3 uniform annotations, or
    answers that every pairing associates fully)."""
    a, b = _distances(x), _distances(y)
    if weights is None:
        return _raters(a, b)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    ca, cb = _weighted_centre(a, w), _weighted_centre(b, w)
    outer = np.outer(w, w)
    cov, va, vb = (outer * ca * cb).sum(), (outer * ca * ca).sum(), (outer * cb * cb).sum()
    if va <= 1e-12 or vb <= 1e-12:
        return None
    return float(np.clip(cov / np.sqrt(va * vb), 0.0, 1.0))
