"""Validation of G during training on a fixed subset of the val split (logged, picks `best`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from carcli.data.batches import BatchSource
from carcli.metrics.ged import ged

VAL_SAMPLES = 16
GAP_INPUTS = 250


@dataclass(frozen=True)
class _Nets:
    """What a validation runs: F, G, their device and the validation's own noise."""

    F: torch.nn.Module
    G: torch.nn.Module
    device: torch.device
    gen: torch.Generator


@torch.no_grad()
def refiner_validation(
    F_net: torch.nn.Module,
    G: torch.nn.Module,
    val: BatchSource,
    n: int,
    device: torch.device,
    seed: int,
) -> dict[str, float]:
    """G's validation figures on the first `n` rows of the val split, by its task (below).

    Noise comes from its own generator seeded by `seed`, so every validation sees the same
    noise and training's random streams are untouched.
    """
    nets = _Nets(F_net, G, device, torch.Generator(device=device).manual_seed(seed + 7))
    n = min(n, val.info.n)
    if val.info.task == "segmentation":
        return _segmentation(nets, val, n)
    return _regression(nets, val, n)


def _segmentation(nets: _Nets, val: BatchSource, n: int, batch_size: int = 16) -> dict[str, float]:
    """Segmentation: GED with 16 samples (the score: lower is better) and the calibration gap
    of G's mean (KL per pixel)."""
    info = val.info
    geds, gaps = [], []
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(n, start + batch_size))
        b = val.get(idx, None, annotation=np.zeros(len(idx), dtype=np.int64))
        out = nets.F(b.cond.to(nets.device))
        calib = out.softmax(1)
        sample_probs = nets.G(
            b.image.to(nets.device), calib, num_samples=VAL_SAMPLES, generator=nets.gen
        ).softmax(2)
        mean = sample_probs.mean(1).clamp_min(1e-8)
        kl = (mean * (mean.log() - calib.clamp_min(1e-8).log())).sum(1)
        gaps.extend(kl.flatten(1).mean(1).cpu().tolist())
        maps = sample_probs.argmax(2).to(torch.uint8).cpu().numpy()
        labels = val.rows("label", idx)
        weights = val.weights[idx]
        for i in range(len(idx)):
            geds.append(
                ged(
                    maps[i],
                    labels[i],
                    weights[i],
                    num_classes=info.num_classes,
                    eval_classes=info.eval_classes,
                    ignore_index=info.ignore_index,
                )
            )
    ged16 = float(np.mean(geds))
    return {"val_cal_gap": float(np.mean(gaps)), "val_ged16": ged16, "val_score": ged16}


def _regression(nets: _Nets, val: BatchSource, n: int) -> dict[str, float]:
    """Regression: the exact log-likelihood of ONE sample per input under the split's true
    mixture (the paper's Fig. 7 figure; higher is better, score = -val_ll) on the first `n`
    val rows, and the gap |mean of 16 samples - F(x)|. Without a stored mixture: the gap only.
    """
    from carcli.data.regression import MIXTURE_NAMES, mixture_log_likelihood

    idx = np.arange(n)
    b = val.get(idx, None, annotation=np.zeros(n, dtype=np.int64))
    x = b.image.to(nets.device)
    f = nets.F(b.cond.to(nets.device))
    one = nets.G(x, f, num_samples=1, generator=nets.gen)
    k = min(n, GAP_INPUTS)  # the gap needs several samples per input: fewer inputs suffice
    several = nets.G(x[:k], f[:k], num_samples=VAL_SAMPLES, generator=nets.gen)
    result = {"val_cal_gap": float((several.mean(1) - f[:k]).abs().mean())}
    if all(m in val.ds.h5 for m in MIXTURE_NAMES):
        mean, weight, std = (val.ds.h5[m][:n] for m in MIXTURE_NAMES)
        ll = mixture_log_likelihood(one.float().cpu().numpy(), mean, weight, std)
        result["val_ll"] = float(ll.mean())
    result["val_score"] = -result["val_ll"] if "val_ll" in result else result["val_cal_gap"]
    return result
