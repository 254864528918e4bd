"""Per-split evaluation accumulator: feed it image by image, read per-image rows and a summary.

Per image, one distance matrix is computed over the stack [first n_top samples; non-padding
labels] (n_top = min(M, the largest GED count or HM-IoU n)); GED at each count n <= M uses
its top-left blocks, HM-IoU the first ``hm_iou_n`` rows, diversity the n_top samples. Mode
figures use all M samples. The oracle draws M label indices per image with
``np.random.default_rng([oracle_seed, index])``; its samples are copies of labels, so its
distances are read from the label/label block (identical to feeding the drawn maps through
``pairwise_distance``). Per-image figures are averaged over the images that have them;
reliability (ECE) and per-class calibration pool pixels over the split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from carcli.metrics._common import as_maps, check_weights, resolve_eval_classes
from carcli.metrics.calibration import (
    ClassCalibration,
    ReliabilityBins,
    label_probabilities,
    mean_entropy,
    sample_frequencies,
)
from carcli.metrics.distance import image_ignore_mask, pairwise_distance
from carcli.metrics.ged import diversity, ged_at_counts, ged_from_matrices
from carcli.metrics.hm_iou import hm_iou_from_matrix
from carcli.metrics.modes import merge_modes, mode_statistics, oracle_indices

WITHIN = "within_0.8"


class EvalAccumulator:
    """Accumulates every segmentation metric of one split (see the module docstring)."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        eval_classes: Sequence[int] | None = None,
        ged_counts: Sequence[int] = (16, 50, 100),
        hm_iou_n: int = 16,
        with_modes: bool = False,
        oracle_seed: int = 0,
        n_bins: int = 10,
    ) -> None:
        """Configure the metrics; ``with_modes`` adds mode and oracle figures (known w)."""
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.eval_classes = resolve_eval_classes(self.num_classes, eval_classes)
        self.ged_counts = sorted({int(n) for n in ged_counts})
        self.hm_iou_n = int(hm_iou_n)
        self.with_modes = bool(with_modes)
        self.oracle_seed = int(oracle_seed)
        self.reliability = ReliabilityBins(n_bins)
        self.class_calibration = ClassCalibration(self.num_classes)
        self._rows: list[dict] = []
        self._has_p = False

    def columns(self) -> list[str]:
        """Column names of the per-image rows, in order."""
        cols = ["index", "num_samples"] + [f"ged_{n}" for n in self.ged_counts]
        cols += [f"hm_iou_{self.hm_iou_n}", "diversity", "entropy"]
        if self.with_modes:
            cols += ["modes_tv", f"modes_{WITHIN}"]
            cols += [f"oracle_ged_{n}" for n in self.ged_counts]
            cols += ["oracle_tv", f"oracle_{WITHIN}"]
        return cols

    def update(
        self,
        index: int,
        s: np.ndarray,
        y: np.ndarray,
        w: np.ndarray | Sequence[float] | None = None,
        p: np.ndarray | None = None,
    ) -> dict:
        """Add one image: samples s [M, H, W], labels y [A, H, W], weights w [A] (None:
        uniform), F's probabilities p [K, H, W] or None. Returns the image's row."""
        s = as_maps(s, "s")
        y = as_maps(y, "y")
        w = check_weights(w, len(y))
        if s.shape[1:] != y.shape[1:] or len(s) == 0:
            raise ValueError(f"samples {s.shape} and labels {y.shape} do not match")
        if p is not None and np.shape(p) != (self.num_classes, *y.shape[1:]):
            raise ValueError(f"p has shape {np.shape(p)}, expected [K, H, W]")
        m = len(s)
        row: dict = dict.fromkeys(self.columns())
        row["index"], row["num_samples"] = int(index), m

        lab = np.flatnonzero(w > 0)
        yv, wv = y[lab], w[lab]
        ignore = image_ignore_mask(yv, self.ignore_index)
        kw = dict(num_classes=self.num_classes, eval_classes=self.eval_classes)
        n_top = min(m, max([*self.ged_counts, self.hm_iou_n, 1]))
        stack = np.concatenate([s[:n_top], yv])
        d, v = pairwise_distance(stack, stack, ignore_mask=ignore, **kw)
        d_ss, v_ss = d[:n_top, :n_top], v[:n_top, :n_top]
        d_sy, v_sy = d[:n_top, n_top:], v[:n_top, n_top:]
        d_yy, v_yy = d[n_top:, n_top:], v[n_top:, n_top:]

        geds = ged_at_counts(d_sy, v_sy, d_ss, v_ss, d_yy, v_yy, wv, self.ged_counts)
        for n, value in geds.items():
            row[f"ged_{n}"] = value
        if m >= self.hm_iou_n:
            row[f"hm_iou_{self.hm_iou_n}"] = hm_iou_from_matrix(d_sy, wv, self.hm_iou_n)
        row["diversity"] = diversity(d_ss, v_ss)

        q, valid = label_probabilities(y, w, self.num_classes, self.ignore_index)
        freq = sample_frequencies(s, self.num_classes)
        self.class_calibration.update(q, p, freq, valid)
        if p is not None:
            self._has_p = True
            self.reliability.update(p, q, valid)
            ent = mean_entropy(p, valid)
            row["entropy"] = None if np.isnan(ent) else ent

        if self.with_modes:
            self._modes(row, index, s, n_top, yv, wv, w, lab, ignore, d_sy, v_sy, d_yy, v_yy, kw)
        self._rows.append(row)
        return dict(row)

    def _modes(self, row, index, s, n_top, yv, wv, w, lab, ignore, d_sy, v_sy, d_yy, v_yy, kw):
        """Fill the mode and oracle columns of ``row`` (with_modes only)."""
        m = len(s)
        rep, mode_w = merge_modes(yv, wv, ignore)
        d_sm, v_sm = d_sy[:, rep], v_sy[:, rep]
        if m > n_top:
            d_r, v_r = pairwise_distance(s[n_top:], yv[rep], ignore_mask=ignore, **kw)
            d_sm, v_sm = np.concatenate([d_sm, d_r]), np.concatenate([v_sm, v_r])
        stats = mode_statistics(d_sm, v_sm, mode_w)
        row["modes_tv"], row[f"modes_{WITHIN}"] = stats["tv"], stats[WITHIN]

        rng = np.random.default_rng([self.oracle_seed, int(index)])
        position = np.full(len(w), -1, dtype=np.intp)
        position[lab] = np.arange(len(lab))
        drawn = position[oracle_indices(w, m, rng)]  # rows of the label block
        for n in self.ged_counts:
            if n <= m:
                o = drawn[:n]
                row[f"oracle_ged_{n}"] = ged_from_matrices(
                    d_yy[o], v_yy[o], d_yy[np.ix_(o, o)], v_yy[np.ix_(o, o)], d_yy, v_yy, wv
                )
        ostats = mode_statistics(d_yy[np.ix_(drawn, rep)], v_yy[np.ix_(drawn, rep)], mode_w)
        row["oracle_tv"], row[f"oracle_{WITHIN}"] = ostats["tv"], ostats[WITHIN]

    def merge(self, other: EvalAccumulator) -> None:
        """Add another accumulator's images (e.g. from a worker process, same settings)."""
        if other.columns() != self.columns():
            raise ValueError("cannot merge accumulators with different settings")
        self._rows.extend(dict(r) for r in other._rows)
        self.reliability.merge(other.reliability)
        self.class_calibration.merge(other.class_calibration)
        self._has_p = self._has_p or other._has_p

    def rows(self) -> list[dict]:
        """Per-image rows (keys = ``columns()``, None where not applicable), sorted by index."""
        return [dict(r) for r in sorted(self._rows, key=lambda r: r["index"])]

    def _mean(self, key: str) -> float | None:
        vals = [r[key] for r in self._rows if r.get(key) is not None]
        return float(np.mean(vals)) if vals else None

    def _by_count(self, prefix: str) -> dict[str, float]:
        out = {str(n): self._mean(f"{prefix}{n}") for n in self.ged_counts}
        return {k: v for k, v in out.items() if v is not None}

    def result(self) -> dict:
        """Summary: means over images of the per-image figures, pooled ECE and calibration."""
        reliability = self.reliability.result() if self._has_p else None
        out: dict = {
            "n_images": len(self._rows),
            "ged": self._by_count("ged_"),
            "hm_iou": self._mean(f"hm_iou_{self.hm_iou_n}"),
            "hm_iou_samples": self.hm_iou_n,
            "ece": None if reliability is None else reliability["ece"],
            "reliability": reliability,
            "class_calibration": self.class_calibration.result(),
            "modes": None,
            "oracle_ged": None,
            "diversity": self._mean("diversity"),
            "entropy": self._mean("entropy"),
        }
        if self.with_modes:
            out["modes"] = {
                "tv": self._mean("modes_tv"),
                WITHIN: self._mean(f"modes_{WITHIN}"),
                "oracle_tv": self._mean("oracle_tv"),
                f"oracle_{WITHIN}": self._mean(f"oracle_{WITHIN}"),
            }
            out["oracle_ged"] = self._by_count("oracle_ged_")
        return out
