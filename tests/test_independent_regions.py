"""sample.independent_regions: G's samples recombined so separate uncertain regions are drawn
independently (carcli/sampling/regions.py)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from predict_fixtures import trained

from carcli.sampling.regions import independent_regions, region_offsets

# pools need the learned coupling
NO_POOL = ("sample.region_pool=1", "sample.pool_critic=0", "sample.pool_target=pool")

__all__ = ["trained"]  # the session fixture, imported for pytest


def _two_regions(m: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """F's probabilities [1, 2, 6, 8] with two separate uncertain blocks (region 0 at the
    top left, region 1 at the right) and samples [1, m, 6, 8] whose value in every pixel is
    the sample's index (so the output shows which sample each pixel came from)."""
    p = np.zeros((1, 2, 6, 8), dtype=np.float32)
    p[:, 0] = 1.0
    p[:, 0, 1:3, 0:2] = 0.6  # region 0
    p[:, 0, 2:5, 5:8] = 0.5  # region 1
    p[:, 1] = 1 - p[:, 0]
    samples = np.broadcast_to(np.arange(m, dtype=np.uint8)[None, :, None, None], (1, m, 6, 8))
    return p, np.ascontiguousarray(samples)


def test_each_region_comes_from_the_sample_its_offset_names() -> None:
    """Hand-checked layout: region r of output m is G's sample (m + o_r) mod M; certain
    pixels stay sample m."""
    p, samples = _two_regions(4)
    out = independent_regions(samples, p, np.array([7]), seed=3, threshold=0.9)
    o = region_offsets(3, 7, 4)
    for m in range(4):
        assert (out[0, m, 1:3, 0:2] == (m + o[0]) % 4).all()
        assert (out[0, m, 2:5, 5:8] == (m + o[1]) % 4).all()
        certain = np.ones((6, 8), dtype=bool)
        certain[1:3, 0:2] = certain[2:5, 5:8] = False
        assert (out[0, m][certain] == m).all()


def test_within_a_sample_the_regions_come_from_different_draws() -> None:
    """The offsets are distinct, so no output sample takes two regions from one of G's draws
    (for as many regions as samples)."""
    p, samples = _two_regions(5)
    for row in range(20):
        out = independent_regions(samples, p, np.array([row]), seed=0, threshold=0.9)
        assert (out[0, :, 1, 0] != out[0, :, 2, 5]).all()
        assert sorted(region_offsets(0, row, 5)) == list(range(5))


def test_every_pixels_answers_are_kept_so_marginals_are_unchanged() -> None:
    rng = np.random.default_rng(0)
    p, _ = _two_regions()
    samples = rng.integers(0, 3, size=(1, 16, 6, 8), dtype=np.uint8)
    out = independent_regions(samples, p, np.array([0]), seed=1, threshold=0.9)
    assert np.array_equal(np.sort(out, axis=1), np.sort(samples, axis=1))
    assert not np.array_equal(out, samples)


def test_coupled_answers_become_independent() -> None:
    """G's draws (i.i.d., as its noise is) give two regions perfectly coupled answers (both 0
    or both 1, half the time each): after recombination their joint frequency is the product
    of the marginals (0.25 each), up to the sampling error of 400 draws (sd 0.022)."""
    m = 400
    p, _ = _two_regions()
    coin = np.random.default_rng(4).integers(0, 2, m).astype(np.uint8)
    samples = np.zeros((1, m, 6, 8), dtype=np.uint8)
    samples[0, :, 1:3, 0:2] = coin[:, None, None]
    samples[0, :, 2:5, 5:8] = coin[:, None, None]
    before = np.mean(samples[0, :, 1, 0] == samples[0, :, 2, 5])
    out = independent_regions(samples, p, np.array([5]), seed=0, threshold=0.9)
    a, b = out[0, :, 1, 0], out[0, :, 2, 5]
    joint = np.array([[np.mean((a == i) & (b == j)) for j in (0, 1)] for i in (0, 1)])
    assert before == 1.0
    assert np.abs(joint - 0.25).max() < 0.07


def test_same_output_whatever_the_batch_and_one_sample_is_unchanged() -> None:
    rng = np.random.default_rng(1)
    p, _ = _two_regions()
    p2 = np.concatenate([p, p[:, ::-1]])
    samples = rng.integers(0, 2, size=(2, 8, 6, 8), dtype=np.uint8)
    both = independent_regions(samples, p2, np.array([3, 9]), seed=2, threshold=0.9)
    one = independent_regions(samples[1:], p2[1:], np.array([9]), seed=2, threshold=0.9)
    assert np.array_equal(both[1:], one)
    single = samples[:, :1]
    assert np.array_equal(independent_regions(single, p2, np.array([3, 9]), 2, 0.9), single)


def test_recipe_checks_the_threshold() -> None:
    from carcli.recipe.load import RecipeError, load_recipe

    with pytest.raises(RecipeError, match="sample.region_threshold"):
        load_recipe("recipes/toy.yaml", ["sample.region_threshold=0"])


class Jitter(torch.nn.Module):
    """A trained G whose class-1 logit also follows the sample's first noise number, so its
    samples differ (a few training steps leave a tiny G's draws all alike)."""

    def __init__(self, g: torch.nn.Module) -> None:
        super().__init__()
        self.g, self.noise_dim = g, g.noise_dim

    def forward(self, x, p, num_samples=1, noise=None):
        y = self.g(x, p, num_samples=num_samples, noise=noise).clone()
        y[:, :, 1] += 20.0 * noise[:, :, :1, None].to(y.dtype)
        return y


