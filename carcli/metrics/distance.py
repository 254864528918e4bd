"""Pairwise IoU distances between two stacks of class maps, every pair at once.

d(a, b) = 1 - IoU, computed for all pairs by float32 matrix products over flattened one-hot
masks: for each scored class c, inter = A_c @ B_c.T and union = |a_c| + |b_c| - inter.

Rules (docs/metrics.md):

* ``num_classes == 2`` (binary): d = 1 - IoU of the foreground (the single eval class,
  default class 1). Two empty masks have IoU 1 (d = 0), one empty mask IoU 0; every pair is
  valid.
* ``num_classes > 2``: d = 1 - mean IoU over the scored classes present in either map of the
  pair (a class absent from both is skipped). A pair in which no scored class is present is
  invalid: ``valid`` is False there and d is 0 (so 1 - d, the IoU, is 1: two empty maps).

Ignore pixels: ``ignore_mask`` [H, W] removes pixels from both maps of every pair. The
image-level convention used by the kernels (``image_ignore_mask``) is: the pixels where ANY
non-padding label of the image equals ``ignore_index``. A value that is no class (e.g. 255)
in a map outside the ignore mask simply counts as "no scored class" there.

Speed: for each class only the pixel columns where some map of either stack holds that class
take part in the product (the others add nothing), found with one bit-mask pass per 64
classes; ``pairwise_distance(x, x)`` (the same object twice) uses the symmetric product.
Integer counts stay exact in float32 up to 2**24 pixels per image; larger images use float64.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from carcli.metrics._common import as_maps, check_weights, resolve_eval_classes

_EXACT_F32 = 1 << 24  # float32 represents every integer count up to this exactly
_CHUNK = 1 << 21  # elements per chunk of the presence-bit pass (bounds temporary memory)


def image_ignore_mask(
    y: np.ndarray, ignore_index: int | None = 255, w: np.ndarray | Sequence[float] | None = None
) -> np.ndarray:
    """Return the image-level ignore mask bool [H, W]: any non-padding label == ignore_index.

    Labels with zero weight in ``w`` (padding rows) are not consulted.
    """
    y = as_maps(y, "y")
    if w is not None:
        y = y[np.asarray(w, dtype=np.float64).reshape(-1) > 0]
    if ignore_index is None or not 0 <= int(ignore_index) <= 255 or len(y) == 0:
        return np.zeros(y.shape[1:], dtype=bool)
    return (y == ignore_index).any(axis=0)


def image_stacks(
    s: np.ndarray, y: np.ndarray, w: np.ndarray | Sequence[float] | None, ignore_index: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One image's arguments as the per-image kernels (``ged``, ``mode_frequencies``) take
    them: samples s [M, H, W] and labels y [A, H, W] checked as class maps, the label weights
    checked (None: uniform), and the image's ignore mask (``image_ignore_mask``)."""
    s = as_maps(s, "s")
    y = as_maps(y, "y")
    w = check_weights(w, len(y))
    return s, y, w, image_ignore_mask(y, ignore_index, w)


