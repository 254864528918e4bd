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


def _centred(x: np.ndarray) -> tuple[np.ndarray, float]:
    x = x - x.mean()
    return x, float(np.sqrt((x * x).sum()))


def ncc(
    freq: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | Sequence[float],
    valid: np.ndarray | None = None,
) -> float | None:
    """PHiSeg's NCC from G's class frequencies ``freq`` [K, H, W] (summing to 1 per pixel),
    labels y [A, H, W] (class ids), weights w [A] (zero = padding) and the pixels to use
    ``valid`` [H, W].

    With Σ_k f_k = 1, E_ss = −log ε + (log ε − log(1 + ε))·Σ_k f_k² and E_sy_j = −log ε +
    (log ε − log(1 + ε))·f_y: both are the same affine map of Σ_k f_k² and f_y, and a
    correlation is unchanged by it, so NCC_j = corr(Σ_k f_k², f_y) exactly.
    """
    freq = np.asarray(freq, dtype=np.float64)
    k = freq.shape[0]
    f = freq.reshape(k, -1)
    keep = None if valid is None else np.asarray(valid, bool).reshape(-1)
    if keep is not None and not keep.all():
        f = f[:, keep]
    else:
        keep = None
    if f.shape[1] < 2:
        return None
    g, g_norm = _centred((f * f).sum(axis=0))
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    cols = np.arange(f.shape[1])
    total, weight = 0.0, 0.0
    for j in np.flatnonzero(w > 0):
        yj = np.asarray(y[j]).reshape(-1)
        if keep is not None:
            yj = yj[keep]
        if k == 2:  # two classes: a select beats the gather
            fy = np.where(yj == 1, f[1], np.where(yj == 0, f[0], 0.0))
        else:
            yj = yj.astype(np.intp)
            inside = yj < k
            fy = f[np.where(inside, yj, 0), cols] * inside
        fy, fy_norm = _centred(fy)
        den = g_norm * fy_norm
        if den <= 1e-12:
            continue  # a constant map: no correlation
        total += w[j] * float((g * fy).sum() / den)
        weight += w[j]
    return total / weight if weight > 0 else None
