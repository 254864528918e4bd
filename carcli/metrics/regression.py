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
    v = _per_input(ds, bank, chunk_size, rep, has_mixture)
    summary: dict[str, Any] = {
        "mean_vs_calibrator": _mean(np.linalg.norm(v["mu"] - v["f"], axis=-1)) if bank.n else None,
        "sample_std": _mean(v["sd"]),
    }
    if has_mixture:
        summary["mean_vs_truth"] = _mean(np.linalg.norm(v["mu"] - v["truth"], axis=-1))
        summary["calibrator_vs_truth"] = _mean(np.linalg.norm(v["f"] - v["truth"], axis=-1))
        summary["log_likelihood"] = {
            "samples": _mean(v["l1"]),
            "all_samples": _mean(v["la"]),
            "real": _mean(v["real_ll"]),
        }
    regions = _upper_share(regions_of(ds), v, has_mixture)
    summary["upper_share"] = regions
    summary["collapsed"] = any(r.get("collapsed", False) for r in regions.values())
    return summary, _rows(bank.index, v, has_mixture), COLUMNS


def _per_input(
    ds: DatasetFile, bank: SampleSource, chunk_size: int, rep: Reporter, has_mixture: bool
) -> dict[str, np.ndarray]:
    """Per-input figures over the split, chunk by chunk (mixture ones only with a mixture)."""
    names = ["x", "f", "mu", "sd", "share", "real"]
    if has_mixture:
        names += ["l1", "la", "truth", "up_true", "real_ll", "multimodal"]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    with rep.progress(bank.n, "evaluate regression") as bar:
        for a in range(0, bank.n, chunk_size):
            b = min(bank.n, a + chunk_size)
            rows = bank.index[a:b]
            samples = bank.read("samples", slice(a, b)).astype(np.float64)
            calib = bank.read("calibration", slice(a, b)).astype(np.float64)
            x = ds.read_rows("image", rows).astype(np.float64)
            labels = ds.read_rows("label", rows).astype(np.float64)
            weights = ds.weights(rows)
            parts["x"].append(x[:, 0])
            parts["f"].append(calib)
            parts["mu"].append(samples.mean(1))
            parts["sd"].append(samples[:, :, 0].std(1))
            parts["share"].append((samples[:, :, 0] > 0).mean(1))
            parts["real"].append(((labels[:, :, 0] > 0) * weights).sum(1))
            if has_mixture:
                mean, weight, std = (ds.read_rows(m, rows) for m in MIXTURE_NAMES)
                ll = mixture_log_likelihood(samples, mean, weight, std)
                parts["l1"].append(ll[:, 0])
                parts["la"].append(ll.mean(1))
                real_ll = mixture_log_likelihood(labels, mean, weight, std) * weights
                parts["real_ll"].append(real_ll.sum(1))
                parts["truth"].append(mixture_mean_y(mean, weight))
                parts["up_true"].append(mixture_prob_positive(mean, weight, std))
                # two or more components of weight >= 0.05
                parts["multimodal"].append((weight >= MODE_WEIGHT).sum(1) >= 2)
            bar.advance(b - a)
    out = {k: np.concatenate(v) if bank.n else np.zeros(0) for k, v in parts.items()}
    if has_mixture:
        out["multimodal"] = out["multimodal"].astype(bool)
    return out


def _upper_share(
    bounds: list[list[float]], v: dict[str, np.ndarray], has_mixture: bool
) -> dict[str, Any]:
    """Per x-region: the samples' share above 0, the labels', the true one, and collapse."""
    x, regions = v["x"], {}
    for i, (lo, hi) in enumerate(bounds):
        # half-open [lo, hi) intervals; the last one includes its upper end
        sel = (x >= lo) & ((x < hi) if i < len(bounds) - 1 else (x <= hi))
        entry: dict[str, Any] = {
            "range": [lo, hi],
            "n": int(sel.sum()),
            "samples": _mean(v["share"][sel]),
            "real": _mean(v["real"][sel]),
        }
        if has_mixture:
            entry["true"] = _mean(v["up_true"][sel])
            t, s = entry["true"], entry["samples"]
            entry["multimodal"] = bool(sel.any() and v["multimodal"][sel].mean() > 0.5)
            entry["collapsed"] = bool(
                entry["multimodal"]
                and t is not None
                and s is not None
                and 0.05 < t < 0.95
                and (s > COLLAPSE_SHARE or s < 1 - COLLAPSE_SHARE)
            )
        regions[f"r{i}"] = entry
    return regions


def _rows(index: np.ndarray, v: dict[str, np.ndarray], has_mixture: bool) -> list[dict[str, Any]]:
    def mix(key: str, j: int) -> float | None:
        return float(np.ravel(v[key][j])[0]) if has_mixture else None

    return [
        {
            "index": int(index[j]),
            "x": float(v["x"][j]),
            "calibrator": float(v["f"][j, 0]),
            "sample_mean": float(v["mu"][j, 0]),
            "sample_std": float(v["sd"][j]),
            "true_mean": mix("truth", j),
            "upper_share": float(v["share"][j]),
            "true_upper": mix("up_true", j),
            "ll_sample": mix("l1", j),
            "ll_all": mix("la", j),
        }
        for j in range(len(v["x"]))
    ]


def _mean(v: np.ndarray) -> float | None:
    return float(np.mean(v)) if len(v) else None
