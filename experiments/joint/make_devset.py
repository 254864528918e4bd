"""A harder synthetic dev set for the joint-calibration work: many independent factors.

Each image holds 1..max_objects non-overlapping objects of varied size (discs and boxes).
Every object, independently, is

* certain (a plain class colour), or a **class flip** between classes 1 and 2 with
  probability p (colour: the mixture p*red + (1-p)*blue), p from ``--flip-probs``;
* and may carry one **shape factor** of three kinds, each present with probability q from
  ``--shape-probs`` (cue: its grey level, one per kind and q):
  a *halo* (a band touching the object), a *ring* (a band detached by a 1-2 px gap) or a
  *fragment* (a small blob beside the object). In a mode where the factor is on, those pixels
  take the object's class; otherwise they are background.

At most ``--max-factors`` factors per image are kept (up to 16 modes); a share
``--unambiguous`` of the images has no factor. Class 3 is never flipped. The label
distribution is exact: ``label`` holds the modes, ``label_weight`` their probabilities
(padding rows weight 0), so the mode-frequency, GED and factor-dependence figures of
``carseg evaluate`` and ``experiments/joint/factor_coupling.py`` apply. Written in
``carseg.dataset/1`` (use it with ``data.source=prepared data.dir=DIR``).

python experiments/joint/make_devset.py DIR [--size 32] [--seed 99] [--train 1500] ...
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from carcli.data.dataset import Classes, write_dataset

RGB = {
    0: (0.35, 0.35, 0.35),
    1: (0.95, 0.10, 0.10),
    2: (0.10, 0.25, 0.95),
    3: (0.10, 0.80, 0.15),
}
KINDS = ("halo", "ring", "fragment")
# grey level of each (kind, q rank): six well-separated values away from the background 0.35
GREYS = {("halo", 0): 0.50, ("halo", 1): 0.62, ("ring", 0): 0.74, ("ring", 1): 0.86,
         ("fragment", 0): 0.18, ("fragment", 1): 0.05}  # fmt: skip


def _dist(obj: dict, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] + 0.5
    if obj["shape"] == "disc":
        return np.hypot(x - obj["cx"], y - obj["cy"]) - obj["r"]
    return np.maximum(np.abs(x - obj["cx"]) - obj["hx"], np.abs(y - obj["cy"]) - obj["hy"])


def _place(rng: np.random.Generator, count: int, size: int) -> list[dict]:
    s = size / 32
    for _ in range(300):
        objs = []
        for _ in range(count):
            shape = "disc" if rng.random() < 0.5 else "box"
            r = float(rng.uniform(2.5, 6.5)) * s
            hx, hy = (float(v) * s for v in rng.uniform(2.0, 6.5, size=2))
            ext = (r if shape == "disc" else max(hx, hy)) + 4.5 * s
            cx, cy = (float(rng.uniform(ext, size - ext)) for _ in range(2))
            objs.append(dict(shape=shape, r=r, hx=hx, hy=hy, cx=cx, cy=cy, ext=ext))
        if all(
            np.hypot(a["cx"] - b["cx"], a["cy"] - b["cy"]) > a["ext"] + b["ext"]
            for a, b in itertools.combinations(objs, 2)
        ):
            return objs
    return _place(rng, count - 1, size) if count > 1 else objs[:1]


def _shape_mask(rng: np.random.Generator, obj: dict, kind: str, size: int) -> np.ndarray:
    s = size / 32
    d = _dist(obj, size)
    if kind == "halo":
        return (d > 0) & (d <= 1.5 * s)
    if kind == "ring":
        gap = float(rng.uniform(1.0, 2.0)) * s
        return (d > gap) & (d <= gap + 1.5 * s)
    angle = float(rng.uniform(0, 2 * np.pi))
    reach = (obj["r"] if obj["shape"] == "disc" else max(obj["hx"], obj["hy"])) + 2.5 * s
    fx, fy = obj["cx"] + reach * np.cos(angle), obj["cy"] + reach * np.sin(angle)
    y, x = np.mgrid[0:size, 0:size] + 0.5
    return (np.hypot(x - fx, y - fy) <= 1.6 * s) & (d > 1.0 * s)


def draw(rng: np.random.Generator, args: argparse.Namespace) -> tuple[np.ndarray, list]:
    size = args.size
    objs = _place(rng, int(rng.integers(1, args.max_objects + 1)), size)
    ambiguous = rng.random() >= args.unambiguous
    raw = np.empty((3, size, size))
    raw[:] = np.array(RGB[0])[:, None, None]
    factors = []  # (probability, {pixel mask: class if on}, class if off per mask)
    base = np.zeros((size, size), np.uint8)
    for obj in objs:
        inside = _dist(obj, size) <= 0
        if ambiguous and rng.random() < args.p_flip and len(factors) < args.max_factors:
            p = float(rng.choice(args.flip_probs))
            raw[:, inside] = (p * np.array(RGB[1]) + (1 - p) * np.array(RGB[2]))[:, None]
            factors.append(("flip", p, inside, obj))
            cls = None
        else:
            cls = int(rng.integers(1, 4))
            raw[:, inside] = np.array(RGB[cls])[:, None]
            base[inside] = cls
        obj["cls"] = cls
        if ambiguous and rng.random() < args.p_shape and len(factors) < args.max_factors:
            kind = KINDS[int(rng.integers(len(KINDS)))]
            rank = int(rng.integers(len(args.shape_probs)))
            mask = _shape_mask(rng, obj, kind, size) & (base == 0) & ~inside
            if mask.sum() >= 3:
                raw[:, mask] = GREYS[(kind, rank)]
                factors.append(("shape", args.shape_probs[rank], mask, obj))
    raw += rng.normal(0, 0.05, raw.shape)
    modes = []
    flips = [f for f in factors if f[0] == "flip"]
    for bits in itertools.product((1, 0), repeat=len(factors)):
        w, lab = 1.0, base.copy()
        state = dict(zip((id(f) for f in factors), bits, strict=True))
        obj_cls = {}
        for f in flips:
            obj_cls[id(f[3])] = 1 if state[id(f)] else 2
            lab[f[2]] = obj_cls[id(f[3])]
        for f, bit in zip(factors, bits, strict=True):
            w *= f[1] if bit else 1 - f[1]
            if f[0] == "shape" and bit:
                lab[f[2]] = f[3]["cls"] or obj_cls[id(f[3])]
        modes.append((w, lab))
    modes.sort(key=lambda m: -m[0])
    return raw, modes


def make_split(n: int, seed: int, args: argparse.Namespace) -> dict[str, np.ndarray]:
    a = 2**args.max_factors
    image = np.empty((n, 3, args.size, args.size), np.float32)
    label = np.zeros((n, a, args.size, args.size), np.uint8)
    weight = np.zeros((n, a), np.float32)
    for i in range(n):
        raw, modes = draw(np.random.default_rng([seed, i]), args)
        image[i] = raw
        for j, (w, lab) in enumerate(modes):
            label[i, j], weight[i, j] = lab, w
    weight /= weight.sum(1, keepdims=True)
    return dict(image=image, label=label, label_weight=weight)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=99)
    ap.add_argument("--train", type=int, default=1500)
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--max-objects", type=int, default=3)
    ap.add_argument("--max-factors", type=int, default=4)
    ap.add_argument("--unambiguous", type=float, default=0.2)
    ap.add_argument("--p-flip", type=float, default=0.6)
    ap.add_argument("--p-shape", type=float, default=0.5)
    ap.add_argument("--flip-probs", type=float, nargs="+", default=[0.2, 0.35, 0.5, 0.65, 0.8])
    ap.add_argument("--shape-probs", type=float, nargs="+", default=[0.3, 0.7])
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    splits = {
        s: make_split(n, args.seed * 10 + k, args)
        for k, (s, n) in enumerate((("train", args.train), ("val", args.val), ("test", args.test)))
    }
    mean = splits["train"]["image"].mean((0, 2, 3), keepdims=True)
    std = splits["train"]["image"].std((0, 2, 3), keepdims=True)
    for split, arrays in splits.items():
        arrays["image"] = ((arrays["image"] - mean) / std).astype(np.float32)
        write_dataset(
            args.dir / f"{split}.h5",
            **arrays,
            classes=Classes(
                4,
                class_names=["background", "class_1", "class_2", "class_3"],
                eval_classes=[1, 2, 3],
            ),
            attrs={"generator": json.dumps({k: str(v) for k, v in vars(args).items()})},
        )
        modes = (arrays["label_weight"] > 0).sum(1)
        print(f"{split}: {len(modes)} images, modes per image mean {modes.mean():.2f}, "
              f"max {modes.max()}, >=4 modes {np.mean(modes >= 4):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
