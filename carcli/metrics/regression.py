"""Evaluation of a regression sample bank against its split (the paper's section 5.1).

Figures (all means over the split's inputs x):
- ``log_likelihood.samples``: exact log p(s | x) of ONE sample per input under the split's true
  mixture (the paper's Fig. 7 figure; the authors' code uses the first of fresh samples);
  ``all_samples`` averages every sample; ``real`` scores the observed labels the same way.
- ``upper_share``: per x-region (dataset attribute ``regions``), the share of samples with
  y > 0 (the upper mode), beside the observed labels' share (``real``) and the exact
  probability under the mixture (``true``); ``collapsed`` marks a region where the true
  density has two modes (components of weight >= 0.05 for most of its inputs), the true share
  is between 0.05 and 0.95, but the samples put more than 99% (or less than 1%) above 0.
- ``mean_vs_calibrator``: |mean of the samples - F(x)|; ``mean_vs_truth``: |mean of the
  samples - E[y | x]|; ``calibrator_vs_truth``: |F(x) - E[y | x]| (Euclidean over D_out).
Without a stored mixture only the figures that need none are reported.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from carcli.data.dataset import DatasetFile
from carcli.data.regression import (
    MIXTURE_NAMES,
    REGIONS,
    mixture_log_likelihood,
    mixture_mean_y,
    mixture_prob_positive,
)
from carcli.metrics.samples import SampleSource
from carcli.ui import Reporter

COLLAPSE_SHARE = 0.99
MODE_WEIGHT = 0.05
COLUMNS = [
    "index",
    "x",
    "calibrator",
    "sample_mean",
    "sample_std",
    "true_mean",
    "upper_share",
    "true_upper",
    "ll_sample",
    "ll_all",
]


def regions_of(ds: DatasetFile) -> list[list[float]]:
    raw = ds.h5.attrs.get("regions")
    if raw is None:
        return [[-np.inf, np.inf]]
    try:
        regions = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
        return [[float(a), float(b)] for a, b in regions]
    except (TypeError, ValueError):
        return [list(r) for r in REGIONS]


def evaluate_regression(
    ds: DatasetFile, bank: SampleSource, chunk_size: int, rep: Reporter
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """Summary, per-input rows and CSV columns of a regression bank."""
    has_mixture = all(m in ds.h5 for m in MIXTURE_NAMES)
    xs, f_all, means, stds, shares = [], [], [], [], []
    ll1, ll_all, true_mean, true_up, real_up, real_ll = [], [], [], [], [], []
    modal = []  # rows whose true density has two or more components of weight >= 0.05
    with rep.progress(bank.n, "evaluate regression") as bar:
        for a in range(0, bank.n, chunk_size):
            b = min(bank.n, a + chunk_size)
            rows = bank.index[a:b]
            samples = bank.read("samples", slice(a, b)).astype(np.float64)
            calib = bank.read("calibration", slice(a, b)).astype(np.float64)
            x = ds.read_rows("image", rows).astype(np.float64)
            labels = ds.read_rows("label", rows).astype(np.float64)
            weights = ds.weights(rows)
            xs.append(x[:, 0])
            f_all.append(calib)
            means.append(samples.mean(1))
            stds.append(samples[:, :, 0].std(1))
            shares.append((samples[:, :, 0] > 0).mean(1))
            real_up.append(((labels[:, :, 0] > 0) * weights).sum(1))
            if has_mixture:
                mean, weight, std = (ds.read_rows(m, rows) for m in MIXTURE_NAMES)
                ll = mixture_log_likelihood(samples, mean, weight, std)
                ll1.append(ll[:, 0])
                ll_all.append(ll.mean(1))
                real_ll.append((mixture_log_likelihood(labels, mean, weight, std) * weights).sum(1))
                true_mean.append(mixture_mean_y(mean, weight))
                true_up.append(mixture_prob_positive(mean, weight, std))
                modal.append((weight >= MODE_WEIGHT).sum(1) >= 2)
            bar.advance(b - a)
    cat = (lambda parts: np.concatenate(parts)) if bank.n else (lambda parts: np.zeros(0))
    x, f, mu, sd, share, real = (cat(v) for v in (xs, f_all, means, stds, shares, real_up))
    summary: dict[str, Any] = {
        "mean_vs_calibrator": _mean(np.linalg.norm(mu - f, axis=-1)) if bank.n else None,
        "sample_std": _mean(sd),
    }
    rows_out: list[dict[str, Any]] = []
    truth = cat(true_mean) if has_mixture else None
    up_true = cat(true_up) if has_mixture else None
    multimodal = cat(modal).astype(bool) if has_mixture else None
    l1 = cat(ll1) if has_mixture else None
    la = cat(ll_all) if has_mixture else None
    if has_mixture:
        summary["mean_vs_truth"] = _mean(np.linalg.norm(mu - truth, axis=-1))
        summary["calibrator_vs_truth"] = _mean(np.linalg.norm(f - truth, axis=-1))
        summary["log_likelihood"] = {
            "samples": _mean(l1),
            "all_samples": _mean(la),
            "real": _mean(cat(real_ll)),
        }
    regions: dict[str, Any] = {}
    bounds = regions_of(ds)
    for i, (lo, hi) in enumerate(bounds):
        # half-open [lo, hi) intervals; the last one includes its upper end
        sel = (x >= lo) & ((x < hi) if i < len(bounds) - 1 else (x <= hi))
        entry: dict[str, Any] = {
            "range": [lo, hi],
            "n": int(sel.sum()),
            "samples": _mean(share[sel]),
            "real": _mean(real[sel]),
        }
        if has_mixture:
            entry["true"] = _mean(up_true[sel])
            t, s = entry["true"], entry["samples"]
            entry["multimodal"] = bool(sel.any() and multimodal[sel].mean() > 0.5)
            entry["collapsed"] = bool(
                entry["multimodal"]
                and t is not None
                and s is not None
                and 0.05 < t < 0.95
                and (s > COLLAPSE_SHARE or s < 1 - COLLAPSE_SHARE)
            )
        regions[f"r{i}"] = entry
    summary["upper_share"] = regions
    summary["collapsed"] = any(r.get("collapsed", False) for r in regions.values())
    for j in range(len(x)):
        rows_out.append(
            {
                "index": int(bank.index[j]),
                "x": float(x[j]),
                "calibrator": float(f[j, 0]),
                "sample_mean": float(mu[j, 0]),
                "sample_std": float(sd[j]),
                "true_mean": float(truth[j, 0]) if has_mixture else None,
                "upper_share": float(share[j]),
                "true_upper": float(up_true[j]) if has_mixture else None,
                "ll_sample": float(l1[j]) if has_mixture else None,
                "ll_all": float(la[j]) if has_mixture else None,
            }
        )
    return summary, rows_out, COLUMNS


def _mean(v: np.ndarray) -> float | None:
    return float(np.mean(v)) if len(v) else None