def _presence_bits(arrays: list[np.ndarray], classes: list[int], keep: np.ndarray | None):
    """Per pixel, a bit j set when class ``classes[j]`` (at most 64) occurs in any row."""
    lut = np.zeros(256, dtype=np.uint64)
    lut[classes] = np.left_shift(np.uint64(1), np.arange(len(classes), dtype=np.uint64))
    n_pix = arrays[0].shape[1]
    bits = np.zeros(n_pix, dtype=np.uint64)
    step = max(1, _CHUNK // max(n_pix, 1))
    for x in arrays:
        for i in range(0, len(x), step):
            bits |= np.bitwise_or.reduce(lut[x[i : i + step]], axis=0)
    if keep is not None:
        bits[~keep] = 0
    return bits


def _one_hot(x2: np.ndarray, c: int, cols: np.ndarray, n_pix: int, dtype) -> np.ndarray:
    """Rows of ``x2`` == c restricted to pixel columns ``cols``, as a float matrix."""
    sub = x2 if cols.size == n_pix else np.take(x2, cols, axis=1)
    return (sub == c).astype(dtype)


def _class_overlaps(
    a2: np.ndarray,
    b2: np.ndarray,
    same: bool,
    classes: list[int],
    keep: np.ndarray | None,
    include_absent: bool,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (inter, union) float64 [P, Q] per scored class (absent ones only if asked)."""
    n_pix = a2.shape[1]
    dtype = np.float32 if n_pix <= _EXACT_F32 else np.float64
    arrays = [a2] if same else [a2, b2]
    for g in range(0, len(classes), 64):
        group = classes[g : g + 64]
        if len(group) == 1:
            present = np.zeros(n_pix, dtype=bool)
            for x in arrays:
                present |= (x == group[0]).any(axis=0)
            if keep is not None:
                present &= keep
            col_sets = [np.flatnonzero(present)]
        else:
            bits = _presence_bits(arrays, group, keep)
            col_sets = [np.flatnonzero(bits & np.uint64(1 << j)) for j in range(len(group))]
        for c, cols in zip(group, col_sets, strict=True):
            if cols.size == 0:
                if include_absent:
                    zero = np.zeros((len(a2), len(b2)))
                    yield zero, zero
                continue
            fa = _one_hot(a2, c, cols, n_pix, dtype)
            if same:
                fb = fa
                inter = (fa @ fa.T).astype(np.float64)  # symmetric product (syrk)
            else:
                fb = _one_hot(b2, c, cols, n_pix, dtype)
                inter = (fa @ fb.T).astype(np.float64)
            size_a = fa.sum(axis=1, dtype=np.float64)
            size_b = size_a if same else fb.sum(axis=1, dtype=np.float64)
            yield inter, size_a[:, None] + size_b[None, :] - inter


def pairwise_overlap(
    a: np.ndarray,
    b: np.ndarray,
    *,
    num_classes: int,
    eval_classes: Sequence[int] | None = None,
    ignore_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (iou_sum, dice_sum, count), float64 / float64 / int32 [P, Q]: the sums of the
    per-class IoU and Dice over the scored classes present in either map of each pair, and
    how many there are. Binary tasks (``num_classes == 2``) always count their one class,
    with IoU = Dice = 1 for two empty masks. The conventions (``conventions``) build every
    distance from these three matrices."""
    same = b is a
    a = as_maps(a, "a")
    b = a if same else as_maps(b, "b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"map sizes differ: {a.shape[1:]} vs {b.shape[1:]}")
    classes = resolve_eval_classes(num_classes, eval_classes)
    binary = num_classes == 2
    if binary and len(classes) != 1:
        raise ValueError(f"a binary task scores exactly one foreground class, got {classes}")
    keep = None
    if ignore_mask is not None:
        ignore = np.asarray(ignore_mask, dtype=bool)
        if ignore.shape != a.shape[1:]:
            raise ValueError(f"ignore_mask shape {ignore.shape} != map shape {a.shape[1:]}")
        if ignore.any():
            keep = ~ignore.reshape(-1)
    a2 = a.reshape(len(a), -1)
    b2 = a2 if same else b.reshape(len(b), -1)
    shape = (len(a2), len(b2))
    iou_sum, dice_sum = np.zeros(shape), np.zeros(shape)
    count = np.zeros(shape, dtype=np.int32)
    if 0 in shape:
        return iou_sum, dice_sum, count
    for inter, union in _class_overlaps(a2, b2, same, classes, keep, binary):
        present = union > 0
        iou = np.divide(inter, union, out=np.zeros(shape), where=present)
        iou_sum += iou
        dice_sum += np.divide(2.0 * iou, 1.0 + iou)  # Dice = 2·IoU / (1 + IoU)
        count += present
    if binary:  # two empty masks: IoU = Dice = 1, and the pair counts
        empty = count == 0
        iou_sum[empty], dice_sum[empty], count[:] = 1.0, 1.0, 1
    return iou_sum, dice_sum, count


def pairwise_distance(
    a: np.ndarray,
    b: np.ndarray,
    *,
    num_classes: int,
    eval_classes: Sequence[int] | None = None,
    ignore_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (d float64 [P, Q], valid bool [P, Q]) for maps a [P, H, W] and b [Q, H, W].

    See the module docstring for the binary / multi-class rules and ignore pixels.
    Passing the same array object as ``a`` and ``b`` takes the faster symmetric path.
    """
    iou_sum, _, count = pairwise_overlap(
        a, b, num_classes=num_classes, eval_classes=eval_classes, ignore_mask=ignore_mask
    )
    valid = count > 0
    d = np.zeros(count.shape)
    d[valid] = 1.0 - iou_sum[valid] / count[valid]
    if 0 in count.shape:
        valid = np.ones(count.shape, dtype=bool)
    return d, valid
