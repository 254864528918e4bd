"""Per-split evaluation accumulator: feed it image by image, read per-image rows and a summary.

Per image, one overlap computation (``pairwise_overlap``: per-class IoU and Dice sums and the
number of scored classes present) is made over the stack [first n_top samples; non-padding
labels] (n_top = min(M, the largest GED count or HM-IoU n)). Every convention
(``conventions``) derives its distances from it: GED at each count n <= M uses the top-left
blocks, HM-IoU the first ``hm_iou_n`` rows, diversity the n_top samples. The ``carseg``
columns (``ged_16``, ``hm_iou_16``, ``diversity``) are always there; another convention's
carry its name as a prefix (``mose_ged_16``). The Dice figures use the same overlaps (the
best match the first ``hm_iou_n`` samples); NCC, QUBIQ and the mode figures use all M
samples, mode coverage the first ``COVERAGE_SAMPLES``. The oracle draws M label indices per
image with ``np.random.default_rng([oracle_seed, index])``; its samples are copies of labels,
so its distances are read from the label/label block (identical to feeding the drawn maps
through ``pairwise_distance``), and the same draws are the oracle of the factor dependence.
Per-image figures are averaged over the images that have them; reliability (ECE) and
per-class calibration pool pixels over the split, the factor dependence its region pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from carcli.metrics._common import as_maps, check_weights, resolve_eval_classes
from carcli.metrics.calibration import (
    ClassCalibration,
    ReliabilityBins,
    label_probabilities,
    mean_entropy,
    sample_frequencies,
)
from carcli.metrics.conventions import (
    CONVENTIONS,
    SampleCounts,
    convention_figures,
    distances,
    parse_conventions,
)
from carcli.metrics.dice import dice_figures, dice_from_overlap, qubiq_score
from carcli.metrics.distance import image_ignore_mask, pairwise_distance, pairwise_overlap
from carcli.metrics.factors import region_pairs, summarise, summarise_regions
from carcli.metrics.ged import ged_from_matrices
from carcli.metrics.modes import merge_modes, mode_coverage, mode_statistics, oracle_indices
from carcli.metrics.ncc import ncc

WITHIN = "within_0.8"
COVERAGE_SAMPLES = 16


@dataclass(frozen=True)
class _Image:
    """One image as `EvalAccumulator.update` prepares it for its column groups."""

    index: int
    s: np.ndarray
    """Samples [M, H, W]."""
    y: np.ndarray
    """Labels [A, H, W]."""
    w: np.ndarray
    """Label weights [A]."""
    lab: np.ndarray
    """Rows of y with weight > 0 (the label block)."""
    ignore: np.ndarray | None
    """The image's ignore mask."""
    n_top: int
    """Samples in the overlap stack."""
    d_sy: np.ndarray
    """carseg distances, first n_top samples x label block."""
    d_yy: np.ndarray
    """carseg distances, label block x label block."""

    @property
    def yv(self) -> np.ndarray:
        return self.y[self.lab]

    @property
    def wv(self) -> np.ndarray:
        return self.w[self.lab]


