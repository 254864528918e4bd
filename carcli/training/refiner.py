"""`train-refiner`: G and D against the frozen F, following the paper's Algorithm 1."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from carcli import distributed
from carcli.data.batches import Batch, BatchSource
from carcli.data.dataset import DatasetFile, split_path
from carcli.data.prefetch import training_loader
from carcli.errors import CarsegError
from carcli.losses import (
    adversarial_loss,
    calibration_loss,
    discriminator_loss,
    joint_term,
    latent_kl,
    r1_penalty,
    regression_calibration_loss,
    sample_cross_entropy,
    sample_entropy,
)
from carcli.recipe.schema import Recipe
from carcli.training.calibrator import calibrator_loss
from carcli.training.common import (
    MetricsLog,
    NonFiniteGuard,
    TrainingStage,
    adam,
    lr_at,
    rng_from_state,
    set_lr,
    setup_torch,
)
from carcli.training.networks import (
    JOINT_CALIBRATOR,
    load_network,
    new_discriminator,
    new_refiner,
    save_network,
)
from carcli.training.speed import accelerate
from carcli.training.speed import notes as speed_notes
from carcli.training.speed import settings as speed_settings
from carcli.training.validate import refiner_validation, regression_validation
from carcli.ui import Reporter

MAKE_CMD = "carseg train-refiner RECIPE"
CALIBRATOR_CMD = "carseg train-calibrator RECIPE"


@dataclass
class Nets:
    F: torch.nn.Module
    G: torch.nn.Module
    D: torch.nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    opt_F: torch.optim.Optimizer | None = None  # joint training only (refiner.joint_calibrator)


def calibrator_output(F_net: torch.nn.Module, cond: torch.Tensor, task: str) -> torch.Tensor:
    """F's per-pixel probabilities (segmentation) or mean (regression), no gradient."""
    with torch.no_grad():
        out = F_net(cond)
        return out.softmax(1) if task == "segmentation" else out


