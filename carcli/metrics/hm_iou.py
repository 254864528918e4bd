"""Hungarian-matched IoU (HM-IoU) between n samples and the labels tiled to n.

The labels are tiled to n copies in proportion to their weights (largest-remainder rounding
of n·w over the non-padding labels; remainder ties go to the earlier label), e.g. 4 uniform
labels and n = 16 give 4 copies each. The IoU of a pair is 1 - d from ``pairwise_distance``;
a multi-class pair with no scored class in either map (an invalid pair there) has IoU 1,
both maps being empty of scored classes. A one-to-one matching maximising the summed IoU
(``scipy.optimize.linear_sum_assignment``) pairs samples with tiled labels; the result is
the mean matched IoU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from carcli.metrics._common import as_maps, check_weights
from carcli.metrics.distance import image_ignore_mask, pairwise_distance


def tile_counts(w: np.ndarray | Sequence[float], n: int) -> np.ndarray:
    """Copies per label summing to n: largest-remainder rounding of n·w (ties: earlier label)."""
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    total = w.sum()
    if total <= 0:
        raise ValueError("weights sum to zero")
    share = n * w / total
    counts = np.floor(share).astype(np.int64)
    left = n - int(counts.sum())
    if left > 0:
        rem = np.where(w > 0, share - counts, -1.0)
        order = np.argsort(-rem, kind="stable")
        counts[order[:left]] += 1
    return counts


def hm_iou_from_matrix(d_sy: np.ndarray, w: np.ndarray | Sequence[float], n: int = 16) -> float:
    """HM-IoU from sample/label distances d_sy [M, A] (invalid pairs must hold d = 0).

    Uses the first ``n`` samples; ``w`` [A] the label weights (zero = padding).
    """
    d_sy = np.asarray(d_sy, dtype=np.float64)
    if d_sy.shape[0] < n:
        raise ValueError(f"HM-IoU with n={n} needs at least n samples, got {d_sy.shape[0]}")
    tiled = np.repeat(np.arange(d_sy.shape[1]), tile_counts(w, n))
    iou = 1.0 - d_sy[:n][:, tiled]
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return float(iou[rows, cols].mean())


def hm_iou(
    s: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | Sequence[float] | None = None,
    n: int = 16,
    *,
    num_classes: int,
    eval_classes: Sequence[int] | None = None,
    ignore_index: int | None = 255,
) -> float:
    """HM-IoU of one image: first n samples of s [M, H, W] against labels y [A, H, W]."""
    s = as_maps(s, "s")
    y = as_maps(y, "y")
    w = check_weights(w, len(y))
    if len(s) < n:
        raise ValueError(f"HM-IoU with n={n} needs at least n samples, got {len(s)}")
    d_sy, _ = pairwise_distance(
        s[:n],
        y,
        num_classes=num_classes,
        eval_classes=eval_classes,
        ignore_mask=image_ignore_mask(y, ignore_index, w),
    )
    return hm_iou_from_matrix(d_sy, w, n)
