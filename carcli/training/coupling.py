"""Training the region coupling head (:mod:`carcli.models.coupling`) from the labels.

Beyond the paper. For every training image, F's separate uncertain regions are found as at
sampling (top class probability below ``sample.region_threshold``, grown by
``sample.region_link``; :func:`carcli.sampling.regions.linked_regions`), and every pair of
them gets a target from the annotations alone: the association of the two regions' answers
across the annotations (:func:`carcli.metrics.association.association`; each annotation's
answer in a region is its class shares there). Modes with ``label_weight`` give the exact
value; uniform annotations (raters) the bias-corrected estimate; a split with
``class_flips`` is expanded into its modes first. The head is fitted to these targets with a
squared error on its probability; no option says which regions are coupled.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as nnf

from carcli.data.batches import BatchSource
from carcli.metrics.association import association
from carcli.models.coupling import RegionCoupling
from carcli.runtime.networks import save_network
from carcli.sampling.regions import COUPLED_ABOVE, MAX_REGIONS, linked_regions


@dataclass
class CouplingExamples:
    """A split's images with F's output, region ids and the labelled pairs."""

    image: torch.Tensor  # [N, C, H, W] (F's input without the black box: G's image)
    calib: torch.Tensor  # [N, K, H, W] F's probabilities
    ids: torch.Tensor  # [N, H, W] int64 region ids (MAX_REGIONS: no region)
    pairs: np.ndarray  # [P, 3] int64: image, region r, region s (r < s)
    target: np.ndarray  # [P] float32 association in [0, 1]


def expand_flips(
    label: np.ndarray, flips: list[tuple[int, int, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """One annotation [H, W] of a split with class flips as its modes [F', H, W] and weights."""
    maps, weights = [], []
    for bits in itertools.product((0, 1), repeat=len(flips)):
        out, w = label.copy(), 1.0
        for (src, dst, p), bit in zip(flips, bits, strict=True):
            w *= p if bit else 1.0 - p
            if bit:
                out[label == src] = dst
        maps.append(out)
        weights.append(w)
    return np.stack(maps), np.asarray(weights)


def pair_targets(
    labels: np.ndarray,
    weights: np.ndarray | None,
    ids: np.ndarray,
    num_classes: int,
) -> list[tuple[int, int, float]]:
    """(r, s, association) of every pair of regions of ``ids`` [H, W] whose association the
    annotations ``labels`` [A, H, W] define (``weights`` [A]: exact modes; None: uniform
    annotations, bias-corrected)."""
    if weights is not None:
        keep = weights > 0
        labels, weights = labels[keep], weights[keep]
    present = [r for r in range(MAX_REGIONS) if (ids == r).any()]
    shares = {}
    for r in present:
        inside = labels[:, ids == r]  # [A, n]
        shares[r] = np.stack([(inside == c).mean(1) for c in range(num_classes)], 1)
    out = []
    for r, s in itertools.combinations(present, 2):
        value = association(shares[r], shares[s], weights)
        if value is not None:
            out.append((r, s, value))
    return out


def coupling_examples(
    F_net: torch.nn.Module,
    source: BatchSource,
    threshold: float,
    link: int,
    device: torch.device,
    batch_size: int = 64,
) -> CouplingExamples:
    """F's regions of every image of ``source``'s split and their labelled pairs."""
    info = source.info
    exact = info.has_weights or bool(source.class_flips)
    images, calibs, all_ids, pairs, targets = [], [], [], [], []
    with torch.inference_mode():
        for a in range(0, info.n, batch_size):
            rows = np.arange(a, min(info.n, a + batch_size))
            b = source.get(rows, None, annotation=np.zeros(len(rows), dtype=np.int64))
            calib = F_net(b.cond.to(device)).softmax(1).float().cpu()
            ids = linked_regions(calib.numpy(), threshold, link, MAX_REGIONS)
            labels, weights = source.rows("label", rows), source.weights[rows]
            for i, row in enumerate(rows):
                lab, w = labels[i], weights[i] if exact else None
                if source.class_flips:
                    lab, w = expand_flips(lab[0], source.class_flips)
                for r, s, t in pair_targets(lab, w, ids[i], info.num_classes):
                    pairs.append((int(row), r, s))
                    targets.append(t)
            images.append(b.image)
            calibs.append(calib)
            all_ids.append(torch.from_numpy(ids))
    return CouplingExamples(
        torch.cat(images),
        torch.cat(calibs),
        torch.cat(all_ids),
        np.asarray(pairs, dtype=np.int64).reshape(-1, 3),
        np.asarray(targets, dtype=np.float32),
    )


def _pair_batch(ex: CouplingExamples, rows: np.ndarray) -> tuple:
    """The head's inputs and targets for the pairs of images ``rows`` (renumbered 0..)."""
    select = np.isin(ex.pairs[:, 0], rows)
    pairs = ex.pairs[select].copy()
    position = {int(r): k for k, r in enumerate(rows)}
    pairs[:, 0] = [position[int(r)] for r in pairs[:, 0]]
    idx = torch.from_numpy(rows)
    return (
        ex.image[idx],
        ex.calib[idx],
        ex.ids[idx],
        torch.from_numpy(pairs),
        torch.from_numpy(ex.target[select]),
    )


CHECK_EVERY = 100
"""train_coupling with validation pairs: their squared error is checked every this many steps."""


def train_coupling(
    ex: CouplingExamples,
    steps: int,
    lr: float,
    seed: int,
    width: int = 16,
    batch_images: int = 32,
    val: CouplingExamples | None = None,
) -> RegionCoupling:
    """The head fitted to ``ex``'s pair targets: the squared error of its probability, so that
    it learns each kind of pair's mean target (the raters' unbiased targets average right),
    Adam. With no labelled pair it calls every pair coupled (G's draws are kept as drawn).

    With ``val`` pairs, their squared error is checked every ``CHECK_EVERY`` steps and at the
    end, and the head of the lowest is returned (early stopping: a head that under-fits wants
    many steps, few raters' noisy targets few); ``head.selected_step`` says which."""
    torch.manual_seed(seed)
    head = RegionCoupling(ex.image.shape[1], ex.calib.shape[1], width)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    with_pairs = np.unique(ex.pairs[:, 0])
    rng = np.random.default_rng([seed, 0xC0])
    if len(with_pairs) == 0:
        return _always_coupled(head)
    check = val is not None and len(val.pairs) > 0
    best: tuple[float, int, dict] | None = None
    head.train()
    for step in range(1, steps + 1):
        rows = np.sort(rng.choice(with_pairs, min(batch_images, len(with_pairs)), replace=False))
        x, p, ids, pairs, target = _pair_batch(ex, rows)
        loss = nnf.mse_loss(torch.sigmoid(head(x, p, ids, pairs)), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if check and (step % CHECK_EVERY == 0 or step == steps):
            error = float(np.mean((predict_pairs(head, val) - val.target) ** 2))
            head.train()
            if best is None or error < best[0]:
                best = (error, step, {k: v.clone() for k, v in head.state_dict().items()})
    head.selected_step = steps
    if best is not None:
        head.load_state_dict(best[2])
        head.selected_step = best[1]
    return head.eval()


def _always_coupled(head: RegionCoupling) -> RegionCoupling:
    """A head whose every call is "coupled" (nothing is recombined), for data that showed no
    pair of regions with a defined association."""
    last = head.pair[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(8.0)
    return head.eval()


def predict_pairs(head: RegionCoupling, ex: CouplingExamples) -> np.ndarray:
    """The head's probability [P] that each of ``ex``'s pairs co-varies (eval mode)."""
    head.eval()
    probs = []
    rows_all = np.unique(ex.pairs[:, 0])
    with torch.inference_mode():
        for a in range(0, len(rows_all), 64):
            rows = rows_all[a : a + 64]
            x, p, ids, pairs, _ = _pair_batch(ex, rows)
            probs.append(torch.sigmoid(head(x, p, ids, pairs)).numpy())
    order = np.argsort(ex.pairs[:, 0], kind="stable")  # _pair_batch keeps file order per batch
    pred = np.empty(len(ex.pairs), dtype=np.float32)
    pred[order] = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    return pred


def coupling_scores(head: RegionCoupling, ex: CouplingExamples) -> dict[str, float | int | None]:
    """How the head's coupled / independent calls (probability > ``COUPLED_ABOVE``) match the
    targets (> ``COUPLED_ABOVE``) of ``ex``: accuracy, and the share of truly coupled pairs it
    calls coupled (None where the split has no pair of that kind: the manifest is strict JSON)."""
    if len(ex.pairs) == 0:
        return {"pairs": 0}
    pred = predict_pairs(head, ex)
    called, truth = pred > COUPLED_ABOVE, ex.target > COUPLED_ABOVE
    return {
        "pairs": int(len(truth)),
        "coupled_pairs": int(truth.sum()),
        "accuracy": float((called == truth).mean()),
        "coupled_found": float(called[truth].mean()) if truth.any() else None,
        "independent_found": float((~called[~truth]).mean()) if (~truth).any() else None,
    }


def fit_coupling(
    F_net: torch.nn.Module,
    train: BatchSource,
    val: BatchSource,
    settings: dict[str, Any],
    device: torch.device,
    out_path: Path,
) -> dict[str, Any]:
    """Fit the head on ``train``'s pairs (up to ``steps``, the step of the lowest squared error
    on ``val``'s pairs kept) and write it to ``out_path``; returns its scores on both and the
    step kept. ``settings``: steps, lr, seed, region_threshold, region_link."""
    threshold, link = float(settings["region_threshold"]), int(settings["region_link"])
    F_net = F_net.eval()
    ex = coupling_examples(F_net, train, threshold, link, device)
    val_ex = coupling_examples(F_net, val, threshold, link, device)
    steps, lr, seed = int(settings["steps"]), float(settings["lr"]), int(settings["seed"])
    head = train_coupling(ex, steps, lr, seed, val=val_ex)
    scores: dict[str, Any] = {"train": coupling_scores(head, ex)}
    scores["val"] = coupling_scores(head, val_ex)
    scores["selected_step"] = int(getattr(head, "selected_step", steps))
    save_network(
        out_path,
        head,
        "refiner",
        "coupling",
        "conv",
        train.info,
        int(settings["steps"]),
        {"region_threshold": threshold, "region_link": link, "scores": scores},
    )
    return scores