def refiner_samples(
    G: torch.nn.Module, x: torch.Tensor, p: torch.Tensor, M: int, noise: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """G's M samples per input and, for the latent-code variant (noise = posterior),
    KL(q(z | x, p) || N(0, I)) of its encoded distribution (None for gaussian noise)."""
    if getattr(G, "noise", "gaussian") != "posterior":
        return G(x, p, num_samples=M, generator=noise), None
    logits, mu, log_sigma = G(x, p, num_samples=M, generator=noise, return_posterior=True)
    return logits, latent_kl(mu, log_sigma)


def calibrator_update(nets: Nets, batch: Batch, task: str, ignore_index: int) -> float:
    """Joint training: one step of F on its own L_ce (train mode), on this batch."""
    assert nets.opt_F is not None
    nets.F.train()
    loss = calibrator_loss(nets.F, batch.cond, batch.label, task, ignore_index, batch.soft)
    _set_grads(nets.F, loss, retain_graph=False)
    nets.opt_F.step()
    nets.F.eval()
    return loss.detach().item()


def as_label_map(
    label: torch.Tensor, num_classes: int, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot real labels [B, K, H, W] (zeros at ignore pixels) and the valid mask [B, H, W]."""
    valid = label != ignore_index
    onehot = F.one_hot(label.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2)
    return onehot.float() * valid[:, None], valid


def refiner_step(
    nets: Nets,
    batch: Batch,
    recipe: Recipe,
    task: str,
    num_classes: int,
    ignore_index: int,
    d_update: bool,
    noise: torch.Generator,
) -> dict[str, float]:
    """One step of Algorithm 1: G's M samples, D's verdict on them, then the updates.

    ``discriminator.update: simultaneous`` (default): D runs ONCE over the B*M fakes; that
    forward serves both D's loss and G's adversarial loss (G's step sees D before this
    step's update). ``alternating``: D steps first on detached fakes, then G's adversarial
    loss sees the updated D. Each network gets only its own gradient (autograd.grad): D's
    parameters accumulate nothing from L_G.
    """
    r, d = recipe.refiner, recipe.discriminator
    x, y, M = batch.image, batch.label, r.num_samples
    p = calibrator_output(nets.F, batch.cond, task)
    logits, loss_kl = refiner_samples(nets.G, x, p, M, noise)  # [B, M, K, H, W] or [B, M, D]
    xs = x.unsqueeze(1).expand(-1, M, *x.shape[1:]).reshape(-1, *x.shape[1:])
    if task == "segmentation":
        real, valid = as_label_map(y, num_classes, ignore_index)
        fake = logits.softmax(2) * valid[:, None, None]
        fake = fake.reshape(-1, *fake.shape[2:])
    else:
        real, valid, fake = y, None, logits.reshape(-1, logits.shape[-1])
    alternating = d.update == "alternating"
    # simultaneous: this one D forward serves L_D and L_adv; alternating: L_D on detached fakes
    d_fake = nets.D(xs, fake.detach() if alternating else fake)
    out: dict[str, float] = {}

    # L_D: real (x, y) against all M fakes, plus the R1 penalty on reals; skipped while
    # D is frozen in its cycle or too accurate.
    step_d = False
    if d_update:
        real_in = real.detach().requires_grad_(True)
        d_real = nets.D(x, real_in)
        acc = 0.5 * float((d_real > 0).float().mean() + (d_fake < 0).float().mean())
        acc = distributed.global_mean(acc)  # under torchrun: one decision for all ranks
        out["d_acc"] = acc
        if d.max_accuracy is None or acc < d.max_accuracy:
            loss_d = discriminator_loss(d_real, d_fake)
            if d.r1_weight > 0:
                loss_d = loss_d + d.r1_weight * r1_penalty(d_real, real_in)
            _set_grads(nets.D, loss_d, retain_graph=not alternating)
            out["loss_d"] = loss_d.detach().item()
            step_d = True
    if alternating:
        if step_d:
            nets.opt_D.step()
            step_d = False
        d_fake = nets.D(xs, fake)  # G's adversarial loss against the updated D

    # L_G = w_adv * L_adv + w_cal * L_cal
    loss_adv = adversarial_loss(d_fake)
    if r.calibration_loss == "none":
        loss_cal = torch.zeros((), device=x.device)
    elif task == "regression":
        loss_cal = regression_calibration_loss(logits, p)
    elif r.calibration_loss in ("kl", "kl_forward"):
        loss_cal = calibration_loss(logits, p, valid, forward=r.calibration_loss == "kl_forward")
    else:  # "ce": the paper's control, cross-entropy of every sample against the label
        loss_cal = sample_cross_entropy(logits, y, ignore_index=ignore_index)
    loss_g = r.w_adv * loss_adv + r.w_cal * loss_cal
    if r.w_entropy:  # a deviation (segmentation only, checked at start): make each sample decide
        loss_ent = sample_entropy(logits, valid)
        loss_g = loss_g + r.w_entropy * loss_ent
        out["loss_ent"] = loss_ent.detach().item()
    if r.w_joint:  # beyond the paper: the pairs' joint answers match the labels'
        assert batch.modes is not None and batch.mode_weight is not None
        loss_joint = joint_term(
            logits, batch.modes, batch.mode_weight, valid, r.joint_pairs, noise, r.joint_loss
        )
        loss_g = loss_g + r.w_joint * loss_joint
        out["loss_joint"] = loss_joint.detach().item()
    if loss_kl is not None:  # latent-code variant: + beta * KL(q || N(0, I)) (beta may be 0)
        loss_g = loss_g + r.kl_beta * loss_kl
        out["loss_kl"] = loss_kl.detach().item()
    _set_grads(nets.G, loss_g, retain_graph=False)
    nets.opt_G.step()
    if step_d:
        nets.opt_D.step()
    if nets.opt_F is not None:  # joint training: F takes its own L_ce step on this batch
        out["loss_ce"] = calibrator_update(nets, batch, task, ignore_index)
    out.update(
        loss_g=loss_g.detach().item(),
        loss_adv=loss_adv.detach().item(),
        loss_cal=loss_cal.detach().item(),
    )
    return out


def _set_grads(net: torch.nn.Module, loss: torch.Tensor, retain_graph: bool) -> None:
    """net's parameters get d loss / d param (and nothing else gets anything)."""
    params = [q for q in net.parameters() if q.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    for q, g in zip(params, grads, strict=True):
        q.grad = g
    distributed.average_gradients(params)  # under torchrun: the mean over the ranks


def d_cycle_on(step: int, n_on: int, n_off: int) -> bool:
    """D trains n_on steps, then stays frozen n_off steps (G trains every step)."""
    return step % (n_on + n_off) < n_on


def run_train_refiner(
    recipe: Recipe, resume: bool = False, overwrite: bool = False, quiet: bool = False
) -> Path:
    """Train G and D; writes refiner/model.safetensors and refiner/discriminator.safetensors
    (and, with refiner.joint_calibrator, the jointly trained F as refiner/calibrator.safetensors,
    named in G's checkpoint metadata so `sample` uses it)."""
    rep = Reporter(quiet or distributed.env_world()[0] > 0)  # rank 0 speaks for the job
    r, d = recipe.refiner, recipe.discriminator
    stage = TrainingStage(recipe, "refiner", resume, overwrite, MAKE_CMD)
    f_path = Path(recipe.run_dir) / "calibrator" / "model.safetensors"
    train_path, val_path = split_path(recipe.data.dir, "train"), split_path(recipe.data.dir, "val")
    with (
        distributed.session(recipe) as dist,
        stage.open(),
        DatasetFile(train_path, validate=True) as train_ds,
        DatasetFile(val_path, validate=True) as val_ds,
    ):
        device = setup_torch(recipe)
        distributed.check_batch(r.batch_size, "refiner.batch_size")
        for note in speed_notes(recipe, device):
            rep.line(note)
        info = train_ds.info
        if info.task == "regression" and r.calibration_loss in ("ce", "kl_forward"):
            raise CarsegError(
                f"refiner.calibration_loss {r.calibration_loss!r} is for segmentation, but "
                f"{train_path} is a regression dataset",
                hint="use 'kl' (the squared-error form of L_cal) or 'none' (lambda = 0)",
            )
        if info.task == "regression" and r.w_joint:
            raise CarsegError(
                f"refiner.w_joint is for segmentation (joint class distributions), but "
                f"{train_path} is a regression dataset",
                hint="set refiner.w_joint=0",
            )
        if info.task == "regression" and r.w_entropy:
            raise CarsegError(
                f"refiner.w_entropy is for segmentation (the entropy of class maps), but "
                f"{train_path} is a regression dataset",
                hint="set refiner.w_entropy=0",
            )
        F_net = load_network(f_path, "calibrator", "calibrator", info, CALIBRATOR_CMD)
        joint = r.joint_calibrator  # F also trains (its own L_ce), else frozen
        F_net.to(device).eval().requires_grad_(joint)
        G, D = new_refiner(recipe, info).to(device), new_discriminator(recipe, info).to(device)
        for net in (G, D, F_net):
            distributed.broadcast_parameters(net)  # every rank starts from rank 0's weights
        c = recipe.calibrator
        nets = Nets(  # the speed options wrap the forward calls; G, D, F_net are saved
            accelerate(F_net, recipe, device, dist.world),
            accelerate(G.train(), recipe, device, dist.world),
            accelerate(D.train(), recipe, device, dist.world, compile_ok=False),
            adam(G.parameters(), r.lr, r.betas, r.weight_decay),
            adam(D.parameters(), d.lr, r.betas, r.weight_decay),
            adam(F_net.parameters(), r.lr, c.betas, c.weight_decay) if joint else None,
        )
        soft = joint and c.soft_targets and info.task == "segmentation"
        train = BatchSource(train_ds, flip=recipe.data.flip)
        val = BatchSource(val_ds)
        rng = np.random.default_rng([recipe.seed, 2])
        noise = torch.Generator(device=device)
        noise.manual_seed(distributed.rank_seed(recipe.seed + 2, dist.rank))
        models, opts = {"G": G, "D": D}, {"G": nets.opt_G, "D": nets.opt_D}
        if nets.opt_F is not None:
            models["F"], opts["F"] = F_net, nets.opt_F
        state = stage.restore(models, opts, {"noise": noise})
        step, best = 0, float("inf")
        guard = NonFiniteGuard(r.on_nonfinite, "refiner", list(opts.values()))
        if state is not None:
            step, best, rng = state["step"], state["best"], rng_from_state(state["rng"])
            guard.skipped = state.get("skipped", 0)
            rep.line(f"resuming {stage.dir} at step {step}")
        if not dist.main:  # own dropout and noise streams, from (seed, rank, step)
            torch.manual_seed(distributed.rank_seed(recipe.seed, dist.rank, step))
            noise.manual_seed(distributed.rank_seed(recipe.seed + 2, dist.rank, step))
        log = MetricsLog(stage.dir / "metrics.jsonl", step if state is not None else None)
        last_saved = stage.last if state is not None else None
        loader = training_loader(
            train, r.batch_size, rng, soft, recipe.speed.prefetch, device, modes=r.w_joint > 0
        )
        with loader, rep.progress(r.steps, "train-refiner", start=step) as bar:
            while step < r.steps:
                scale = lr_at(1.0, r.lr_milestones, r.lr_gamma, step)
                set_lr(nets.opt_G, r.lr * scale)
                set_lr(nets.opt_D, d.lr * scale)
                if nets.opt_F is not None:
                    set_lr(nets.opt_F, r.lr * scale)
                # this rank's rows of the global batch
                batch = distributed.shard(loader.next()).to(device, non_blocking=True)
                figures = refiner_step(
                    nets,
                    batch,
                    recipe,
                    info.task,
                    info.num_classes,
                    info.ignore_index,
                    d_cycle_on(step, d.n_on, d.n_off),
                    noise,
                )
                figures = distributed.mean_figures(figures)
                step += 1
                record = {"step": step, **figures, "lr_g": nets.opt_G.param_groups[0]["lr"]}
                guard.check(record, step, last_saved)
                val_now = r.val_every and (step % r.val_every == 0 or step == r.steps)
                if val_now and dist.main:
                    G.eval()
                    validation = (
                        refiner_validation if info.task == "segmentation" else regression_validation
                    )
                    record.update(validation(F_net, G, val, r.val_size, device, recipe.seed))
                    G.train()
                    if record["val_score"] < best:
                        best = record["val_score"]
                        save_network(
                            stage.dir / "best.safetensors",
                            G,
                            "refiner",
                            "refiner",
                            r.arch,
                            info,
                            step,
                            {"val_score": best},
                        )
                log.write(record)
                bar.advance(
                    1,
                    f"cal {figures['loss_cal']:.3f} adv {figures['loss_adv']:.2f}"
                    + (f" D-acc {figures['d_acc']:.2f}" if "d_acc" in figures else ""),
                )
                if step % r.checkpoint_every == 0 or step == r.steps:
                    stage.save(
                        models,
                        opts,
                        {"noise": noise},
                        {
                            "step": step,
                            "best": best,
                            "rng": loader.rng_state(),
                            "skipped": guard.skipped,
                        },
                    )
                    last_saved = stage.last
        g_meta = {"calibrator": JOINT_CALIBRATOR} if joint else None
        save_network(
            stage.dir / "model.safetensors", G, "refiner", "refiner", r.arch, info, step, g_meta
        )
        if joint:  # a drop-in calibrator checkpoint: the F that G was trained with
            f_arch = F_net.config["arch"]
            save_network(
                stage.dir / JOINT_CALIBRATOR,
                F_net,
                "calibrator",
                "calibrator",
                f_arch,
                info,
                step,
                {"joint_with_refiner": True},
            )
        save_network(
            stage.dir / "discriminator.safetensors",
            D,
            "refiner",
            "discriminator",
            d.arch,
            info,
            step,
        )
        stage.finish(
            [train_path, val_path, f_path],
            [
                "model.safetensors",
                "discriminator.safetensors",
                "best.safetensors",
                "last.safetensors",
                "metrics.jsonl",
                "recipe.yaml",
                *([JOINT_CALIBRATOR] if joint else []),
            ],
            device,
            {
                "steps": step,
                "best_val_score": best,
                "batch_size": r.batch_size,
                "skipped_steps": guard.skipped,
                "distributed": dist.describe(r.batch_size),
                "speed": speed_settings(recipe, device, dist.world),
            },
        )
    rep.line(f"refiner trained: {stage.dir / 'model.safetensors'} (step {step})")
    return stage.dir / "model.safetensors"
