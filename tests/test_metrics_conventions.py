"""Issue 18: exact HM-IoU, the one empty-map rule and each peer's convention, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from carcli.metrics import (
    CONVENTIONS,
    EvalAccumulator,
    ReliabilityBins,
    SampleCounts,
    ged,
    hm_iou,
    hm_iou_from_matrix,
    pairwise_overlap,
    parse_conventions,
    transport_value,
)
from carcli.metrics.conventions import convention_figures

ALL = list(CONVENTIONS)


def half(right: bool) -> np.ndarray:
    m = np.zeros((8, 8), np.uint8)
    m[:, 4:] = 1 if right else 0
    m[:, :4] = 0 if right else 1
    return m


# ---------------------------------------------------------------- defect: HM-IoU order
def test_hm_iou_reproducer_is_order_independent():
    """Labels P, P, P, Q (mass 3/4, 1/4); 10 samples 7 P + 3 Q (mass 7/10, 3/10): 7/10 and
    1/4 match at IoU 1, the remaining 1/20 of Q samples goes to P at IoU 0 -> 0.95. The old
    largest-remainder tiling gave 0.9 (PPPQ) and 1.0 (QPPP)."""
    p, q = half(False), half(True)
    s = np.stack([p] * 7 + [q] * 3)
    for y in (np.stack([p, p, p, q]), np.stack([q, p, p, p]), np.stack([p, q, p, p])):
        assert hm_iou(s, y, n=10, num_classes=2) == pytest.approx(0.95, abs=1e-12)
        assert ged(s, y, num_classes=2) == pytest.approx(0.005)
    acc = EvalAccumulator(2, counts=SampleCounts([10], 10))
    acc.update(0, s, np.stack([q, p, p, p]))
    assert acc.result()["hm_iou"] == pytest.approx(0.95)


def test_hm_iou_weighted_rows_reversed_same_value():
    rng = np.random.default_rng(0)
    d = rng.random((16, 7))
    w = rng.dirichlet(np.ones(7))
    assert hm_iou_from_matrix(d, w) == pytest.approx(hm_iou_from_matrix(d[:, ::-1], w[::-1]))
    # Cityscapes-like weights (multiples of 1/17) and 32 modes: the LP path
    w17 = rng.integers(1, 5, 32).astype(float)
    w17 /= w17.sum()
    d = rng.random((16, 32))
    perm = rng.permutation(32)
    assert hm_iou_from_matrix(d, w17) == pytest.approx(hm_iou_from_matrix(d[:, perm], w17[perm]))


def test_transport_equals_tiled_hungarian_when_exact():
    """4 uniform labels, 16 samples: the value is the classic 4 x 4 tiled matching."""
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(1)
    d = rng.random((16, 4))
    tiled = d[:, np.repeat(np.arange(4), 4)]
    i, j = linear_sum_assignment(tiled)
    assert hm_iou_from_matrix(d, np.full(4, 0.25)) == pytest.approx(1 - tiled[i, j].mean())
    # by hand: 2 samples, labels (3/4, 1/4); costs [[0, 1], [1, 0]]: 1/2 + 1/4 at 0, 1/4 at 1
    assert transport_value(np.array([[0.0, 1], [1, 0]]), [0.5, 0.5], np.array([0.75, 0.25])) == (
        pytest.approx(0.25)
    )


def test_ece_bin_edge_goes_to_the_upper_bin():
    """A confidence exactly on an edge (0.5 is exact in float16) goes to the upper bin
    ([0.5, 0.6)); MoSE's code puts it in the lower one."""
    bins = ReliabilityBins(10)
    p = np.full((2, 1, 1), 0.5, np.float16).astype(np.float32)
    q = np.array([1.0, 0.0]).reshape(2, 1, 1)
    bins.update(p, q)
    assert bins.count.tolist() == [0] * 5 + [1] + [0] * 4


# ---------------------------------------------------------------- the conventions by hand
def figures(name, s, y, w, k, counts, hm_n):
    stack = np.concatenate([s, y])
    iou, _, count = pairwise_overlap(stack, stack, num_classes=k)
    return convention_figures(
        CONVENTIONS[name],
        iou,
        count,
        np.asarray(w, float),
        binary=k == 2,
        n_classes=k - 1,
        counts=SampleCounts(counts, hm_n),
    )


def binary_case():
    """4x4 binary: labels E (empty), F (2 px); samples E, F, F' (1 px of F)."""
    e = np.zeros((4, 4), np.uint8)
    f = e.copy()
    f[0, :2] = 1
    f1 = e.copy()
    f1[0, 0] = 1
    return np.stack([e, f, f1]), np.stack([e, f]), [0.5, 0.5]


