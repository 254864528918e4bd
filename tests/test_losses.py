"""Losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from carcli.losses import (
    adversarial_loss,
    calibration_loss,
    cross_entropy,
    discriminator_accuracy,
    discriminator_loss,
    gaussian_nll,
    r1_penalty,
    regression_calibration_loss,
    sample_cross_entropy,
    sample_entropy,
)
from carcli.models import build_discriminator

LN2 = math.log(2.0)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def as_logits(p: list[float]) -> torch.Tensor:
    """Logits [K] whose softmax is p."""
    return torch.tensor(p).log()


# --- cross-entropy -----------------------------------------------------------------------


def test_cross_entropy_excludes_ignored_pixels() -> None:
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0, :] = 255
    target[1, 2, 3] = 255
    keep = target != 255
    logp = logits.log_softmax(dim=1)
    picked = logp.gather(1, target.clamp_max(2).unsqueeze(1)).squeeze(1)
    expected = -picked[keep].mean()
    torch.testing.assert_close(cross_entropy(logits, target), expected)
    torch.testing.assert_close(cross_entropy(logits, target.to(torch.uint8)), expected)


def test_cross_entropy_all_ignored_is_zero() -> None:
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    loss = cross_entropy(logits, torch.full((1, 3, 3), 255))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_sample_cross_entropy_is_mean_over_samples() -> None:
    logits = torch.randn(2, 3, 4, 5, 5)
    target = torch.randint(0, 4, (2, 5, 5))
    per_sample = [F.cross_entropy(logits[:, m], target) for m in range(3)]
    torch.testing.assert_close(sample_cross_entropy(logits, target), torch.stack(per_sample).mean())


# --- adversarial -------------------------------------------------------------------------


def test_sample_entropy_hand_values() -> None:
    logits = torch.zeros(1, 2, 2, 1, 2)  # two samples, two classes, two pixels
    logits[0, 0, 0, 0, 1] = 50.0  # sample 0, pixel 1: crisp (entropy ~0)
    # pixel 0: ln 2 in both samples; pixel 1: mean of ~0 and ln 2
    torch.testing.assert_close(sample_entropy(logits), torch.tensor(0.75 * LN2))
    valid = torch.tensor([[[False, True]]])
    torch.testing.assert_close(sample_entropy(logits, valid), torch.tensor(0.5 * LN2))
    assert sample_entropy(logits, torch.zeros_like(valid)).item() == 0.0
    p = torch.tensor([0.7, 0.2, 0.1])
    three = p.log().view(1, 1, 3, 1, 1).requires_grad_(True)
    torch.testing.assert_close(sample_entropy(three), -(p * p.log()).sum())
    sample_entropy(three).backward()
    assert three.grad[0, 0, 0] < 0  # descending it raises the leading class: the sample decides
    with pytest.raises(ValueError, match="expected"):
        sample_entropy(torch.zeros(1, 2, 3, 3))


def test_adversarial_losses_hand_values() -> None:
    zero = torch.zeros(4)
    torch.testing.assert_close(adversarial_loss(zero), torch.tensor(LN2))
    torch.testing.assert_close(discriminator_loss(zero, zero), torch.tensor(2 * LN2))
    real, fake = torch.tensor([2.0]), torch.tensor([-1.0, 3.0])
    expected = math.log1p(math.exp(-2.0)) + 0.5 * (
        math.log1p(math.exp(-1.0)) + math.log1p(math.exp(3.0))
    )
    torch.testing.assert_close(discriminator_loss(real, fake), torch.tensor(expected))
    torch.testing.assert_close(
        adversarial_loss(fake),
        torch.tensor(0.5 * (math.log1p(math.e) + math.log1p(math.exp(-3.0)))),
    )
    assert discriminator_accuracy(torch.tensor([1.0, -1.0]), torch.tensor([-2.0, -3.0])) == 0.75


def test_r1_linear_discriminator() -> None:
    w = torch.tensor([[1.0, -2.0, 3.0]], requires_grad=True)
    x = torch.randn(5, 3, requires_grad=True)
    logits = (x @ w.t()).squeeze(1)
    penalty = r1_penalty(logits, x)
    torch.testing.assert_close(penalty, torch.tensor(0.5 * 14.0))
    penalty.backward()  # create_graph: d/dw (1/2)||w||^2 = w
    torch.testing.assert_close(w.grad, w.detach())


def test_r1_several_inputs_sum() -> None:
    a = torch.randn(4, 2, requires_grad=True)
    b = torch.randn(4, 3, requires_grad=True)
    logits = 2.0 * a.sum(dim=1) - b.sum(dim=1)
    torch.testing.assert_close(r1_penalty(logits, (a, b)), torch.tensor(0.5 * (2 * 4.0 + 3 * 1.0)))


def test_r1_through_pixel_discriminator_trains() -> None:
    d = build_discriminator("pixel", 1, 2, width=4)
    x = torch.randn(2, 1, 16, 16, requires_grad=True)
    y = F.one_hot(torch.randint(0, 2, (2, 16, 16)), 2).permute(0, 3, 1, 2).float()
    y.requires_grad_(True)
    penalty = r1_penalty(d(x, y), (x, y))
    assert penalty.item() > 0
    penalty.backward()  # double backward through the in-place LeakyReLUs
    weights = [p for name, p in d.named_parameters() if name.endswith("weight")]
    assert all(w.grad is not None and torch.isfinite(w.grad).all() for w in weights)
    assert all(w.grad.abs().sum() > 0 for w in weights)


# --- calibration -------------------------------------------------------------------------


def test_calibration_zero_when_samples_equal_p() -> None:
    p = torch.randn(2, 3, 4, 4).softmax(dim=1)
    logits = p.log().unsqueeze(1).expand(2, 5, 3, 4, 4)
    assert abs(calibration_loss(logits, p).item()) < 1e-6
    assert calibration_loss(logits + torch.randn_like(logits), p).item() > 1e-3


def test_calibration_hand_value_one_pixel() -> None:
    samples = torch.stack([as_logits([0.9, 0.1]), as_logits([0.5, 0.5])])
    logits = samples.view(1, 2, 2, 1, 1)
    p = torch.tensor([0.6, 0.4]).view(1, 2, 1, 1)
    expected = 0.7 * math.log(0.7 / 0.6) + 0.3 * math.log(0.3 / 0.4)
    torch.testing.assert_close(calibration_loss(logits, p), torch.tensor(expected))


def test_calibration_forward_hand_value_one_pixel() -> None:
    """kl_forward: KL(p || G_bar) for the same pixel as above."""
    samples = torch.stack([as_logits([0.9, 0.1]), as_logits([0.5, 0.5])])
    logits = samples.view(1, 2, 2, 1, 1)
    p = torch.tensor([0.6, 0.4]).view(1, 2, 1, 1)
    expected = 0.6 * math.log(0.6 / 0.7) + 0.4 * math.log(0.4 / 0.3)
    torch.testing.assert_close(calibration_loss(logits, p, forward=True), torch.tensor(expected))
    same = p.log().unsqueeze(1).expand(1, 3, 2, 1, 1)
    assert abs(calibration_loss(same, p, forward=True).item()) < 1e-6


def test_calibration_forward_keeps_a_dropped_answer_alive() -> None:
    """All M samples crisp on class 0 where p gives class 1 probability 0.4 (a collapsed
    ambiguity): the paper's KL(G_bar || p) hardly moves the logits (its gradient vanishes
    with the samples' softmax), KL(p || G_bar) pulls with about p_1 / M per sample."""
    m = 4
    logits = torch.tensor([20.0, -20.0]).view(1, 1, 2, 1, 1).repeat(1, m, 1, 1, 1)
    p = torch.tensor([0.6, 0.4]).view(1, 2, 1, 1)
    grads = {}
    for forward in (False, True):
        z = logits.clone().requires_grad_(True)
        calibration_loss(z, p, forward=forward).backward()
        grads[forward] = z.grad[0, :, 1].squeeze()  # d loss / d (class-1 logit) per sample
    assert grads[False].abs().max() < 1e-8
    torch.testing.assert_close(grads[True], torch.full((m,), -0.4 / m))


