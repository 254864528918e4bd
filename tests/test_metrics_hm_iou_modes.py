"""Hand-computed cases for HM-IoU, label tiling, mode frequencies and the oracle."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from carcli.metrics import (
    hm_iou,
    merge_modes,
    mode_frequencies,
    oracle_indices,
    oracle_samples,
)

E = np.zeros((2, 2), np.uint8)
Y1 = np.array([[1, 0], [0, 0]], np.uint8)  # {(0,0)}
Y2 = np.array([[1, 1], [0, 0]], np.uint8)  # {(0,0), (0,1)}
Y3 = np.array([[0, 1], [0, 0]], np.uint8)  # {(0,1)}
PAD = np.full((2, 2), 255, np.uint8)


def tile_counts(w: np.ndarray | Sequence[float], n: int) -> np.ndarray:
    """Copies per label summing to n: largest-remainder rounding of n·w (ties: earlier label).

    The old label tiling of HM-IoU (docs/metrics.md), kept here as the reference the tests
    compare with; HM-IoU itself uses the exact ``transport_value``.
    """
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


def maps(*xs):
    return np.stack(xs).astype(np.uint8)


def test_tile_counts_largest_remainder():
    assert tile_counts([0.25] * 4, 16).tolist() == [4, 4, 4, 4]
    # 16·(0.5, 0.3, 0.2, 0) = (8, 4.8, 3.2, 0): floors 8+4+3 = 15, the 1 left to remainder .8
    assert tile_counts([0.5, 0.3, 0.2, 0.0], 16).tolist() == [8, 5, 3, 0]
    # remainder tie (16/3 each): the earlier label gets the extra copy
    assert tile_counts([1 / 3] * 3, 16).tolist() == [6, 5, 5]
    assert tile_counts([1.0, 0.0], 3).tolist() == [3, 0]
    # more labels than n: some get no copy, zero-weight padding never does
    assert tile_counts([0.2] * 5 + [0.0], 3).tolist() == [1, 1, 1, 0, 0, 0]


def test_hm_iou_by_hand():
    y = maps(Y1, Y2)  # uniform, n = 2 -> tiled [Y1, Y2]; IoU(Y1, Y2) = 1/2
    # samples [Y2, Y1]: IoU [[1/2, 1], [1, 1/2]] -> match s1-Y2, s2-Y1 -> mean 1
    assert hm_iou(maps(Y2, Y1), y, n=2, num_classes=2) == pytest.approx(1.0)
    # samples [Y1, E]: IoU [[1, 1/2], [0, 0]]: s1-Y1 + s2-Y2 = 1 beats 1/2 + 0 -> mean 1/2
    assert hm_iou(maps(Y1, E), y, n=2, num_classes=2) == pytest.approx(0.5)
    # only the first n samples count
    assert hm_iou(maps(Y2, Y1, E, E), y, n=2, num_classes=2) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        hm_iou(maps(Y1), y, n=2, num_classes=2)


def test_hm_iou_one_label_padding_and_empty():
    # one real label + padding: tiled [Y1, Y1]; samples [Y1, Y2]: IoU 1 and 1/2 -> 3/4
    y = maps(Y1, PAD)
    assert hm_iou(maps(Y1, Y2), y, [1.0, 0.0], n=2, num_classes=2) == pytest.approx(0.75)
    # binary: empty sample vs empty label IoU 1
    assert hm_iou(maps(E), maps(E), n=1, num_classes=2) == 1.0
    # multi-class: no scored class in either map (an invalid pair) also counts as IoU 1
    assert hm_iou(maps(E, Y1), maps(E, Y1), n=2, num_classes=3) == 1.0


def test_merge_modes():
    # Y1 twice (weights 1/4 + 1/4) and a padding row: two modes of weight 1/2
    rep, w = merge_modes(maps(Y1, Y2, Y1, PAD), [0.25, 0.5, 0.25, 0.0])
    assert rep.tolist() == [0, 1]
    np.testing.assert_allclose(w, [0.5, 0.5])
    # maps differing only at an ignore pixel are the same mode
    rep, w = merge_modes(maps(Y1, Y2), [0.5, 0.5], ignore_mask=Y3 == 1)
    assert rep.tolist() == [0] and w.tolist() == [1.0]


def test_mode_frequencies_by_hand():
    # modes Y1 (w 1/4 + 1/4 merged) and Y2 (1/2); similarity = IoU:
    #   s=Y1: (1, 1/2) -> Y1, within;  s=Y2: (1/2, 1) -> Y2, within
    #   s=Y3: (0, 1/2) -> Y2, not within;  s=E: (0, 0) tie -> first mode Y1, not within
    # freq (1/2, 1/2) = weights -> tv 0; within 2/4
    y = maps(Y1, Y2, Y1, PAD)
    got = mode_frequencies(maps(Y1, Y2, Y3, E), y, [0.25, 0.5, 0.25, 0.0], num_classes=2)
    assert got["within_0.8"] == 0.5
    assert got["tv"] == pytest.approx(0.0)
    assert got["frequencies"] == [0.5, 0.5]
    assert got["assignment"] == [0, 1, 1, 0]
    # all samples Y2: freq (0, 1) vs (1/2, 1/2) -> tv 1/2, within 1
    got = mode_frequencies(maps(Y2, Y2), y, [0.25, 0.5, 0.25, 0.0], num_classes=2)
    assert got["tv"] == pytest.approx(0.5) and got["within_0.8"] == 1.0


def test_mode_frequencies_multiclass_invalid_pair_is_similarity_one():
    # K = 3: sample E vs mode E has no scored class -> similarity 1 -> mode E, within
    got = mode_frequencies(maps(E), maps(Y1, E), [0.5, 0.5], num_classes=3)
    assert got["assignment"] == [1]
    assert got["within_0.8"] == 1.0
    assert got["tv"] == pytest.approx(0.5)  # freq (0, 1) vs (1/2, 1/2)


def test_oracle_draws_only_weighted_modes():
    y = maps(Y1, Y2, PAD)
    out = oracle_samples(y, [0.0, 1.0, 0.0], 5, np.random.default_rng(0))
    assert out.shape == (5, 2, 2)
    assert all(np.array_equal(o, Y2) for o in out)
    idx = oracle_indices([0.25, 0.75, 0.0], 4000, np.random.default_rng(1))
    assert 2 not in idx
    assert np.mean(idx == 1) == pytest.approx(0.75, abs=0.03)
    # the same seed draws the same modes, with or without trailing padding
    a = oracle_indices([0.25, 0.75], 50, np.random.default_rng([3, 9]))
    b = oracle_indices([0.25, 0.75, 0.0], 50, np.random.default_rng([3, 9]))
    np.testing.assert_array_equal(a, b)
