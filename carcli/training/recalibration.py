"""F's class biases (`calibrator.recalibrate: class_bias`), or its per-class logit scales
and biases (`vector_scaling`), refitted on the validation split.

A calibrator trained for a fixed number of steps can leave a systematic class offset: over
the ambiguous pixels of a rare class its mean probability sits a few hundredths below the
labels' frequency (under-fitting; twice the steps removes it at twice the cost). After
training, one logit bias per class, b, is fitted on the validation split by minimising the
same soft cross-entropy F was trained on, -sum_k q_k log softmax(l + b)_k, averaged over the
valid pixels, with F's weights frozen (the bias-only case of vector scaling, Guo et al. 2017,
"On calibration of modern neural networks"). At the optimum the gradient is
sum_pixels (p_k - q_k) = 0: F's mean probability of every class over the validation pixels
equals the labels'. b is added to the bias of F's last 1x1 convolution, so the saved F is an
ordinary calibrator that every later stage, bundle and the API use unchanged.

``vector_scaling`` fits l_k -> a_k l_k + b_k (Guo et al.'s vector scaling with a positive
diagonal) by the same cross-entropy; a_k multiplies row k of the last convolution's weight
and its bias. The biases alone match each class's mean over all validation pixels, but an F
that is too soft (regularised against a few raters' noise) keeps part of a class's
probability on pixels where the labels are certain, so its mean over the class's ambiguous
pixels stays low; a scale above 1 sharpens such a class (docs/results.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from carcli.data.batches import BatchSource
from carcli.errors import CarsegError

MAX_PIXELS = 4_000_000
"""At most this many validation pixels enter the fit (a uniform subsample beyond it), so the
fit's memory stays bounded on large validation splits (Cityscapes: 500 x 256 x 512)."""


def logit_bias(model: torch.nn.Module) -> torch.Tensor:
    """The bias of F's last layer (the per-class logit offset), or a clear error."""
    head = getattr(model, "head", None)
    if not isinstance(head, torch.nn.Conv2d) or head.bias is None:
        arch = getattr(model, "config", {}).get("arch", type(model).__name__)
        raise CarsegError(
            f"calibrator.recalibrate needs a calibrator whose last layer is a 1x1 "
            f"convolution with a bias; the {arch!r} calibrator has none",
            hint="use calibrator.arch unet, segnet or convnet, or calibrator.recalibrate=none",
        )
    return head.bias


