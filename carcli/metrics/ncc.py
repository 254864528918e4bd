"""NCC as PHiSeg defines it (Baumgartner et al. 2019, S_NCC).

Per image: the map E_ss = E_s[CE(s̄, s)] of the expected cross-entropy between the samples'
mean s̄ and each sample, and for each label y_j the map E_sy_j = E_s[CE(y_j, s)] of the
expected cross-entropy between the label and the samples; NCC is the Pearson correlation
of E_ss with each E_sy_j over the pixels, averaged over the labels (weighted by w; PHiSeg's
mean when uniform). CE(p, s) = −Σ_k p_k log(s_k + 1e-8), as PHiSeg's code. The samples are
G's class maps (one-hot), so with f_k the per-pixel frequency of class k among them:
E_ss = −Σ_k f_k (f_k log(1 + ε) + (1 − f_k) log ε) and E_sy_j = −(f_y log(1 + ε) + (1 − f_y)
log ε) with f_y the frequency of the label's class. Ignore pixels are left out; a label
whose map (or E_ss) is constant over the pixels has no correlation and is skipped; an image
with none left has no NCC (None).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EPS = 1e-8


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    if den <= 1e-12 * max(1.0, a.size):
        return None
    return float((a * b).sum() / den)


def ncc(
    freq: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | Sequence[float],
    valid: np.ndarray | None = None,
) -> float | None:
    """PHiSeg's NCC from G's class frequencies ``freq`` [K, H, W], labels y [A, H, W] (class
    ids), weights w [A] (zero = padding) and the pixels to use ``valid`` [H, W]."""
    freq = np.asarray(freq, dtype=np.float64)
    k = freq.shape[0]
    keep = np.ones(freq.shape[1:], dtype=bool) if valid is None else np.asarray(valid, bool)
    f = freq[:, keep]  # [K, P]
    log1, log0 = np.log(1.0 + EPS), np.log(EPS)
    e_ss = -(f * (f * log1 + (1.0 - f) * log0)).sum(axis=0)
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    total, weight = 0.0, 0.0
    cols = np.arange(f.shape[1])
    for j in np.flatnonzero(w > 0):
        yj = np.asarray(y[j])[keep].astype(np.intp)
        inside = yj < k
        fy = np.zeros(f.shape[1])
        fy[inside] = f[yj[inside], cols[inside]]
        e_sy = -(fy * log1 + (1.0 - fy) * log0)
        r = _pearson(e_ss, e_sy)
        if r is not None:
            total += w[j] * r
            weight += w[j]
    return total / weight if weight > 0 else None
