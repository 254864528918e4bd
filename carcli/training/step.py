"""Algorithm 1: one optimisation step of the refiner G and the discriminator D.

The paper's path reads top to bottom in :meth:`RefinerStep.algorithm1`; every variant (which
L_cal, the terms beyond the paper, D's schedule and accuracy gate, simultaneous or alternating
D) is chosen once, in :class:`RefinerTerms` and :class:`DiscriminatorPolicy`, and the step
object that holds them (:class:`RefinerStep`) is built once, outside the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf

from carcli import distributed
from carcli.data.batches import Batch
from carcli.losses import (
    adversarial_loss,
    calibration_term,
    calibrator_loss,
    discriminator_accuracy,
    discriminator_loss,
    joint_term,
    latent_kl,
    r1_penalty,
    sample_entropy,
    sample_mean,
)
from carcli.losses.calibration import CalibrationTerm
from carcli.losses.energy import energy_score
from carcli.models.noise import draw_noise
from carcli.recipe.schema import Recipe


@dataclass
class Nets:
    F: torch.nn.Module
    G: torch.nn.Module
    D: torch.nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    opt_F: torch.optim.Optimizer | None = None  # joint training only (refiner.joint_calibrator)
    D_set: torch.nn.Module | None = None  # the set discriminator (discriminator.set_size)
    opt_D_set: torch.optim.Optimizer | None = None


# An extra term of L_G: (name logged, weight, fn(logits, batch, valid, noise, latent KL, F's
# probabilities)).
ExtraTerm = tuple[str, float, Callable[..., torch.Tensor]]


@dataclass(frozen=True)
class RefinerTerms:
    """What L_G is made of, chosen once from the recipe."""

    task: str
    num_classes: int
    ignore_index: int
    num_samples: int  # M
    w_adv: float
    w_cal: float
    calibration: CalibrationTerm  # L_cal (kl, kl_forward, ce, none; regression: squared error)
    extras: tuple[ExtraTerm, ...]  # beyond the paper, each added with its weight
    set_size: int = 0  # k answers per set for the set discriminator (0: none)
    w_set: float = 0.0
    cal_temperature: float = 0.0  # G_bar of the samples' answers, straight-through (0: softmax)

    @classmethod
    def from_recipe(
        cls, recipe: Recipe, task: str, num_classes: int, ignore_index: int
    ) -> RefinerTerms:
        r = recipe.refiner
        extras: list[ExtraTerm] = []
        if r.w_entropy:  # make each sample decide (segmentation only, checked at start)
            extras.append(("loss_ent", r.w_entropy, lambda lg, b, v, *_: sample_entropy(lg, v)))
        if r.w_joint:  # the pairs' joint answers match the labels'
            by_f = r.joint_pixels == "calibrator"

            def joint(lg: torch.Tensor, b: Batch, v: torch.Tensor, n, kl, p) -> torch.Tensor:
                assert b.modes is not None and b.mode_weight is not None
                pool = p.amax(1) < r.region_threshold if by_f else None  # F's uncertain pixels
                return joint_term(
                    lg,
                    b.modes,
                    b.mode_weight,
                    v,
                    r.joint_pairs,
                    n,
                    r.joint_loss,
                    r.joint_temperature,
                    r.joint_cross,
                    pool,
                )

            extras.append(("loss_joint", r.w_joint, joint))
        if r.w_energy:  # the whole map's joint answers match the labels' (a proper score)

            def energy(lg: torch.Tensor, b: Batch, v: torch.Tensor, *_) -> torch.Tensor:
                assert b.modes is not None and b.mode_weight is not None
                return energy_score(lg, b.modes, b.mode_weight, v, r.joint_temperature)

            extras.append(("loss_energy", r.w_energy, energy))
        if r.noise == "posterior":  # latent-code variant: + beta * KL(q || N(0, I))
            extras.append(("loss_kl", r.kl_beta, lambda lg, b, v, n, kl, p: kl))
        return cls(
            task,
            num_classes,
            ignore_index,
            r.num_samples,
            r.w_adv,
            r.w_cal,
            calibration_term(r.calibration_loss, task),
            tuple(extras),
            recipe.discriminator.set_size,
            r.w_set,
            r.calibration_temperature,
        )


@dataclass(frozen=True)
class DiscriminatorPolicy:
    """When and how D learns: its on/off cycle, the accuracy gate, R1 (every ``r1_every``-th
    step, weighted ``r1_every * r1_weight``: lazy R1), and the update order.

    ``simultaneous`` (default): D runs ONCE over the B*M fakes; that forward serves both L_D
    and G's L_adv (G sees D before this step's update). ``alternating``: D steps first on
    detached fakes, then G's L_adv sees the updated D. Each network gets only its own
    gradient (autograd.grad): D's parameters accumulate nothing from L_G.
    """

    n_on: int
    n_off: int
    max_accuracy: float | None
    r1_weight: float
    alternating: bool
    r1_every: int = 1

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> DiscriminatorPolicy:
        d = recipe.discriminator
        alternating = d.update == "alternating"
        return cls(d.n_on, d.n_off, d.max_accuracy, d.r1_weight, alternating, d.r1_every)

    def on(self, step: int) -> bool:
        """D trains n_on steps, then stays frozen n_off steps (G trains every step)."""
        return d_cycle_on(step, self.n_on, self.n_off)

    def r1_at(self, step: int) -> float:
        """R1's weight in L_D at this step: gamma on every step (r1_every = 1, the paper), or
        lazy R1 (StyleGAN2): r1_every * gamma on steps divisible by r1_every, 0 elsewhere,
        so its expected weight per D update is still gamma."""
        return self.r1_every * self.r1_weight if step % self.r1_every == 0 else 0.0


def d_cycle_on(step: int, n_on: int, n_off: int) -> bool:
    """D trains n_on steps, then stays frozen n_off steps (G trains every step)."""
    return step % (n_on + n_off) < n_on


@dataclass(frozen=True)
class RefinerStep:
    """Algorithm 1 with everything chosen once: the networks and optimisers, what L_G is made
    of (:class:`RefinerTerms`), D's policy and the noise stream. Built once (by
    `train-refiner`, the tests and the benchmarks alike, with :meth:`from_recipe`) and called
    once per step: ``step(batch, i)``."""

    nets: Nets
    terms: RefinerTerms
    policy: DiscriminatorPolicy
    noise: torch.Generator  # the M noise vectors, and every other draw of the step

    @classmethod
    def from_recipe(
        cls,
        recipe: Recipe,
        nets: Nets,
        task: str,
        num_classes: int,
        ignore_index: int,
        noise: torch.Generator,
    ) -> RefinerStep:
        terms = RefinerTerms.from_recipe(recipe, task, num_classes, ignore_index)
        return cls(nets, terms, DiscriminatorPolicy.from_recipe(recipe), noise)

    def __call__(self, batch: Batch, step: int, d_on: bool | None = None) -> dict[str, float]:
        """One training step at loop step ``step``: :meth:`algorithm1` with D on or off as its
        cycle says (``d_on`` given: as given) and R1 weighted as the policy says at this step,
        then, with joint training (``refiner.joint_calibrator``), F's own L_ce step on this
        batch."""
        d_on = self.policy.on(step) if d_on is None else d_on
        out = self.algorithm1(batch, d_on, self.policy.r1_at(step))
        if self.nets.opt_F is not None:
            out["loss_ce"] = calibrator_update(
                self.nets, batch, self.terms.task, self.terms.ignore_index
            )
        return out

    def algorithm1(self, batch: Batch, d_on: bool, r1: float) -> dict[str, float]:
        """One step of Algorithm 1: F's probabilities, M noise draws and G's samples, their
        mean G_bar, D's verdict, L_G = w_adv L_adv + w_cal L_cal (+ the extra terms), then
        the updates. ``r1``: R1's weight at this step."""
        nets, terms, noise = self.nets, self.terms, self.noise
        x, M = batch.image, terms.num_samples
        p = calibrator_output(nets.F, batch.cond, terms.task)  # F frozen: the target
        eps = draw_noise(x, M, nets.G.noise_dim, None, noise)  # M noise vectors per image
        logits, loss_kl = refiner_samples(nets.G, x, p, eps)  # [B, M, K, H, W] or [B, M, D]
        xs, real, fake, valid = discriminator_inputs(batch, logits, terms)
        d_fake, out, step_d = discriminator_update(nets, self.policy, x, xs, real, fake, d_on, r1)
        loss_adv = adversarial_loss(d_fake)
        g_bar = sample_mean(logits, terms.task, terms.cal_temperature)  # G_bar: their mean
        loss_cal = terms.calibration(logits, g_bar, p, batch.label, valid, terms.ignore_index)
        loss_g = terms.w_adv * loss_adv + terms.w_cal * loss_cal
        for name, weight, term in terms.extras:
            value = term(logits, batch, valid, noise, loss_kl, p)
            loss_g = loss_g + weight * value
            out[name] = value.detach().item()
        step_set = _nothing
        if nets.D_set is not None:  # beyond the paper: D also judges sets of k answers
            loss_set, step_set = set_adversary(nets, self.policy, batch, fake, terms, noise, out)
            loss_g = loss_g + terms.w_set * loss_set
        set_grads(nets.G, loss_g, retain_graph=False)
        nets.opt_G.step()
        step_d()  # simultaneous D: its update, after G's (both saw the same D)
        step_set()
        out.update(
            loss_g=loss_g.detach().item(),
            loss_adv=loss_adv.detach().item(),
            loss_cal=loss_cal.detach().item(),
        )
        return out


