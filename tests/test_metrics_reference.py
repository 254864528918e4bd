"""The vectorised metric kernels against a literal per-pair Python reference (to 1e-6),
on random banks: binary and multi-class, with ignore pixels and zero-weight padding labels."""

from __future__ import annotations

import numpy as np
import pytest

from carcli.metrics import (
    EvalAccumulator,
    SampleCounts,
    ged,
    ged_at_counts,
    hm_iou,
    label_probabilities,
    mode_frequencies,
    oracle_samples,
    pairwise_distance,
)
from carcli.metrics import distance as distance_module

IGNORE = 255


# ---------------------------------------------------------------- reference implementation
def ref_ignore(y, w):
    """Pixels where any non-padding label is the ignore index."""
    mask = np.zeros(y.shape[1:], dtype=bool)
    for a in range(len(y)):
        if w[a] > 0:
            mask |= y[a] == IGNORE
    return mask


def ref_pair(a, b, num_classes, classes, ignore):
    """(d, valid) of one pair of maps, straight from the rules of docs/metrics.md."""
    keep = ~ignore
    if num_classes == 2:
        fa = (a == classes[0]) & keep
        fb = (b == classes[0]) & keep
        union = int((fa | fb).sum())
        iou = 1.0 if union == 0 else int((fa & fb).sum()) / union
        return 1.0 - iou, True
    ious = []
    for c in classes:
        fa = (a == c) & keep
        fb = (b == c) & keep
        union = int((fa | fb).sum())
        if union == 0:
            continue
        ious.append(int((fa & fb).sum()) / union)
    if not ious:
        return 0.0, False
    return 1.0 - sum(ious) / len(ious), True


def ref_matrix(xs, zs, num_classes, classes, ignore):
    d = np.zeros((len(xs), len(zs)))
    v = np.zeros((len(xs), len(zs)), dtype=bool)
    for i, x in enumerate(xs):
        for j, z in enumerate(zs):
            d[i, j], v[i, j] = ref_pair(x, z, num_classes, classes, ignore)
    return d, v


def ref_expect(pairs):
    """pairs: list of (weight, d, valid); weighted mean over valid ones, 0 if none."""
    total = sum(wt for wt, _, ok in pairs if ok)
    if total <= 0:
        return 0.0
    return sum(wt * d for wt, d, ok in pairs if ok) / total


def ref_ged(s, y, w, num_classes, classes):
    """carseg's rule (issue 18): a pair with no scored class counts, with d = 0."""
    ignore = ref_ignore(y, w)
    m = len(s)
    sy, ss, yy = [], [], []
    for i in range(m):
        for a in range(len(y)):
            sy.append((w[a] / m, ref_pair(s[i], y[a], num_classes, classes, ignore)[0], True))
        for j in range(m):
            ss.append((1.0 / m**2, ref_pair(s[i], s[j], num_classes, classes, ignore)[0], True))
    for a in range(len(y)):
        for b in range(len(y)):
            yy.append((w[a] * w[b], ref_pair(y[a], y[b], num_classes, classes, ignore)[0], True))
    return 2 * ref_expect(sy) - ref_expect(ss) - ref_expect(yy)


def ref_hm_iou(s, y, w, n, num_classes, classes):
    """The exact fractional assignment's value by its dual LP (an independent formulation):
    max Σ_i u_i / n + Σ_j v_j w_j subject to u_i + v_j <= d_ij; HM-IoU = 1 - that value."""
    from scipy.optimize import linprog

    ignore = ref_ignore(y, w)
    labels = [a for a in range(len(y)) if w[a] > 0]
    d = np.array(
        [[ref_pair(s[i], y[a], num_classes, classes, ignore)[0] for a in labels] for i in range(n)]
    )
    q = len(labels)
    a_ub = np.zeros((n * q, n + q))
    for i in range(n):
        for j in range(q):
            a_ub[i * q + j, i] = a_ub[i * q + j, n + j] = 1.0
    gain = np.concatenate([np.full(n, 1.0 / n), [w[a] for a in labels]])
    res = linprog(-gain, A_ub=a_ub, b_ub=d.reshape(-1), bounds=(None, None), method="highs")
    return 1.0 + res.fun


