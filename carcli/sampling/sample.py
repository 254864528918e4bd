"""Drawing G's samples for rows of a dataset split: per-image seeded noise, chunked forwards.

Noise is seeded per image (seed, row), so the samples do not depend on batch or chunk sizes,
nor on how many processes draw them. The `sample` stage (carcli/stages/sample.py) writes
them into a bank.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from carcli.data.batches import BatchSource
from carcli.sampling import regions

ELEMENT_BUDGET = 1 << 25  # logits elements per forward pass (~128 MB in float32)


def image_noise(seed: int, row: int, m: int, dim: int) -> torch.Tensor:
    """The noise of image `row`: [m, dim], independent of batching and of other images."""
    gen = torch.Generator().manual_seed((seed * 1_000_003 + row * 7919 + 17) % (2**63))
    return torch.randn(m, dim, generator=gen)


def draw(
    F_net: torch.nn.Module,
    G: torch.nn.Module,
    source: BatchSource,
    rows: np.ndarray,
    m: int,
    noise_dim: int,
    seed: int,
    device: torch.device,
    *,
    chunk_elements: int = ELEMENT_BUDGET,
    chunk_samples: int = 0,
    independent_regions: regions.IndependentRegions | regions.CoupledRegions | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Samples [B, m, ...] and F's output for dataset `rows`.

    F runs once on the B images; so does G's encoder where G offers ``encode``/``decode``
    (the conv refiners): only the decoder runs per chunk of samples, each chunk at most
    ``chunk_elements`` logits, or ``chunk_samples`` samples per image where > 0
    (`speed.sample_chunk`); bit-for-bit what ``G(x, p, noise=eps)`` gives at the shapes
    tested. Everything runs under ``torch.inference_mode``. ``independent_regions``
    (segmentation only) recombines the samples so that F's separate uncertain regions (or the
    groups of them that the coupling head finds co-varying) are drawn independently
    (:mod:`carcli.sampling.regions`).
    """
    seg = source.info.task == "segmentation"
    recombine = independent_regions if seg else None
    with torch.inference_mode():
        b = source.get(rows, None, annotation=np.zeros(len(rows), dtype=np.int64))
        out = F_net(b.cond.to(device))
        calib = out.softmax(1) if seg else out
        calib_np = calib.float().cpu().numpy()
        pool = getattr(recombine, "pool", 1)
        noise = torch.stack([image_noise(seed, int(r), m * pool, noise_dim) for r in rows])
        # Where F has no uncertain region the learned recombination keeps the first m draws
        # whatever the pool holds, so only those are drawn and D scores none of them.
        pooled = recombine.pooled(calib_np) if pool > 1 else np.ones(len(rows), dtype=bool)
        image, critic = b.image.to(device), getattr(recombine, "critic", None)
        drawn, chunks = {}, (chunk_elements, chunk_samples)
        for kind, n in ((True, m * pool), (False, m)):
            idx = np.flatnonzero(pooled == kind)
            if len(idx):
                t = torch.from_numpy(idx).to(device)
                eps = noise[idx, :n].to(device)
                scorer = critic if kind else None
                drawn[kind] = (idx, *_draws(G, image[t], calib[t], eps, chunks, scorer, seg))
    samples = _assemble(drawn, recombine, calib_np, rows, seed, b.image.numpy(), m)
    return samples, calib_np.astype(np.float16) if seg else calib_np


