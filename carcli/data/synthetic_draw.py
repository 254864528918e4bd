"""Drawing one synthetic image: objects placed, their ambiguity factors drawn, the raw image
rendered and its modes enumerated (the data itself is described in `carcli.data.synthetic`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

# Plain class colours in RGB; index 0 is the background grey.
CLASS_RGB = np.array(
    [
        [0.35, 0.35, 0.35],
        [0.95, 0.10, 0.10],  # 1 red
        [0.10, 0.25, 0.95],  # 2 blue
        [0.10, 0.80, 0.15],  # 3 green
        [0.95, 0.90, 0.10],  # 4 yellow
        [0.95, 0.15, 0.90],  # 5 magenta
        [0.10, 0.90, 0.95],  # 6 cyan
        [1.00, 0.55, 0.00],  # 7 orange
        [0.55, 0.00, 1.00],  # 8 violet
    ],
    dtype=np.float64,
)
_HALO_GREY = (0.5, 0.7)  # RGB halo greys, faintest first (matched to sorted shape_probs)
MAX_CLASSES = len(CLASS_RGB)
_REFERENCE_IMAGES = 256
_REFERENCE_KEY = 0x5EED_CA5E  # seed material of the normalisation reference batch


@dataclass(frozen=True)
class DrawConfig:
    """The generator's options (`generate_synthetic`'s spec; its defaults are the toy data's)."""

    size: int = 32
    channels: int = 3
    num_classes: int = 3
    noise: float = 0.05
    unambiguous_fraction: float = 0.3
    max_objects: int = 2
    p_flip_object: float = 0.6
    p_halo: float = 0.5
    flip_probs: tuple[float, ...] = (0.7, 0.3)
    shape_probs: tuple[float, ...] = (0.4, 0.7)
    max_factors: int = 3

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return [(a, a + 1) for a in range(1, self.num_classes - 1, 2)]


def _appearances(cfg: DrawConfig) -> list[tuple[str, Any]]:
    """Every distinct appearance, in grey-code order: background, halos, pairs, unpaired."""
    keys: list[tuple[str, Any]] = [("background", None)]
    keys += [("halo", q) for q in sorted(cfg.shape_probs)]
    for a, b in cfg.pairs:
        keys.append(("plain", a))
        keys += [("flip", (a, p)) for p in sorted(cfg.flip_probs, reverse=True)]
        keys.append(("plain", b))
    if (cfg.num_classes - 1) % 2:
        keys.append(("plain", cfg.num_classes - 1))
    return keys


def palette(cfg: DrawConfig) -> dict[tuple[str, Any], np.ndarray]:
    """Noise-free colour ([C], 0..1) of each appearance key of ``_appearances``."""
    keys = _appearances(cfg)
    grey = np.linspace(0.0, 1.0, len(keys))
    halo_rank = {q: r for r, q in enumerate(sorted(cfg.shape_probs))}
    out = {}
    for key, g in zip(keys, grey, strict=True):
        kind, arg = key
        if kind == "background":
            rgb = CLASS_RGB[0]
        elif kind == "halo":
            rgb = np.full(3, _HALO_GREY[halo_rank[arg]])
        elif kind == "plain":
            rgb = CLASS_RGB[arg]
        else:
            a, p = arg
            rgb = p * CLASS_RGB[a] + (1 - p) * CLASS_RGB[a + 1]
        if cfg.channels == 3:
            out[key] = rgb.copy()
        else:
            out[key] = np.array([g] + [rgb[(c - 1) % 3] for c in range(1, cfg.channels)])
    return out


def _place(rng: np.random.Generator, count: int, cfg: DrawConfig) -> list[dict[str, Any]]:
    """Non-overlapping objects; each reserves its halo band plus a 1 px gap."""
    scale = cfg.size / 32
    halo_w = 2 * scale
    for _ in range(200):
        objs: list[dict[str, Any]] = []
        for _ in range(count):
            shape = "disc" if rng.random() < 0.5 else "box"
            if shape == "disc":
                r = float(rng.uniform(3.5, 6.0)) * scale
                hx = hy = r
            else:
                hx, hy = (float(v) * scale for v in rng.uniform(3.0, 6.0, size=2))
            ex, ey = hx + halo_w + 1, hy + halo_w + 1
            cx = float(rng.uniform(ex, cfg.size - ex))
            cy = float(rng.uniform(ey, cfg.size - ey))
            objs.append(dict(shape=shape, cx=cx, cy=cy, hx=hx, hy=hy, ex=ex, ey=ey))
        if all(
            abs(o["cx"] - q["cx"]) > o["ex"] + q["ex"] or abs(o["cy"] - q["cy"]) > o["ey"] + q["ey"]
            for o, q in itertools.combinations(objs, 2)
        ):
            return objs
    return objs[:1]  # pragma: no cover - two objects always fit at the allowed sizes