def calibrator_output(F_net: torch.nn.Module, cond: torch.Tensor, task: str) -> torch.Tensor:
    """F's per-pixel probabilities (segmentation) or mean (regression), no gradient."""
    with torch.no_grad():
        out = F_net(cond)
        return out.softmax(1) if task == "segmentation" else out


def refiner_samples(
    G: torch.nn.Module, x: torch.Tensor, calib: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """G's samples for the noise ``eps`` [B, M, d] (one per noise vector) and, for the
    latent-code variant (noise = posterior), KL(q(z | x, p) || N(0, I)) of its encoded
    distribution (None for gaussian noise)."""
    if getattr(G, "noise", "gaussian") != "posterior":
        return G(x, calib, noise=eps), None
    logits, mu, log_sigma = G(x, calib, noise=eps, return_posterior=True)
    return logits, latent_kl(mu, log_sigma)


def as_label_map(
    label: torch.Tensor, num_classes: int, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot real labels [B, K, H, W] (zeros at ignore pixels) and the valid mask [B, H, W]."""
    valid = label != ignore_index
    onehot = nnf.one_hot(label.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2)
    return onehot.float() * valid[:, None], valid


def discriminator_inputs(
    batch: Batch, logits: torch.Tensor, terms: RefinerTerms
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """What D sees: the image once per fake, the real label map, the B*M fakes (G's softmax,
    zero at ignore pixels), and the valid-pixel mask (None for regression)."""
    x, y, M = batch.image, batch.label, terms.num_samples
    xs = x.unsqueeze(1).expand(-1, M, *x.shape[1:]).reshape(-1, *x.shape[1:])
    if terms.task != "segmentation":
        return xs, y, logits.reshape(-1, logits.shape[-1]), None
    real, valid = as_label_map(y, terms.num_classes, terms.ignore_index)
    fake = logits.softmax(2) * valid[:, None, None]
    return xs, real, fake.reshape(-1, *fake.shape[2:]), valid


def discriminator_update(
    nets: Nets,
    policy: DiscriminatorPolicy,
    x: torch.Tensor,
    xs: torch.Tensor,
    real: torch.Tensor,
    fake: torch.Tensor,
    d_on: bool,
    r1: float,
) -> tuple[torch.Tensor, dict[str, float], Callable[[], None]]:
    """L_D (real (x, y) against all M fakes, + ``r1`` x R1 on reals), unless D is frozen in
    its cycle or too accurate; with ``r1`` = 0 the reals need no input gradient. Returns D's
    verdict on the fakes for L_adv, the logged figures, and the D update still to apply after
    G's (a no-op when none is pending)."""
    d_fake = nets.D(xs, fake.detach() if policy.alternating else fake)
    out: dict[str, float] = {}
    pending = False
    if d_on:
        real_in = real.detach().requires_grad_(r1 > 0)
        d_real = nets.D(x, real_in)
        acc = distributed.global_mean(discriminator_accuracy(d_real, d_fake))  # one decision
        out["d_acc"] = acc
        if policy.max_accuracy is None or acc < policy.max_accuracy:
            loss_d = discriminator_loss(d_real, d_fake)
            if r1 > 0:
                loss_d = loss_d + r1 * r1_penalty(d_real, real_in)
            set_grads(nets.D, loss_d, retain_graph=not policy.alternating)
            out["loss_d"] = loss_d.detach().item()
            pending = True
    if policy.alternating:
        if pending:
            nets.opt_D.step()
            pending = False
        d_fake = nets.D(xs, fake)  # G's adversarial loss against the updated D
    return d_fake, out, nets.opt_D.step if pending else _nothing


def _nothing() -> None:
    return None


def set_adversary(
    nets: Nets,
    policy: DiscriminatorPolicy,
    batch: Batch,
    fake: torch.Tensor,
    terms: RefinerTerms,
    noise: torch.Generator,
    out: dict[str, float],
) -> tuple[torch.Tensor, Callable[[], None]]:
    """The set discriminator: k annotations drawn by label_weight (with replacement) against
    the M // k sets of k of G's samples, packed along channels. Returns G's adversarial loss
    against it and its own update (applied after G's, as the simultaneous D)."""
    assert nets.D_set is not None and nets.opt_D_set is not None
    assert batch.modes is not None and batch.mode_weight is not None
    k, m, x = terms.set_size, terms.num_samples, batch.image
    b, kk = x.shape[0], terms.num_classes
    pick = torch.multinomial(batch.mode_weight.float(), k, replacement=True, generator=noise)
    labels = batch.modes.long().gather(1, pick[:, :, None, None].expand(-1, -1, *x.shape[-2:]))
    real = torch.cat([as_label_map(labels[:, a], kk, terms.ignore_index)[0] for a in range(k)], 1)
    sets = m // k
    fakes = fake.reshape(b, m, kk, *x.shape[-2:])[:, : sets * k]
    fakes = fakes.reshape(b * sets, k * kk, *x.shape[-2:])
    xs = x.repeat_interleave(sets, dim=0)
    d_fake = nets.D_set(xs, fakes)
    real_in = real.detach().requires_grad_(True)
    d_real = nets.D_set(x, real_in)
    acc = distributed.global_mean(discriminator_accuracy(d_real, d_fake))
    out["set_acc"] = acc
    update = _nothing
    if policy.max_accuracy is None or acc < policy.max_accuracy:
        loss_d = discriminator_loss(d_real, d_fake)
        if policy.r1_weight > 0:
            loss_d = loss_d + policy.r1_weight * r1_penalty(d_real, real_in)
        set_grads(nets.D_set, loss_d, retain_graph=True)
        out["loss_set_d"] = loss_d.detach().item()
        update = nets.opt_D_set.step
    loss = adversarial_loss(d_fake)
    out["loss_set"] = loss.detach().item()
    return loss, update


def calibrator_update(nets: Nets, batch: Batch, task: str, ignore_index: int) -> float:
    """Joint training: one step of F on its own L_ce (train mode), on this batch."""
    assert nets.opt_F is not None
    nets.F.train()
    loss = calibrator_loss(nets.F(batch.cond), batch.label, task, ignore_index, batch.soft)
    set_grads(nets.F, loss, retain_graph=False)
    nets.opt_F.step()
    nets.F.eval()
    return loss.detach().item()


def set_grads(net: torch.nn.Module, loss: torch.Tensor, retain_graph: bool) -> None:
    """net's parameters get d loss / d param (and nothing else gets anything)."""
    params = [q for q in net.parameters() if q.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    for q, g in zip(params, grads, strict=True):
        q.grad = g
    distributed.average_gradients(params)  # under torchrun: the mean over the ranks