def _draws(
    G: torch.nn.Module,
    image: Tensor,
    calib: Tensor,
    noise: Tensor,
    chunks: tuple[int, int],
    critic: torch.nn.Module | None,
    seg: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """G's draws [B, N, ...] (class ids for segmentation) for the noise [B, N, d], in chunks
    of at most ``chunks`` = (logits elements, samples per image where > 0), G's encoder once
    where G splits, and D's logits [B, N] on them where ``critic`` is given."""
    (chunk_elements, chunk_samples), m = chunks, noise.shape[1]
    per_sample = int(np.prod(calib.shape[1:]))
    step = chunk_samples or max(1, chunk_elements // max(1, per_sample * image.shape[0]))
    split = split_refiner(G) if step < m else None
    feats = split[0](image, calib) if split is not None else None
    parts, scores = [], []
    for s0 in range(0, m, step):
        eps = noise[:, s0 : s0 + step]
        if split is not None:
            y = split[1](feats, calib, eps.to(image.dtype))
        else:
            y = G(image, calib, num_samples=eps.shape[1], noise=eps)
        parts.append(class_ids(y) if seg else y.float())
        if critic is not None:
            scores.append(critic_scores(critic, image, y))
    samples = (torch.cat(parts, 1) if len(parts) > 1 else parts[0]).cpu().numpy()
    return samples, np.concatenate(scores, 1) if scores else None


def _assemble(
    drawn: dict,
    recombine: Any,
    calib: np.ndarray,
    rows: np.ndarray,
    seed: int,
    image: np.ndarray,
    m: int,
) -> np.ndarray:
    """The output samples [B, m, ...] in row order: ``drawn[True]`` (every image without a
    pool) recombined, with D's scores where drawn; ``drawn[False]`` (no uncertain region, a
    pool's images draw only m) as drawn."""
    first = next(iter(drawn.values()))[1]
    out = np.empty((len(rows), m, *first.shape[2:]), dtype=first.dtype)
    for kind, (idx, samples, scores) in drawn.items():
        if recombine is not None and kind:
            extra = {} if scores is None else {"scores": scores}
            samples = recombine(samples, calib[idx], rows[idx], seed, image=image[idx], **extra)
        out[idx] = samples
    return out


def critic_scores(D: torch.nn.Module, image: Tensor, logits: Tensor) -> np.ndarray:
    """D's logits [B, S] for G's draws logits [B, S, K, H, W] of images [B, C, H, W], each
    draw's softmax seen as in training."""
    b, s = logits.shape[:2]
    xs = image.unsqueeze(1).expand(-1, s, *image.shape[1:]).reshape(-1, *image.shape[1:])
    p = logits.float().softmax(2).reshape(b * s, *logits.shape[2:])
    dev = next(D.parameters()).device
    return D(xs.float().to(dev), p.to(dev)).reshape(b, s).float().cpu().numpy()


def class_ids(logits: Tensor) -> Tensor:
    """``logits.argmax(2)`` as uint8 for logits [B, M, K, H, W], exactly (ties go to the
    lower class, NaN counts as the largest, as in torch.argmax), but fast: torch's argmax over
    a middle dim of a contiguous tensor is strided and slow on CPU (0.72 s for 4 x 100 x 2 x
    128 x 128 logits on the 2-core machine); two classes are one comparison (0.025 s), more
    classes an argmax over the innermost dim of a class-last copy."""
    if logits.shape[2] == 2:
        l0, l1 = logits[:, :, 0], logits[:, :, 1]
        return ((l1 > l0) | (l1.isnan() & ~l0.isnan())).to(torch.uint8)
    return logits.movedim(2, -1).contiguous().argmax(-1).to(torch.uint8)


def split_refiner(G: torch.nn.Module) -> tuple[Callable, Callable] | None:
    """``(encode, decode)`` calls of G that together give exactly ``G(x, p, noise=eps)``
    (through the speed wrapper's layout and autocast, if any), or None where G has no such
    split (the MLP refiner) or is compiled (its compiled forward is what runs)."""
    from carcli.runtime.speed import Accelerated

    net, wrap = G, None
    if isinstance(net, Accelerated):
        net, wrap = net.net, net
    if isinstance(net, torch._dynamo.eval_frame.OptimizedModule):
        return None
    if not (callable(getattr(net, "encode", None)) and callable(getattr(net, "decode", None))):
        return None
    if wrap is None:
        return net.encode, net.decode
    return (
        lambda x, calib: wrap.run(net.encode, x, calib, floats=False),
        lambda feats, calib, eps: wrap.run(net.decode, feats, calib, eps),
    )
