"""Issue 18 figures (NCC, Dice, QUBIQ, mode coverage) and issue 16's factor dependence, by
hand on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from carcli.metrics import (
    EvalAccumulator,
    SampleCounts,
    dependence,
    factor_pairs,
    mode_coverage,
    qubiq_score,
)
from carcli.metrics.factors import summarise
from carcli.metrics.ncc import ncc


def binary_case():
    """4x4 binary: labels E (empty), F (2 px); samples E, F, F' (1 px of F)."""
    e = np.zeros((4, 4), np.uint8)
    f = e.copy()
    f[0, :2] = 1
    f1 = e.copy()
    f1[0, 0] = 1
    return np.stack([e, f, f1]), np.stack([e, f]), np.array([0.5, 0.5])


def test_dice_figures_by_hand():
    # Dice: E-E 1, E-F 0, F-F 1, F'-F 2/3, F'-E 0
    # expected = (1/3)(1/2)(1 + 0 + 0 + 1 + 0 + 2/3) = 4/9; best match: E by E, F by F -> 1
    # mean prediction (most frequent class): (0,0) 2/3 -> 1, (0,1) 1/3 -> 0: the map F'
    # -> Dice vs E 0, vs F 2/3 -> 1/3
    s, y, w = binary_case()
    acc = EvalAccumulator(2, counts=SampleCounts([3], 3))
    row = acc.update(0, s, y, w)
    assert row["dice_expected"] == pytest.approx(4 / 9)
    assert row["dice_best_match"] == pytest.approx(1.0)
    assert row["dice_mean_prediction"] == pytest.approx(1 / 3)
    out = acc.result()
    assert out["dice"]["expected"] == pytest.approx(4 / 9)


def test_qubiq_by_hand():
    # class 1: G's frequency 2/3 at (0,0), 1/3 at (0,1); rater average 1/2 at both.
    # t = .1 .2 .3: both pixels in both -> 1; t = .4: {(0,0)} vs both -> 2/3;
    # t = .5 .6: {(0,0)} vs none -> 0; t = .7 .8 .9: both empty -> 1. Mean 20/27.
    s, y, w = binary_case()
    acc = EvalAccumulator(2, counts=SampleCounts([3], 3))
    row = acc.update(0, s, y, w)
    assert row["qubiq_samples"] == pytest.approx(20 / 27)
    assert row["qubiq_calibrator"] is None  # no F given
    q = np.zeros((2, 1, 2))
    q[1] = 0.5
    q[0] = 0.5
    assert qubiq_score(q, q, [1]) == 1.0
    p = q.copy()
    p[1] = [[0.95, 0.05]]
    # t = .1 .. .4: {0} vs both -> 2/3 (4 times); t >= .5: {0} vs none -> 0 (5 times)
    assert qubiq_score(p, q, [1]) == pytest.approx(4 * (2 / 3) / 9)


def test_ncc_by_hand():
    """K = 2, a 1x3 image, samples [1,1,0] and [1,0,0]: E_ss is (up to 1e-8 terms) [0, c, 0]
    with c = -log(1e-8)/2; a label [1,1,0] gives E_sy = [0, c, 0] too (r = 1), a label
    [1,1,1] gives [0, c, 2c] (r = 0)."""
    s = np.array([[[1, 1, 0]], [[1, 0, 0]]], np.uint8)
    freq = np.stack([(s == k).mean(0) for k in range(2)])
    y = np.array([[[1, 1, 0]], [[1, 1, 1]]], np.uint8)
    assert ncc(freq, y[:1], [1.0]) == pytest.approx(1.0)
    assert ncc(freq, y[1:], [1.0]) == pytest.approx(0.0, abs=1e-6)
    assert ncc(freq, y, [0.5, 0.5]) == pytest.approx(0.5, abs=1e-6)
    # a constant label map against a constant E_ss: no correlation -> None
    same = np.array([[[1, 1, 1]], [[1, 1, 1]]], np.uint8)
    f2 = np.stack([(same == k).mean(0) for k in range(2)])
    assert ncc(f2, y[1:], [1.0]) is None


