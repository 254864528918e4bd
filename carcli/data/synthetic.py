"""Built-in synthetic segmentation data with an exactly known label distribution.

Each image shows one or two non-overlapping objects (axis-aligned boxes or discs, half-size
3..6 px at 32x32, scaled with ``size``) on a flat grey background, plus Gaussian pixel noise
(sigma ``noise`` = 0.05 on a 0..1 intensity scale). Its label distribution is a small set of
*modes* (complete label maps) with exact probabilities, stored as ``label`` [N, A, H, W] and
``label_weight`` [N, A]; rows beyond an image's own mode count are padding (weight 0, all 0).

Classes
    ``0 background``, then object classes ``1 .. num_classes-1`` (``class_1``, ...). Object
    classes are grouped into *flip pairs* (1, 2), (3, 4), ...; with an even number of object
    classes the last class has no partner and only ever appears unambiguously. Defaults:
    3 classes, one pair (1, 2). ``eval_classes`` = all but 0.

Ambiguity factors (independent Bernoulli variables; the modes are their product)
    * **Class flip.** A *flip object* of pair (a, b) is class ``a`` with probability ``p`` and
      class ``b`` otherwise, ``p`` in ``flip_probs`` = (0.7, 0.3). The cue is the object's
      colour: a plain object of class ``a`` has colour ``c_a``, of class ``b`` colour ``c_b``,
      and a flip object has the mixture ``p*c_a + (1-p)*c_b`` -- its colour says how likely
      class ``a`` is. RGB colours: class 1 red, 2 blue, 3 green, 4 yellow, 5 magenta, 6 cyan,
      7 orange, 8 violet (so the (1, 2) flip objects are purple: reddish-purple p(1) = 0.7,
      bluish-purple p(1) = 0.3).
    * **Shape (halo).** A *halo* is a band ``2 * size/32`` px wide around an object, painted in
      a pale grey that does not depend on the object. It belongs to the object (takes the
      object's class in that mode) with probability ``q`` in ``shape_probs`` = (0.4, 0.7) and is
      background otherwise. The cue is its faintness: the fainter grey means 0.4, the brighter
      grey 0.7. The class a halo pixel takes is read from the object next to it.
    Every colour (background, halo greys, plain classes, flip mixtures) is a distinct,
    well-separated value, so a pixel and its ~5 px neighbourhood determine its exact class
    distribution (see ``label_marginals``).

Image composition
    With probability ``unambiguous_fraction`` (0.3) an image is *unambiguous*: plain objects,
    no halo, one mode of weight 1. Otherwise each object is a flip object with probability
    ``p_flip_object`` (0.6) (pair drawn uniformly) and has a halo with probability
    ``p_halo`` (0.5); draws with no factor are redrawn, and at most ``max_factors`` (3)
    factors are kept (later ones are dropped), so an ambiguous image has 2, 4 or 8 modes and
    A <= 8. Plain objects draw their class uniformly from all object classes. Modes are sorted
    by decreasing weight.

Channels
    ``channels == 3``: the RGB palette above (background grey 0.35, halos grey 0.5 and 0.7).
    ``channels == 1``: every appearance gets its own grey level, evenly spaced in [0, 1]
    (background 0, halos next, then per pair: plain a, flip mixtures by decreasing p, plain b,
    then unpaired classes); with many classes the levels crowd (spacing 1 / (#levels - 1)),
    so prefer 3 channels there. Other channel counts: channel 0 is the grey code, channel
    c >= 1 repeats RGB component (c - 1) mod 3.

Normalisation
    ``image = (raw - mean) / std`` per channel, with mean and std measured once on a fixed
    reference batch of the same configuration (independent of ``seed`` and ``n``), so every
    split of a configuration shares them; they are returned as ``norm_mean`` and ``norm_std``.

Determinism
    Image ``i`` is drawn from ``np.random.default_rng([seed, i])``: the same seed gives
    identical arrays, and image ``i`` does not depend on ``n``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from carcli.errors import CarsegError

__all__ = ["CLASS_RGB", "SyntheticSplit", "generate_synthetic", "label_marginals"]

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


@dataclass
class SyntheticSplit:
    """One generated split, in the layout of ``carseg.dataset/1``."""

    image: np.ndarray
    """float32 [N, C, H, W], normalised per channel with ``norm_mean`` / ``norm_std``."""
    label: np.ndarray
    """uint8 [N, A, H, W]: the modes of each image; padding rows are all 0."""
    label_weight: np.ndarray
    """float32 [N, A]: probability of each mode; rows sum to 1, padding rows are 0."""
    class_names: list[str]
    """Name of each class id (``background``, ``class_1``, ...)."""
    eval_classes: list[int]
    """Classes the IoU-based metrics score: all but 0."""
    num_modes: np.ndarray
    """int64 [N]: number of real (non-padding) modes of each image."""
    objects: list[list[dict[str, Any]]]
    """Per image, per object: shape, class(es), flip probability, halo probability (JSON-able)."""
    norm_mean: np.ndarray
    """float32 [C]: per-channel mean subtracted from the raw 0..1 image."""
    norm_std: np.ndarray
    """float32 [C]: per-channel scale the raw image was divided by."""
    params: dict[str, Any] = field(default_factory=dict)
    """The generator's arguments (JSON-able), for the file's attributes."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class _Config:
    size: int
    channels: int
    num_classes: int
    noise: float
    unambiguous_fraction: float
    max_objects: int
    p_flip_object: float
    p_halo: float
    flip_probs: tuple[float, ...]
    shape_probs: tuple[float, ...]
    max_factors: int

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return [(a, a + 1) for a in range(1, self.num_classes - 1, 2)]


