"""Dev sets for learned joint structure (issue 25): coupled, independent and mixed factors.

Each image holds ``--min-objects``..``--max-objects`` separate objects (discs and boxes).

* ``--kind mixed`` (default): with probability ``--p-group`` the image has one **coupled
  group** of 2-3 class-ambiguous objects that share one coin (all class 1 with probability p,
  else all class 2; one colour p*red + (1-p)*blue) and carry a visible cue (``--cue frame``: a
  thin white outline in the background around each; ``--cue shape``: coupled objects are
  boxes, independent flips discs; ``--cue link``: a thin yellow line joins the group's objects
  in the background). Every other object is, independently, a class flip with its
  own coin (``--p-flip``) or a certain class 1-3; any object may carry an independent shape
  factor (a halo or a detached ring with probability q, grey cue; ``--p-shape``).
  ``--p-group 1`` gives a coupled-heavy set, ``--p-group 0`` the all-independent family.
* ``--kind classflip`` (Cityscapes-like): 6 classes. Every object of class 1 (red) is class 1
  with probability 1 - ``--flip-a``, else class 2, **all instances at once**; the same for
  class 3 (green) -> 4 with ``--flip-b``; the two coins are independent; class 5 is certain.
  As the modified Cityscapes flips a class everywhere in the image.

At most ``--max-factors`` coins per image (a group is one coin). Labels: the exact modes with
``label_weight``; or, with ``--annotations A``, the training split holds A annotations drawn
from the modes with uniform weights (as LIDC's raters), val and test the exact modes. Written
in ``carseg.dataset/1``; use with ``data.source=prepared data.dir=DIR``.

python experiments/joint/make_coupled_devset.py DIR [--kind mixed] [--cue frame] [--seed 5]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from carcli.data.dataset import Classes, write_dataset

RGB = np.array(
    [
        (0.35, 0.35, 0.35),
        (0.95, 0.10, 0.10),
        (0.10, 0.25, 0.95),
        (0.10, 0.80, 0.15),
        (0.95, 0.90, 0.10),
        (0.95, 0.15, 0.90),
    ]
)
GREYS = {("halo", 0): 0.50, ("halo", 1): 0.62, ("ring", 0): 0.74, ("ring", 1): 0.86}
FRAME = np.array([0.95, 0.90, 0.10])  # the coupled cue's outline (yellow)


def _dist(obj: dict, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] + 0.5
    if obj["shape"] == "disc":
        return np.hypot(x - obj["cx"], y - obj["cy"]) - obj["r"]
    return np.maximum(np.abs(x - obj["cx"]) - obj["hx"], np.abs(y - obj["cy"]) - obj["hy"])


def _place(rng: np.random.Generator, shapes: list[str], size: int) -> list[dict]:
    s = size / 32
    for _ in range(400):
        objs = []
        for shape in shapes:
            r = float(rng.uniform(2.5, 4.5)) * s
            hx, hy = (float(v) * s for v in rng.uniform(2.0, 4.5, size=2))
            ext = (r if shape == "disc" else max(hx, hy)) + 3.0 * s
            cx, cy = (float(rng.uniform(ext, size - ext)) for _ in range(2))
            objs.append(dict(shape=shape, r=r, hx=hx, hy=hy, cx=cx, cy=cy, ext=ext))
        if all(
            np.hypot(a["cx"] - b["cx"], a["cy"] - b["cy"]) > a["ext"] + b["ext"]
            for a, b in itertools.combinations(objs, 2)
        ):
            return objs
    return _place(rng, shapes[:-1], size) if len(shapes) > 2 else objs[:1]


def _band(obj: dict, size: int, lo: float, hi: float) -> np.ndarray:
    d = _dist(obj, size)
    s = size / 32
    return (d > lo * s) & (d <= hi * s)


def _objects_mixed(rng: np.random.Generator, args: argparse.Namespace) -> list[dict]:
    """Object specs: kind (certain / flip / group), p or class, shape."""
    n = int(rng.integers(args.min_objects, args.max_objects + 1))
    group = rng.random() < args.p_group and n >= 2
    g = int(rng.integers(2, min(3, n) + 1)) if group else 0
    p_group = float(rng.choice(args.flip_probs))
    specs = []
    for k in range(n):
        if k < g:
            spec = dict(kind="group", p=p_group)
        elif rng.random() < args.p_flip:
            spec = dict(kind="flip", p=float(rng.choice(args.flip_probs)))
        else:
            spec = dict(kind="certain", cls=int(rng.integers(1, 4)))
        if args.cue == "shape" and spec["kind"] != "certain":
            spec["shape"] = "box" if spec["kind"] == "group" else "disc"
        else:
            spec["shape"] = "disc" if rng.random() < 0.5 else "box"
        specs.append(spec)
    return specs


def _segment(a: dict, b: dict, size: int, half_width: float) -> np.ndarray:
    """Pixels within ``half_width`` of the segment between two objects' centres."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    d = np.array([b["cx"] - a["cx"], b["cy"] - a["cy"]])
    t = ((x - a["cx"]) * d[0] + (y - a["cy"]) * d[1]) / max(float(d @ d), 1e-9)
    t = np.clip(t, 0, 1)
    return np.hypot(x - a["cx"] - t * d[0], y - a["cy"] - t * d[1]) <= half_width


