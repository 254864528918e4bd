"""The numbers behind the plots, streamed from a dataset split and its sample bank.

One pass over the bank (in chunks bounded in bytes) feeds the metrics accumulators
(`ReliabilityBins` for F's reliability diagram, `ClassCalibration` for the per-class bars) and
records each image's ambiguity: the mean per-pixel entropy of its label distribution q. The
sample grid then reads only the few images it shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import entr

from carcli.data.dataset import DatasetFile
from carcli.metrics.accumulate import EvalAccumulator
from carcli.metrics.calibration import (
    ClassCalibration,
    ReliabilityBins,
    label_probabilities,
    sample_frequencies,
)
from carcli.metrics.conventions import SampleCounts
from carcli.metrics.distance import image_ignore_mask
from carcli.metrics.modes import merge_modes, mode_frequencies
from carcli.sampling.bank import Bank
from carcli.ui import Reporter

CHUNK_BYTES = 256 << 20  # bound on the bank + label bytes read at once
GED_SAMPLES = 16  # per-image GED of the shown images uses this many samples (or M if fewer)


@dataclass
class SplitStats:
    """Pooled calibration accumulators and per-image ambiguity of one split."""

    reliability: ReliabilityBins
    classes: ClassCalibration
    label_entropy: np.ndarray  # float64 [N_bank]: mean entropy of q over valid pixels (nats)
    n_present: np.ndarray  # int [N_bank]: classes present in the label distribution


@dataclass
class ImageView:
    """Everything the sample grid shows of one image (arrays are per image)."""

    position: int  # row in the bank
    row: int  # row in the dataset split
    image: np.ndarray  # [C, H, W]
    modes: np.ndarray  # [R, H, W] distinct annotations, most probable first (R <= max_modes)
    mode_weights: np.ndarray  # [R]
    mode_freq: np.ndarray  # [R] fraction of all M samples nearest to each mode
    num_modes: int  # distinct non-padding annotations in total
    calib: np.ndarray  # [K, H, W] F's probabilities
    g_mean: np.ndarray  # [K, H, W] class frequencies over all M samples
    samples: np.ndarray  # [S, H, W] shown samples
    sample_idx: list[int]
    figures: dict[str, float | None] = field(default_factory=dict)


def chunk_rows(
    bank: Bank, info_k: int, hw: tuple[int, ...], num_annotations: int, limit: int
) -> int:
    """Images per chunk so that one chunk's samples, probabilities and labels fit CHUNK_BYTES."""
    pix = int(np.prod(hw))
    per_image = pix * (bank.num_samples + 4 * info_k + num_annotations) + 1
    return max(1, min(limit, CHUNK_BYTES // per_image))


def accumulate(
    ds: DatasetFile, bank: Bank, chunk_limit: int, rep: Reporter, n_bins: int = 10
) -> SplitStats:
    """Stream the bank once: reliability bins, per-class calibration, per-image ambiguity."""
    info = ds.info
    k = info.num_classes
    stats = SplitStats(
        ReliabilityBins(n_bins),
        ClassCalibration(k),
        np.zeros(bank.n),
        np.zeros(bank.n, dtype=np.int64),
    )
    step = chunk_rows(bank, k, info.label_shape, info.num_annotations, chunk_limit)
    with rep.progress(bank.n, "plot-reliability: statistics") as bar:
        for a in range(0, bank.n, step):
            b = min(bank.n, a + step)
            rows = bank.index[a:b]
            samples = bank.read("samples", slice(a, b))
            calib = bank.read("calibration", slice(a, b))
            labels = ds.read_rows("label", rows)
            weights = ds.weights(rows)
            for i in range(b - a):
                q, valid = label_probabilities(labels[i], weights[i], k, info.ignore_index)
                calib_i = calib[i].astype(np.float32)
                stats.reliability.update(calib_i, q, valid)
                stats.classes.update(q, calib_i, sample_frequencies(samples[i], k), valid)
                ent = entr(np.clip(q[:, valid], 0.0, 1.0)).sum(axis=0)
                stats.label_entropy[a + i] = float(ent.mean()) if ent.size else 0.0
                stats.n_present[a + i] = int((q[:, valid] > 0).any(axis=1).sum())
            bar.advance(b - a)
    return stats


def select_images(label_entropy: np.ndarray, n_present: np.ndarray, n: int) -> list[int]:
    """Bank positions to show: the n-1 most ambiguous images, then the least ambiguous one.

    Ties are broken by position; the unambiguous pick prefers images with more classes.
    """
    total = len(label_entropy)
    n = min(n, total)
    if n <= 0:
        return []
    pos = np.arange(total)
    by_amb = np.lexsort((pos, -label_entropy)).tolist()
    if n == 1:
        return by_amb[:1]
    chosen = by_amb[: n - 1]
    rest = np.setdiff1d(pos, chosen)
    calm = rest[np.lexsort((rest, -n_present[rest], label_entropy[rest]))][0]
    return [*chosen, int(calm)]


def image_view(
    ds: DatasetFile, bank: Bank, position: int, n_samples: int = 4, max_modes: int = 4
) -> ImageView:
    """Read one image's data and compute the figures shown beside it (GED, entropies)."""
    info = ds.info
    k, row = info.num_classes, int(bank.index[position])
    rows = np.array([row])
    image = ds.read_rows("image", rows)[0].astype(np.float32)
    labels = ds.read_rows("label", rows)[0]
    weights = ds.weights(rows)[0].astype(np.float64)
    s = bank.read("samples", slice(position, position + 1))[0]
    calib = bank.read("calibration", slice(position, position + 1))[0].astype(np.float32)
    ignore = image_ignore_mask(labels, info.ignore_index, weights)
    rep_idx, mode_w = merge_modes(labels, weights, ignore)
    mf = mode_frequencies(
        s,
        labels,
        weights,
        num_classes=k,
        eval_classes=info.eval_classes,
        ignore_index=info.ignore_index,
    )
    order = np.argsort(-mode_w, kind="stable")[:max_modes]
    q, valid = label_probabilities(labels, weights, k, info.ignore_index)
    m = len(s)
    n_ged = min(GED_SAMPLES, m)
    acc = EvalAccumulator(
        k, info.ignore_index, info.eval_classes, counts=SampleCounts([n_ged], n_ged)
    )
    figs = acc.update(row, s, labels, weights, calib)
    ent_q = entr(np.clip(q[:, valid], 0.0, 1.0)).sum(axis=0)
    shown = list(range(min(n_samples, m)))
    return ImageView(
        position=position,
        row=row,
        image=image,
        modes=labels[rep_idx[order]],
        mode_weights=mode_w[order],
        mode_freq=np.asarray(mf["frequencies"])[order],
        num_modes=len(rep_idx),
        calib=calib,
        g_mean=sample_frequencies(s, k),
        samples=s[shown],
        sample_idx=shown,
        figures={
            "label_entropy": float(ent_q.mean()) if ent_q.size else 0.0,
            "f_entropy": figs["entropy"],
            f"ged_{n_ged}": figs[f"ged_{n_ged}"],
            "diversity": figs["diversity"],
        },
    )
