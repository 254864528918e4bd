"""Validation of G during training on a fixed subset of the val split (logged, picks `best`)."""

from __future__ import annotations

import numpy as np
import torch

from carcli.data.batches import BatchSource
from carcli.metrics.ged import ged

VAL_SAMPLES = 16
GAP_INPUTS = 250


@torch.no_grad()
def refiner_validation(
    F_net: torch.nn.Module,
    G: torch.nn.Module,
    val: BatchSource,
    n: int,
    device: torch.device,
    seed: int,
    batch_size: int = 16,
) -> dict[str, float]:
    """Segmentation: GED with 16 samples (the score: lower is better) and the calibration gap
    of G's mean (KL per pixel).

    Noise comes from its own generator seeded by `seed`, so every validation sees the same
    noise and training's random streams are untouched.
    """
    info = val.info
    gen = torch.Generator(device=device).manual_seed(seed + 7)
    n = min(n, info.n)
    geds, gaps = [], []
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(n, start + batch_size))
        b = val.get(idx, None, annotation=np.zeros(len(idx), dtype=np.int64))
        out = F_net(b.cond.to(device))
        calib = out.softmax(1)
        sample_probs = G(b.image.to(device), calib, num_samples=VAL_SAMPLES, generator=gen).softmax(
            2
        )
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


@torch.no_grad()
def regression_validation(
    F_net: torch.nn.Module,
    G: torch.nn.Module,
    val: BatchSource,
    n: int,
    device: torch.device,
    seed: int,
) -> dict[str, float]:
    """Regression: the exact log-likelihood of ONE sample per input under the split's true
    mixture (the paper's Fig. 7 figure; higher is better, score = -val_ll) on the first `n`
    val rows, and the gap |mean of 16 samples - F(x)|. Without a stored mixture: the gap only.
    """
    from carcli.data.regression import MIXTURE_NAMES, mixture_log_likelihood

    gen = torch.Generator(device=device).manual_seed(seed + 7)
    n = min(n, val.info.n)
    idx = np.arange(n)
    b = val.get(idx, None, annotation=np.zeros(n, dtype=np.int64))
    x = b.image.to(device)
    f = F_net(b.cond.to(device))
    one = G(x, f, num_samples=1, generator=gen)
    k = min(n, GAP_INPUTS)  # the gap needs several samples per input: fewer inputs suffice
    several = G(x[:k], f[:k], num_samples=VAL_SAMPLES, generator=gen)
    result = {"val_cal_gap": float((several.mean(1) - f[:k]).abs().mean())}
    if all(m in val.ds.h5 for m in MIXTURE_NAMES):
        mean, weight, std = (val.ds.h5[m][:n] for m in MIXTURE_NAMES)
        ll = mixture_log_likelihood(one.float().cpu().numpy(), mean, weight, std)
        result["val_ll"] = float(ll.mean())
    result["val_score"] = -result["val_ll"] if "val_ll" in result else result["val_cal_gap"]
    return result
