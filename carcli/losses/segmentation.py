"""Pixelwise likelihood losses: F's cross-entropy L_ce and the paper's ``ce`` control for G."""

from __future__ import annotations

import torch.nn.functional as nnf
from torch import Tensor


def cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """L_ce: mean pixelwise cross-entropy of logits [B, K, H, W] against class ids [B, H, W].

    Pixels equal to ``ignore_index`` are excluded; the mean runs over the remaining pixels of
    the whole batch and is 0 (still differentiable) when every pixel is ignored.
    """
    if logits.dim() != target.dim() + 1 or logits.shape[2:] != target.shape[1:]:
        raise ValueError(
            f"cross_entropy: logits {tuple(logits.shape)} do not match target "
            f"{tuple(target.shape)} (expected [B, K, H, W] and [B, H, W])"
        )
    target = target.long()
    total = nnf.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum")
    count = (target != ignore_index).sum().clamp_min(1)
    return total / count


def sample_cross_entropy(sample_logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """The paper's ``ce`` control: cross-entropy of each of the M samples [B, M, K, H, W]
    against the label [B, H, W], averaged over samples and non-ignored pixels."""
    if sample_logits.dim() != 5:
        raise ValueError(
            f"sample_cross_entropy: expected [B, M, K, H, W] logits, got "
            f"{tuple(sample_logits.shape)}"
        )
    b, m = sample_logits.shape[:2]
    flat = sample_logits.reshape(b * m, *sample_logits.shape[2:])
    return cross_entropy(flat, target.repeat_interleave(m, dim=0), ignore_index)


def expected_cross_entropy(logits: Tensor, target_probs: Tensor, valid: Tensor) -> Tensor:
    """L_ce in expectation over the annotations: -sum_k q_k log p_k with q [B, K, H, W] the
    label distribution (sum of label_weight-weighted one-hots), mean over valid pixels [B, H, W].

    Same expected loss and optimum as drawing one annotation per step, without its variance.
    """
    if logits.shape != target_probs.shape or valid.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"expected_cross_entropy: logits {tuple(logits.shape)}, targets "
            f"{tuple(target_probs.shape)} and mask {tuple(valid.shape)} do not match"
        )
    per_px = -(target_probs * nnf.log_softmax(logits.float(), dim=1)).sum(1)
    return masked_pixel_mean("expected_cross_entropy", per_px, valid)


def sample_entropy(sample_logits: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean per-pixel entropy (nats) of G's M samples [B, M, K, H, W] over samples and the
    valid pixels [B, H, W] (None: all); 0 if none is valid.

    ``refiner.w_entropy`` adds it to L_G (a deviation from the paper): L_cal holds the mean of
    the samples at F, and this term makes each sample decide -- a sample that copies F's soft
    probabilities satisfies L_cal exactly but turns into the same argmax every time. D is
    meant to reject such soft maps, but its verdict is one number per image, so thin
    ambiguous structures (a 2-pixel band) barely move it.
    """
    if sample_logits.dim() != 5:
        raise ValueError(
            f"sample_entropy: expected [B, M, K, H, W] logits, got {tuple(sample_logits.shape)}"
        )
    log_s = nnf.log_softmax(sample_logits.float(), dim=2)
    per_px = -(log_s.exp() * log_s).sum(2).mean(1)  # [B, H, W]
    return masked_pixel_mean("sample_entropy", per_px, valid)


def masked_pixel_mean(name: str, per_px: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of a per-pixel loss [B, H, W] over the pixels where ``mask`` [B, H, W] (bool, or
    0/1) is set (None: all pixels); 0 if none is set. ``name`` labels a shape mismatch."""
    if mask is None:
        return per_px.mean()
    if mask.shape != per_px.shape:
        raise ValueError(
            f"{name}: mask {tuple(mask.shape)} does not match pixels {tuple(per_px.shape)}"
        )
    keep = mask.to(per_px.dtype)
    return (per_px * keep).sum() / keep.sum().clamp_min(1.0)
