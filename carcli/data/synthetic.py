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

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from carcli.data.synthetic_draw import (
    CLASS_RGB,
    MAX_CLASSES,
    DrawConfig,
    draw_image,
    normalisation,
    palette,
)
from carcli.errors import CarsegError

__all__ = ["CLASS_RGB", "SyntheticSplit", "generate_synthetic", "label_marginals"]


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


def _validate(cfg: DrawConfig, n: int, seed: int) -> None:
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


def generate_synthetic(n: int, spec: DrawConfig | None = None, *, seed: int = 0) -> SyntheticSplit:
    """Generate ``n`` images with their exact label distributions (see the module docstring).

    ``spec`` (default: ``DrawConfig()``) holds the shape and probability settings:
    ``flip_probs`` are the probabilities of the first class of a pair (at most 3 values);
    ``shape_probs`` the probabilities that a halo belongs to its object (at most 2 values,
    the smaller drawn fainter). Raises ``CarsegError`` listing every invalid setting.
    """
    spec = spec or DrawConfig()
    cfg = DrawConfig(
        size=int(spec.size),
        channels=int(spec.channels),
        num_classes=int(spec.num_classes),
        noise=float(spec.noise),
        unambiguous_fraction=float(spec.unambiguous_fraction),
        max_objects=int(spec.max_objects),
        p_flip_object=float(spec.p_flip_object),
        p_halo=float(spec.p_halo),
        flip_probs=tuple(float(p) for p in spec.flip_probs),
        shape_probs=tuple(float(q) for q in spec.shape_probs),
        max_factors=int(spec.max_factors),
    )
    _validate(cfg, n, seed)
    colours = palette(cfg)
    mean, std = normalisation(cfg)
    draws = [draw_image(np.random.default_rng([seed, i]), cfg, colours) for i in range(n)]
    image, label, weight, num_modes = _stack(draws, cfg, mean, std)
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


def _stack(
    draws: list[Any], cfg: DrawConfig, mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The draws as arrays: normalised images, modes padded to the largest count, their
    weights (rows summing to 1) and the mode counts."""
    n = len(draws)
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
    return image, label, weight, num_modes


def label_marginals(label: np.ndarray, weight: np.ndarray, num_classes: int) -> np.ndarray:
    """Exact per-pixel class distribution [N, K, H, W] (float64) of weighted modes.

    ``label`` is uint8 [N, A, H, W], ``weight`` [N, A]; this is what a perfectly calibrated
    F should predict.
    """
    out = np.zeros((label.shape[0], num_classes) + label.shape[2:])
    for k in range(num_classes):
        out[:, k] = np.einsum("na,nahw->nhw", weight.astype(np.float64), label == k)
    return out
