"""Training-speed options (#28): discriminator.r1_every (lazy R1), speed.train_bf16 and
speed.optimizer, parsed and validated, and the steps running with each on tiny shapes."""

from __future__ import annotations

import copy

import pytest
import torch

from carcli.data.batches import Batch
from carcli.errors import CarsegError
from carcli.losses import discriminator_loss, r1_penalty
from carcli.models.registry import build_calibrator, build_discriminator, build_refiner
from carcli.recipe.load import load_recipe
from carcli.runtime import speed
from carcli.training.calibrator import calibrator_step
from carcli.training.optim import adam
from carcli.training.refiner import step_nets
from carcli.training.step import DiscriminatorPolicy, RefinerStep, discriminator_update

TOY = "recipes/toy.yaml"


# --------------------------------------------------------------------------------------------
# the recipe keys


def test_speed_options_parse_with_today_as_default():
    r = load_recipe(TOY)
    assert r.discriminator.r1_every == 1  # R1 on every D update, as before
    assert r.speed.train_bf16 is False and r.speed.optimizer == "default"
    for name in ("toy", "lidc", "cityscapes"):  # no recipe turns a numerics-changing one on
        rec = load_recipe(f"recipes/{name}.yaml")
        assert rec.discriminator.r1_every == 1 and rec.speed.train_bf16 is False
    r = load_recipe(
        TOY, ["discriminator.r1_every=4", "speed.train_bf16=true", "speed.optimizer=foreach"]
    )
    assert (r.discriminator.r1_every, r.speed.train_bf16, r.speed.optimizer) == (4, True, "foreach")


@pytest.mark.parametrize(
    "override",
    [
        "discriminator.r1_every=0",
        "discriminator.r1_every=-2",
        "speed.optimizer=sgd",
        "speed.train_bf16=maybe",
    ],  # fmt: skip
)
def test_bad_speed_options_refused(override):
    with pytest.raises(CarsegError):
        load_recipe(TOY, [override])


# --------------------------------------------------------------------------------------------
# lazy R1


def test_lazy_r1_weight_is_k_gamma_on_every_kth_step_only():
    p = DiscriminatorPolicy(1, 0, None, 10.0, False, r1_every=4)
    assert [p.r1_at(s) for s in range(9)] == [40.0, 0, 0, 0, 40.0, 0, 0, 0, 40.0]
    assert sum(p.r1_at(s) for s in range(400)) == 10.0 * 400  # the same weight on average
    eager = DiscriminatorPolicy(1, 0, None, 10.0, False)
    assert all(eager.r1_at(s) == 10.0 for s in range(5))


def _tiny_d_inputs():
    torch.manual_seed(0)
    D = build_discriminator("dcgan", 1, 2, width=4, depth=2)
    x = torch.randn(2, 1, 16, 16)
    real = torch.nn.functional.one_hot(torch.randint(0, 2, (2, 16, 16)), 2)
    real = real.permute(0, 3, 1, 2).float()
    fake = torch.rand(6, 2, 16, 16)  # M = 3 fakes per image
    xs = x.repeat_interleave(3, 0)
    return D, x, xs, real, fake


def _d_grads(D, x, xs, real, fake, r1, step, k):
    from carcli.training.step import Nets

    net = copy.deepcopy(D)
    opt = adam(net.parameters(), 1e-3, [0.5, 0.99], 0.0)
    nets = Nets(None, None, net, None, opt)
    policy = DiscriminatorPolicy(1, 0, None, r1, False, r1_every=k)
    discriminator_update(nets, policy, x, xs, real, fake, True, policy.r1_at(step))
    return [q.grad.clone() for q in net.parameters()]


