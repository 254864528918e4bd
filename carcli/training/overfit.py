"""F's regularisation chosen from the data (`calibrator.overfit_ratio`).

Without dropout and weight decay F fits exact label distributions best (a rare class is not
held back), but where each training image has only a few annotations (LIDC's 4 raters) their
average is a noisy target, and such an F memorises the noise: its KL divergence from the
labels is far lower on its training images than on held-out ones. After training, that
divergence is measured on the validation split and on as many training images; a ratio above
the threshold says F over-fitted, and the stage trains a second, regularised F. Which of the
two is kept is decided by the validation cross-entropy alone (a proper score of the label
distribution, so the check only decides whether the second F is worth its cost).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from carcli.data.batches import BatchSource
from carcli.training.recalibration import validation_pixels

EPS = 1e-6
"""Added to both divergences before their ratio, so F and labels that agree everywhere
(both divergences about 0) never count as over-fitted."""


def divergences(logits: torch.Tensor, q: torch.Tensor) -> tuple[float, float]:
    """Mean over pixels of the soft cross-entropy -sum_k q_k log p_k and of KL(q || p), with
    p = softmax(logits); [n, K] inputs, float64 sums."""
    logp = torch.log_softmax(logits.double(), dim=1)
    q = q.double()
    ce = -(q * logp).sum(1)
    kl = ce - torch.special.entr(q).sum(1)
    return float(ce.mean()), float(kl.mean())


def overfit_check(
    model: torch.nn.Module,
    train: BatchSource,
    val: BatchSource,
    device: torch.device,
    batch_size: int,
    seed: int,
    threshold: float,
) -> dict[str, Any]:
    """F's KL from the labels on the validation split and on as many training images (drawn
    at random, no augmentation), their ratio, and whether it exceeds ``threshold``."""
    rng = np.random.default_rng([seed, 19])
    n = min(train.info.n, val.info.n)
    rows = np.sort(rng.choice(train.info.n, size=n, replace=False))
    _, kl_train = divergences(*validation_pixels(model, train, device, batch_size, rng, rows=rows))
    _, kl_val = divergences(*validation_pixels(model, val, device, batch_size, rng))
    ratio = (kl_val + EPS) / (kl_train + EPS)
    return {
        "train_images": int(n),
        "train_kl": kl_train,
        "val_kl": kl_val,
        "ratio": ratio,
        "threshold": threshold,
        "overfit": bool(ratio > threshold),
    }


def validation_ce(
    model: torch.nn.Module, val: BatchSource, device: torch.device, batch_size: int, seed: int
) -> float:
    """F's soft cross-entropy on the validation pixels (the refit's own subsample and rng)."""
    rng = np.random.default_rng([seed, 17])
    return divergences(*validation_pixels(model, val, device, batch_size, rng))[0]
