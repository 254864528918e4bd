"""Samples, F's probabilities and F's entropy for a list of inputs, in memory.

The networks run through `carcli.sampling.sample.draw`, the function `sample` uses, with the
same per-image noise (`image_noise(seed, key, N, d)`): images go in batches of one size;
each is padded (reflect, bottom and right) to a multiple of the networks' stride, and the
outputs are cropped back, so they have the input's size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from carcli.data.batches import Batch, blackbox_channels
from carcli.predict.inputs import Item
from carcli.predict.proposals import proposals


@dataclass
class Result:
    samples: np.ndarray  # uint8 [N, H, W]
    probabilities: np.ndarray  # float16 [K, H, W]
    entropy: np.ndarray  # float32 [H, W], nats
    proposals: list[dict]


class ArraySource:
    """Stands in for `BatchSource` in `draw`: rows are noise keys of images in memory."""

    def __init__(self, images: dict[int, np.ndarray], conds: dict[int, np.ndarray]) -> None:
        self.images, self.conds = images, conds
        self.info = SimpleNamespace(task="segmentation")

    def get(self, idx: np.ndarray, rng: object, annotation: object = None) -> Batch:
        image = np.stack([self.images[int(i)] for i in idx])
        cond = np.stack([self.conds[int(i)] for i in idx])
        return Batch(torch.from_numpy(image), torch.from_numpy(cond), torch.zeros(0))


def pad_to(x: np.ndarray, stride: int) -> np.ndarray:
    h, w = x.shape[-2:]
    ph, pw = (-h) % stride, (-w) % stride
    if not ph and not pw:
        return x
    return np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="reflect" if min(h, w) > 1 else "edge")


def entropy(calib16: np.ndarray) -> np.ndarray:
    """F's entropy in nats [H, W] from its probabilities [K, H, W]."""
    calib = calib16.astype(np.float32)
    return -(calib * np.log(np.clip(calib, 1e-12, None))).sum(0)


def condition(item: Item, bb: np.ndarray | None, num_classes: int) -> np.ndarray:
    """F's input: the image, then the black box as float channels (one-hot for class ids)."""
    if bb is None:
        return item.image
    info = SimpleNamespace(num_classes=num_classes)
    return np.concatenate([item.image, blackbox_channels(bb[None], info)[0]], 0)


@dataclass(frozen=True)
class PredictOptions:
    """What a prediction call asks for: samples per input, the noise seed, inputs per batch."""

    num_samples: int = 16
    seed: int = 0
    batch_size: int = 8


@dataclass(frozen=True)
class ModelSpec:
    """What the engine needs of a loaded model besides its networks (model.json's values).
    ``independent_regions`` (threshold and link) recombines each input's samples as `sample`
    does; ``recombine`` (the model's learned recombination, if any) takes its place."""

    noise_dim: int
    num_classes: int
    eval_classes: list[int]
    stride: int
    device: torch.device
    independent_regions: dict | None = None
    chunk_samples: int = 0
    recombine: Any = None


def run(
    F: torch.nn.Module,
    G: torch.nn.Module,
    items: list[Item],
    blackboxes: list[np.ndarray | None],
    opts: PredictOptions,
    spec: ModelSpec,
    done: Callable[[int, Result], None],
) -> None:
    """Predict every item; `done(index, result)` is called as each finishes (in batches of
    one padded size, in the order the inputs came within each size)."""
    from carcli.sampling.regions import IndependentRegions
    from carcli.sampling.sample import draw

    mix = IndependentRegions(**spec.independent_regions) if spec.independent_regions else None
    mix = spec.recombine if spec.recombine is not None else mix
    groups: dict[tuple[int, int], list[int]] = {}
    padded = {}
    for i, it in enumerate(items):
        cond = pad_to(condition(it, blackboxes[i], spec.num_classes), spec.stride)
        padded[i] = (pad_to(it.image, spec.stride), cond)
        groups.setdefault(tuple(cond.shape[1:]), []).append(i)
    for idx in groups.values():
        for s in range(0, len(idx), opts.batch_size):
            batch = idx[s : s + opts.batch_size]
            # Two inputs with the same key (identical content) share noise: draw them apart.
            for part in _distinct_keys(batch, items):
                keys = np.array([items[i].key for i in part], dtype=np.int64)
                src = ArraySource(
                    {items[i].key: padded[i][0] for i in part},
                    {items[i].key: padded[i][1] for i in part},
                )
                smp, calib = draw(
                    F,
                    G,
                    src,
                    keys,
                    opts.num_samples,
                    spec.noise_dim,
                    opts.seed,
                    spec.device,
                    independent_regions=mix,
                    chunk_samples=spec.chunk_samples,
                )
                for j, i in enumerate(part):
                    h, w = items[i].size
                    s_i = np.ascontiguousarray(smp[j, :, :h, :w])
                    calib_i = np.ascontiguousarray(calib[j, :, :h, :w])
                    done(
                        i, Result(s_i, calib_i, entropy(calib_i), proposals(s_i, spec.eval_classes))
                    )


def _distinct_keys(batch: list[int], items: list[Item]) -> list[list[int]]:
    parts: list[list[int]] = []
    for i in batch:
        for part in parts:
            if all(items[j].key != items[i].key for j in part):
                part.append(i)
                break
        else:
            parts.append([i])
    return parts