def test_calibration_one_hot_samples_no_nan() -> None:
    onehot = torch.tensor([[0.0, -math.inf]]).view(1, 1, 2, 1, 1).repeat(1, 3, 1, 1, 1)
    onehot.requires_grad_(True)
    p = torch.tensor([0.25, 0.75]).view(1, 2, 1, 1)
    loss = calibration_loss(onehot, p)
    torch.testing.assert_close(loss, torch.tensor(-math.log(0.25)))
    loss.backward()
    assert torch.isfinite(onehot.grad).all()
    big = torch.tensor([[60.0, -60.0], [-60.0, 60.0]]).view(1, 2, 2, 1, 1).requires_grad_(True)
    loss = calibration_loss(big, torch.tensor([0.5, 0.5]).view(1, 2, 1, 1))
    assert abs(loss.item()) < 1e-6
    loss.backward()
    assert torch.isfinite(big.grad).all()
    onehot.grad = None
    loss = calibration_loss(onehot, p, forward=True)  # log G_bar_1 = -inf is floored at -100
    torch.testing.assert_close(
        loss, torch.tensor(0.25 * math.log(0.25) + 0.75 * (math.log(0.75) + 100.0))
    )
    loss.backward()
    assert torch.isfinite(onehot.grad).all()


def test_calibration_p_with_zeros_is_finite() -> None:
    logits = torch.randn(1, 4, 2, 2, 2, requires_grad=True)
    p = torch.zeros(1, 2, 2, 2)
    p[:, 0] = 1.0
    loss = calibration_loss(logits, p)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_calibration_mask_and_detached_target() -> None:
    p = torch.tensor([0.5, 0.5]).view(1, 2, 1, 1).repeat(1, 1, 1, 2).requires_grad_(True)
    logits = torch.zeros(1, 2, 2, 1, 2)
    logits[0, :, 0, 0, 1] = 10.0  # pixel (0, 1) far from p
    mask = torch.tensor([[[True, False]]])
    assert abs(calibration_loss(logits, p, mask).item()) < 1e-6
    assert calibration_loss(logits, p).item() > 0.1
    assert calibration_loss(logits, p, torch.zeros_like(mask)).item() == 0.0
    logits.requires_grad_(True)
    calibration_loss(logits, p).backward()
    assert p.grad is None


def test_calibration_is_mean_over_pixels() -> None:
    logits = torch.randn(2, 3, 2, 4, 4)
    p = torch.randn(2, 2, 4, 4).softmax(dim=1)
    big_logits = logits.repeat(1, 1, 1, 2, 2)
    big_p = p.repeat(1, 1, 2, 2)
    torch.testing.assert_close(calibration_loss(big_logits, big_p), calibration_loss(logits, p))


# --- regression --------------------------------------------------------------------------


def test_regression_losses() -> None:
    pred, target = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [4.0]])
    torch.testing.assert_close(gaussian_nll(pred, target), torch.tensor(0.5 * (1 + 4) / 2))
    samples = torch.tensor([[[1.0], [3.0]], [[0.0], [0.0]]], requires_grad=True)  # means 2, 0
    mean = torch.tensor([[1.0], [1.0]], requires_grad=True)
    loss = regression_calibration_loss(samples, mean)
    torch.testing.assert_close(loss, torch.tensor(0.5 * (1 + 1) / 2))
    loss.backward()
    assert mean.grad is None