@pytest.mark.parametrize("name", ALL)
def test_binary_with_empty_maps_and_m_not_a_multiple_of_a(name):
    # d_sy: E [0, 1], F [1, 0], F' [1, 1/2]; E d(s,y) = 7/12; E d(s,s') = 5/9; E d(y,y') = 1/2
    # GED = 14/12 - 5/9 - 1/2 = 1/9 under every convention (the binary rule is shared)
    s, y, w = binary_case()
    got = figures(name, s, y, w, 2, [3], 3)
    assert got["ged"]["3"] == pytest.approx(1 / 9)
    # HM-IoU, 3 samples of mass 1/3 vs 2 labels of mass 1/2: E->E 1/3 at 1, F->F 1/3 at 1,
    # F' splits 1/6 to F at 1/2 and 1/6 to E at 0 -> 3/4 (lcm(3, 2) = 6 tiling: the same);
    # Flow-SSN matches 2 of the 3 samples: E->E, F->F -> 1; PHiSeg reports none
    want_hm = {"flowssn": 1.0, "phiseg": None}.get(name, 0.75)
    assert got["hm_iou"] == (None if want_hm is None else pytest.approx(want_hm))
    # diversity: carseg over distinct pairs 5/6; the peers' d_SS with self-pairs 5/9
    assert got["diversity"] == pytest.approx(5 / 6 if name == "carseg" else 5 / 9)


def multiclass_case():
    """K = 4 (scored 1, 2, 3), 2x2: labels A = class 1 on the top row (w 3/4) and an empty
    map (w 1/4); samples A and [[1, 2], [0, 0]]."""
    a = np.array([[1, 1], [0, 0]], np.uint8)
    e = np.zeros((2, 2), np.uint8)
    s2 = np.array([[1, 2], [0, 0]], np.uint8)
    return np.stack([a, s2]), np.stack([a, e]), [0.75, 0.25]


WANT_MULTI = {
    # carseg: d(s2, A) = 1 - (1/2 + 0)/2 = 3/4, d(., E) = 1, d(E, E) = 0 and counts
    # E d(s,y) = 17/32, E d(s,s') = 3/8, E d(y,y') = 3/8 -> GED 5/16
    # HM-IoU: s1 -> A 1/2 at 1, s2 -> A 1/4 at 1/4, s2 -> E 1/4 at 0 -> 9/16
    "carseg": (5 / 16, 9 / 16, 3 / 4),
    # (E, E) has no scored class: NaN -> the image's GED is NaN, left out; HM-IoU has no NaN
    "car": (None, 9 / 16, 3 / 8),
    "mose": (None, 9 / 16, 3 / 8),
    "flowssn": (None, 1 / 2, 3 / 8),  # 2 x 2 Hungarian: s1 -> A (1) + s2 -> E (0)
    # absent classes score IoU 1 over all 3 classes, uniform label weights:
    # d(A,E) = 1/3, d(s2,A) = 1/2, d(s2,E) = 2/3, d(E,E) = 0 -> GED 3/4 - 1/4 - 1/6 = 1/3
    "phiseg": (1 / 3, None, 1 / 4),
    # CCDM: the same distances, lcm(2, 2) tiling: s1 -> A (1) + s2 -> E (1/3) -> 2/3
    "ccdm": (1 / 3, 2 / 3, 1 / 4),
}


@pytest.mark.parametrize("name", ALL)
def test_weighted_multiclass_with_an_absent_class_and_an_empty_label(name):
    s, y, w = multiclass_case()
    got = figures(name, s, y, w, 4, [2], 2)
    want_ged, want_hm, want_div = WANT_MULTI[name]
    for value, want in ((got["ged"]["2"], want_ged), (got["hm_iou"], want_hm)):
        assert value == (None if want is None else pytest.approx(want))
    assert got["diversity"] == pytest.approx(want_div)


def test_nan_in_hm_iou_cost_mose_scores_zero_car_leaves_out():
    """K = 3, labels (E, A), samples (E, A): the (E, E) pair is NaN for CAR, MoSE, Flow-SSN."""
    e = np.zeros((2, 2), np.uint8)
    a = np.array([[1, 0], [0, 0]], np.uint8)
    s, y = np.stack([e, a]), np.stack([e, a])
    out = {name: figures(name, s, y, [0.5, 0.5], 3, [2], 2)["hm_iou"] for name in ALL}
    assert out["carseg"] == pytest.approx(1.0)  # E -> E at IoU 1, A -> A at 1
    assert out["mose"] == 0.0  # its assignment raises on NaN; the handler adds 0
    assert out["car"] is None and out["flowssn"] is None
    assert out["ccdm"] == pytest.approx(1.0) and out["phiseg"] is None


