"""Distinct proposals among samples (carcli/predict/proposals.py) against hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from carcli.predict.proposals import pairwise_miou, proposals


def _maps(*rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


def test_pairwise_miou_by_hand():
    a = [[1, 1], [0, 0]]
    b = [[1, 0], [0, 0]]  # class 1: inter 1, union 2 -> 0.5
    c = [[2, 2], [0, 0]]  # no class 1; class 2 only in c
    m = pairwise_miou(_maps(a, b, c), [1, 2])
    assert m[0, 1] == pytest.approx(0.5)  # class 2 absent from both: left out
    assert m[0, 2] == pytest.approx(0.0)  # class 1: 0/2, class 2: 0/2
    assert np.allclose(np.diag(m), 1)
    empty = pairwise_miou(_maps([[0, 0]], [[0, 0]]), [1])
    assert empty[0, 1] == 1.0  # no eval class in either: the same map


def test_proposals_frequencies_representatives_and_order():
    big = np.zeros((20, 20), np.uint8)
    big[5:15, 5:15] = 1
    near = big.copy()
    near[5, 5] = 0  # IoU 99/100 = 0.99 >= 0.95: the same proposal
    other = np.zeros((20, 20), np.uint8)
    other[0:4, 0:4] = 2
    samples = np.stack([other, big, near, big, other, big])
    props = proposals(samples, [1, 2])
    assert [p["count"] for p in props] == [4, 2]
    assert [p["frequency"] for p in props] == pytest.approx([4 / 6, 2 / 6])
    assert props[0]["sample"] == 1 and props[1]["sample"] == 0  # most frequent map first
    assert props[0]["mean_iou_to_others"] == pytest.approx(0.0)
    single = proposals(np.stack([big, big]), [1])
    assert single == [{"frequency": 1.0, "count": 2, "sample": 0, "mean_iou_to_others": None}]