def draw_mixed(rng: np.random.Generator, args: argparse.Namespace) -> tuple[np.ndarray, list]:
    size, s = args.size, args.size / 32
    specs = _objects_mixed(rng, args)
    objs = _place(rng, [sp["shape"] for sp in specs], size)
    specs = specs[: len(objs)]
    if sum(sp["kind"] == "group" for sp in specs) == 1:  # a group of one is a plain flip
        for sp in specs:
            sp["kind"] = "flip" if sp["kind"] == "group" else sp["kind"]
    raw = np.empty((3, size, size))
    raw[:] = RGB[0][:, None, None]
    base = np.zeros((size, size), np.uint8)
    cue = np.zeros((size, size), bool)
    coins: list[float] = []  # one probability per coin
    obj_coin: dict[int, int] = {}  # object -> its coin (flips)
    group_coin = None
    shapes = []  # (coin, mask, object)
    for k, (sp, obj) in enumerate(zip(specs, objs, strict=True)):
        inside = _dist(obj, size) <= 0
        obj["inside"] = inside
        if sp["kind"] == "certain" or len(coins) >= args.max_factors and sp["kind"] == "flip":
            cls = sp.get("cls", int(rng.integers(1, 4)))
            raw[:, inside] = RGB[cls][:, None]
            base[inside] = cls
            obj["cls"] = cls
            continue
        if sp["kind"] == "group":
            if group_coin is None:
                coins.append(sp["p"])
                group_coin = len(coins) - 1
            obj_coin[k] = group_coin
            if args.cue == "frame":
                frame = _band(obj, size, 1.0, 1.0 + 1.0 / s) & (base == 0)
                raw[:, frame] = FRAME[:, None]
                cue[frame] = True
        else:
            coins.append(sp["p"])
            obj_coin[k] = len(coins) - 1
        p = coins[obj_coin[k]]
        raw[:, inside] = (p * RGB[1] + (1 - p) * RGB[2])[:, None]
        obj["cls"] = None
    if args.cue == "link":  # a thin yellow line joins the group's objects, in the background
        members = [
            obj for k, obj in enumerate(objs) if k in obj_coin and specs[k]["kind"] == "group"
        ]
        for a, b in zip(members, members[1:], strict=False):
            line = _segment(a, b, size, 0.5 * s) & (base == 0)
            for other in objs:
                line &= ~other["inside"]
            raw[:, line] = FRAME[:, None]
            cue[line] = True
    for k, obj in enumerate(objs):
        if len(coins) >= args.max_factors or rng.random() >= args.p_shape:
            continue
        if args.cue == "frame" and specs[k]["kind"] == "group":
            continue  # the outline sits where a halo or ring would
        kind = ("halo", "ring")[int(rng.integers(2))]
        rank = int(rng.integers(len(args.shape_probs)))
        lo, hi = (0.0, 1.5) if kind == "halo" else (1.5, 3.0)
        mask = _band(obj, size, lo, hi) & (base == 0) & ~cue
        for other in objs:
            mask &= ~other["inside"]
        if mask.sum() >= 3:
            raw[:, mask] = GREYS[(kind, rank)]
            coins.append(args.shape_probs[rank])
            shapes.append((len(coins) - 1, mask, k))
    raw += rng.normal(0, 0.05, raw.shape)
    modes = []
    for bits in itertools.product((1, 0), repeat=len(coins)):
        w = float(np.prod([p if b else 1 - p for p, b in zip(coins, bits, strict=True)]))
        lab = base.copy()
        cls_of = {}
        for k, obj in enumerate(objs):
            cls_of[k] = obj["cls"] if obj["cls"] is not None else (1 if bits[obj_coin[k]] else 2)
            lab[obj["inside"]] = cls_of[k]
        for c, mask, k in shapes:
            if bits[c]:
                lab[mask] = cls_of[k]
        modes.append((w, lab))
    return raw, _merge(modes)