def ref_modes(s, y, w, num_classes, classes):
    ignore = ref_ignore(y, w)
    modes, weights = [], []
    for a in range(len(y)):
        if w[a] <= 0:
            continue
        for r, mode in enumerate(modes):
            if np.array_equal(mode[~ignore], y[a][~ignore]):
                weights[r] += w[a]
                break
        else:
            modes.append(y[a])
            weights.append(w[a])
    counts = [0] * len(modes)
    within = 0
    for x in s:
        sims = []
        for mode in modes:
            d, ok = ref_pair(x, mode, num_classes, classes, ignore)
            sims.append(1.0 - d if ok else 1.0)
        best = 0
        for r in range(1, len(sims)):
            if sims[r] > sims[best]:
                best = r
        counts[best] += 1
        within += sims[best] >= 0.8 - 1e-9
    freq = [c / len(s) for c in counts]
    tv = 0.5 * sum(abs(f - x) for f, x in zip(freq, weights, strict=True))
    return within / len(s), tv, freq


# ---------------------------------------------------------------- random banks
def bank(rng, num_classes, m, a, shape=(6, 5), n_pad=1, p_bg=0.5):
    """Samples and labels near a few prototypes (so IoUs spread), ignore pixels in labels,
    ``n_pad`` trailing padding labels filled with the ignore index."""
    protos = rng.integers(1, num_classes, size=(3, *shape))
    protos[rng.random((3, *shape)) < p_bg] = 0

    def draw(k):
        out = protos[rng.integers(0, 3, size=k)].copy()
        flip = rng.random(out.shape) < 0.2
        out[flip] = rng.integers(0, num_classes, size=int(flip.sum()))
        out[rng.random(k) < 0.25] = 0  # some all-background maps: empty / invalid pairs
        return out.astype(np.uint8)

    s = draw(m)
    y = draw(a)
    y[rng.random(y.shape) < 0.08] = IGNORE
    w = rng.random(a) + 0.1
    w /= w.sum()
    if n_pad:
        y = np.concatenate([y, np.full((n_pad, *shape), IGNORE, np.uint8)])
        w = np.concatenate([w, np.zeros(n_pad)])
    return s, y, w


CASES = [(2, None), (5, None), (5, [2, 3]), (4, [0, 1, 2, 3])]


@pytest.mark.parametrize("num_classes,eval_classes", CASES)
def test_pairwise_distance_matches_reference(num_classes, eval_classes):
    rng = np.random.default_rng(num_classes)
    classes = eval_classes or list(range(1, num_classes))
    n_invalid = n_empty_pairs = 0
    for _ in range(3):
        s, y, w = bank(rng, num_classes, 7, 4)
        ignore = ref_ignore(y, w)
        assert ignore.any()
        for a, b in ((s, y), (s, s), (y, s)):
            d, v = pairwise_distance(
                a, b, num_classes=num_classes, eval_classes=eval_classes, ignore_mask=ignore
            )
            rd, rv = ref_matrix(a, b, num_classes, classes, ignore)
            np.testing.assert_array_equal(v, rv)
            np.testing.assert_allclose(d, rd, atol=1e-6)
            n_invalid += int((~v).sum())
            n_empty_pairs += int((d == 0).sum())
    if num_classes > 2 and 0 not in classes:
        assert n_invalid > 0  # the bank does exercise invalid pairs
    assert n_empty_pairs > 0


def test_pairwise_distance_many_classes_and_float64_path(monkeypatch):
    """More than 64 scored classes (several bit-mask groups) and the float64 product path."""
    rng = np.random.default_rng(7)
    k = 70
    s = rng.integers(0, k, size=(5, 6, 6)).astype(np.uint8)
    y = rng.integers(0, k, size=(3, 6, 6)).astype(np.uint8)
    y[:, 0, 0] = IGNORE
    ignore = ref_ignore(y, np.ones(3))
    rd, rv = ref_matrix(s, y, k, list(range(1, k)), ignore)
    d, v = pairwise_distance(s, y, num_classes=k, ignore_mask=ignore)
    np.testing.assert_array_equal(v, rv)
    np.testing.assert_allclose(d, rd, atol=1e-6)
    monkeypatch.setattr(distance_module, "_EXACT_F32", 4)
    d64, v64 = pairwise_distance(s, y, num_classes=k, ignore_mask=ignore)
    np.testing.assert_allclose(d64, rd, atol=1e-12)


@pytest.mark.parametrize("num_classes,eval_classes", CASES)
def test_ged_matches_reference(num_classes, eval_classes):
    rng = np.random.default_rng(10 + num_classes)
    classes = eval_classes or list(range(1, num_classes))
    for _ in range(3):
        s, y, w = bank(rng, num_classes, 6, 3)
        got = ged(s, y, w, num_classes=num_classes, eval_classes=eval_classes)
        assert got == pytest.approx(ref_ged(s, y, w, num_classes, classes), abs=1e-6)