@torch.no_grad()
def validation_pixels(
    model: torch.nn.Module,
    val: BatchSource,
    device: torch.device,
    batch_size: int,
    rng: np.random.Generator,
    max_pixels: int = MAX_PIXELS,
    rows: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """F's logits and the label distribution q on the valid pixels of the whole validation
    split (or of its images ``rows``): two float32 [n, K] tensors (n <= max_pixels: a
    uniform subsample beyond it)."""
    info = val.info
    rows = np.arange(info.n) if rows is None else np.asarray(rows)
    total = len(rows) * int(np.prod(info.label_shape))
    keep = min(1.0, max_pixels / max(1, total))
    model.eval()
    logits, targets = [], []
    for a in range(0, len(rows), batch_size):
        idx = rows[a : a + batch_size]
        b = val.get(idx, rng, annotation=np.zeros(len(idx), dtype=np.int64), soft=True)
        out = model(b.cond.to(device)).float().cpu()
        k = out.shape[1]
        lg = out.permute(0, 2, 3, 1).reshape(-1, k)
        q = b.soft.float().permute(0, 2, 3, 1).reshape(-1, k)
        use = q.sum(1) > 0.5  # ignore pixels have all-zero rows
        if keep < 1.0:
            use &= torch.from_numpy(rng.random(len(use)) < keep)
        logits.append(lg[use])
        targets.append(q[use])
    model.train()
    return torch.cat(logits), torch.cat(targets)


def fit_class_bias(logits: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """The per-class bias b [K] minimising mean_pixels -sum_k q_k log softmax(l + b)_k, with
    the cross-entropy before and after. A class with less than one pixel's mass in q cannot
    be fitted (its optimum is -inf) and takes the mean of the other classes' biases; then b
    is centred (softmax ignores a common shift)."""
    _, b, before, after = fit_logit_map(logits, q, scale=False)
    return b, before, after


def fit_logit_map(
    logits: torch.Tensor, q: torch.Tensor, scale: bool
) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """(a, b, CE before, CE after): the per-class map l_k -> a_k l_k + b_k minimising
    mean_pixels -sum_k q_k log softmax(a * l + b)_k (vector scaling), a = 1 unless ``scale``
    (the class biases alone). a_k = exp(s_k) stays positive; a class with less than one
    pixel's mass in q cannot be fitted: it keeps a_k = 1 and takes the mean of the other
    classes' biases. b is centred; the map is never worse than the identity."""
    if logits.ndim != 2 or logits.shape != q.shape or len(logits) == 0:
        raise CarsegError(
            f"recalibration needs [n, K] logits and targets with n > 0, got "
            f"{tuple(logits.shape)} and {tuple(q.shape)}",
            hint="check that the validation split has valid (not ignored) pixels",
        )
    logits, q = logits.double(), q.double()
    # a class the validation labels never show would be pushed to -inf (and the others with
    # it to +inf): it moves with the mean of the others' biases, which bounds the optimum
    seen = (q.sum(0) >= 1.0).double()

    def full(b: torch.Tensor) -> torch.Tensor:
        if not bool(seen.any()):  # nothing to fit
            return b * seen
        return b * seen + (1 - seen) * (b * seen).sum() / seen.sum()

    def loss_of(s: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = (s * seen).exp()
        return -(q * torch.log_softmax(logits * a + full(b), dim=1)).sum(1).mean()

    k = logits.shape[1]
    s = torch.zeros(k, dtype=torch.float64, requires_grad=scale)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [b, s] if scale else [b],
        lr=1.0,
        max_iter=200 if scale else 100,
        tolerance_grad=1e-10,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_of(s, b)
        loss.backward()
        return loss

    with torch.no_grad():
        before = float(loss_of(torch.zeros_like(s), torch.zeros_like(b)))
    opt.step(closure)
    s, b = s.detach(), full(b.detach())
    b = b - b.mean()
    with torch.no_grad():
        after = float(loss_of(s, b))
    a = (s * seen).exp()
    if not np.isfinite(after) or after > before:  # never worse than the identity
        a, b, after = torch.ones_like(a), torch.zeros_like(b), before
    return a.float(), b.float(), before, after


def recalibrate(
    model: torch.nn.Module,
    val: BatchSource,
    device: torch.device,
    batch_size: int,
    seed: int,
    kind: str = "class_bias",
) -> dict[str, Any]:
    """Fit F's class biases (``kind`` class_bias) or its per-class logit scales and biases
    (``vector_scaling``) on the validation split and fold them into its last layer; returns
    the record kept in F's metadata and manifest."""
    if val.info.task != "segmentation":
        raise CarsegError(
            f"calibrator.recalibrate={kind} is for segmentation, but {val.ds.path} holds "
            f"a {val.info.task} dataset",
            hint="set calibrator.recalibrate=none",
        )
    bias = logit_bias(model)
    rng = np.random.default_rng([seed, 17])  # the subsample, and class flips' expectation
    logits, q = validation_pixels(model, val, device, batch_size, rng)
    a, b, before, after = fit_logit_map(logits, q, scale=kind == "vector_scaling")
    with torch.no_grad():
        if kind == "vector_scaling":  # a * (W x + c) + b = (a W) x + (a c + b)
            weight = model.head.weight
            weight.mul_(a.to(weight.device, weight.dtype).view(-1, *[1] * (weight.ndim - 1)))
            bias.mul_(a.to(bias.device, bias.dtype))
        bias.add_(b.to(bias.device, bias.dtype))
    rec: dict[str, Any] = {"kind": kind, "class_bias": [round(float(x), 6) for x in b]}
    if kind == "vector_scaling":
        rec["class_scale"] = [round(float(x), 6) for x in a]
    return rec | {
        "val_images": int(val.info.n),
        "val_pixels": int(len(q)),
        "val_ce_before": before,
        "val_ce_after": after,
    }