class EvalAccumulator:
    """Accumulates every segmentation metric of one split (see the module docstring)."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        eval_classes: Sequence[int] | None = None,
        counts: SampleCounts = SampleCounts(),
        with_modes: bool = False,
        oracle_seed: int = 0,
        n_bins: int = 10,
        conventions: str | Sequence[str] = "carseg",
    ) -> None:
        """Configure the metrics; ``counts``: the samples GED and HM-IoU use; ``with_modes``
        adds mode, oracle and factor figures (known w); ``conventions`` names the rule sets
        reported (the first is the primary one, whose GED / HM-IoU / diversity are the
        summary's top-level figures)."""
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.eval_classes = resolve_eval_classes(self.num_classes, eval_classes)
        self.ged_counts = sorted({int(n) for n in counts.ged})
        self.hm_iou_n = int(counts.hm_iou)
        self.with_modes = bool(with_modes)
        self.oracle_seed = int(oracle_seed)
        self.conventions = parse_conventions(conventions)
        self.reliability = ReliabilityBins(n_bins)
        self.class_calibration = ClassCalibration(self.num_classes)
        self._rows: list[dict] = []
        self._pairs: list[dict] = []
        self._has_calib = False

    def _computed(self) -> list[str]:
        """Conventions computed: carseg (always: the standard columns) and the requested."""
        return ["carseg", *[c for c in self.conventions if c != "carseg"]]

    @staticmethod
    def _prefix(name: str) -> str:
        return "" if name == "carseg" else f"{name}_"

    def columns(self) -> list[str]:
        """Column names of the per-image rows, in order."""
        hm = f"hm_iou_{self.hm_iou_n}"
        cols = ["index", "num_samples"] + [f"ged_{n}" for n in self.ged_counts]
        cols += [hm, "diversity", "entropy"]
        cols += ["ncc", "dice_expected", "dice_mean_prediction", "dice_best_match"]
        cols += ["qubiq_samples", "qubiq_calibrator"]
        for name in self._computed()[1:]:
            cols += [f"{name}_ged_{n}" for n in self.ged_counts]
            cols += [f"{name}_{hm}", f"{name}_diversity"]
        if self.with_modes:
            cols += ["modes_tv", f"modes_{WITHIN}", "mode_coverage"]
            cols += [f"oracle_ged_{n}" for n in self.ged_counts]
            cols += ["oracle_tv", f"oracle_{WITHIN}", "oracle_mode_coverage"]
            cols += ["factor_pairs", "factor_dependence", "oracle_factor_dependence"]
            cols += ["coupled_pairs", "coupled_agree", "coupled_joint_tv"]
        return cols

    def update(
        self,
        index: int,
        s: np.ndarray,
        y: np.ndarray,
        w: np.ndarray | Sequence[float] | None = None,
        calib: np.ndarray | None = None,
    ) -> dict:
        """Add one image: samples s [M, H, W], labels y [A, H, W], weights w [A] (None:
        uniform), F's probabilities calib [K, H, W] or None. Returns the image's row."""
        s = as_maps(s, "s")
        y = as_maps(y, "y")
        w = check_weights(w, len(y))
        if s.shape[1:] != y.shape[1:] or len(s) == 0:
            raise ValueError(f"samples {s.shape} and labels {y.shape} do not match")
        if calib is not None and np.shape(calib) != (self.num_classes, *y.shape[1:]):
            raise ValueError(f"p has shape {np.shape(calib)}, expected [K, H, W]")
        m = len(s)
        row: dict = dict.fromkeys(self.columns())
        row["index"], row["num_samples"] = int(index), m

        lab = np.flatnonzero(w > 0)
        yv, wv = y[lab], w[lab]
        ignore = image_ignore_mask(yv, self.ignore_index)
        n_top = min(m, max([*self.ged_counts, self.hm_iou_n, 1]))
        stack = np.concatenate([s[:n_top], yv])
        iou_sum, dice_sum, count = pairwise_overlap(stack, stack, ignore_mask=ignore, **self._kw)
        binary, n_cls = self.num_classes == 2, len(self.eval_classes)
        self._convention_columns(row, iou_sum, count, wv)

        d = distances(CONVENTIONS["carseg"], iou_sum, count, binary, n_cls)
        dice = dice_from_overlap(dice_sum, count)[:n_top, n_top:]
        figs = dice_figures(dice, wv, best_n=min(self.hm_iou_n, n_top))
        row["dice_expected"], row["dice_best_match"] = figs["expected"], figs["best_match"]
        im = _Image(int(index), s, y, w, lab, ignore, n_top, d[:n_top, n_top:], d[n_top:, n_top:])
        self._frequency_columns(row, im, calib)
        if self.with_modes:
            self._modes(row, im)
        self._rows.append(row)
        return dict(row)

    @property
    def _kw(self) -> dict:
        return dict(num_classes=self.num_classes, eval_classes=self.eval_classes)

    def _convention_columns(
        self, row: dict, iou_sum: np.ndarray, count: np.ndarray, wv: np.ndarray
    ) -> None:
        """GED, HM-IoU and diversity of every computed convention."""
        hm = f"hm_iou_{self.hm_iou_n}"
        cache: dict = {}
        for name in self._computed():
            figs = convention_figures(
                CONVENTIONS[name],
                iou_sum,
                count,
                wv,
                binary=self.num_classes == 2,
                n_classes=len(self.eval_classes),
                counts=SampleCounts(self.ged_counts, self.hm_iou_n),
                cache=cache,
            )
            pre = self._prefix(name)
            for n, value in figs["ged"].items():
                row[f"{pre}ged_{n}"] = value
            row[f"{pre}{hm}"] = figs["hm_iou"]
            row[f"{pre}diversity"] = figs["diversity"]

    def _frequency_columns(self, row: dict, im: _Image, calib: np.ndarray | None) -> None:
        """Figures of the samples' class frequencies (Dice of their mean prediction, QUBIQ,
        NCC, class calibration) and of F's probabilities ``calib`` (reliability, entropy)."""
        q, valid = label_probabilities(im.y, im.w, self.num_classes, self.ignore_index)
        freq = sample_frequencies(im.s, self.num_classes)
        if self.num_classes == 2:  # the most frequent class, ties to the lowest
            mean_pred = (freq[1] > freq[0]).astype(np.uint8)[None]
        else:
            mean_pred = freq.argmax(axis=0).astype(np.uint8)[None]
        _, dice_mp, count_mp = pairwise_overlap(mean_pred, im.yv, ignore_mask=im.ignore, **self._kw)
        row["dice_mean_prediction"] = float((dice_from_overlap(dice_mp, count_mp)[0] * im.wv).sum())
        row["qubiq_samples"] = qubiq_score(freq, q, self.eval_classes, valid)
        row["ncc"] = ncc(freq, im.y, im.w, valid)
        self.class_calibration.update(q, calib, freq, valid)
        if calib is not None:
            self._has_calib = True
            self.reliability.update(calib, q, valid)
            ent = mean_entropy(calib, valid)
            row["entropy"] = None if np.isnan(ent) else ent
            row["qubiq_calibrator"] = qubiq_score(calib, q, self.eval_classes, valid)

    def _modes(self, row: dict, im: _Image) -> None:
        """Fill the mode, oracle and factor columns of ``row`` (with_modes only)."""
        s, w, n_top, wv, d_yy = im.s, im.w, im.n_top, im.wv, im.d_yy
        m = len(s)
        rep, mode_w = merge_modes(im.yv, wv, im.ignore)
        d_sm = im.d_sy[:, rep]
        if m > n_top:
            d_r, _ = pairwise_distance(s[n_top:], im.yv[rep], ignore_mask=im.ignore, **self._kw)
            d_sm = np.concatenate([d_sm, d_r])
        stats = mode_statistics(d_sm, None, mode_w)
        row["modes_tv"], row[f"modes_{WITHIN}"] = stats["tv"], stats[WITHIN]
        row["mode_coverage"] = mode_coverage(d_sm[:COVERAGE_SAMPLES], None, mode_w)

        rng = np.random.default_rng([self.oracle_seed, im.index])
        position = np.full(len(w), -1, dtype=np.intp)
        position[im.lab] = np.arange(len(im.lab))
        raw = oracle_indices(w, m, rng)
        drawn = position[raw]  # rows of the label block
        for n in self.ged_counts:
            if n <= m:
                o = drawn[:n]
                row[f"oracle_ged_{n}"] = ged_from_matrices(d_yy[o], d_yy[np.ix_(o, o)], d_yy, wv)
        d_om = d_yy[np.ix_(drawn, rep)]
        ostats = mode_statistics(d_om, None, mode_w)
        row["oracle_tv"], row[f"oracle_{WITHIN}"] = ostats["tv"], ostats[WITHIN]
        row["oracle_mode_coverage"] = mode_coverage(d_om[:COVERAGE_SAMPLES], None, mode_w)

        every = region_pairs(im.y, w, s, raw)
        self._pairs.extend(every)
        pairs = [x for x in every if not x["coupled"]]
        coupled = [x for x in every if x["coupled"]]
        row["factor_pairs"], row["coupled_pairs"] = len(pairs), len(coupled)
        if coupled:
            row["coupled_agree"] = float(np.mean([x["agree"] for x in coupled]))
            row["coupled_joint_tv"] = float(np.mean([x["joint_tv"] for x in coupled]))
        if pairs:
            row["factor_dependence"] = float(np.mean([x["dependence"] for x in pairs]))
            row["oracle_factor_dependence"] = float(
                np.mean([x["oracle_dependence"] for x in pairs])
            )

    def merge(self, other: EvalAccumulator) -> None:
        """Add another accumulator's images (e.g. from a worker process, same settings)."""
        if other.columns() != self.columns():
            raise ValueError("cannot merge accumulators with different settings")
        self._rows.extend(dict(r) for r in other._rows)
        self._pairs.extend(dict(x) for x in other._pairs)
        self.reliability.merge(other.reliability)
        self.class_calibration.merge(other.class_calibration)
        self._has_calib = self._has_calib or other._has_calib

    def rows(self) -> list[dict]:
        """Per-image rows (keys = ``columns()``, None where not applicable), sorted by index."""
        return [dict(r) for r in sorted(self._rows, key=lambda r: r["index"])]

    def _mean(self, key: str) -> float | None:
        vals = [r[key] for r in self._rows if r.get(key) is not None]
        return float(np.mean(vals)) if vals else None

    def _by_count(self, prefix: str) -> dict[str, float]:
        out = {str(n): self._mean(f"{prefix}{n}") for n in self.ged_counts}
        return {k: v for k, v in out.items() if v is not None}

    def _count(self, key: str) -> int:
        return sum(1 for r in self._rows if r.get(key) is not None)

    def convention_result(self, name: str) -> dict:
        """One convention's block: its rules, GED by count, HM-IoU, diversity and how many
        images each mean is over (a convention that makes an image NaN leaves it out)."""
        pre = self._prefix(name)
        hm = f"{pre}hm_iou_{self.hm_iou_n}"
        return {
            "rules": CONVENTIONS[name].rules(),
            "ged": self._by_count(f"{pre}ged_"),
            "hm_iou": self._mean(hm),
            "diversity": self._mean(f"{pre}diversity"),
            "n_images": {
                "ged": {str(n): self._count(f"{pre}ged_{n}") for n in self.ged_counts},
                "hm_iou": self._count(hm),
            },
        }

    def result(self) -> dict:
        """Summary: means over images of the per-image figures, pooled ECE and calibration.

        Top-level ``ged``, ``hm_iou`` and ``diversity`` follow the primary convention;
        ``conventions`` holds one block per requested convention."""
        reliability = self.reliability.result() if self._has_calib else None
        blocks = {name: self.convention_result(name) for name in self.conventions}
        primary = blocks[self.conventions[0]]
        out: dict = {
            "n_images": len(self._rows),
            "convention": self.conventions[0],
            "ged": primary["ged"],
            "hm_iou": primary["hm_iou"],
            "hm_iou_samples": self.hm_iou_n,
            "ece": None if reliability is None else reliability["ece"],
            "reliability": reliability,
            "class_calibration": self.class_calibration.result(),
            "modes": None,
            "oracle_ged": None,
            "diversity": primary["diversity"],
            "entropy": self._mean("entropy"),
            "ncc": self._mean("ncc"),
            "dice": {
                "expected": self._mean("dice_expected"),
                "mean_prediction": self._mean("dice_mean_prediction"),
                "best_match": self._mean("dice_best_match"),
            },
            "qubiq": {
                "samples": self._mean("qubiq_samples"),
                "calibrator": self._mean("qubiq_calibrator"),
            },
            "conventions": blocks,
        }
        if self.with_modes:
            out["modes"] = {
                "tv": self._mean("modes_tv"),
                WITHIN: self._mean(f"modes_{WITHIN}"),
                "coverage": self._mean("mode_coverage"),
                "oracle_tv": self._mean("oracle_tv"),
                f"oracle_{WITHIN}": self._mean(f"oracle_{WITHIN}"),
                "oracle_coverage": self._mean("oracle_mode_coverage"),
            }
            out["oracle_ged"] = self._by_count("oracle_ged_")
            out["factor_dependence"] = summarise([x for x in self._pairs if not x["coupled"]])
            out["region_pairs"] = summarise_regions(self._pairs)
        return out
