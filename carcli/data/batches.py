"""Training batches from a dataset split: random images, one annotation drawn per image.

Small splits are read into memory once; larger ones are read row by row from the file
(`DatasetFile.read_rows`), so memory stays bounded at any dataset size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from carcli.data.dataset import DatasetFile
from carcli.data.schema import DatasetInfo
from carcli.errors import CarsegError

IN_MEMORY_BYTES = 2 << 30


@dataclass
class Batch:
    image: torch.Tensor  # [B, C, H, W] float32 (regression: [B, D_in])
    cond: torch.Tensor  # F's input: image (+ black box), [B, C + K_b, H, W]
    label: torch.Tensor  # [B, H, W] long, one annotation per image (regression: [B, D_out])
    soft: torch.Tensor | None = None  # [B, K, H, W] label distribution (when asked for)
    modes: torch.Tensor | None = None  # [B, A, H, W] every annotation (when asked for)
    mode_weight: torch.Tensor | None = None  # [B, A] their probabilities (label_weight)

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        """The batch on `device` (non_blocking: overlap the copy from pinned memory)."""
        return Batch(
            *(
                None if t is None else t.to(device, non_blocking=non_blocking)
                for t in (
                    self.image, self.cond, self.label, self.soft, self.modes, self.mode_weight
                )
            )
        )  # fmt: skip


def blackbox_channels(bb: np.ndarray, info: DatasetInfo) -> np.ndarray:
    """Black-box predictions as float channels: one-hot for class ids (ignore -> zeros)."""
    if bb.ndim == 3:  # class ids [B, H, W]
        k = info.num_classes
        onehot = np.zeros((bb.shape[0], k, *bb.shape[1:]), dtype=np.float32)
        for c in range(k):
            onehot[:, c] = bb == c
        return onehot
    return bb.astype(np.float32)


def label_distribution(
    labels: np.ndarray, weights: np.ndarray, num_classes: int, ignore_index: int
) -> np.ndarray:
    """q [B, K, H, W] = sum_a w_a onehot(y_a); pixels ignored in any annotation are all zero."""
    q = np.zeros((labels.shape[0], num_classes, *labels.shape[2:]), dtype=np.float32)
    w = weights.astype(np.float32)
    for c in range(num_classes):
        q[:, c] = np.einsum("ba,bahw->bhw", w, (labels == c).astype(np.float32))
    ignored = ((labels == ignore_index) & (w[:, :, None, None] > 0)).any(1)
    q[np.broadcast_to(ignored[:, None], q.shape)] = 0
    return q


def apply_class_flips(
    label: np.ndarray,
    q: np.ndarray | None,
    flips: list[tuple[int, int, float]],
    rng: np.random.Generator,
) -> np.ndarray:
    """Class flips drawn afresh (the file attribute `class_flips`, e.g. the modified
    Cityscapes): per image and flip (src, dst, p), with probability p every pixel of class src
    becomes dst. The soft target `q` [B, K, H, W], if given, takes the expectation in place."""
    draws = rng.random((label.shape[0], len(flips)))
    for j, (src, dst, p) in enumerate(flips):
        for b in np.nonzero(draws[:, j] < p)[0]:
            label[b][label[b] == src] = dst
        if q is not None:
            q[:, dst] += p * q[:, src]
            q[:, src] *= 1 - p
    return label


class BatchSource:
    """Draws batches of a split with a numpy Generator (its state is saved on checkpoints).

    A split whose file has the attribute `class_flips` (JSON [[src, dst, p], ...]) gets its
    class flips drawn afresh per image each time it is drawn with an rng (training)."""

    def __init__(self, ds: DatasetFile, flip: bool = False) -> None:
        self.ds, self.info, self.flip = ds, ds.info, flip
        raw = ds.h5.attrs.get("class_flips")
        flips = json.loads(raw.decode() if isinstance(raw, bytes) else raw) if raw else []
        self.class_flips = [(int(s), int(d), float(p)) for s, d, p in flips]
        names = ["image", "label"] + (["blackbox"] if ds.info.blackbox_channels else [])
        nbytes = sum(ds.h5[n].size * ds.h5[n].dtype.itemsize for n in names)
        self.cache: dict[str, np.ndarray] | None = None
        if nbytes <= IN_MEMORY_BYTES:
            self.cache = {n: ds.h5[n][...] for n in names}
        n = self.info.n
        self.weights = ds.weights(slice(0, n)).astype(np.float64)

    def rows(self, name: str, idx: np.ndarray) -> np.ndarray:
        if self.cache is not None:
            return self.cache[name][idx]
        return self.ds.read_rows(name, idx)

    def get(
        self,
        idx: np.ndarray,
        rng: np.random.Generator | None,
        annotation: np.ndarray | None = None,
        soft: bool = False,
        modes: bool = False,
    ) -> Batch:
        """Images `idx`; one annotation each, drawn by label_weight with `rng` (or given);
        with `soft`, also the label distribution (ignore pixels: all-zero rows); with `modes`,
        also every annotation and its weight (the joint calibration loss's targets)."""
        if modes and self.class_flips:
            raise CarsegError(
                f"{self.ds.path}: refiner.w_joint needs the label distribution in the file's "
                "annotations, but this split draws class flips afresh (class_flips)",
                hint="set refiner.w_joint=0",
            )
        idx = np.asarray(idx, dtype=np.int64)
        image = self.rows("image", idx).astype(np.float32)
        labels = self.rows("label", idx)
        if annotation is None:
            assert rng is not None
            w = self.weights[idx]
            u = rng.random(len(idx))
            annotation = (w.cumsum(axis=1) < u[:, None] * w.sum(axis=1, keepdims=True)).sum(1)
            annotation = np.minimum(annotation, w.shape[1] - 1)
        label = labels[np.arange(len(idx)), annotation]
        if soft:
            q = label_distribution(
                labels, self.weights[idx], self.info.num_classes, self.info.ignore_index
            )
        if self.class_flips and rng is not None:
            label = apply_class_flips(label, q if soft else None, self.class_flips, rng)
        bb = self.rows("blackbox", idx) if self.info.blackbox_channels else None
        if self.flip and rng is not None and self.info.task == "segmentation":
            flips = rng.random(len(idx)) < 0.5
            image[flips] = image[flips][..., ::-1]
            label[flips] = label[flips][..., ::-1]
            if soft:
                q[flips] = q[flips][..., ::-1]
            if modes:
                labels[flips] = labels[flips][..., ::-1]
            if bb is not None:
                bb[flips] = bb[flips][..., ::-1]
        cond = image
        if bb is not None:
            cond = np.concatenate([image, blackbox_channels(bb, self.info)], 1)
        lab = torch.from_numpy(np.ascontiguousarray(label))
        lab = lab.long() if self.info.task == "segmentation" else lab.float()
        return Batch(
            torch.from_numpy(np.ascontiguousarray(image)),
            torch.from_numpy(np.ascontiguousarray(cond)),
            lab,
            torch.from_numpy(np.ascontiguousarray(q)) if soft else None,
            torch.from_numpy(np.ascontiguousarray(labels)) if modes else None,
            torch.from_numpy(self.weights[idx].astype(np.float32)) if modes else None,
        )

    def random_indices(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        n = self.info.n
        return rng.choice(n, size=batch_size, replace=batch_size > n)