def test_lazy_r1_equals_r1_scaled_by_k_on_its_steps_and_none_between():
    """By hand on a tiny D: at a step divisible by k, D's gradient is that of
    L_D + k * gamma * R1; at the others, that of L_D alone."""
    D, x, xs, real, fake = _tiny_d_inputs()
    gamma, k = 10.0, 4

    def by_hand(weight):
        net = copy.deepcopy(D)
        real_in = real.clone().requires_grad_(True)
        d_real, d_fake = net(x, real_in), net(xs, fake)
        loss = discriminator_loss(d_real, d_fake)
        if weight:
            loss = loss + weight * r1_penalty(d_real, real_in)
        return torch.autograd.grad(loss, list(net.parameters()))

    due = _d_grads(D, x, xs, real, fake, gamma, 8, k)
    between = _d_grads(D, x, xs, real, fake, gamma, 9, k)
    for a, b in zip(due, by_hand(k * gamma), strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(between, by_hand(0.0), strict=True):
        torch.testing.assert_close(a, b)
    # and r1_every = 1 is the eager penalty at every step
    for a, b in zip(_d_grads(D, x, xs, real, fake, gamma, 9, 1), by_hand(gamma), strict=True):
        torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------------------------
# bf16 and its fall-back


def test_train_bf16_falls_back_to_float32_with_a_note(monkeypatch):
    r = load_recipe(TOY, ["speed.train_bf16=true"])
    cpu = torch.device("cpu")
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: False)
    assert speed.settings(r, cpu, 1)["amp"] == "off"
    assert any("train_bf16" in n and "float32" in n for n in speed.notes(r, cpu))
    net = torch.nn.Conv2d(1, 2, 3)
    assert speed.accelerate(net, r, cpu) is net  # nothing wraps the call
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: True)
    assert speed.settings(r, cpu, 1)["amp"] == "bf16"
    assert not any("train_bf16" in n for n in speed.notes(r, cpu))
    assert speed.settings(r, cpu, 1, inference=True)["amp"] == "off"  # training only
    call = speed.accelerate(net, r, cpu)
    out = call(torch.randn(1, 1, 8, 8))
    assert out.dtype == torch.float32  # computed in bf16, handed back as float32
    assert speed.accelerate(net, r, cpu, train_bf16=False) is net  # F, L_cal's target


# --------------------------------------------------------------------------------------------
# the steps with each option


OPTIONS = [
    [],
    ["discriminator.r1_every=2"],
    ["speed.train_bf16=true"],
    ["speed.channels_last=true"],
    ["speed.optimizer=foreach"],
    ["speed.optimizer=fused"],
    [
        "discriminator.r1_every=2",
        "speed.train_bf16=true",
        "speed.channels_last=true",
        "speed.optimizer=foreach",
    ],  # fmt: skip
]


@pytest.mark.parametrize("options", OPTIONS)
def test_refiner_step_runs_with_each_option(options):
    r = load_recipe(
        TOY,
        [
            "refiner.num_samples=2",
            "refiner.w_joint=0",
            "discriminator.max_accuracy=null",
            *options,
        ],  # fmt: skip
    )
    torch.manual_seed(0)
    F_net = build_calibrator("segnet", 1, 3, width=4, depth=2).eval().requires_grad_(False)
    G = build_refiner("unet", 1, 3, 8, width=4, depth=2)
    D = build_discriminator("dcgan", 1, 3, width=4, depth=2)
    nets = step_nets(r, F_net, G, D, torch.device("cpu"))
    x = torch.randn(2, 1, 16, 16)
    batch = Batch(x, x, torch.randint(0, 3, (2, 16, 16)))
    gen = torch.Generator().manual_seed(0)
    before = [q.detach().clone() for q in D.parameters()]
    algorithm1 = RefinerStep.from_recipe(r, nets, "segmentation", 3, 255, gen)
    for step in range(2):  # with r1_every = 2: one step with R1, one without
        out = algorithm1(batch, step, d_on=True)
        assert "loss_d" in out and torch.isfinite(torch.tensor(out["loss_g"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, D.parameters(), strict=True))
    assert all(q.dtype == torch.float32 for q in (*G.parameters(), *D.parameters()))


@pytest.mark.parametrize("options", OPTIONS)
def test_calibrator_step_runs_with_each_option(options):
    r = load_recipe(TOY, options)
    torch.manual_seed(0)
    model = build_calibrator("segnet", 1, 3, width=4, depth=2).train()
    opt = adam(model.parameters(), 1e-3, [0.5, 0.99], 0.0, r.speed.optimizer)
    net = speed.accelerate(model, r, torch.device("cpu"))
    x = torch.randn(2, 1, 16, 16)
    loss = calibrator_step(
        net, opt, Batch(x, x, torch.randint(0, 3, (2, 16, 16))), "segmentation", 255
    )  # noqa: E501
    assert loss == loss and all(q.dtype == torch.float32 for q in model.parameters())


def test_foreach_adam_is_bit_identical_to_the_default():
    """speed.optimizer=foreach is an exact lever: the same weights, bit for bit."""
    torch.manual_seed(0)
    a = build_discriminator("dcgan", 1, 2, width=4, depth=2)
    b = copy.deepcopy(a)
    opt_a = adam(a.parameters(), 2e-4, [0.5, 0.99], 5e-4)
    opt_b = adam(b.parameters(), 2e-4, [0.5, 0.99], 5e-4, "foreach")
    for _ in range(5):
        x, y = torch.randn(2, 1, 16, 16), torch.rand(2, 2, 16, 16)
        for net, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            net(x, y).pow(2).mean().backward()
            opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
