"""Hand-computed cases for label probabilities, ECE, per-class calibration and entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from carcli.metrics import (
    ClassCalibration,
    ReliabilityBins,
    label_probabilities,
    mean_entropy,
    sample_frequencies,
)


def binary_p(p1):
    """[2, H, W] probabilities from the class-1 map."""
    p1 = np.asarray(p1, dtype=np.float64)
    return np.stack([1.0 - p1, p1])


def test_label_probabilities_by_hand():
    y = np.array(
        [
            [[0, 1], [1, 255]],
            [[1, 1], [0, 0]],
            [[255, 255], [255, 255]],  # padding row
        ],
        np.uint8,
    )
    q, valid = label_probabilities(y, [0.75, 0.25, 0.0], 2, 255)
    # (0,0): class 0 3/4, class 1 1/4; (0,1): class 1 1; (1,0): class 1 3/4, class 0 1/4;
    # (1,1) is ignore in label 0 -> not valid (the padding's 255 does not count)
    np.testing.assert_array_equal(valid, [[True, True], [True, False]])
    np.testing.assert_allclose(q[0], [[0.75, 0.0], [0.25, 0.0]])
    np.testing.assert_allclose(q[1], [[0.25, 1.0], [0.75, 0.0]])
    with pytest.raises(ValueError):
        label_probabilities(np.full((1, 2, 2), 7, np.uint8), None, 2, 255)


def test_sample_frequencies_both_paths():
    s = np.array([[[0, 1]], [[1, 1]], [[2, 1]]], np.uint8)
    # pixel 0: one sample each of 0, 1, 2; pixel 1: all 1
    want = np.array([[[1 / 3, 0]], [[1 / 3, 1]], [[1 / 3, 0]]])
    np.testing.assert_allclose(sample_frequencies(s, 3), want)
    np.testing.assert_allclose(sample_frequencies(s, 6)[:3], want)  # the scatter path (K > 4)


def test_ece_by_hand():
    # class-1 probabilities .95 .85 .65 .55: all predict class 1, confidences the same;
    # q1 = 1, 1/2, 1/2, 0 -> accuracies 1, .5, .5, 0; bins 9, 8, 6, 5 (one pixel each)
    # ECE = (|1-.95| + |.5-.85| + |.5-.65| + |0-.55|) / 4 = 1.1 / 4
    p = binary_p([[0.95, 0.85], [0.65, 0.55]])
    q = binary_p([[1.0, 0.5], [0.5, 0.0]])
    bins = ReliabilityBins(10)
    bins.update(p, q)
    r = bins.result()
    assert r["ece"] == pytest.approx(1.1 / 4)
    assert r["count"] == [0, 0, 0, 0, 0, 1, 1, 0, 1, 1]
    assert r["confidence"][6] == pytest.approx(0.65) and r["accuracy"][6] == pytest.approx(0.5)
    assert r["confidence"][0] is None
    # masked: without pixel (1,1) -> (.05 + .35 + .15) / 3
    masked = ReliabilityBins()
    masked.update(p, q, np.array([[True, True], [True, False]]))
    assert masked.result()["ece"] == pytest.approx(0.55 / 3)
    # pooled with a second image whose two pixels land in bin 6 as well:
    # (p0 = .62 -> class 0, q0 = 1) and (p1 = .68 -> class 1, q1 = 0)
    # bin 6: conf (.65 + .62 + .68)/3 = .65, acc (.5 + 1 + 0)/3 = .5 -> 3 · .15
    # ECE = (.05 + .35 + .45 + .55) / 6
    p2 = binary_p([[0.38, 0.68]])
    q2 = np.array([[[1.0, 1.0]], [[0.0, 0.0]]])
    bins.update(p2, q2)
    assert bins.result()["ece"] == pytest.approx(1.4 / 6)
    assert bins.result()["n_pixels"] == 6


def test_ece_zero_when_calibrated_and_last_bin_closed():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=(4, 8, 8)).astype(np.uint8)
    q, valid = label_probabilities(y, [0.1, 0.2, 0.3, 0.4], 3, 255)
    bins = ReliabilityBins()
    bins.update(q, q, valid)  # p = q: accuracy = q[argmax] = confidence at every pixel
    assert bins.result()["ece"] == pytest.approx(0.0, abs=1e-12)
    # calibrated in the bin sense: conf .75 four times, right 3 of 4 times -> ECE 0
    p = binary_p([[0.75, 0.75, 0.75, 0.75]])
    q = binary_p([[1.0, 1.0, 1.0, 0.0]])
    bins = ReliabilityBins()
    bins.update(p, q)
    assert bins.result()["ece"] == pytest.approx(0.0, abs=1e-12)
    # confidence exactly 1 falls in the last (closed) bin
    bins = ReliabilityBins()
    bins.update(binary_p([[1.0]]), binary_p([[1.0]]))
    assert bins.result()["count"][-1] == 1 and bins.result()["ece"] == 0.0


def test_reliability_merge_and_empty():
    assert ReliabilityBins().result()["ece"] is None
    a, b, both = ReliabilityBins(), ReliabilityBins(), ReliabilityBins()
    p1, q1 = binary_p([[0.95, 0.55]]), binary_p([[1.0, 0.0]])
    p2, q2 = binary_p([[0.85]]), binary_p([[0.5]])
    a.update(p1, q1)
    b.update(p2, q2)
    both.update(p1, q1)
    both.update(p2, q2)
    a.merge(b)
    assert a.result() == both.result()


def test_class_calibration_by_hand():
    # 1x3 image, K = 3. Pixels A, B ambiguous for classes 1 and 2; C certain (class 0).
    q = np.array([[[0, 0, 1]], [[0.5, 0.25, 0]], [[0.5, 0.75, 0]]])
    p = np.array([[[0.1, 0.1, 0.8]], [[0.4, 0.3, 0.1]], [[0.5, 0.6, 0.1]]])
    f = np.array([[[0, 0, 1]], [[0.5, 0.5, 0]], [[0.5, 0.5, 0]]])
    cc = ClassCalibration(3)
    cc.update(q, p, f, np.ones((1, 3), bool))
    r = cc.result()
    # class 0 never ambiguous
    assert r["classes"]["0"]["n_pixels"] == 0 and r["classes"]["0"]["true"] is None
    assert r["classes"]["0"]["calibrator_offset"] is None
    # class 1: true (.5+.25)/2 = .375, calibrator (.4+.3)/2 = .35, refiner .5
    c1 = r["classes"]["1"]
    assert c1["n_pixels"] == 2
    assert (c1["true"], c1["calibrator"], c1["refiner"]) == pytest.approx((0.375, 0.35, 0.5))
    assert c1["calibrator_offset"] == pytest.approx(0.025)
    assert c1["refiner_offset"] == pytest.approx(0.125)
    # class 2: true .625, calibrator .55, refiner .5 -> offsets .075, .125
    c2 = r["classes"]["2"]
    assert c2["calibrator_offset"] == pytest.approx(0.075)
    assert r["mean_calibrator_offset"] == pytest.approx(0.05)
    assert r["max_calibrator_offset"] == pytest.approx(0.075)
    assert r["mean_refiner_offset"] == pytest.approx(0.125)
    # pooled over updates; a masked-out pixel and q within 1e-6 of 1 do not count
    q2 = np.array([[[0.0, 0.0]], [[0.5, 1 - 1e-9]], [[0.5, 1e-9]]])
    cc.update(q2, q2, q2, np.array([[False, True]]))
    assert cc.result()["classes"]["1"]["n_pixels"] == 2
    # without p: calibrator figures None, refiner still there
    cc = ClassCalibration(3)
    cc.update(q, None, f)
    r = cc.result()
    assert r["classes"]["1"]["calibrator"] is None
    assert r["classes"]["1"]["refiner_offset"] == pytest.approx(0.125)
    assert r["mean_calibrator_offset"] is None


def test_mean_entropy_by_hand():
    p = np.array([[[0.5, 1.0]], [[0.5, 0.0]]])
    assert mean_entropy(p) == pytest.approx(math.log(2) / 2)  # (ln 2 + 0) / 2
    assert mean_entropy(p, np.array([[True, False]])) == pytest.approx(math.log(2))
    assert math.isnan(mean_entropy(p, np.zeros((1, 2), bool)))