def _validate(cfg: _Config, n: int, seed: int) -> None:
    problems = []
    if n < 0:
        problems.append(f"n -> expected >= 0, got {n}")
    if seed < 0:
        problems.append(f"seed -> expected >= 0, got {seed}")
    if cfg.size < 16 or cfg.size % 16:
        problems.append(f"size -> expected a multiple of 16, got {cfg.size}")
    if cfg.channels < 1:
        problems.append(f"channels -> expected >= 1, got {cfg.channels}")
    if not 3 <= cfg.num_classes <= MAX_CLASSES:
        problems.append(f"num_classes -> expected 3..{MAX_CLASSES}, got {cfg.num_classes}")
    if cfg.noise < 0:
        problems.append(f"noise -> expected >= 0, got {cfg.noise}")
    for name in ("unambiguous_fraction", "p_flip_object", "p_halo"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            problems.append(f"{name} -> expected 0..1, got {getattr(cfg, name)}")
    if cfg.unambiguous_fraction < 1 and cfg.p_flip_object == 0 and cfg.p_halo == 0:
        problems.append("p_flip_object, p_halo -> at least one must be > 0 for ambiguous images")
    if not 1 <= cfg.max_objects <= 2:
        problems.append(f"max_objects -> expected 1 or 2, got {cfg.max_objects}")
    if not 1 <= cfg.max_factors <= 3:
        problems.append(f"max_factors -> expected 1..3 (at most 8 modes), got {cfg.max_factors}")
    for name, limit in (("flip_probs", 3), ("shape_probs", 2)):
        probs = getattr(cfg, name)
        if not 1 <= len(probs) <= limit or len(set(probs)) != len(probs):
            problems.append(f"{name} -> expected 1..{limit} distinct values, got {probs}")
        if any(not 0.0 < p < 1.0 for p in probs):
            problems.append(f"{name} -> expected values strictly between 0 and 1, got {probs}")
    if problems:
        raise CarsegError("synthetic data: " + "; ".join(problems))


def _appearances(cfg: _Config) -> list[tuple[str, Any]]:
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


def _palette(cfg: _Config) -> dict[tuple[str, Any], np.ndarray]:
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


def _place(rng: np.random.Generator, count: int, cfg: _Config) -> list[dict[str, Any]]:
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


def _draw_image(
    rng: np.random.Generator, cfg: _Config, colours: dict[tuple[str, Any], np.ndarray]
) -> tuple[np.ndarray, list[_Mode], list[dict[str, Any]]]:
    """One raw image [C, H, W], its modes [(weight, label [H, W])] and its object records."""
    count = int(rng.integers(1, cfg.max_objects + 1))
    objs = _place(rng, count, cfg)
    unambiguous = rng.random() < cfg.unambiguous_fraction
    object_classes = np.arange(1, cfg.num_classes)
    while True:
        factors: list[tuple[str, int, float]] = []
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
    factors = factors[: cfg.max_factors]

    masks = [_masks(o, cfg.size) for o in objs]
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

    modes = []
    for bits in itertools.product((1, 0), repeat=len(factors)):
        weight = 1.0
        label = np.zeros((cfg.size, cfg.size), np.uint8)
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
    records = [
        {
            key: obj[key]
            for key in ("shape", "cx", "cy", "hx", "hy", "classes", "flip_prob", "halo_prob")
        }
        for obj in objs
    ]
    return raw, modes, records


@lru_cache(maxsize=32)
def _normalisation(cfg: _Config) -> tuple[np.ndarray, np.ndarray]:
    colours = _palette(cfg)
    raws = [
        _draw_image(np.random.default_rng([_REFERENCE_KEY, i]), cfg, colours)[0]
        for i in range(_REFERENCE_IMAGES)
    ]
    stack = np.stack(raws)
    mean = stack.mean(axis=(0, 2, 3))
    std = np.maximum(stack.std(axis=(0, 2, 3)), 1e-3)
    return mean.astype(np.float32), std.astype(np.float32)


def generate_synthetic(
    n: int,
    *,
    size: int = 32,
    channels: int = 3,
    num_classes: int = 3,
    seed: int = 0,
    noise: float = 0.05,
    unambiguous_fraction: float = 0.3,
    max_objects: int = 2,
    p_flip_object: float = 0.6,
    p_halo: float = 0.5,
    flip_probs: tuple[float, ...] = (0.7, 0.3),
    shape_probs: tuple[float, ...] = (0.4, 0.7),
    max_factors: int = 3,
) -> SyntheticSplit:
    """Generate ``n`` images with their exact label distributions (see the module docstring).

    ``flip_probs`` are the probabilities of the first class of a pair (at most 3 values);
    ``shape_probs`` the probabilities that a halo belongs to its object (at most 2 values,
    the smaller drawn fainter). Raises ``CarsegError`` listing every invalid argument.
    """
    cfg = _Config(
        size=int(size),
        channels=int(channels),
        num_classes=int(num_classes),
        noise=float(noise),
        unambiguous_fraction=float(unambiguous_fraction),
        max_objects=int(max_objects),
        p_flip_object=float(p_flip_object),
        p_halo=float(p_halo),
        flip_probs=tuple(float(p) for p in flip_probs),
        shape_probs=tuple(float(q) for q in shape_probs),
        max_factors=int(max_factors),
    )
    _validate(cfg, n, seed)
    colours = _palette(cfg)
    mean, std = _normalisation(cfg)
    draws = [_draw_image(np.random.default_rng([seed, i]), cfg, colours) for i in range(n)]
    a = max((len(modes) for _, modes, _ in draws), default=1)
    image = np.empty((n, cfg.channels, cfg.size, cfg.size), np.float32)
    label = np.zeros((n, a, cfg.size, cfg.size), np.uint8)
    weight = np.zeros((n, a), np.float64)
    num_modes = np.zeros(n, np.int64)
    for i, (raw, modes, _) in enumerate(draws):
        image[i] = (raw - mean[:, None, None]) / std[:, None, None]
        num_modes[i] = len(modes)
        for j, (w, lab) in enumerate(modes):
            label[i, j] = lab
            weight[i, j] = w
    weight /= np.maximum(weight.sum(axis=1, keepdims=True), 1e-300)
    params = dict(vars(cfg), seed=int(seed), n=int(n), generator="carseg.synthetic")
    params.update(flip_probs=list(cfg.flip_probs), shape_probs=list(cfg.shape_probs))
    return SyntheticSplit(
        image=image,
        label=label,
        label_weight=weight.astype(np.float32),
        class_names=["background"] + [f"class_{k}" for k in range(1, cfg.num_classes)],
        eval_classes=list(range(1, cfg.num_classes)),
        num_modes=num_modes,
        objects=[records for _, _, records in draws],
        norm_mean=mean.copy(),
        norm_std=std.copy(),
        params=params,
    )


def label_marginals(label: np.ndarray, weight: np.ndarray, num_classes: int) -> np.ndarray:
    """Exact per-pixel class distribution [N, K, H, W] (float64) of weighted modes.

    ``label`` is uint8 [N, A, H, W], ``weight`` [N, A]; this is what a perfectly calibrated
    F should predict.
    """
    out = np.zeros((label.shape[0], num_classes) + label.shape[2:])
    for k in range(num_classes):
        out[:, k] = np.einsum("na,nahw->nhw", weight.astype(np.float64), label == k)
    return out
