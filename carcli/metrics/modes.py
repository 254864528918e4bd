"""Mode frequencies of G's samples against known label modes, and the oracle that draws modes.

Identical modes are merged first (byte-identical outside the image's ignore pixels; their
weights summed) and zero-weight (padding) modes dropped. Similarity = 1 - d from
``pairwise_distance``; an invalid multi-class pair (both maps free of scored classes) has
similarity 1. Each sample goes to the mode of highest similarity (ties: the first mode).
Reported: the fraction of samples whose similarity to their mode is >= the threshold (0.8,
with a 1e-9 tolerance for rounding), the total variation 0.5·Σ|freq − w| between sample
frequencies and mode weights, and the frequencies themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from carcli.metrics._common import as_maps
from carcli.metrics.distance import image_stacks, pairwise_distance

_TOL = 1e-9


def merge_modes(
    y: np.ndarray, w: np.ndarray | Sequence[float], ignore_mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return (rep, weight): first-occurrence indices into y of the distinct non-padding modes
    and their summed weights (renormalised to sum 1). Pixels in ``ignore_mask`` are not
    compared."""
    y = as_maps(y, "y")
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    keep = None if ignore_mask is None else ~np.asarray(ignore_mask, dtype=bool).reshape(-1)
    first: dict[bytes, int] = {}
    rep: list[int] = []
    weight: list[float] = []
    for a in np.flatnonzero(w > 0):
        flat = y[a].reshape(-1)
        key = (flat if keep is None else flat[keep]).tobytes()
        if key in first:
            weight[first[key]] += float(w[a])
        else:
            first[key] = len(rep)
            rep.append(int(a))
            weight.append(float(w[a]))
    weight_arr = np.asarray(weight)
    if weight_arr.size:
        weight_arr /= weight_arr.sum()  # absorb the ± 1e-5 of stored weights
    return np.asarray(rep, dtype=np.intp), weight_arr


def mode_statistics(
    d_sm: np.ndarray,
    v_sm: np.ndarray | None,
    mode_w: np.ndarray | Sequence[float],
    threshold: float = 0.8,
) -> dict:
    """Mode figures from sample/mode distances d_sm [M, R] over merged modes of weights [R]."""
    d_sm = np.asarray(d_sm, dtype=np.float64)
    mode_w = np.asarray(mode_w, dtype=np.float64)
    m, r = d_sm.shape
    if m == 0 or r == 0:
        raise ValueError(f"need samples and modes, got d_sm of shape {d_sm.shape}")
    sim = 1.0 - d_sm
    if v_sm is not None:
        sim[~np.asarray(v_sm, dtype=bool)] = 1.0
    assign = sim.argmax(axis=1)  # ties: first mode
    best = sim[np.arange(m), assign]
    freq = np.bincount(assign, minlength=r) / m
    return {
        f"within_{threshold:g}": float(np.mean(best >= threshold - _TOL)),
        "tv": float(0.5 * np.abs(freq - mode_w).sum()),
        "frequencies": [float(f) for f in freq],
        "weights": [float(x) for x in mode_w],
        "assignment": [int(i) for i in assign],
    }


def mode_frequencies(
    s: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | Sequence[float] | None = None,
    *,
    num_classes: int,
    eval_classes: Sequence[int] | None = None,
    ignore_index: int | None = 255,
    threshold: float = 0.8,
) -> dict:
    """Mode figures of samples s [M, H, W] against modes y [A, H, W] with weights w [A].

    Returns {within_0.8, tv, frequencies, weights, assignment}: frequencies / weights are over
    the merged modes (first-occurrence order), assignment the merged mode of each sample.
    """
    s, y, w, ignore = image_stacks(s, y, w, ignore_index)
    rep, mode_w = merge_modes(y, w, ignore)
    d_sm, v_sm = pairwise_distance(
        s, y[rep], num_classes=num_classes, eval_classes=eval_classes, ignore_mask=ignore
    )
    return mode_statistics(d_sm, v_sm, mode_w, threshold)


def oracle_indices(w: np.ndarray | Sequence[float], n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw n label indices from the categorical distribution w (padding never drawn)."""
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    return rng.choice(len(w), size=n, p=w / w.sum())


def oracle_samples(
    y: np.ndarray, w: np.ndarray | Sequence[float], n: int, rng: np.random.Generator
) -> np.ndarray:
    """Return n oracle samples [n, H, W]: modes of y drawn from the categorical w."""
    y = as_maps(y, "y")
    return y[oracle_indices(w, n, rng)]


def mode_coverage(
    d_sm: np.ndarray,
    v_sm: np.ndarray | None,
    mode_w: np.ndarray | Sequence[float],
    min_weight: float = 0.05,
    threshold: float = 0.8,
) -> float | None:
    """Share of the modes of weight >= ``min_weight`` that at least one sample (a row of
    d_sm [n, R]) matches at similarity >= ``threshold``; None when no mode is that likely."""
    d_sm = np.asarray(d_sm, dtype=np.float64)
    mode_w = np.asarray(mode_w, dtype=np.float64)
    likely = mode_w >= min_weight - _TOL
    if not likely.any() or d_sm.shape[0] == 0:
        return None
    sim = 1.0 - d_sm
    if v_sm is not None:
        sim[~np.asarray(v_sm, dtype=bool)] = 1.0
    hit = (sim >= threshold - _TOL).any(axis=0)
    return float(hit[likely].mean())
