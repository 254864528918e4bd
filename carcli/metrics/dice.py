"""Dice-based figures (as Flow-SSN and others report them) and the QUBIQ score.

Per image, with samples s_1..s_n (mass 1/n each) and labels y_j of weight w_j:

* ``expected``: E_{s, y} Dice(s, y) = Σ_ij w_j / n · Dice(s_i, y_j);
* ``mean_prediction``: Dice of the mean prediction (per pixel the most frequent class among
  G's samples, ties to the lowest class) against each label, weighted by w;
* ``best_match``: for each label the best Dice over the samples, then weighted by w: how well
  every annotator is covered by at least one sample.

Dice of a pair follows carseg's overlap rules (``distance.pairwise_overlap``): the mean over
the scored classes present in either map, a pair with none has Dice 1 (binary tasks: two
empty masks Dice 1).

QUBIQ (the MICCAI QUBIQ challenge score): the mean prediction (G's per-pixel sample frequency,
and separately F's probabilities) and the rater-average map q (the label-weighted frequency)
are each thresholded at 0.1, 0.2, ..., 0.9 (a pixel is in when its value is > t), and the
Dice of the two masks (1 when both are empty) is averaged over the thresholds and the scored
classes. Ignore pixels are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

QUBIQ_THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))


def dice_from_overlap(dice_sum: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Per-pair Dice: mean over the present scored classes, 1 where none is present."""
    out = np.ones(dice_sum.shape)
    np.divide(dice_sum, count, out=out, where=count > 0)
    return out


def dice_figures(dice_sy: np.ndarray, w: np.ndarray | Sequence[float], best_n: int) -> dict:
    """``expected`` and ``best_match`` from per-pair Dice [n, A] and label weights w [A];
    best_match uses the first ``best_n`` samples."""
    dice_sy = np.asarray(dice_sy, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    w = w / w.sum()
    n = dice_sy.shape[0]
    return {
        "expected": float((dice_sy * (w[None, :] / n)).sum()),
        "best_match": float((dice_sy[: max(1, best_n)].max(axis=0) * w).sum()),
    }


def qubiq_score(
    pred: np.ndarray,
    q: np.ndarray,
    classes: Sequence[int],
    valid: np.ndarray | None = None,
    thresholds: Sequence[float] = QUBIQ_THRESHOLDS,
) -> float:
    """QUBIQ score of ``pred`` [K, H, W] (frequencies or probabilities) against the
    rater-average ``q`` [K, H, W] over ``classes``; ``valid`` [H, W] selects pixels."""
    k = np.shape(pred)[0]
    pred = np.asarray(pred).reshape(k, -1)
    q = np.asarray(q).reshape(k, -1)
    if valid is not None:
        keep = np.asarray(valid, dtype=bool).reshape(-1)
        if not keep.all():
            pred, q = pred[:, keep], q[:, keep]
    t = np.asarray(thresholds, dtype=np.float64) + 1e-12  # sorted ascending

    def above(x: np.ndarray) -> np.ndarray:
        """Per threshold, how many values exceed it (one pass: x > t_i iff rank(x) > i)."""
        rank = np.searchsorted(t, x.astype(np.float64), side="left")
        return np.cumsum(np.bincount(rank, minlength=len(t) + 1)[::-1])[::-1][1:]

    scores = []
    for c in classes:
        a, b = pred[c], q[c]
        inter = above(np.minimum(a, b))  # (a > t) & (b > t) iff min(a, b) > t
        total = above(a) + above(b)
        dice = np.ones(len(t))
        np.divide(2.0 * inter, total, out=dice, where=total > 0)
        scores.append(dice)
    return float(np.mean(scores))