def draw_classflip(rng: np.random.Generator, args: argparse.Namespace) -> tuple[np.ndarray, list]:
    size = args.size
    n = int(rng.integers(args.min_objects, args.max_objects + 1))
    shapes = ["disc" if rng.random() < 0.5 else "box" for _ in range(n)]
    objs = _place(rng, shapes, size)
    raw = np.empty((3, size, size))
    raw[:] = RGB[0][:, None, None]
    classes = [int(rng.choice([1, 3, 5], p=[0.4, 0.4, 0.2])) for _ in objs]
    for obj, cls in zip(objs, classes, strict=True):
        obj["inside"] = _dist(obj, size) <= 0
        raw[:, obj["inside"]] = RGB[cls][:, None]
    raw += rng.normal(0, 0.05, raw.shape)
    coins = [(c, p) for c, p in ((1, args.flip_a), (3, args.flip_b)) if c in classes]
    modes = []
    for bits in itertools.product((1, 0), repeat=len(coins)):
        w = float(np.prod([p if b else 1 - p for (_, p), b in zip(coins, bits, strict=True)]))
        flipped = {c for (c, _), b in zip(coins, bits, strict=True) if b}
        lab = np.zeros((size, size), np.uint8)
        for obj, cls in zip(objs, classes, strict=True):
            lab[obj["inside"]] = cls + 1 if cls in flipped else cls
        modes.append((w, lab))
    return raw, _merge(modes)


def _merge(modes: list) -> list:
    """Equal label maps merged (weights added), most probable first."""
    out: dict[bytes, list] = {}
    for w, lab in modes:
        key = lab.tobytes()
        if key in out:
            out[key][0] += w
        else:
            out[key] = [w, lab]
    return sorted(((w, lab) for w, lab in out.values()), key=lambda m: -m[0])


def make_split(n: int, seed: int, args: argparse.Namespace, annotations: int) -> dict:
    a = 2**args.max_factors
    draw = draw_classflip if args.kind == "classflip" else draw_mixed
    image = np.empty((n, 3, args.size, args.size), np.float32)
    label = np.zeros((n, annotations or a, args.size, args.size), np.uint8)
    weight = np.zeros((n, a), np.float32)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        raw, modes = draw(rng, args)
        image[i] = raw
        if annotations:
            w = np.array([m[0] for m in modes])
            picks = rng.choice(len(modes), size=annotations, p=w / w.sum())
            label[i] = np.stack([modes[j][1] for j in picks])
        else:
            for j, (w, lab) in enumerate(modes):
                label[i, j], weight[i, j] = lab, w
    out = dict(image=image, label=label)
    if not annotations:
        out["label_weight"] = weight / weight.sum(1, keepdims=True)
    return out


def rated(split: str, args: argparse.Namespace) -> int:
    """Annotations per image of ``split`` (0: the exact modes with label_weight)."""
    if split == "train" or (split == "val" and args.rater_val):
        return args.annotations
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--kind", choices=["mixed", "classflip"], default="mixed")
    ap.add_argument("--cue", choices=["frame", "shape", "link"], default="frame")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--train", type=int, default=1500)
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--min-objects", type=int, default=2)
    ap.add_argument("--max-objects", type=int, default=4)
    ap.add_argument("--max-factors", type=int, default=4)
    ap.add_argument("--p-group", type=float, default=0.5)
    ap.add_argument("--p-flip", type=float, default=0.5)
    ap.add_argument("--p-shape", type=float, default=0.3)
    ap.add_argument("--flip-probs", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--shape-probs", type=float, nargs="+", default=[0.3, 0.7])
    ap.add_argument("--flip-a", type=float, default=0.4)
    ap.add_argument("--flip-b", type=float, default=0.7)
    ap.add_argument("--annotations", type=int, default=0)
    ap.add_argument(
        "--rater-val",
        action="store_true",
        help="with --annotations: the val split holds raters too (as LIDC's); test stays exact",
    )
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    counts = (("train", args.train), ("val", args.val), ("test", args.test))
    splits = {
        s: make_split(n, args.seed * 10 + k, args, rated(s, args))
        for k, (s, n) in enumerate(counts)
    }
    mean = splits["train"]["image"].mean((0, 2, 3), keepdims=True)
    std = splits["train"]["image"].std((0, 2, 3), keepdims=True)
    k = 6 if args.kind == "classflip" else 4
    for split, arrays in splits.items():
        arrays["image"] = ((arrays["image"] - mean) / std).astype(np.float32)
        write_dataset(
            args.dir / f"{split}.h5",
            **arrays,
            classes=Classes(
                k,
                class_names=["background"] + [f"class_{c}" for c in range(1, k)],
                eval_classes=list(range(1, k)),
            ),
            attrs={"generator": json.dumps({k: str(v) for k, v in vars(args).items()})},
        )
        if "label_weight" in arrays:
            modes = (arrays["label_weight"] > 0).sum(1)
            print(f"{split}: {len(modes)} images, modes per image mean {modes.mean():.2f}")


if __name__ == "__main__":
    main()