def test_mode_coverage_by_hand():
    # modes of weight .5, .46, .04 (the last below 0.05: not counted)
    # sample 1: similarity .9 to mode 0, .5 to mode 1; sample 2 matches mode 2 only
    d = 1 - np.array([[0.9, 0.5, 0.0], [0.1, 0.2, 1.0]])
    assert mode_coverage(d, None, [0.5, 0.46, 0.04]) == pytest.approx(0.5)
    assert mode_coverage(d, None, [0.01, 0.01, 0.98]) == pytest.approx(1.0)


# ---------------------------------------------------------------- factor dependence (#16)
def two_coins():
    """Two separate 2x2 regions, each class 1 or 2 with probability 1/2, independently."""
    modes = np.zeros((5, 8, 8), dtype=np.uint8)  # the last row is padding
    for a, (u, v) in enumerate([(1, 1), (1, 2), (2, 1), (2, 2)]):
        modes[a, 1:3, 1:3] = u
        modes[a, 5:7, 5:7] = v
    return modes, np.array([0.25, 0.25, 0.25, 0.25, 0.0])


def test_dependence_hand_cases():
    assert dependence(np.full((2, 2), 0.25)) == pytest.approx(0.0)
    # two fair coins that always agree: (|.5 - .25| * 2 + |0 - .25| * 2) / 2
    assert dependence(np.array([[0.5, 0.0], [0.0, 0.5]])) == pytest.approx(0.5)


def test_factor_pairs_agree_independent_and_oracle():
    modes, w = two_coins()
    coupled = np.stack([modes[0]] * 50 + [modes[3]] * 50)  # both regions always agree
    independent = np.stack([modes[a] for a in range(4)] * 25)
    oracle = np.array([0, 1, 2, 3] * 25)  # exact draws: independent
    (pair,) = factor_pairs(modes, w, coupled, oracle)
    assert pair["dependence"] == pytest.approx(0.5)
    assert pair["joint_tv"] == pytest.approx(0.5)
    assert pair["oracle_dependence"] == pytest.approx(0.0)
    (pair,) = factor_pairs(modes, w, independent, np.array([0, 3] * 50))
    assert pair["dependence"] == pytest.approx(0.0)
    assert pair["oracle_dependence"] == pytest.approx(0.5)  # the draws here agree
    # dependent truth or one mode: no pair
    assert factor_pairs(modes, np.array([0.5, 0, 0, 0.5, 0]), coupled, np.array([0])) == []
    assert summarise([]) == {
        "g": None,
        "oracle": None,
        "joint_tv_g": None,
        "joint_tv_oracle": None,
        "n_pairs": 0,
    }


def test_accumulator_reports_factor_dependence():
    modes, w = two_coins()
    coupled = np.stack([modes[0]] * 8 + [modes[3]] * 8)
    acc = EvalAccumulator(3, counts=SampleCounts([16], 16), with_modes=True, oracle_seed=0)
    row = acc.update(0, coupled, modes, w)
    assert row["factor_pairs"] == 1 and row["factor_dependence"] == pytest.approx(0.5)
    out = acc.result()["factor_dependence"]
    assert out["g"] == pytest.approx(0.5) and out["joint_tv_g"] == pytest.approx(0.5)
    assert out["n_pairs"] == 1 and 0.0 <= out["oracle"] <= 0.5
    # deterministic oracle: the same seed gives the same figure
    again = EvalAccumulator(3, counts=SampleCounts([16], 16), with_modes=True, oracle_seed=0)
    again.update(0, coupled, modes, w)
    assert again.result()["factor_dependence"] == out
    # mode coverage: the 16 samples show modes 0 and 3 of 4 modes of weight 1/4 -> 1/2
    assert row["mode_coverage"] == pytest.approx(0.5)
