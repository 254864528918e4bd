"""EvalAccumulator: agreement with the single-image functions, summary shape, merging."""

from __future__ import annotations

import json

import numpy as np
import pytest

from carcli.metrics import (
    ClassCalibration,
    EvalAccumulator,
    ReliabilityBins,
    SampleCounts,
    diversity,
    ged,
    hm_iou,
    label_probabilities,
    mean_entropy,
    mode_frequencies,
    pairwise_distance,
    sample_frequencies,
)


def image(rng, k, m=6, a=3, shape=(5, 4)):
    """A small random image: samples, labels with one ignore pixel and a padding row, p."""
    s = rng.integers(0, k, size=(m, *shape)).astype(np.uint8)
    y = rng.integers(0, k, size=(a, *shape)).astype(np.uint8)
    y[0, 0, 0] = 255
    y = np.concatenate([y, np.full((1, *shape), 255, np.uint8)])
    w = np.concatenate([rng.dirichlet(np.ones(a)), [0.0]])
    p = rng.dirichlet(np.ones(k), size=shape).transpose(2, 0, 1)
    return s, y, w, p


@pytest.mark.parametrize("k", [2, 4])
def test_accumulator_agrees_with_functions(k):
    rng = np.random.default_rng(k)
    acc = EvalAccumulator(k, counts=SampleCounts((2, 4), 2), with_modes=True, oracle_seed=1)
    rel, cc = ReliabilityBins(), ClassCalibration(k)
    images = [image(rng, k) for _ in range(3)]
    for i, (s, y, w, p) in enumerate(images):
        row = acc.update(i, s, y, w, p)
        assert list(row) == acc.columns()
        for n in (2, 4):
            assert row[f"ged_{n}"] == pytest.approx(ged(s, y, w, num_classes=k, n=n))
        assert row["hm_iou_2"] == pytest.approx(hm_iou(s, y, w, 2, num_classes=k))
        # M = 6 > n_top = 4: diversity on the first 4 samples, modes on all 6
        mask = (y[:3] == 255).any(0)
        d, v = pairwise_distance(s[:4], s[:4], num_classes=k, ignore_mask=mask)
        assert row["diversity"] == pytest.approx(diversity(d))  # pairs without class count
        modes = mode_frequencies(s, y, w, num_classes=k)
        assert row["modes_tv"] == pytest.approx(modes["tv"])
        assert row["modes_within_0.8"] == pytest.approx(modes["within_0.8"])
        q, valid = label_probabilities(y, w, k)
        assert row["entropy"] == pytest.approx(mean_entropy(p, valid))
        rel.update(p, q, valid)
        cc.update(q, p, sample_frequencies(s, k), valid)
    out = acc.result()
    assert out["n_images"] == 3
    assert set(out["ged"]) == {"2", "4"}
    assert out["ged"]["4"] == pytest.approx(np.mean([r["ged_4"] for r in acc.rows()]))
    assert out["ece"] == pytest.approx(rel.result()["ece"])
    assert out["class_calibration"] == cc.result()
    assert set(out["modes"]) == {
        "tv",
        "within_0.8",
        "coverage",
        "oracle_tv",
        "oracle_within_0.8",
        "oracle_coverage",
    }  # coverage added by issue 18
    assert set(out["oracle_ged"]) == {"2", "4"}
    json.dumps(out, allow_nan=False)
    json.dumps(acc.rows(), allow_nan=False)


def test_accumulator_without_p_modes_or_enough_samples():
    rng = np.random.default_rng(0)
    acc = EvalAccumulator(2, counts=SampleCounts((2, 16), 16))
    s, y, _, _ = image(rng, 2, m=3)
    row = acc.update(5, s, y[:3])  # w None: uniform
    assert row["ged_16"] is None and row["hm_iou_16"] is None and row["ged_2"] is not None
    assert "modes_tv" not in row
    out = acc.result()
    assert out["ged"].keys() == {"2"}
    assert out["hm_iou"] is None and out["ece"] is None and out["reliability"] is None
    assert out["entropy"] is None and out["modes"] is None and out["oracle_ged"] is None
    json.dumps(out, allow_nan=False)


def test_accumulator_one_sample_one_label():
    # s = y: GED 0, HM-IoU 1, diversity 0 (no pairs), oracle identical to the label
    y = np.array([[[1, 0], [0, 0]]], np.uint8)
    acc = EvalAccumulator(2, counts=SampleCounts((1,), 1), with_modes=True)
    row = acc.update(0, y.copy(), y, [1.0])
    assert row["ged_1"] == 0.0 and row["hm_iou_1"] == 1.0 and row["diversity"] == 0.0
    assert row["oracle_ged_1"] == 0.0 and row["oracle_tv"] == 0.0
    assert row["modes_within_0.8"] == 1.0


def test_accumulator_merge_equals_single_pass():
    rng = np.random.default_rng(3)
    images = [image(rng, 3) for _ in range(4)]
    kw = dict(counts=SampleCounts((2, 4), 2), with_modes=True, oracle_seed=7)
    single, first, second = (EvalAccumulator(3, **kw) for _ in range(3))
    for i, args in enumerate(images):
        single.update(i, *args)
        (first if i % 2 else second).update(i, *args)
    first.merge(second)
    assert first.rows() == single.rows()
    assert _close(first.result(), single.result())


def _close(a, b):
    """Nested comparison with a float tolerance (means of the same numbers, other order)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, z) for x, z in zip(a, b, strict=True))
    if isinstance(a, float):
        assert a == pytest.approx(b, abs=1e-12)
        return True
    assert a == b
    return True