def test_accumulator_reports_each_convention_and_the_primary_at_top_level():
    s, y, w = multiclass_case()
    acc = EvalAccumulator(4, counts=SampleCounts([2], 2), conventions="mose,carseg,ccdm")
    acc.update(0, s, y, w)
    out = acc.result()
    assert out["convention"] == "mose" and list(out["conventions"]) == ["mose", "carseg", "ccdm"]
    assert out["ged"] == {}  # MoSE leaves the one image out
    assert out["conventions"]["mose"]["n_images"]["ged"]["2"] == 0
    assert out["conventions"]["carseg"]["ged"]["2"] == pytest.approx(5 / 16)
    assert out["conventions"]["ccdm"]["hm_iou"] == pytest.approx(2 / 3)
    assert out["conventions"]["ccdm"]["rules"]["absent_class"] == "one"
    row = acc.rows()[0]
    assert row["ged_2"] == pytest.approx(5 / 16) and row["ccdm_ged_2"] == pytest.approx(1 / 3)


def test_parse_conventions():
    assert parse_conventions("all") == ALL
    assert parse_conventions("mose, car,mose") == ["mose", "car"]
    with pytest.raises(ValueError, match="valid: carseg"):
        parse_conventions("probunet")


# ---------------------------------------------------------------- against literal references
def ref_pair_iou(a, b, k, rule):
    """IoU of one pair from the rules, per class, literally."""
    if k == 2:
        fa, fb = a == 1, b == 1
        union = int((fa | fb).sum())
        return 1.0 if union == 0 else int((fa & fb).sum()) / union
    ious = []
    for c in range(1, k):
        fa, fb = a == c, b == c
        union = int((fa | fb).sum())
        if union == 0:
            if rule.absent_class == "one":
                ious.append(1.0)
            continue
        ious.append(int((fa & fb).sum()) / union)
    if not ious:
        return 1.0 if rule.empty_pair == "zero" else float("nan")
    return sum(ious) / len(ious)


def ref_figures(name, s, y, w, k):
    from scipy.optimize import linear_sum_assignment, linprog

    rule = CONVENTIONS[name]
    n, a = len(s), len(y)
    w = np.asarray(w) if rule.label_weights else np.full(a, 1 / a)
    d_sy = np.array([[1 - ref_pair_iou(si, yj, k, rule) for yj in y] for si in s])
    d_ss = np.array([[1 - ref_pair_iou(si, sj, k, rule) for sj in s] for si in s])
    d_yy = np.array([[1 - ref_pair_iou(yi, yj, k, rule) for yj in y] for yi in y])
    g = 2 * (d_sy * w / n).sum() - d_ss.mean() - (d_yy * np.outer(w, w)).sum()
    ged_value = None if np.isnan(g) else g
    if rule.hm_iou == "none":
        hm = None
    elif np.isnan(d_sy).any():
        hm = 0.0 if rule.hm_iou_nan == "zero" else None
    elif rule.hm_iou == "rectangular":
        i, j = linear_sum_assignment(d_sy)
        hm = 1 - d_sy[i, j].mean()
    elif rule.hm_iou == "lcm" or np.allclose(w, 1 / a):
        lcm = np.lcm(n, a)  # both sides tiled, one Hungarian matching
        tiled = d_sy[np.repeat(np.arange(n), lcm // n)][:, np.repeat(np.arange(a), lcm // a)]
        i, j = linear_sum_assignment(tiled)
        hm = 1 - tiled[i, j].mean()
    else:  # the dual of the transportation problem
        a_ub = np.zeros((n * a, n + a))
        for i in range(n):
            for j in range(a):
                a_ub[i * a + j, i] = a_ub[i * a + j, n + j] = 1
        gain = np.concatenate([np.full(n, 1 / n), w])
        res = linprog(-gain, A_ub=a_ub, b_ub=d_sy.reshape(-1), bounds=(None, None))
        hm = 1 + res.fun
    return ged_value, hm


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("name", ALL)
def test_conventions_match_literal_references(name, k):
    rng = np.random.default_rng(k)
    for trial in range(6):
        n, a = 5, 3
        s = rng.integers(0, k, (n, 3, 3)).astype(np.uint8)
        y = rng.integers(0, k, (a, 3, 3)).astype(np.uint8)
        s[rng.random(n) < 0.3] = 0  # empty maps: empty pairs
        y[rng.random(a) < 0.3] = 0
        w = rng.dirichlet(np.ones(a)) if trial % 2 else np.full(a, 1 / a)
        got = figures(name, s, y, w, k, [n], n)
        want_ged, want_hm = ref_figures(name, s, y, w, k)
        for value, want in ((got["ged"][str(n)], want_ged), (got["hm_iou"], want_hm)):
            if want is None:
                assert value is None
            else:
                assert value == pytest.approx(want, abs=1e-9)
