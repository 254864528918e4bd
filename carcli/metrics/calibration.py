"""Calibration metrics: true label probabilities, reliability bins / ECE, per-class
calibration of ambiguous pixels, and the mean entropy of F's probabilities.

The accumulators pool pixels over every ``update`` (a whole split); ``merge`` adds another
accumulator's sums (e.g. from a worker process).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import entr

from carcli.metrics._common import as_maps, check_weights
from carcli.metrics.distance import image_ignore_mask

# q_k within this of 0 or 1 counts as unambiguous (weights sum to 1 only up to rounding).
AMBIGUITY_EPS = 1e-6


def label_probabilities(
    y: np.ndarray,
    w: np.ndarray | Sequence[float] | None,
    num_classes: int,
    ignore_index: int | None = 255,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (q float64 [K, H, W], valid bool [H, W]) with q_k = Σ_a w_a [y_a == k].

    ``valid`` is False where any non-padding label is ``ignore_index``; q is 0 there.
    Label values other than classes < K and ``ignore_index`` are an error.
    """
    y = as_maps(y, "y")
    w = check_weights(w, len(y))
    k, (h, wd) = num_classes, y.shape[1:]
    n_pix = h * wd
    valid = ~image_ignore_mask(y, ignore_index, w)
    q = np.zeros(k * n_pix)
    cols = np.arange(n_pix)
    for a in np.flatnonzero(w > 0):
        ya = y[a].reshape(-1).astype(np.intp)
        ok = ya < k
        if not ok.all():
            bad = ~ok & (ya != (-1 if ignore_index is None else ignore_index))
            if bad.any():
                raise ValueError(f"label {a} has values >= num_classes={k}: {np.unique(ya[bad])}")
            q[ya[ok] * n_pix + cols[ok]] += w[a]
        else:
            q[ya * n_pix + cols] += w[a]
    q = q.reshape(k, h, wd)
    q[:, ~valid] = 0.0
    return q, valid


def sample_frequencies(s: np.ndarray, num_classes: int) -> np.ndarray:
    """Return float64 [K, H, W]: the fraction of samples s [M, H, W] equal to each class."""
    s = as_maps(s, "s")
    m, h, wd = s.shape
    k = num_classes
    if k <= 4:  # a few comparison passes beat scattering for few classes
        counts = np.empty((k, h, wd), dtype=np.int32)
        for c in range(k - 1):
            counts[c] = (s == c).sum(axis=0, dtype=np.int32)
        if m and int(s.max()) < k:  # every sample value is a class: the last one is the rest
            counts[k - 1] = m - counts[: k - 1].sum(axis=0)
        else:
            counts[k - 1] = (s == k - 1).sum(axis=0, dtype=np.int32)
        return counts / max(m, 1)
    n_pix = h * wd
    counts = np.zeros(k * n_pix, dtype=np.int32)
    cols = np.arange(n_pix)
    for sm in s.reshape(m, -1):
        sm = sm.astype(np.intp)
        ok = sm < k
        if ok.all():
            counts[sm * n_pix + cols] += 1  # one (class, pixel) per pixel: no duplicates
        else:
            counts[sm[ok] * n_pix + cols[ok]] += 1
    return counts.reshape(k, h, wd) / max(m, 1)


