"""Generalised energy distance (reported as "GED": the paper's D²_GED) and sample diversity.

GED² = 2·E d(s, y) − E d(s, s′) − E d(y, y′), each expectation over all ORDERED pairs with
the diagonal included. Pair weights: (s, y) w_y / M, (s, s′) 1 / M², (y, y′) w_y·w_y′.
Pairs with no scored class in either map (``valid`` False in ``distance``): under the
``carseg`` convention they count, with d = 0 (two maps that agree on every scored class,
as two empty binary masks do), in GED, HM-IoU, diversity and the mode figures alike; ``ged``
and the accumulator pass no validity mask for that reason. ``ged_from_matrices`` still
accepts validity masks: given one, invalid pairs are dropped from their expectation and the
remaining weights renormalised (an expectation with no remaining weight is 0), which is
what some peers' conventions need (``conventions``). Zero-weight labels (padding) carry no
weight anywhere.

The value is the squared distance D²_GED itself (no square root), as in the paper's tables.

For several sample counts, compute the sample/sample and sample/label matrices ONCE for the
largest n and call ``ged_at_counts``: GED with n uses the first n samples, i.e. the
top-left n×n block of d_ss and the first n rows of d_sy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from carcli.metrics.distance import image_stacks, pairwise_distance


def _expectation(d: np.ndarray, weight: np.ndarray, valid: np.ndarray | None) -> float:
    """Weighted mean of ``d`` over valid entries, weights renormalised; 0 if none remains."""
    if valid is not None:
        weight = weight * valid
    total = float(weight.sum())
    if total <= 0.0:
        return 0.0
    return float((weight * d).sum() / total)


# The validity masks (v_sy, v_ss, v_yy) of ``pairwise_distance`` for the three matrices.
Validity = tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]


def ged_from_matrices(
    d_sy: np.ndarray,
    d_ss: np.ndarray,
    d_yy: np.ndarray,
    w: np.ndarray | Sequence[float],
    valid: Validity | None = None,
) -> float:
    """Return GED (= D²_GED) from distance matrices d_sy [M, A], d_ss [M, M], d_yy [A, A].

    ``w`` [A] are the label weights (zero = padding); ``valid`` the validity masks of
    ``pairwise_distance`` for the three (None, or a None mask: every pair valid).
    """
    v_sy, v_ss, v_yy = valid or (None, None, None)
    d_sy, d_ss, d_yy = (np.asarray(x, dtype=np.float64) for x in (d_sy, d_ss, d_yy))
    m, a = d_sy.shape
    if d_ss.shape != (m, m) or d_yy.shape != (a, a):
        raise ValueError(f"inconsistent shapes {d_sy.shape}, {d_ss.shape}, {d_yy.shape}")
    if m == 0:
        raise ValueError("GED needs at least one sample")
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    if w.shape != (a,):
        raise ValueError(f"weights have shape {w.shape}, expected ({a},)")
    e_sy = _expectation(d_sy, np.broadcast_to(w / m, d_sy.shape), v_sy)
    e_ss = _expectation(d_ss, np.full(d_ss.shape, 1.0 / (m * m)), v_ss)
    e_yy = _expectation(d_yy, np.outer(w, w), v_yy)
    return 2.0 * e_sy - e_ss - e_yy


def ged_at_counts(
    d_sy: np.ndarray,
    d_ss: np.ndarray,
    d_yy: np.ndarray,
    w: np.ndarray | Sequence[float],
    counts: Iterable[int],
    valid: Validity | None = None,
) -> dict[str, float]:
    """Return {str(n): GED with the first n samples} for each n in ``counts`` with n <= M."""
    v_sy, v_ss, v_yy = valid or (None, None, None)
    m = np.asarray(d_ss).shape[0]
    out: dict[str, float] = {}
    for n in counts:
        if 1 <= n <= m:
            first = (
                None if v_sy is None else v_sy[:n],
                None if v_ss is None else v_ss[:n, :n],
                v_yy,
            )
            out[str(n)] = ged_from_matrices(d_sy[:n], d_ss[:n, :n], d_yy, w, first)
    return out


def diversity(d_ss: np.ndarray, v_ss: np.ndarray | None = None) -> float:
    """Mean d over ordered pairs of distinct samples (only the valid ones when ``v_ss`` is
    given); 0 if there are none."""
    d_ss = np.asarray(d_ss, dtype=np.float64)
    m = d_ss.shape[0]
    off = ~np.eye(m, dtype=bool)
    if v_ss is not None:
        off &= np.asarray(v_ss, dtype=bool)
    if not off.any():
        return 0.0
    return float(d_ss[off].mean())


def ged(
    s: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | Sequence[float] | None = None,
    *,
    num_classes: int,
    eval_classes: Sequence[int] | None = None,
    ignore_index: int | None = 255,
    n: int | None = None,
) -> float:
    """GED of one image from samples s [M, H, W] (first ``n`` used) and labels y [A, H, W].

    ``w`` None means uniform label weights. Ignore pixels follow ``image_ignore_mask``.
    A pair with no scored class in either map counts with d = 0 (the ``carseg`` rule).
    """
    s, y, w, ignore = image_stacks(s, y, w, ignore_index)
    if n is not None:
        if not 1 <= n <= len(s):
            raise ValueError(f"n={n} but only {len(s)} samples")
        s = s[:n]
    kw = dict(num_classes=num_classes, eval_classes=eval_classes, ignore_mask=ignore)
    d_sy, _ = pairwise_distance(s, y, **kw)
    d_ss, _ = pairwise_distance(s, s, **kw)
    d_yy, _ = pairwise_distance(y, y, **kw)
    return ged_from_matrices(d_sy, d_ss, d_yy, w)
