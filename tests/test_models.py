"""Networks: shapes, registry errors and configs, the refiner's sampling contract."""

from __future__ import annotations

import json

import pytest
import torch

from carcli.models import (
    CALIBRATORS,
    DISCRIMINATORS,
    REFINERS,
    build_calibrator,
    build_discriminator,
    build_model,
    build_refiner,
    hparam_defaults,
)

SIZES = [(32, 32), (32, 64)]
SMALL = {"segnet": {"width": 4}, "convnet": {"width": 4}, "unet": {"width": 4}}


def probs(b: int, k: int, h: int, w: int) -> torch.Tensor:
    return torch.randn(b, k, h, w).softmax(dim=1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- calibrators -------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("arch", ["segnet", "convnet", "unet"])
def test_calibrator_shapes(arch: str, size: tuple[int, int]) -> None:
    f = build_calibrator(arch, 3, 5, **SMALL[arch])
    out = f(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, *size)


def test_segnet_defaults_and_depth() -> None:
    f = build_calibrator("segnet", 1, 2).eval()
    assert f.config["width"] == 64 and f.config["depth"] == 4
    assert f(torch.randn(1, 1, 16, 16)).shape == (1, 2, 16, 16)
    f2 = build_calibrator("segnet", 1, 3, width=4, depth=2, convs_per_level=1)
    assert f2(torch.randn(1, 1, 12, 8)).shape == (1, 3, 12, 8)


def test_segnet_rejects_indivisible_size() -> None:
    f = build_calibrator("segnet", 1, 2, width=4)
    with pytest.raises(ValueError, match="divisible by 16"):
        f(torch.randn(1, 1, 40, 32))


def test_unet_calibrator_levels_and_skips() -> None:
    f = build_calibrator("unet", 3, 4, width=4, depth=2).eval()
    assert f.config["depth"] == 2 and len(f.down) == 3 and len(f.up) == 2
    assert f(torch.randn(1, 3, 12, 8)).shape == (1, 4, 12, 8)
    with pytest.raises(ValueError, match="divisible by 4"):
        f(torch.randn(1, 3, 10, 8))
    # the full-resolution skip: a one-pixel change of the input changes that pixel's logits
    # even though the coarse path sees it only through pooling
    x = torch.randn(1, 3, 16, 16)
    y = x.clone()
    y[0, :, 5, 7] += 3.0
    with torch.no_grad():
        diff = (f(x) - f(y)).abs().sum(dim=1)[0]
    assert diff[5, 7] > 0 and diff[3:8, 5:10].max() == diff.max()


def test_calibrator_rejects_wrong_channels() -> None:
    f = build_calibrator("convnet", 3, 2, width=4)
    with pytest.raises(ValueError, match="expected 3 input channels"):
        f(torch.randn(1, 4, 8, 8))


def test_mlp_calibrator() -> None:
    f = build_calibrator("mlp", 2, 3)
    assert f(torch.randn(7, 2)).shape == (7, 3)
    # the paper's "4-layer MLP (64 units)": 4 hidden layers of 64, then the output layer
    linears = [m for m in f.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [64, 64, 64, 64, 3]
    acts = [m for m in f.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert len(acts) == 4 and all(a.negative_slope == 0.01 for a in acts)


# --- refiners ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_unet_refiner_shapes(size: tuple[int, int]) -> None:
    g = build_refiner("unet", 3, 4, 8, width=4)
    out = g(torch.randn(2, 3, *size), probs(2, 4, *size), num_samples=3)
    assert out.shape == (2, 3, 4, *size)


def test_unet_refiner_128_default_width() -> None:
    g = build_refiner("unet", 1, 2, 8).eval()
    with torch.no_grad():
        out = g(torch.randn(1, 1, 128, 128), probs(1, 2, 128, 128), num_samples=2)
    assert out.shape == (1, 2, 2, 128, 128)


def test_unet_encoder_runs_once_on_b_inputs() -> None:
    g = build_refiner("unet", 1, 2, 4, width=4)
    seen: list[int] = []
    g.encoder.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    out = g(torch.randn(2, 1, 32, 32), probs(2, 2, 32, 32), num_samples=5)
    assert seen == [2]
    assert out.shape == (2, 5, 2, 32, 32)


def test_unet_noise_controls_samples() -> None:
    g = build_refiner("unet", 1, 2, 4, width=4).eval()
    x, p = torch.randn(2, 1, 32, 32), probs(2, 2, 32, 32)
    a, b = torch.randn(2, 1, 4), torch.randn(2, 1, 4)
    noise = torch.cat([a, a, b], dim=1)
    with torch.no_grad():
        out = g(x, p, noise=noise)
    assert out.shape == (2, 3, 2, 32, 32)
    torch.testing.assert_close(out[:, 0], out[:, 1])
    assert (out[:, 0] - out[:, 2]).abs().max() > 1e-4
    with torch.no_grad():
        r1 = g(x, p, num_samples=3, generator=torch.Generator().manual_seed(3))
        r2 = g(x, p, num_samples=3, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(r1, r2)
    assert (r1[:, 0] - r1[:, 1]).abs().max() > 1e-4


def test_unet_sample_independent_of_batch_companions() -> None:
    """In eval mode a sample depends only on its own image and noise."""
    g = build_refiner("unet", 1, 2, 4, width=4).eval()
    x, p, noise = torch.randn(2, 1, 32, 32), probs(2, 2, 32, 32), torch.randn(2, 3, 4)
    with torch.no_grad():
        full = g(x, p, noise=noise)
        one = g(x[1:], p[1:], noise=noise[1:, 2:])
    torch.testing.assert_close(full[1:, 2:], one, atol=1e-5, rtol=1e-4)


def test_unet_residual_logits_copies_f() -> None:
    g = build_refiner("unet", 1, 3, 4, width=4)
    torch.nn.init.zeros_(g.head.weight)
    torch.nn.init.zeros_(g.head.bias)
    p = probs(2, 3, 32, 32)
    out = g(torch.randn(2, 1, 32, 32), p, num_samples=4)
    torch.testing.assert_close(out.softmax(dim=2), p.unsqueeze(1).expand_as(out))
    hard = torch.zeros(2, 3, 32, 32, dtype=torch.float16)
    hard[:, 1] = 1.0  # fp16 probabilities with exact zeros (as stored in a sample bank)
    assert torch.isfinite(g(torch.randn(2, 1, 32, 32), hard)).all()
    g.residual_logits = False
    flat = g(torch.randn(2, 1, 32, 32), p, num_samples=2).softmax(dim=2)
    torch.testing.assert_close(flat, torch.full_like(flat, 1 / 3))


def test_channels_last_weights_match_nchw() -> None:
    """Conv nets keep NHWC weights (fast on CPU); results equal the NCHW layout's, and the
    outputs handed back are contiguous."""
    g = build_refiner("unet", 1, 2, 4, width=4).eval()
    d = build_discriminator("pixel", 1, 2, width=4)
    assert g.head.weight.is_contiguous(memory_format=torch.channels_last)
    x, p, noise = torch.randn(2, 1, 32, 32), probs(2, 2, 32, 32), torch.randn(2, 3, 4)
    with torch.no_grad():
        out, score = g(x, p, noise=noise), d(x, p)
        assert out.is_contiguous()
        g.to(memory_format=torch.contiguous_format)
        d.to(memory_format=torch.contiguous_format)
        torch.testing.assert_close(g(x, p, noise=noise), out, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(d(x, p), score, atol=1e-5, rtol=1e-4)


def test_bf16_autocast_runs() -> None:
    g = build_refiner("unet", 1, 2, 4, width=4)
    d = build_discriminator("pixel", 1, 2, width=4)
    f = build_calibrator("segnet", 1, 2, width=4)
    x = torch.randn(2, 1, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = f(x).float().softmax(dim=1)
        out = g(x, p, num_samples=3)
        score = d(x, out.softmax(dim=2).flatten(0, 1))
    assert out.shape == (2, 3, 2, 32, 32) and score.shape == (6,)
    score.float().mean().backward()
    assert all(torch.isfinite(q.grad).all() for q in g.parameters() if q.grad is not None)


def test_unet_trains() -> None:
    g = build_refiner("unet", 1, 2, 4, width=4)
    out = g(torch.randn(2, 1, 32, 32), probs(2, 2, 32, 32), num_samples=3)
    out.softmax(dim=2)[:, :, 1].mean().backward()
    grads = [q.grad for q in g.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert g.decoder[0].gamma.weight.grad.abs().sum() > 0


def test_unet_input_errors() -> None:
    g = build_refiner("unet", 1, 2, 4, width=4)
    x, p = torch.randn(2, 1, 32, 32), probs(2, 2, 32, 32)
    with pytest.raises(ValueError, match="noise must have shape"):
        g(x, p, noise=torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="disagrees"):
        g(x, p, num_samples=2, noise=torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="divisible by 16"):
        g(torch.randn(2, 1, 24, 32), probs(2, 2, 24, 32))
    with pytest.raises(ValueError, match="class probabilities"):
        g(x, probs(2, 3, 32, 32))


def test_mlp_refiner() -> None:
    g = build_refiner("mlp", 1, 1, 1)
    x, fx = torch.randn(5, 1), torch.randn(5, 1)
    out = g(x, fx, num_samples=7)
    assert out.shape == (5, 7, 1)
    noise = torch.zeros(5, 2, 1)
    same = g(x, fx, noise=noise)
    torch.testing.assert_close(same[:, 0], same[:, 1])


# --- discriminators ----------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES + [(16, 16)])
@pytest.mark.parametrize("arch", ["dcgan", "pixel"])
def test_discriminator_shapes(arch: str, size: tuple[int, int]) -> None:
    d = build_discriminator(arch, 3, 4, width=4)
    out = d(torch.randn(5, 3, *size), probs(5, 4, *size))
    assert out.shape == (5,)


def test_pixel_discriminator_128_and_pairing() -> None:
    d = build_discriminator("pixel", 1, 2, width=8)
    x, y = torch.randn(2, 1, 128, 128), probs(6, 2, 128, 128)
    paired = d(x, y)
    assert paired.shape == (6,)
    torch.testing.assert_close(paired, d(x.repeat_interleave(3, dim=0), y))


def test_discriminator_errors() -> None:
    d = build_discriminator("pixel", 1, 2, width=4)
    with pytest.raises(ValueError, match="multiple of 16"):
        d(torch.randn(2, 1, 24, 32), probs(2, 2, 24, 32))
    with pytest.raises(ValueError, match="cannot be paired"):
        d(torch.randn(2, 1, 32, 32), probs(3, 2, 32, 32))
    with pytest.raises(ValueError, match="label channels"):
        d(torch.randn(2, 1, 32, 32), probs(2, 3, 32, 32))


def test_mlp_discriminator() -> None:
    d = build_discriminator("mlp", 1, 1)
    assert d(torch.randn(4, 1), torch.randn(4, 1)).shape == (4,)
    assert d(torch.randn(2, 1), torch.randn(6, 1)).shape == (6,)


# --- registry ----------------------------------------------------------------------------


def test_registry_names() -> None:
    assert sorted(CALIBRATORS) == ["convnet", "mlp", "segnet", "unet"]
    assert sorted(REFINERS) == ["car", "mlp", "unet"]
    assert sorted(DISCRIMINATORS) == ["dcgan", "mlp", "pixel"]


def test_unknown_names() -> None:
    with pytest.raises(ValueError) as err:
        build_calibrator("segnett", 1, 2)
    assert str(err.value) == "unknown calibrator 'segnett'; valid: convnet, mlp, segnet, unet"
    with pytest.raises(ValueError, match="unknown refiner 'unet2'; valid: car, mlp, unet"):
        build_refiner("unet2", 1, 2, 8)
    with pytest.raises(ValueError, match="unknown discriminator 'patch'; valid: dcgan, mlp, pixel"):
        build_discriminator("patch", 1, 2)


def test_unknown_and_bad_hparams() -> None:
    with pytest.raises(ValueError, match="unknown hyper-parameter 'widht'.*valid: .*width"):
        build_calibrator("segnet", 1, 2, widht=8)
    with pytest.raises(ValueError, match="'depth' of refiner 'unet' must be int"):
        build_refiner("unet", 1, 2, 8, depth="4")
    with pytest.raises(ValueError, match="width must be > 0"):
        build_discriminator("dcgan", 1, 2, width=0)
    with pytest.raises(ValueError, match="dropout must be in"):
        build_calibrator("convnet", 1, 2, dropout=1.5)


def test_hparam_defaults() -> None:
    assert hparam_defaults("refiner", "unet") == {
        "width": 32,
        "depth": 4,
        "dropout": 0.1,
        "residual_logits": True,
        "noise": "gaussian",
        "noise_grid": 0,
        "noise_regions": 0,
        "region_dim": 4,
        "region_threshold": 0.9,
        "region_levels": 0,
    }
    assert hparam_defaults("discriminator", "pixel") == {"width": 64}


@pytest.mark.parametrize(
    ("kind", "arch", "args"),
    [
        ("calibrator", "segnet", (1, 2)),
        ("calibrator", "convnet", (5, 3)),
        ("calibrator", "mlp", (1, 1)),
        ("calibrator", "unet", (3, 2)),
        ("refiner", "unet", (1, 2, 8)),
        ("refiner", "car", (1, 2, 8)),
        ("refiner", "mlp", (1, 1, 1)),
        ("discriminator", "dcgan", (1, 2)),
        ("discriminator", "pixel", (1, 2)),
        ("discriminator", "mlp", (1, 1)),
    ],
)
def test_config_rebuilds(kind: str, arch: str, args: tuple[int, ...]) -> None:
    builder = {"calibrator": build_calibrator, "refiner": build_refiner}.get(
        kind, build_discriminator
    )
    small = {"width": 4} if arch in ("segnet", "convnet", "unet", "car", "dcgan", "pixel") else {}
    model = builder(arch, *args, **small)
    config = json.loads(json.dumps(model.config))
    assert config["arch"] == arch
    rebuilt = build_model(kind, config)
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())