def test_draw_recombines_coupled_draws() -> None:
    """`draw` with the option: G's draws (one coin for both regions) recombined exactly as
    `independent_regions` does, per image row; the two regions no longer always agree."""
    from carcli.sampling.regions import IndependentRegions
    from carcli.sampling.sample import draw

    p, _ = _two_regions()
    logits = torch.from_numpy(np.log(np.clip(p, 1e-6, None)))
    ambiguous = torch.from_numpy(p[0, 0] < 0.9)  # [6, 8]: both regions

    class Source:
        info = types.SimpleNamespace(task="segmentation")

        def get(self, rows, rng, annotation=None):
            n = len(rows)
            return types.SimpleNamespace(
                image=torch.zeros(n, 1, 6, 8), cond=torch.zeros(n, 1, 6, 8)
            )

    class Coin(torch.nn.Module):  # both regions class 1 when eps_0 > 0, else class 0
        def forward(self, x, p, num_samples=1, noise=None):
            y = torch.zeros(x.shape[0], noise.shape[1], 2, 6, 8)
            y[:, :, 1] = torch.where(ambiguous, noise[..., :1, None], -1.0)
            return y

    F_net = lambda c: logits.expand(c.shape[0], -1, -1, -1)  # noqa: E731
    rows = np.array([2, 5])
    args = (F_net, Coin(), Source(), rows, 64, 1, 0, torch.device("cpu"))
    off, calib = draw(*args)
    on, _ = draw(*args, independent_regions=IndependentRegions(0.9, 1))
    assert (off[:, :, 1, 0] == off[:, :, 2, 5]).all()
    assert np.array_equal(on, independent_regions(off, calib, rows, 0, 0.9, 1))
    assert (on[:, :, 1, 0] != on[:, :, 2, 5]).any()


def _jitter_refiner(monkeypatch, module) -> None:
    """Wrap G in `Jitter` where `module` makes its calls (`accelerate`)."""
    real = module.accelerate

    def accelerate(net, *args, **kwargs):
        out = real(net, *args, **kwargs)
        return Jitter(out) if hasattr(net, "noise_dim") else out

    monkeypatch.setattr(module, "accelerate", accelerate)


def test_sample_stage_draws_an_independent_regions_bank(tmp_path, monkeypatch) -> None:
    """`sample` with the option: G's bank recombined with the recipe's settings and the
    bank's rows (so the same pixel frequencies, other maps), a plan that keeps the setting
    (an old partial chunk is not reused), and a clear error on a regression dataset."""
    import h5py

    import carcli.stages.sample as stage
    from carcli.errors import CarsegError
    from carcli.stages.prepare import run_prepare
    from carcli.training.calibrator import run_train_calibrator
    from carcli.training.refiner import run_train_refiner
    from tests.test_pipeline import tiny_recipe

    # F as trained (no class-bias refit): this tiny F then has regions below the threshold
    # 0.6 for the option to recombine; the refit made it sure enough to leave none
    off = (
        "sample.independent_regions=false",
        "sample.region_coupling=none",
        *NO_POOL,
        "calibrator.recalibrate=none",
    )
    r = tiny_recipe(tmp_path, *off)
    run_prepare(r, quiet=True)
    run_train_calibrator(r, quiet=True)
    run_train_refiner(r, quiet=True)
    _jitter_refiner(monkeypatch, stage)
    with h5py.File(stage.run_sample(r, quiet=True)) as h5:
        plain, calib = h5["samples"][...], h5["calibration"][...]
    on = tiny_recipe(
        tmp_path,
        "sample.independent_regions=true",
        "sample.region_coupling=none",
        *NO_POOL,
        "sample.region_threshold=0.6",
    )
    with h5py.File(stage.run_sample(on, overwrite=True, quiet=True)) as h5:
        mixed = h5["samples"][...]
    rows = np.arange(len(plain))
    assert np.array_equal(mixed, independent_regions(plain, calib, rows, r.seed, 0.6, 1))
    assert not np.array_equal(mixed, plain)
    reg = tiny_recipe(
        tmp_path / "reg",
        "data.source=regression",
        "sample.independent_regions=true",
        "sample.region_coupling=none",
        *NO_POOL,
    )
    run_prepare(reg, quiet=True)
    with pytest.raises(CarsegError, match="needs a segmentation dataset"):
        stage.run_sample(reg, overwrite=True, quiet=True)


def test_bundle_records_it_and_predict_recombines_as_sample(trained, monkeypatch) -> None:
    """model.json carries the recipe's setting; predict recombines G's draws with it (and
    equals `sample`'s bank, tests/test_predict.py); with it off, G's draws as they come."""
    import json

    import carcli.runtime.speed as speed
    from carcli import load_model

    tmp, r, bundle = trained
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["independent_regions"] == {"threshold": 0.9, "link": 1}
    split = tmp / "data" / "test.h5"
    _jitter_refiner(monkeypatch, speed)
    model = load_model(bundle)
    on = model.predict([split], num_samples=8, seed=r.seed)
    model.meta["independent_regions"] = None
    off = model.predict([split], num_samples=8, seed=r.seed).samples
    calib = on.probabilities.astype(np.float32)
    rows = np.arange(len(off))
    assert np.array_equal(on.samples, independent_regions(off, calib, rows, r.seed, 0.9, 1))
    assert not np.array_equal(on.samples, off)


@pytest.mark.parametrize("value", [{"threshold": 2.0, "link": 1}, {"threshold": 0.9}, "yes"])
def test_a_bad_bundle_setting_is_refused(trained, tmp_path, value) -> None:
    import json
    import shutil

    from carcli import load_model
    from carcli.errors import CarsegError

    _, _, bundle = trained
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["independent_regions"] = value
    (copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CarsegError, match="independent_regions must be null"):
        load_model(copy)
