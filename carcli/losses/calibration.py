"""The calibration loss L_cal = KL(G_bar || p_theta), the method's key term."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from carcli.losses.joint import straight_through
from carcli.losses.regression import regression_mean_calibration_loss
from carcli.losses.segmentation import masked_pixel_mean, sample_cross_entropy

PROB_EPS = 1e-8
"""Probabilities are clamped to at least this inside the logarithms (the paper's KL)."""

LOG_FLOOR = -100.0
"""kl_forward: each sample's log-probabilities are floored here (only -inf logits or margins
beyond 100 nats reach it)."""


def calibration_loss(
    sample_logits: Tensor,
    calib: Tensor,
    mask: Tensor | None = None,
    forward: bool = False,
    g_bar: Tensor | None = None,
) -> Tensor:
    """L_cal: KL(G_bar || p) per pixel (``forward``: KL(p || G_bar)), averaged over pixels and
    batch.

    ``sample_logits`` [B, M, K, H, W] are G's logits for M samples; G_bar = mean over M of
    their softmax. ``calib`` [B, K, H, W] are F's probabilities p (detached here: F is
    the fixed calibration target). Per pixel, KL = sum_k G_bar_k (log G_bar_k - log p_k), with
    both probabilities clamped to >= 1e-8 inside the logs, so a class with G_bar_k = 0
    contributes 0 (no NaN, also for exactly one-hot samples).

    ``forward=True`` is the mass-covering direction KL(p || G_bar) = sum_k p_k (log p_k -
    log G_bar_k) (recipe ``calibration_loss: kl_forward``, a deviation from the paper). With
    crisp samples the paper's direction has vanishing gradients where G has dropped an answer
    that p gives (G_bar_k -> 0: the term G_bar_k log G_bar_k and its gradient go to 0), so a
    collapsed ambiguity stays collapsed; KL(p || G_bar) pulls each sample's logit of the
    dropped class with about p_k / M however crisp the samples are. log G_bar is computed as
    logsumexp over the samples' log-softmax, without the 1e-8 clamp.

    ``mask`` [B, H, W] (bool, or 0/1) selects the pixels that count (True = scored, e.g.
    ``label != ignore_index``); None scores all. The result is a mean over the scored pixels
    of the whole batch (0 if none), not a sum over pixels as in the paper's formula: a mean
    keeps the balance of w_cal = 5 against w_adv = 10 (whose loss is per image) the same at
    every image size.

    ``g_bar`` [B, K, H, W]: G_bar as the caller computed it (:func:`sample_mean`, the step of
    Algorithm 1), instead of computing it here (the paper's direction only).
    """
    if sample_logits.dim() != 5 or calib.dim() != 4:
        raise ValueError(
            "calibration_loss: expected sample logits [B, M, K, H, W] and probabilities "
            f"[B, K, H, W], got {tuple(sample_logits.shape)} and {tuple(calib.shape)}"
        )
    if sample_logits.shape[:1] + sample_logits.shape[2:] != calib.shape:
        raise ValueError(
            f"calibration_loss: sample logits {tuple(sample_logits.shape)} do not match "
            f"probabilities {tuple(calib.shape)}"
        )
    if forward:
        calib = calib.detach().float()
        # log G_bar from the samples' log-softmax (exact for crisp samples, whose G_bar_k may
        # lie far below any clamp), floored only against log 0 from -inf logits
        log_s = sample_logits.float().log_softmax(dim=2).clamp_min(LOG_FLOOR)
        log_g = log_s.logsumexp(dim=1) - math.log(sample_logits.shape[1])
        kl = (torch.xlogy(calib, calib) - calib * log_g).sum(dim=1)
        return masked_pixel_mean("calibration_loss", kl, mask)
    if g_bar is None:
        g_bar = sample_mean(sample_logits, "segmentation")
    calib = calib.detach().float()
    log_ratio = g_bar.clamp_min(PROB_EPS).log() - calib.clamp_min(PROB_EPS).log()
    kl = (g_bar * log_ratio).sum(dim=1)
    return masked_pixel_mean("calibration_loss", kl, mask)


def sample_mean(samples: Tensor, task: str, temperature: float = 0.0) -> Tensor:
    """G_bar, the mean of G's M samples: of their softmax (segmentation: logits [B, M, K, H, W]
    -> [B, K, H, W]) or of the values themselves (regression: [B, M, D] -> [B, D]).

    ``temperature`` T > 0 (segmentation; `refiner.calibration_temperature`): the mean of the
    samples' one-hot answers (the frequencies G's samples give), with the gradient of
    softmax(logits / T) (straight-through). Crisp samples' softmax has a vanishing gradient, so
    once G's samples decide, L_cal on their softmax can no longer move how often each answer
    comes; on their answers it can."""
    if task == "segmentation":
        if temperature:
            return straight_through(samples, temperature).mean(dim=1)
        return samples.float().softmax(dim=2).mean(dim=1)
    return samples.float().mean(dim=1)


CalibrationTerm = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor | None, int], Tensor]
"""(sample logits, G_bar (:func:`sample_mean`), F's output p, one drawn label, valid mask,
ignore index) -> L_cal. ``kl`` and the regression form read G_bar; ``kl_forward`` computes
log G_bar from the logits (stable for crisp samples); ``ce`` and ``none`` read neither."""


def _kl(
    logits: Tensor, g_bar: Tensor, calib: Tensor, label: Tensor, valid: Tensor | None, ignore: int
) -> Tensor:
    return calibration_loss(logits, calib, valid, g_bar=g_bar)


def _kl_forward(
    logits: Tensor, g_bar: Tensor, calib: Tensor, label: Tensor, valid: Tensor | None, ignore: int
) -> Tensor:
    return calibration_loss(logits, calib, valid, forward=True)


def _ce(
    logits: Tensor, g_bar: Tensor, calib: Tensor, label: Tensor, valid: Tensor | None, ignore: int
) -> Tensor:
    return sample_cross_entropy(logits, label, ignore_index=ignore)


def _none(
    logits: Tensor, g_bar: Tensor, calib: Tensor, label: Tensor, valid: Tensor | None, ignore: int
) -> Tensor:
    return torch.zeros((), device=logits.device)


def _regression(
    logits: Tensor, g_bar: Tensor, calib: Tensor, label: Tensor, valid: Tensor | None, ignore: int
) -> Tensor:
    return regression_mean_calibration_loss(g_bar, calib)


CALIBRATION_TERMS: dict[str, CalibrationTerm] = {
    "kl": _kl,  # the method: KL(G_bar || p)
    "kl_forward": _kl_forward,  # a deviation: KL(p || G_bar)
    "ce": _ce,  # the paper's control: each sample's cross-entropy against the label
    "none": _none,  # lambda = 0
}


def calibration_term(name: str, task: str) -> CalibrationTerm:
    """The L_cal of ``refiner.calibration_loss`` for a task (regression: its squared-error
    form for every name but ``none``)."""
    if name not in CALIBRATION_TERMS:
        raise ValueError(
            f"unknown calibration loss {name!r}; valid: {', '.join(CALIBRATION_TERMS)}"
        )
    if task == "regression" and name != "none":
        return _regression
    return CALIBRATION_TERMS[name]