def _masks(obj: dict[str, Any], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(object, halo) boolean masks; distances measured between pixel centres."""
    halo_w = 2 * size / 32
    y, x = np.mgrid[0:size, 0:size] + 0.5
    if obj["shape"] == "disc":
        d = np.hypot(x - obj["cx"], y - obj["cy"]) - obj["hx"]
    else:
        d = np.maximum(np.abs(x - obj["cx"]) - obj["hx"], np.abs(y - obj["cy"]) - obj["hy"])
    return d <= 0, (d > 0) & (d <= halo_w)


_Mode = tuple[float, np.ndarray]  # (weight, label [H, W])


def draw_image(
    rng: np.random.Generator, cfg: DrawConfig, colours: dict[tuple[str, Any], np.ndarray]
) -> tuple[np.ndarray, list[_Mode], list[dict[str, Any]]]:
    """One raw image [C, H, W], its modes [(weight, label [H, W])] and its object records."""
    count = int(rng.integers(1, cfg.max_objects + 1))
    objs = _place(rng, count, cfg)
    factors = _assign_factors(rng, objs, cfg)
    masks = [_masks(o, cfg.size) for o in objs]
    raw = _render(rng, objs, masks, cfg, colours)
    modes = _modes(objs, masks, factors, cfg.size)
    records = [
        {
            key: obj[key]
            for key in ("shape", "cx", "cy", "hx", "hy", "classes", "flip_prob", "halo_prob")
        }
        for obj in objs
    ]
    return raw, modes, records


_Factor = tuple[str, int, float]  # (flip or halo, object, probability)


def _assign_factors(
    rng: np.random.Generator, objs: list[dict[str, Any]], cfg: DrawConfig
) -> list[_Factor]:
    """Classes, flips and halos of the objects (in place); the image's ambiguity factors."""
    unambiguous = rng.random() < cfg.unambiguous_fraction
    object_classes = np.arange(1, cfg.num_classes)
    while True:
        factors: list[_Factor] = []
        for k, obj in enumerate(objs):
            flip = not unambiguous and rng.random() < cfg.p_flip_object
            if flip:
                a, b = cfg.pairs[int(rng.integers(len(cfg.pairs)))]
                p = float(cfg.flip_probs[int(rng.integers(len(cfg.flip_probs)))])
                obj.update(classes=[a, b], flip_prob=p)
                factors.append(("flip", k, p))
            else:
                obj.update(classes=[int(rng.choice(object_classes))], flip_prob=None)
            obj["halo_prob"] = None
            if not unambiguous and rng.random() < cfg.p_halo:
                q = float(cfg.shape_probs[int(rng.integers(len(cfg.shape_probs)))])
                obj["halo_prob"] = q
                factors.append(("halo", k, q))
        if unambiguous or factors:
            break
    for kind, k, _ in factors[cfg.max_factors :]:  # drop the surplus factors
        if kind == "flip":
            objs[k].update(classes=objs[k]["classes"][:1], flip_prob=None)
        else:
            objs[k]["halo_prob"] = None
    return factors[: cfg.max_factors]


_Masks = list[tuple[np.ndarray, np.ndarray]]  # per object: (inside, halo)


def _render(
    rng: np.random.Generator,
    objs: list[dict[str, Any]],
    masks: _Masks,
    cfg: DrawConfig,
    colours: dict[tuple[str, Any], np.ndarray],
) -> np.ndarray:
    """The raw image [C, H, W]: appearance colours plus Gaussian pixel noise."""
    raw = np.empty((cfg.channels, cfg.size, cfg.size))
    raw[:] = colours[("background", None)][:, None, None]
    for obj, (inside, halo) in zip(objs, masks, strict=True):
        if obj["flip_prob"] is None:
            raw[:, inside] = colours[("plain", obj["classes"][0])][:, None]
        else:
            raw[:, inside] = colours[("flip", (obj["classes"][0], obj["flip_prob"]))][:, None]
        if obj["halo_prob"] is not None:
            raw[:, halo] = colours[("halo", obj["halo_prob"])][:, None]
    raw += rng.normal(0.0, cfg.noise, size=raw.shape)
    return raw


def _modes(
    objs: list[dict[str, Any]], masks: _Masks, factors: list[_Factor], size: int
) -> list[_Mode]:
    """Every combination of the factors: its label map and weight, most probable first."""
    modes = []
    for bits in itertools.product((1, 0), repeat=len(factors)):
        weight = 1.0
        label = np.zeros((size, size), np.uint8)
        chosen = {(kind, k): bit for (kind, k, _), bit in zip(factors, bits, strict=True)}
        for (_, _, prob), bit in zip(factors, bits, strict=True):
            weight *= prob if bit else 1.0 - prob
        for k, (obj, (inside, halo)) in enumerate(zip(objs, masks, strict=True)):
            cls = obj["classes"][0] if chosen.get(("flip", k), 1) else obj["classes"][1]
            label[inside] = cls
            if chosen.get(("halo", k), 0):
                label[halo] = cls
        modes.append((weight, label))
    modes.sort(key=lambda m: -m[0])
    return modes


@lru_cache(maxsize=32)
def normalisation(cfg: DrawConfig) -> tuple[np.ndarray, np.ndarray]:
    colours = palette(cfg)
    raws = [
        draw_image(np.random.default_rng([_REFERENCE_KEY, i]), cfg, colours)[0]
        for i in range(_REFERENCE_IMAGES)
    ]
    stack = np.stack(raws)
    mean = stack.mean(axis=(0, 2, 3))
    std = np.maximum(stack.std(axis=(0, 2, 3)), 1e-3)
    return mean.astype(np.float32), std.astype(np.float32)
