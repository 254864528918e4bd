"""Hand-computed cases for pairwise distances, GED and diversity."""

from __future__ import annotations

import numpy as np
import pytest

from carcli.metrics import (
    diversity,
    ged,
    ged_at_counts,
    ged_from_matrices,
    image_ignore_mask,
    pairwise_distance,
)

E = np.zeros((2, 2), np.uint8)  # empty 2x2 map
Y1 = np.array([[1, 0], [0, 0]], np.uint8)  # foreground {(0,0)}
Y2 = np.array([[1, 1], [0, 0]], np.uint8)  # foreground {(0,0), (0,1)}
PAD = np.full((2, 2), 255, np.uint8)  # a padding row as a dataset might fill it


def maps(*xs):
    return np.stack(xs).astype(np.uint8)


# ---------------------------------------------------------------- binary distance
def test_binary_distance_by_hand():
    a = np.array([[1, 1], [0, 0]])
    b = np.array([[1, 0], [1, 0]])
    # a={(0,0),(0,1)}, b={(0,0),(1,0)}: inter 1, union 3 -> d = 2/3
    # empty vs empty: IoU 1 -> d 0; empty vs a: IoU 0 -> d 1
    d, v = pairwise_distance(maps(a, E), maps(b, E), num_classes=2)
    np.testing.assert_allclose(d, [[2 / 3, 1.0], [1.0, 0.0]])
    assert v.all()


def test_binary_distance_ignore_pixels():
    a = np.array([[1, 1], [0, 0]])
    b = np.array([[1, 0], [1, 0]])
    ignore = np.array([[False, True], [False, False]])
    # without (0,1): a={(0,0)}, b={(0,0),(1,0)}: inter 1, union 2 -> d = 0.5
    d, _ = pairwise_distance(maps(a), maps(b), num_classes=2, ignore_mask=ignore)
    assert d[0, 0] == pytest.approx(0.5)
    # ignoring a's only foreground pixel leaves two empty masks -> d = 0
    d, _ = pairwise_distance(maps(Y1), maps(E), num_classes=2, ignore_mask=Y1 == 1)
    assert d[0, 0] == 0.0


def test_binary_foreground_is_the_eval_class():
    # eval class 0 as foreground: Y1's class-0 set has 3 pixels, Y2's 2, inter 2 -> d = 1/3
    d, _ = pairwise_distance(maps(Y1), maps(Y2), num_classes=2, eval_classes=[0])
    assert d[0, 0] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        pairwise_distance(maps(Y1), maps(Y2), num_classes=2, eval_classes=[0, 1])


# ---------------------------------------------------------------- multi-class distance
def test_multiclass_distance_by_hand():
    a = np.array([[1, 2], [0, 0]])
    b = np.array([[1, 1], [0, 2]])
    # class 1: a{(0,0)} b{(0,0),(0,1)} IoU 1/2; class 2: a{(0,1)} b{(1,1)} IoU 0
    # mean 1/4 -> d = 3/4
    d, v = pairwise_distance(maps(a, E, Y1), maps(b, E), num_classes=3)
    assert d[0, 0] == pytest.approx(0.75)
    # a vs empty: class 1 IoU 0, class 2 IoU 0 -> d = 1, valid
    assert d[0, 1] == 1.0 and v[0, 1]
    # empty vs empty: no scored class -> invalid, d = 0
    assert d[1, 1] == 0.0 and not v[1, 1]
    # Y1 vs b: class 1 {(0,0)} vs {(0,0),(0,1)} IoU 1/2; class 2 only in b: IoU 0 -> d 3/4
    assert d[2, 0] == pytest.approx(0.75)
    # Y1 vs empty: class 1 IoU 0, class 2 absent from both (skipped) -> d = 1
    assert d[2, 1] == 1.0 and v[2, 1]


def test_multiclass_eval_classes_and_ignore():
    a = np.array([[1, 2], [0, 0]])
    b = np.array([[1, 1], [0, 2]])
    # only class 2 scored: IoU 0 -> d 1
    d, _ = pairwise_distance(maps(a), maps(b), num_classes=3, eval_classes=[2])
    assert d[0, 0] == 1.0
    # ignore (0,1): class 1 {(0,0)} vs {(0,0)} IoU 1; class 2 {} vs {(1,1)} IoU 0 -> d 1/2
    ignore = np.array([[False, True], [False, False]])
    d, _ = pairwise_distance(maps(a), maps(b), num_classes=3, ignore_mask=ignore)
    assert d[0, 0] == pytest.approx(0.5)
    # a value 255 outside the ignore mask is "no class": {(0,0)} vs {(0,0)} for class 1
    c = np.array([[1, 255], [0, 0]])
    d, v = pairwise_distance(maps(c), maps(Y1), num_classes=3)
    assert d[0, 0] == 0.0 and v[0, 0]


def test_same_object_uses_symmetric_path_with_same_values():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(6, 5, 5)).astype(np.uint8)
    d1, v1 = pairwise_distance(x, x, num_classes=4)
    d2, v2 = pairwise_distance(x, x.copy(), num_classes=4)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(d1, d1.T)


def test_image_ignore_mask_skips_padding_labels():
    y = maps(np.array([[0, 255], [1, 0]]), PAD)
    np.testing.assert_array_equal(
        image_ignore_mask(y, 255, [1.0, 0.0]), [[False, True], [False, False]]
    )
    assert image_ignore_mask(y, 255).all()  # without weights the padding row counts


