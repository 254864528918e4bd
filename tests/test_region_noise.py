"""Region noise (refiner.noise_regions): F's uncertain regions each carry a code of their own."""

from __future__ import annotations

import pytest
import torch

from carcli.models.noise import region_field, uncertain_regions
from carcli.models.refiner import UNetRefiner
from carcli.models.refiner_car import CARRefiner


def _probs(h: int = 16, w: int = 16) -> torch.Tensor:
    """p [1, 4, H, W]: certain background, two separate 50/50 squares, a 0.95 square."""
    p = torch.zeros(1, 4, h, w)
    p[0, 0] = 1.0
    for (y, x), c in (((2, 2), 1), ((10, 10), 2)):
        p[0, :, y : y + 3, x : x + 3] = 0.0
        p[0, 0, y : y + 3, x : x + 3] = 0.5
        p[0, c, y : y + 3, x : x + 3] = 0.5
    p[0, :, 2:5, 10:13] = 0.0
    p[0, 3, 2:5, 10:13] = 0.95
    p[0, 0, 2:5, 10:13] = 0.05
    return p


def region_noise_map(codes: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Reference for region_field: the per-pixel map [B*M, r, H, W] holding each region's
    code over the region and 0 elsewhere, for codes [B, M, R, r] and region ids [B, H, W]
    (id R: no region)."""
    b, m, _, r = codes.shape
    padded = torch.cat([codes, codes.new_zeros(b, m, 1, r)], dim=2)  # id R -> zeros
    flat = ids.reshape(b, 1, -1, 1).expand(b, m, -1, r)
    maps = padded.gather(2, flat)  # [B, M, H*W, r]
    return maps.permute(0, 1, 3, 2).reshape(b * m, r, *ids.shape[-2:])


def test_uncertain_regions_are_numbered_in_raster_order_and_wrap() -> None:
    ids = uncertain_regions(_probs(), threshold=0.9, max_regions=8)[0]
    assert ids.dtype == torch.int64
    assert (ids[2:5, 2:5] == 0).all() and (ids[10:13, 10:13] == 1).all()
    assert (ids[2:5, 10:13] == 8).all()  # 0.95 > threshold: certain
    assert int((ids < 8).sum()) == 18
    # a higher threshold takes in the 0.95 square: raster order puts it second
    ids = uncertain_regions(_probs(), threshold=0.99, max_regions=8)[0]
    assert (ids[2:5, 10:13] == 1).all() and (ids[10:13, 10:13] == 2).all()
    # more regions than codes: region r uses code r mod R
    ids = uncertain_regions(_probs(), threshold=0.99, max_regions=2)[0]
    assert (ids[10:13, 10:13] == 0).all() and (ids[0, 0] == 2).all()


def test_uncertain_regions_are_8_connected() -> None:
    p = torch.zeros(1, 2, 4, 4)
    p[0, 0] = 1.0
    for y, x in ((0, 0), (1, 1), (3, 3)):  # a diagonal pair and a lone pixel
        p[0, :, y, x] = 0.5
    ids = uncertain_regions(p, 0.9, 4)[0]
    assert ids[0, 0] == ids[1, 1] == 0 and ids[3, 3] == 1


def test_region_noise_map_lays_each_code_over_its_region_and_zero_elsewhere() -> None:
    ids = torch.tensor([[[0, 0, 2], [1, 2, 2]]])  # R = 2: id 2 is "no region"
    codes = torch.arange(1 * 3 * 2 * 2, dtype=torch.float32).reshape(1, 3, 2, 2)
    maps = region_noise_map(codes, ids)
    assert maps.shape == (3, 2, 2, 3)
    for m in range(3):
        for c in range(2):
            want = torch.tensor(
                [[codes[0, m, 0, c], codes[0, m, 0, c], 0.0], [codes[0, m, 1, c], 0.0, 0.0]]
            )
            assert torch.equal(maps[m, c], want)


@pytest.mark.parametrize("cls", [UNetRefiner, CARRefiner])
def test_a_regions_code_moves_only_the_samples_that_see_it(cls) -> None:
    """eps = [global | region codes]; changing a region's code changes the samples; on an
    image without uncertain pixels the region codes change nothing (their map is 0)."""
    torch.manual_seed(0)
    g = cls(3, 4, 8, width=4, depth=2, noise_regions=2, region_dim=3).eval()
    assert g.noise_dim == 8 + 2 * 3
    x = torch.randn(2, 3, 16, 16)
    p = torch.cat([_probs(), torch.eye(4)[0].view(1, 4, 1, 1).expand(1, 4, 16, 16)])
    eps = torch.randn(2, 3, g.noise_dim)
    other = eps.clone()
    other[:, :, 8:11] += 3.0  # region 0's code
    with torch.no_grad():
        a, b = g(x, p, noise=eps), g(x, p, noise=other)
    assert not torch.allclose(a[0], b[0])
    assert torch.equal(a[1], b[1])


def test_region_options_are_checked() -> None:
    with pytest.raises(ValueError, match="noise regions"):
        UNetRefiner(3, 4, 8, noise_regions=-1)
    with pytest.raises(ValueError, match="noise regions"):
        UNetRefiner(3, 4, 8, noise_regions=2, region_threshold=0.0)
    with pytest.raises(ValueError, match="gaussian"):
        UNetRefiner(3, 4, 8, noise_regions=2, noise="posterior")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["refiner.noise_regions=-1"], "refiner.noise_regions / region_dim / region_levels"),
        (
            ["refiner.noise_regions=2", "refiner.region_dim=0"],
            "refiner.noise_regions / region_dim / region_levels",
        ),
        (["refiner.region_threshold=1.5"], "refiner.region_threshold"),
        (["refiner.noise_regions=2", "refiner.noise=posterior"], "refiner.noise_regions -> needs"),
    ],
)
def test_recipe_checks_of_the_region_options(overrides, message) -> None:
    from carcli.recipe.load import RecipeError, load_recipe

    with pytest.raises(RecipeError) as err:
        load_recipe("recipes/toy.yaml", overrides)
    assert message in str(err.value)


def test_region_noise_refiner_trains_samples_and_reloads(tmp_path) -> None:
    """A trained region-noise G is saved with its options, `sample` rebuilds it and draws a
    bank, and the same seed gives the same bank."""
    import h5py
    import numpy as np

    from carcli.stages.prepare import run_prepare
    from carcli.stages.sample import run_sample
    from carcli.training.calibrator import run_train_calibrator
    from carcli.training.refiner import run_train_refiner
    from tests.test_pipeline import tiny_recipe

    keys = ("refiner.noise_regions=4", "refiner.region_dim=2", "refiner.region_threshold=0.95")
    r = tiny_recipe(tmp_path, *keys)
    run_prepare(r, quiet=True)
    run_train_calibrator(r, quiet=True)
    run_train_refiner(r, quiet=True)
    bank = run_sample(r, quiet=True)
    with h5py.File(bank) as h5:
        first = h5["samples"][...]
    with h5py.File(tmp_path / "data" / "test.h5") as h5:
        assert first.shape[0] == h5["image"].shape[0]
    again = run_sample(tiny_recipe(tmp_path, *keys), overwrite=True, quiet=True)
    with h5py.File(again) as h5:
        assert np.array_equal(h5["samples"][...], first)


@pytest.mark.parametrize("size", [(16, 16), (8, 8), (4, 4), (3, 5)])
def test_region_field_equals_the_conv_of_the_pooled_noise_map(size) -> None:
    import torch.nn.functional as nnf

    torch.manual_seed(1)
    ids = uncertain_regions(_probs(), 0.99, 2).expand(2, 16, 16)
    codes = torch.randn(2, 3, 2, 4)
    proj = torch.nn.Conv2d(4, 5, 1)
    want = proj(nnf.adaptive_avg_pool2d(region_noise_map(codes, ids), size))
    got = region_field(codes, ids, proj, size)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)


def test_region_levels_limits_the_codes_to_the_coarsest_levels() -> None:
    """region_levels n: only the n coarsest decoder levels see the codes (config records it,
    the registry rebuilds it); 0 means all levels."""
    from carcli.models.registry import build_model

    g = UNetRefiner(3, 4, 8, width=4, depth=3, noise_regions=2, region_levels=2).eval()
    assert len(g.region_proj) == 2 and g.config["region_levels"] == 2
    again = build_model("refiner", dict(g.config)).eval()
    again.load_state_dict(g.state_dict())
    assert len(UNetRefiner(3, 4, 8, width=4, depth=3, noise_regions=2).region_proj) == 3
    x, p = torch.randn(1, 3, 16, 16), _probs()
    eps = torch.randn(1, 2, g.noise_dim)
    with torch.no_grad():
        assert torch.equal(g(x, p, noise=eps), again(x, p, noise=eps))