@pytest.mark.parametrize("num_classes", [2, 5])
def test_ged_at_counts_equals_ged_on_first_n(num_classes):
    rng = np.random.default_rng(20 + num_classes)
    s, y, w = bank(rng, num_classes, 9, 4)
    ignore = ref_ignore(y, w)
    kw = dict(num_classes=num_classes, ignore_mask=ignore)
    d_sy, v_sy = pairwise_distance(s, y, **kw)
    d_ss, v_ss = pairwise_distance(s, s, **kw)
    d_yy, v_yy = pairwise_distance(y, y, **kw)
    # carseg's rule: pairs with no scored class count (no validity masks passed)
    got = ged_at_counts(d_sy, d_ss, d_yy, w, (1, 4, 9, 12))
    assert set(got) == {"1", "4", "9"}
    for n in (1, 4, 9):
        want = ref_ged(s[:n], y, w, num_classes, list(range(1, num_classes)))
        assert got[str(n)] == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("num_classes,eval_classes", CASES)
def test_hm_iou_matches_reference(num_classes, eval_classes):
    rng = np.random.default_rng(30 + num_classes)
    classes = eval_classes or list(range(1, num_classes))
    for _ in range(3):
        s, y, w = bank(rng, num_classes, 7, 3)
        got = hm_iou(s, y, w, n=6, num_classes=num_classes, eval_classes=eval_classes)
        assert got == pytest.approx(ref_hm_iou(s, y, w, 6, num_classes, classes), abs=1e-6)


@pytest.mark.parametrize("num_classes,eval_classes", CASES)
def test_mode_frequencies_match_reference(num_classes, eval_classes):
    rng = np.random.default_rng(40 + num_classes)
    classes = eval_classes or list(range(1, num_classes))
    for _ in range(3):
        s, y, w = bank(rng, num_classes, 12, 4)
        y[2] = y[0]  # a duplicate mode to merge
        got = mode_frequencies(s, y, w, num_classes=num_classes, eval_classes=eval_classes)
        within, tv, freq = ref_modes(s, y, w, num_classes, classes)
        assert got["within_0.8"] == pytest.approx(within, abs=1e-12)
        assert got["tv"] == pytest.approx(tv, abs=1e-6)
        np.testing.assert_allclose(got["frequencies"], freq, atol=1e-12)


def test_label_probabilities_match_reference():
    rng = np.random.default_rng(50)
    s, y, w = bank(rng, 5, 1, 4)
    q, valid = label_probabilities(y, w, 5, IGNORE)
    ignore = ref_ignore(y, w)
    for i in range(y.shape[1]):
        for j in range(y.shape[2]):
            assert valid[i, j] == (not ignore[i, j])
            for k in range(5):
                want = sum(w[a] for a in range(len(y)) if y[a, i, j] == k) if valid[i, j] else 0
                assert q[k, i, j] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("num_classes", [2, 5])
def test_accumulator_matches_reference(num_classes):
    """Every per-image figure of the accumulator against the reference and the oracle
    against the same functions fed with ``oracle_samples`` (same per-image seed)."""
    rng = np.random.default_rng(60 + num_classes)
    classes = list(range(1, num_classes))
    acc = EvalAccumulator(
        num_classes, counts=SampleCounts((2, 5, 8), 4), with_modes=True, oracle_seed=3
    )
    for index in range(3):
        s, y, w = bank(rng, num_classes, 10, 3)
        row = acc.update(index, s, y, w, None)
        for n in (2, 5, 8):
            assert row[f"ged_{n}"] == pytest.approx(
                ref_ged(s[:n], y, w, num_classes, classes), abs=1e-6
            )
        assert row["hm_iou_4"] == pytest.approx(
            ref_hm_iou(s, y, w, 4, num_classes, classes), abs=1e-6
        )
        within, tv, _ = ref_modes(s, y, w, num_classes, classes)
        assert row["modes_within_0.8"] == pytest.approx(within)
        assert row["modes_tv"] == pytest.approx(tv, abs=1e-6)
        oracle = oracle_samples(y, w, len(s), np.random.default_rng([3, index]))
        for n in (2, 5, 8):
            assert row[f"oracle_ged_{n}"] == pytest.approx(
                ref_ged(oracle[:n], y, w, num_classes, classes), abs=1e-6
            )
        within, tv, _ = ref_modes(oracle, y, w, num_classes, classes)
        assert row["oracle_within_0.8"] == pytest.approx(within)
        assert row["oracle_tv"] == pytest.approx(tv, abs=1e-6)