def _select(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Flatten [K, H, W] to [K, n] keeping the pixels of ``mask`` (all when None)."""
    x2 = np.asarray(x).reshape(x.shape[0], -1)
    if mask is None:
        return x2
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    return x2 if mask.all() else x2[:, mask]


def _mean(total: float, count: float) -> float | None:
    return float(total / count) if count > 0 else None


class ReliabilityBins:
    """Reliability diagram / ECE accumulator for F's probabilities against label probabilities.

    Per pixel: confidence = max_k p_k, prediction = argmax (ties: lowest class), accuracy =
    q[prediction] (the expected accuracy under the label distribution). Bins have equal
    width over [0, 1]: bin b = [b/n, (b+1)/n), found as floor(confidence·n) in float64 from
    the stored value, except the last, which is closed (confidence 1 goes to bin n-1). So a
    confidence exactly on an edge goes to the upper bin (0.5, exact in float16, is in bin 5
    of 10; MoSE's code puts it in the lower one); a stored 0.7 (0.69999999 in float32) is
    below its edge and stays in bin 6.
    """

    def __init__(self, n_bins: int = 10) -> None:
        """Create ``n_bins`` empty bins."""
        self.n_bins = int(n_bins)
        self.edges = np.linspace(0.0, 1.0, self.n_bins + 1)
        self.count = np.zeros(self.n_bins, dtype=np.int64)
        self.conf_sum = np.zeros(self.n_bins)
        self.acc_sum = np.zeros(self.n_bins)

    def update(self, p: np.ndarray, q: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add the pixels of one image: p, q [K, H, W] float, mask bool [H, W] (True = use)."""
        p2, q2 = _select(p, mask), _select(q, mask)
        if p2.shape != q2.shape:
            raise ValueError(f"p and q shapes differ: {p.shape} vs {q.shape}")
        if p2.shape[1] == 0:
            return
        pred = p2.argmax(axis=0)
        cols = np.arange(p2.shape[1])
        conf = p2[pred, cols].astype(np.float64)
        acc = q2[pred, cols].astype(np.float64)
        b = np.clip((conf * self.n_bins).astype(np.intp), 0, self.n_bins - 1)
        self.count += np.bincount(b, minlength=self.n_bins)
        self.conf_sum += np.bincount(b, weights=conf, minlength=self.n_bins)
        self.acc_sum += np.bincount(b, weights=acc, minlength=self.n_bins)

    def merge(self, other: ReliabilityBins) -> None:
        """Add another accumulator's pixels (same number of bins)."""
        if other.n_bins != self.n_bins:
            raise ValueError("cannot merge reliability bins of different sizes")
        self.count += other.count
        self.conf_sum += other.conf_sum
        self.acc_sum += other.acc_sum

    def result(self) -> dict:
        """Per-bin count / mean confidence / mean accuracy and ece = Σ (n_b/N)|acc_b − conf_b|."""
        total = int(self.count.sum())
        conf = [_mean(s, n) for s, n in zip(self.conf_sum, self.count, strict=True)]
        acc = [_mean(s, n) for s, n in zip(self.acc_sum, self.count, strict=True)]
        ece = None
        if total > 0:
            ece = float(np.abs(self.acc_sum - self.conf_sum).sum() / total)
        return {
            "n_bins": self.n_bins,
            "edges": [float(e) for e in self.edges],
            "count": [int(n) for n in self.count],
            "confidence": conf,
            "accuracy": acc,
            "n_pixels": total,
            "ece": ece,
        }


class ClassCalibration:
    """Per-class calibration over ambiguous pixels, pooled over the split.

    For class k, the pixels with 0 < q_k < 1 (within ``AMBIGUITY_EPS``) contribute q_k (the
    truth), p_k (the calibrator F) and the frequency of k among G's samples (the refiner).
    """

    def __init__(self, num_classes: int) -> None:
        """Create empty sums for ``num_classes`` classes."""
        k = self.num_classes = int(num_classes)
        self.n = np.zeros(k, dtype=np.int64)
        self.true_sum = np.zeros(k)
        self.cal_n = np.zeros(k, dtype=np.int64)
        self.cal_sum = np.zeros(k)
        self.ref_n = np.zeros(k, dtype=np.int64)
        self.ref_sum = np.zeros(k)

    def update(
        self,
        q: np.ndarray,
        p: np.ndarray | None,
        sample_freq: np.ndarray | None,
        mask: np.ndarray | None = None,
    ) -> None:
        """Add one image: q, p, sample_freq [K, H, W] (p / sample_freq may be None), mask [H, W]."""
        q2 = _select(q, mask).astype(np.float64, copy=False)
        if q2.shape[0] != self.num_classes:
            raise ValueError(f"q has {q2.shape[0]} classes, expected {self.num_classes}")
        amb = (q2 > AMBIGUITY_EPS) & (q2 < 1.0 - AMBIGUITY_EPS)
        n_amb = amb.sum(axis=1)
        self.n += n_amb
        self.true_sum += np.where(amb, q2, 0.0).sum(axis=1)
        for x, n_attr, sum_attr in ((p, "cal_n", "cal_sum"), (sample_freq, "ref_n", "ref_sum")):
            if x is None:
                continue
            x2 = _select(x, mask)
            if x2.shape != q2.shape:
                raise ValueError(f"shape {np.shape(x)} differs from q's {np.shape(q)}")
            getattr(self, n_attr)[:] += n_amb
            getattr(self, sum_attr)[:] += np.where(amb, x2.astype(np.float64), 0.0).sum(axis=1)

    def merge(self, other: ClassCalibration) -> None:
        """Add another accumulator's sums (same number of classes)."""
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge class calibration of different class counts")
        for name in ("n", "true_sum", "cal_n", "cal_sum", "ref_n", "ref_sum"):
            getattr(self, name)[:] += getattr(other, name)

    def result(self) -> dict:
        """Per class {n_pixels, true, calibrator, refiner, *_offset}; None where never ambiguous.

        Also the mean and max offsets over the classes that were ambiguous.
        """
        classes: dict[str, dict] = {}
        offsets: dict[str, list[float]] = {"calibrator": [], "refiner": []}
        for k in range(self.num_classes):
            n = int(self.n[k])
            row: dict = {"n_pixels": n, "true": _mean(self.true_sum[k], n)}
            for name, cn, cs in (
                ("calibrator", self.cal_n, self.cal_sum),
                ("refiner", self.ref_n, self.ref_sum),
            ):
                row[name] = _mean(cs[k], cn[k]) if n > 0 else None
                off = None
                if row[name] is not None and row["true"] is not None and cn[k] == n:
                    off = abs(row[name] - row["true"])
                    offsets[name].append(off)
                row[f"{name}_offset"] = off
            classes[str(k)] = row
        out: dict = {"classes": classes}
        for name, values in offsets.items():
            out[f"mean_{name}_offset"] = float(np.mean(values)) if values else None
            out[f"max_{name}_offset"] = float(np.max(values)) if values else None
        return out


def mean_entropy(p: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean per-pixel entropy of p [K, H, W] in nats over ``mask`` (NaN if no pixel)."""
    p2 = _select(p, mask)
    if p2.shape[1] == 0:
        return float("nan")
    return float(entr(p2.astype(np.float64)).sum(axis=0).mean())