# ---------------------------------------------------------------- GED
def test_ged_one_sample_one_label():
    # s = y: every distance 0 -> GED 0
    assert ged(maps(Y1), maps(Y1), num_classes=2) == 0.0
    # s empty, y non-empty: E d(s,y) = 1, the rest 0 -> GED = 2
    assert ged(maps(E), maps(Y1), [1.0], num_classes=2) == 2.0


def test_ged_two_labels_by_hand_with_padding():
    # d(Y1, Y2) = 1 - 1/2 = 1/2; w = (1/2, 1/2)
    # E d(y,y') = 1/4 (0 + 1/2 + 1/2 + 0) = 1/4
    # s = [Y1, Y1]: E d(s,s') = 0; E d(s,y) = 1/2·0 + 1/2·1/2 = 1/4
    # GED = 2/4 - 0 - 1/4 = 1/4
    s = maps(Y1, Y1)
    assert ged(s, maps(Y1, Y2), [0.5, 0.5], num_classes=2) == pytest.approx(0.25)
    # a zero-weight padding row (all 255) changes nothing, nor masks the image
    assert ged(s, maps(Y1, Y2, PAD), [0.5, 0.5, 0.0], num_classes=2) == pytest.approx(0.25)
    assert ged(s, maps(Y1, Y2), None, num_classes=2) == pytest.approx(0.25)  # uniform


def test_ged_weighted_by_hand():
    # w = (3/4, 1/4), s = [Y2]: E d(s,y) = 3/4·1/2 + 1/4·0 = 3/8
    # E d(y,y') = 2·(3/4·1/4)·1/2 = 3/16; GED = 3/4 - 0 - 3/16 = 9/16
    assert ged(maps(Y2), maps(Y1, Y2), [0.75, 0.25], num_classes=2) == pytest.approx(9 / 16)


def test_ged_multiclass_pairs_without_scored_class_count_as_equal():
    # Issue 18 changed this rule: it used to drop such pairs (GED 4/3 here) while HM-IoU
    # scored them IoU 1; carseg now has one rule: d = 0 and the pair counts (as two empty
    # binary masks do). K = 3, labels (E, Y1), w = (1/2, 1/2), sample E.
    # (s,E) d 0, (s,Y1) d 1 -> E d(s,y) = 1/2; (s,s) d 0 -> E d(s,s') = 0
    # (E,E) = (Y1,Y1) = 0, (E,Y1) = (Y1,E) = 1, each weight 1/4 -> E d(y,y') = 1/2
    # GED = 2·1/2 - 0 - 1/2 = 1/2
    got = ged(maps(E), maps(E, Y1), [0.5, 0.5], num_classes=3)
    assert got == pytest.approx(0.5)
    # the validity masks of ged_from_matrices still drop pairs (some conventions need it)
    kw = dict(num_classes=3)
    d_sy, v_sy = pairwise_distance(maps(E), maps(E, Y1), **kw)
    d_ss, v_ss = pairwise_distance(maps(E), maps(E), **kw)
    d_yy, v_yy = pairwise_distance(maps(E, Y1), maps(E, Y1), **kw)
    dropped = ged_from_matrices(d_sy, d_ss, d_yy, [0.5, 0.5], (v_sy, v_ss, v_yy))
    assert dropped == pytest.approx(4 / 3)


def test_ged_from_matrices_all_invalid_is_zero():
    d = np.ones((2, 2))
    v = np.zeros((2, 2), bool)
    assert ged_from_matrices(d, d, d, [0.5, 0.5], (v, v, v)) == 0.0


def test_ged_at_counts_uses_first_n_samples():
    # s = [Y1, E, ...]: with n = 1 only Y1 is used
    s = maps(Y1, E, E)
    y = maps(Y1, Y2)
    w = [0.5, 0.5]
    d_sy, v_sy = pairwise_distance(s, y, num_classes=2)
    d_ss, v_ss = pairwise_distance(s, s, num_classes=2)
    d_yy, v_yy = pairwise_distance(y, y, num_classes=2)
    got = ged_at_counts(d_sy, d_ss, d_yy, w, (1, 3, 16), (v_sy, v_ss, v_yy))
    assert set(got) == {"1", "3"}  # n = 16 > M is left out
    assert got["1"] == pytest.approx(ged(s, y, w, num_classes=2, n=1))  # = 1/4 (above)
    assert got["1"] == pytest.approx(0.25)
    assert got["3"] == pytest.approx(ged(s, y, w, num_classes=2))


def test_diversity_by_hand():
    # [Y1, Y2, Y2]: off-diagonal d = 1/2 (4 pairs with Y1) and 0 (2 pairs Y2-Y2) -> 2/6
    s = maps(Y1, Y2, Y2)
    d, v = pairwise_distance(s, s, num_classes=2)
    assert diversity(d, v) == pytest.approx(1 / 3)
    assert diversity(np.zeros((1, 1))) == 0.0  # one sample: no pairs
    # multi-class: with the validity mask, pairs of empty samples are dropped; (Y1, E) d 1
    s = maps(Y1, E, E)
    d, v = pairwise_distance(s, s, num_classes=3)
    assert diversity(d, v) == 1.0
    # carseg's rule (no mask): the two (E, E) pairs count with d 0 -> 4 / 6
    assert diversity(d) == pytest.approx(4 / 6)
