"""The `car` refiner (the authors' per-level layout): shapes, the sampling contract, seeded
determinism, checkpoint round trip, per-sample cost; BN folding for inference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from carcli.data.batches import BatchSource
from carcli.data.dataset import DatasetFile
from carcli.models import build_model, build_refiner, hparam_defaults
from carcli.models.inference import fold_batchnorm
from carcli.runtime.networks import load_network, save_network
from carcli.sampling.sample import draw


def probs(b: int, k: int, h: int, w: int) -> torch.Tensor:
    return torch.randn(b, k, h, w).softmax(dim=1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("size", [(32, 32), (32, 64)])
@pytest.mark.parametrize("depth", [1, 3, 4])
def test_car_shapes(size: tuple[int, int], depth: int) -> None:
    g = build_refiner("car", 3, 4, 8, width=4, depth=depth)
    out = g(torch.randn(2, 3, *size), probs(2, 4, *size), num_samples=3)
    assert out.shape == (2, 3, 4, *size)
    feats = g.encode(torch.randn(2, 3, *size), probs(2, 4, *size))
    assert [f.shape[-1] for f in feats] == [size[1] // 2 ** (i + 1) for i in range(depth)]


def test_car_default_layout_is_the_authors() -> None:
    g = build_refiner("car", 1, 2, 8)
    assert hparam_defaults("refiner", "car") == hparam_defaults("refiner", "unet")
    assert [b[0].out_channels for b in g.encoder] == [32, 64, 128, 256]
    assert all(b[0].stride == (2, 2) for b in g.encoder)
    assert all(isinstance(b.up, torch.nn.ConvTranspose2d) for b in g.decoder)
    n = sum(p.numel() for p in g.parameters())
    assert 0.55e6 < n < 0.7e6  # the authors' G: 0.62M parameters
    assert g.noise_dim == 8 and g.config["arch"] == "car"


def _flops(g: torch.nn.Module, m: int, hw: int = 128) -> float:
    x, p = torch.randn(1, 1, hw, hw), probs(1, 2, hw, hw)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        g(x, p, num_samples=m)
    return counter.get_total_flops() / 1e9


def test_car_flops_per_extra_sample_at_128() -> None:
    car, unet = build_refiner("car", 1, 2, 8).eval(), build_refiner("unet", 1, 2, 8).eval()
    per_car = (_flops(car, 11) - _flops(car, 1)) / 10
    per_unet = (_flops(unet, 11) - _flops(unet, 1)) / 10
    assert per_car < 0.08  # 0.069 GFLOP; the authors' G: 0.18, carseg's unet: 0.96
    assert per_unet / per_car > 10


def test_car_encoder_runs_once_on_b_inputs() -> None:
    g = build_refiner("car", 1, 2, 4, width=4)
    seen: list[int] = []
    g.encoder[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    out = g(torch.randn(2, 1, 32, 32), probs(2, 2, 32, 32), num_samples=5)
    assert seen == [2] and out.shape == (2, 5, 2, 32, 32)


def test_car_noise_controls_samples_and_seeded_determinism() -> None:
    g = build_refiner("car", 1, 2, 4, width=4).eval()
    x, p = torch.randn(2, 1, 32, 32), probs(2, 2, 32, 32)
    a, b = torch.randn(2, 1, 4), torch.randn(2, 1, 4)
    with torch.no_grad():
        out = g(x, p, noise=torch.cat([a, a, b], dim=1))
        r1 = g(x, p, num_samples=3, generator=torch.Generator().manual_seed(3))
        r2 = g(x, p, num_samples=3, generator=torch.Generator().manual_seed(3))
        one = g(x[1:], p[1:], noise=torch.cat([a, a, b], dim=1)[1:, 2:])
    torch.testing.assert_close(out[:, 0], out[:, 1])
    assert (out[:, 0] - out[:, 2]).abs().max() > 1e-4
    assert torch.equal(r1, r2)
    assert (r1[:, 0] - r1[:, 1]).abs().max() > 1e-4
    torch.testing.assert_close(out[1:, 2:], one, atol=1e-5, rtol=1e-4)  # no batch coupling


def test_car_residual_logits_copies_f() -> None:
    g = build_refiner("car", 1, 3, 4, width=4)
    torch.nn.init.zeros_(g.head.weight)
    torch.nn.init.zeros_(g.head.bias)
    p = probs(2, 3, 32, 32)
    out = g(torch.randn(2, 1, 32, 32), p, num_samples=4)
    torch.testing.assert_close(out.softmax(dim=2), p.unsqueeze(1).expand_as(out))
    g.residual_logits = False
    flat = g(torch.randn(2, 1, 32, 32), p, num_samples=2).softmax(dim=2)
    torch.testing.assert_close(flat, torch.full_like(flat, 1 / 3))


def test_car_trains_and_noise_reaches_every_level() -> None:
    g = build_refiner("car", 1, 2, 4, width=4)
    out = g(torch.randn(2, 1, 32, 32), probs(2, 2, 32, 32), num_samples=3)
    out.softmax(dim=2)[:, :, 1].mean().backward()
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in g.parameters())
    assert all(b.gamma.weight.grad.abs().sum() > 0 for b in g.decoder)


def test_car_noise_grid_and_posterior() -> None:
    g = build_refiner("car", 1, 2, 4, width=4, noise_grid=2).eval()
    assert g.noise_dim == 4 + 2 * 2 * 2 and g.config["noise_grid"] == 2
    x, p = torch.randn(1, 1, 32, 32), probs(1, 2, 32, 32)
    eps = torch.randn(1, 2, g.noise_dim)
    eps[:, 1, :4] = eps[:, 0, :4]  # same global code, different grids
    with torch.no_grad():
        out = g(x, p, noise=eps)
    assert (out[:, 0] - out[:, 1]).abs().max() > 1e-4
    q = build_refiner("car", 1, 2, 4, width=4, noise="posterior")
    logits, mu, log_sigma = q(x, p, num_samples=2, return_posterior=True)
    assert logits.shape == (1, 2, 2, 32, 32) and mu.shape == log_sigma.shape == (1, 4)
    with pytest.raises(ValueError, match="noise_grid needs gaussian"):
        build_refiner("car", 1, 2, 4, noise="posterior", noise_grid=2)


def test_car_input_errors() -> None:
    g = build_refiner("car", 1, 2, 4, width=4)
    with pytest.raises(ValueError, match="not divisible by 16"):
        g(torch.randn(1, 1, 24, 24), probs(1, 2, 24, 24))
    with pytest.raises(ValueError, match="expected 2 class probabilities"):
        g(torch.randn(1, 1, 32, 32), probs(1, 3, 32, 32))
    with pytest.raises(ValueError, match="noise must have shape"):
        g(torch.randn(1, 1, 32, 32), probs(1, 2, 32, 32), noise=torch.randn(1, 2, 5))


def test_car_config_and_checkpoint_round_trip(tmp_path, write_split) -> None:
    path = write_split(tmp_path / "test.h5", n=5, channels=1)
    g = build_refiner("car", 1, 3, 4, width=4, noise_grid=1)
    g.train()
    with torch.no_grad():  # non-trivial BN statistics
        g(torch.randn(4, 1, 32, 32), probs(4, 3, 32, 32), num_samples=2)
    g.eval()
    assert build_model("refiner", json.loads(json.dumps(g.config))).config == g.config
    with DatasetFile(path) as ds:
        info = ds.info
        save_network(tmp_path / "g.safetensors", g, "refiner", "refiner", "car", info, 1)
        back = load_network(tmp_path / "g.safetensors", "refiner", "refiner", info, "make").eval()
        assert back.config == g.config and type(back).__name__ == "CARRefiner"
        F_net = build_model(
            "calibrator", {"arch": "convnet", "in_channels": 1, "num_classes": 3, "width": 4}
        ).eval()
        src, rows, cpu = BatchSource(ds), np.arange(5), torch.device("cpu")
        a, cal = draw(F_net, g, src, rows, 6, g.noise_dim, seed=3, device=cpu)
        b, _ = draw(F_net, back, src, rows, 6, g.noise_dim, seed=3, device=cpu)
        parts = [draw(F_net, back, src, r, 6, g.noise_dim, 3, cpu)[0] for r in ([0, 1], [2, 3, 4])]
    assert a.shape[:2] == (5, 6) and cal.shape[:2] == (5, 3)
    assert np.array_equal(a, b) and np.array_equal(a, np.concatenate(parts))


@pytest.mark.parametrize("arch", ["car", "unet"])
def test_fold_batchnorm_matches_and_leaves_the_network(arch: str) -> None:
    g = build_refiner(arch, 1, 2, 4, width=4)
    with torch.no_grad():
        g(torch.randn(4, 1, 32, 32), probs(4, 2, 32, 32), num_samples=2)  # BN statistics
    g.eval()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    folded = fold_batchnorm(g)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())
    x, p, eps = torch.randn(2, 1, 32, 32), probs(2, 2, 32, 32), torch.randn(2, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(
            folded(x, p, noise=eps), g(x, p, noise=eps), atol=1e-4, rtol=1e-4
        )


def test_fold_batchnorm_calibrators() -> None:
    for arch, args in (("segnet", (1, 2)), ("convnet", (3, 2))):
        f = build_model("calibrator", {"arch": arch, "in_channels": args[0], "num_classes": 2,
                                       "width": 4})  # fmt: skip
        f.train()
        with torch.no_grad():
            f(torch.randn(4, args[0], 32, 32))
        f.eval()
        folded = fold_batchnorm(f)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        x = torch.randn(2, args[0], 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(folded(x), f(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["car", "unet"])
def test_draw_in_chunks_is_bit_for_bit(tmp_path, write_split, arch: str) -> None:
    """Encoder once + decoder per chunk (by logits budget, through the speed wrapper, or by
    samples per image) gives exactly the samples of one full forward at these shapes."""
    from carcli.runtime.speed import Accelerated

    path = write_split(tmp_path / "test.h5", n=3, channels=1)
    g = build_refiner(arch, 1, 3, 4, width=4).eval()
    F_net = build_model(
        "calibrator", {"arch": "convnet", "in_channels": 1, "num_classes": 3, "width": 4}
    ).eval()
    cpu = torch.device("cpu")
    with DatasetFile(path) as ds:
        src, rows = BatchSource(ds), np.arange(3)
        whole, cal = draw(F_net, g, src, rows, 7, 4, 1, cpu)
        hw = int(np.prod(cal.shape[1:]))
        chunked, _ = draw(F_net, g, src, rows, 7, 4, 1, cpu, chunk_elements=2 * 3 * hw)
        wrapped, _ = draw(
            F_net,
            Accelerated(g, "off", True, "cpu"),
            src,
            rows,
            7,
            4,
            1,
            cpu,
            chunk_elements=3 * hw,
        )
        by_samples, _ = draw(F_net, g, src, rows, 7, 4, 1, cpu, chunk_samples=2)
    assert np.array_equal(whole, chunked) and np.array_equal(whole, wrapped)
    assert np.array_equal(whole, by_samples)  # speed.sample_chunk: 2 samples per image a pass


def test_accelerate_inference_folds_a_copy() -> None:
    from carcli.recipe.load import load_recipe
    from carcli.runtime.speed import accelerate, settings

    recipe = load_recipe("recipes/toy.yaml", ["speed.fold_bn=true"])
    g = build_refiner("car", 1, 2, 4, width=4).eval()
    call = accelerate(g, recipe, torch.device("cpu"), inference=True)
    assert call is not g and any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in call.modules())
    assert accelerate(g, recipe, torch.device("cpu")) is g  # training: never folded
    assert settings(recipe, torch.device("cpu"), 1, inference=True)["fold_bn"] is True


@pytest.mark.parametrize("k", [2, 5])
def test_class_ids_equal_argmax_with_ties_and_nan(k: int) -> None:
    from carcli.sampling.sample import class_ids

    y = torch.randn(2, 3, k, 8, 8).round()  # many ties
    y[0, 0, 0, 0, :3] = float("nan")
    y[0, 0, 1, 0, 1:5] = float("nan")
    y[1, 2, :, 3, 3] = float("nan")
    assert torch.equal(class_ids(y), y.argmax(2).to(torch.uint8))
