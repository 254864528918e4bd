"""Tests of the built-in synthetic dataset generator (carcli.data.synthetic)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from script_loader import load_script

from carcli.data.synthetic import SyntheticSplit, generate_synthetic, label_marginals
from carcli.data.synthetic_draw import DrawConfig, palette
from carcli.errors import CarsegError

CONFIGS = [
    {},
    {"size": 64, "channels": 3, "num_classes": 4},
    {"channels": 1},
    {"channels": 1, "num_classes": 5},
    {"num_classes": 9},
]


def _config(**kw: object) -> DrawConfig:
    base = dict(
        size=32,
        channels=3,
        num_classes=3,
        noise=0.05,
        unambiguous_fraction=0.3,
        max_objects=2,
        p_flip_object=0.6,
        p_halo=0.5,
        flip_probs=(0.7, 0.3),
        shape_probs=(0.4, 0.7),
        max_factors=3,
    )
    base.update(kw)
    return DrawConfig(**base)  # type: ignore[arg-type]


def _raw(split: SyntheticSplit) -> np.ndarray:
    return split.image * split.norm_std[None, :, None, None] + split.norm_mean[None, :, None, None]


@pytest.fixture(scope="module")
def big() -> SyntheticSplit:
    return generate_synthetic(3000, seed=7)


def test_deterministic_from_seed() -> None:
    a, b = generate_synthetic(40, seed=3), generate_synthetic(40, seed=3)
    for name in ("image", "label", "label_weight", "num_modes"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.objects == b.objects
    c = generate_synthetic(40, seed=4)
    assert not np.array_equal(a.image, c.image)
    np.testing.assert_array_equal(a.norm_mean, c.norm_mean)  # splits share the normalisation
    np.testing.assert_array_equal(a.norm_std, c.norm_std)


@pytest.mark.parametrize("kw", CONFIGS[:2], ids=["default", "64px-3ch-4cls"])
def test_shapes_and_dtypes(kw: dict) -> None:
    n = 50
    s = generate_synthetic(n, DrawConfig(**kw))
    size, channels, k = kw.get("size", 32), kw.get("channels", 3), kw.get("num_classes", 3)
    a = int(s.num_modes.max())
    assert 1 <= a <= 8
    assert s.image.dtype == np.float32 and s.image.shape == (n, channels, size, size)
    assert s.label.dtype == np.uint8 and s.label.shape == (n, a, size, size)
    assert s.label_weight.dtype == np.float32 and s.label_weight.shape == (n, a)
    assert s.class_names[0] == "background" and len(s.class_names) == k == s.num_classes
    assert s.eval_classes == list(range(1, k))
    assert np.isfinite(s.image).all()


@pytest.mark.parametrize("kw", CONFIGS, ids=["default", "64px-3ch-4cls", "1ch", "1ch-5cls", "9cls"])
def test_weights_padding_ids_and_distinct_modes(kw: dict) -> None:
    s = generate_synthetic(120, DrawConfig(**kw), seed=1)
    np.testing.assert_allclose(s.label_weight.sum(axis=1, dtype=np.float64), 1.0, atol=1e-6)
    assert int(s.label.max()) < s.num_classes
    assert set(np.unique(s.label[:, 0]).tolist()) == set(range(s.num_classes))  # every class occurs
    for i in range(len(s.label)):
        m = int(s.num_modes[i])
        assert m in (1, 2, 4, 8)
        assert (s.label_weight[i, :m] > 0).all()
        assert (s.label_weight[i, m:] == 0).all() and (s.label[i, m:] == 0).all()
        assert all(np.diff(s.label_weight[i, :m]) <= 0)  # sorted by decreasing weight
        for j, k in itertools.combinations(range(m), 2):
            assert not np.array_equal(s.label[i, j], s.label[i, k])


def test_mix_of_ambiguous_and_unambiguous(big: SyntheticSplit) -> None:
    counts = {m: int((big.num_modes == m).sum()) for m in (1, 2, 4, 8)}
    assert sum(counts.values()) == len(big.num_modes)
    assert 0.25 < counts[1] / len(big.num_modes) < 0.35
    assert all(counts[m] > 100 for m in (2, 4, 8))
    unambiguous = big.num_modes == 1
    assert all(
        o["flip_prob"] is None and o["halo_prob"] is None
        for i in np.flatnonzero(unambiguous)
        for o in big.objects[i]
    )


def test_image_i_does_not_depend_on_n() -> None:
    small, large = generate_synthetic(5, seed=11), generate_synthetic(30, seed=11)
    np.testing.assert_array_equal(small.image, large.image[:5])
    np.testing.assert_array_equal(small.num_modes, large.num_modes[:5])
    a = small.label.shape[1]
    np.testing.assert_array_equal(small.label, large.label[:5, :a])
    np.testing.assert_array_equal(small.label_weight, large.label_weight[:5, :a])
    assert (large.label_weight[:5, a:] == 0).all()


def test_flip_frequency_matches_cue_and_weights(big: SyntheticSplit) -> None:
    """Class a of a flip object: P from the weights == its level, read back from the colour."""
    colours = palette(_config())
    flip_keys = [key for key in colours if key[0] == "flip"]
    raw = _raw(big)
    rng = np.random.default_rng(0)
    drawn = np.array(
        [rng.choice(len(w), p=w / w.sum()) for w in big.label_weight.astype(np.float64)]
    )
    hits: dict[float, list[int]] = {p: [] for p in (0.7, 0.3)}
    for i, objs in enumerate(big.objects):
        for obj in objs:
            if obj["flip_prob"] is None:
                continue
            a, b = obj["classes"]
            inside = _object_mask(obj, big.image.shape[-1])
            # the cue: nearest noise-free colour to the object's mean colour
            mean = raw[i][:, inside].mean(axis=1)
            key = min(flip_keys, key=lambda k: float(np.linalg.norm(colours[k] - mean)))
            assert key == ("flip", (a, obj["flip_prob"]))
            is_a = (big.label[i][:, inside] == a).all(axis=1)
            assert ((big.label[i][:, inside] == b).all(axis=1) | is_a)[: big.num_modes[i]].all()
            exact = float(big.label_weight[i][is_a].sum(dtype=np.float64))
            assert exact == pytest.approx(obj["flip_prob"], abs=1e-6)
            hits[obj["flip_prob"]].append(int(is_a[drawn[i]]))
    for p, h in hits.items():
        assert len(h) > 500
        assert abs(np.mean(h) - p) < 4 * np.sqrt(p * (1 - p) / len(h))


def test_halo_frequency_matches_cue(big: SyntheticSplit) -> None:
    rng = np.random.default_rng(1)
    hits: dict[float, list[int]] = {0.4: [], 0.7: []}
    for i, objs in enumerate(big.objects):
        m = int(big.num_modes[i])
        w = big.label_weight[i, :m].astype(np.float64)
        j = rng.choice(m, p=w / w.sum())
        for obj in objs:
            if obj["halo_prob"] is not None:
                band = _halo_mask(obj, big.image.shape[-1])
                hits[obj["halo_prob"]].append(int((big.label[i, j][band] != 0).all()))
    for q, h in hits.items():
        assert len(h) > 400
        assert abs(np.mean(h) - q) < 4 * np.sqrt(q * (1 - q) / len(h))


@pytest.mark.parametrize(
    "kw", [{}, {"channels": 1, "num_classes": 5}, {"size": 64, "num_classes": 4}]
)
def test_local_appearance_determines_probabilities(kw: dict) -> None:
    """Noise-free: each colour fixes P(background); non-halo colours fix the whole marginal."""
    s = generate_synthetic(200, DrawConfig(noise=0.0, **kw), seed=5)
    raw = _raw(s).transpose(0, 2, 3, 1).reshape(-1, s.image.shape[1]).astype(np.float64)
    marg = label_marginals(s.label, s.label_weight, s.num_classes)
    np.testing.assert_allclose(marg.sum(axis=1), 1.0, atol=1e-6)
    marg = np.round(marg.transpose(0, 2, 3, 1).reshape(-1, s.num_classes), 5)
    colours = palette(_config(**{**kw, "noise": 0.0}))
    keys = list(colours)
    dist = np.linalg.norm(raw[:, None] - np.stack([colours[k] for k in keys])[None], axis=-1)
    assert dist.min(axis=1).max() < 1e-4  # every pixel shows exactly one palette colour
    nearest = dist.argmin(axis=1)
    is_halo = np.array([k[0] == "halo" for k in keys])[nearest]
    marg[is_halo, 1:] = -1.0  # a halo's colour fixes only P(background)
    pairs = np.unique(np.column_stack([nearest, marg]), axis=0)
    values_per_colour = np.bincount(pairs[:, 0].astype(int), minlength=len(keys))
    assert (values_per_colour == 1).all(), [keys[k] for k in np.flatnonzero(values_per_colour != 1)]


@pytest.mark.parametrize("kw", CONFIGS, ids=["default", "64px-3ch-4cls", "1ch", "1ch-5cls", "9cls"])
def test_palette_colours_are_well_separated(kw: dict) -> None:
    colours = np.stack(list(palette(_config(**kw)).values()))
    d = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert d.min() >= (0.09 if kw.get("channels", 3) == 1 else 0.15)


def test_normalisation_is_roughly_standard(big: SyntheticSplit) -> None:
    mean, std = big.image.mean(axis=(0, 2, 3)), big.image.std(axis=(0, 2, 3))
    assert np.abs(mean).max() < 0.1 and np.abs(std - 1).max() < 0.1


def test_invalid_arguments_are_all_reported() -> None:
    with pytest.raises(CarsegError) as err:
        generate_synthetic(
            -1, DrawConfig(size=40, num_classes=2, flip_probs=(0.7, 1.0), max_factors=4)
        )
    text = str(err.value)
    for name in ("n ->", "size ->", "num_classes ->", "flip_probs ->", "max_factors ->"):
        assert name in text


def test_plot_script_writes_png(tmp_path: Path) -> None:
    module = load_script("plot_synthetic")
    out = tmp_path / "synthetic.png"
    module.main([str(out), "--rows", "3"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _signed_distance(obj: dict, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] + 0.5
    if obj["shape"] == "disc":
        return np.hypot(x - obj["cx"], y - obj["cy"]) - obj["hx"]
    return np.maximum(np.abs(x - obj["cx"]) - obj["hx"], np.abs(y - obj["cy"]) - obj["hy"])


def _object_mask(obj: dict, size: int) -> np.ndarray:
    return _signed_distance(obj, size) <= 0


def _halo_mask(obj: dict, size: int) -> np.ndarray:
    d = _signed_distance(obj, size)
    return (d > 0) & (d <= 2 * size / 32)
