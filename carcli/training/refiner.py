"""`train-refiner`: G and D against the frozen F, following the paper's Algorithm 1."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from carcli.data.batches import Batch, BatchSource
from carcli.data.dataset import DatasetFile, split_path
from carcli.errors import CarsegError
from carcli.losses import (
    adversarial_loss,
    calibration_loss,
    discriminator_loss,
    r1_penalty,
    regression_calibration_loss,
    sample_cross_entropy,
)
from carcli.recipe.schema import Recipe
from carcli.training.common import (
    MetricsLog,
    NonFiniteGuard,
    TrainingStage,
    adam,
    lr_at,
    rng_from_state,
    rng_state,
    set_lr,
    setup_torch,
)
from carcli.training.networks import load_network, new_discriminator, new_refiner, save_network
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


def calibrator_output(F_net: torch.nn.Module, cond: torch.Tensor, task: str) -> torch.Tensor:
    """F's per-pixel probabilities (segmentation) or mean (regression), no gradient."""
    with torch.no_grad():
        out = F_net(cond)
        return out.softmax(1) if task == "segmentation" else out


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
    logits = nets.G(x, p, num_samples=M, generator=noise)  # [B, M, K, H, W] or [B, M, D]
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
    elif r.calibration_loss == "kl":
        loss_cal = calibration_loss(logits, p, valid)
    else:  # "ce": the paper's control, cross-entropy of every sample against the label
        loss_cal = sample_cross_entropy(logits, y, ignore_index=ignore_index)
    loss_g = r.w_adv * loss_adv + r.w_cal * loss_cal
    _set_grads(nets.G, loss_g, retain_graph=False)
    nets.opt_G.step()
    if step_d:
        nets.opt_D.step()
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


def d_cycle_on(step: int, n_on: int, n_off: int) -> bool:
    """D trains n_on steps, then stays frozen n_off steps (G trains every step)."""
    return step % (n_on + n_off) < n_on


def run_train_refiner(
    recipe: Recipe, resume: bool = False, overwrite: bool = False, quiet: bool = False
) -> Path:
    """Train G and D; writes refiner/model.safetensors and refiner/discriminator.safetensors."""
    rep = Reporter(quiet)
    r, d = recipe.refiner, recipe.discriminator
    stage = TrainingStage(recipe, "refiner", resume, overwrite, MAKE_CMD)
    f_path = Path(recipe.run_dir) / "calibrator" / "model.safetensors"
    train_path, val_path = split_path(recipe.data.dir, "train"), split_path(recipe.data.dir, "val")
    with (
        stage.open(),
        DatasetFile(train_path, validate=True) as train_ds,
        DatasetFile(val_path, validate=True) as val_ds,
    ):
        device = setup_torch(recipe)
        info = train_ds.info
        if info.task == "regression" and r.calibration_loss == "ce":
            raise CarsegError(
                f"refiner.calibration_loss 'ce' (cross-entropy of each sample) is for "
                f"segmentation, but {train_path} is a regression dataset",
                hint="use 'kl' (the squared-error form of L_cal) or 'none' (lambda = 0)",
            )
        F_net = load_network(f_path, "calibrator", "calibrator", info, CALIBRATOR_CMD)
        F_net.to(device).eval().requires_grad_(False)
        G, D = new_refiner(recipe, info).to(device), new_discriminator(recipe, info).to(device)
        nets = Nets(
            F_net,
            G.train(),
            D.train(),
            adam(G.parameters(), r.lr, r.betas, r.weight_decay),
            adam(D.parameters(), d.lr, r.betas, r.weight_decay),
        )
        train = BatchSource(train_ds, flip=recipe.data.flip)
        val = BatchSource(val_ds)
        rng = np.random.default_rng([recipe.seed, 2])
        noise = torch.Generator(device=device).manual_seed(recipe.seed + 2)
        models, opts = {"G": G, "D": D}, {"G": nets.opt_G, "D": nets.opt_D}
        state = stage.restore(models, opts, {"noise": noise})
        step, best = 0, float("inf")
        guard = NonFiniteGuard(r.on_nonfinite, "refiner", [nets.opt_G, nets.opt_D])
        if state is not None:
            step, best, rng = state["step"], state["best"], rng_from_state(state["rng"])
            guard.skipped = state.get("skipped", 0)
            rep.line(f"resuming {stage.dir} at step {step}")
        log = MetricsLog(stage.dir / "metrics.jsonl", step if state is not None else None)
        last_saved = stage.last if state is not None else None
        with rep.progress(r.steps, "train-refiner", start=step) as bar:
            while step < r.steps:
                scale = lr_at(1.0, r.lr_milestones, r.lr_gamma, step)
                set_lr(nets.opt_G, r.lr * scale)
                set_lr(nets.opt_D, d.lr * scale)
                batch = train.get(train.random_indices(rng, r.batch_size), rng)
                batch = Batch(batch.image.to(device), batch.cond.to(device), batch.label.to(device))
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
                step += 1
                record = {"step": step, **figures, "lr_g": nets.opt_G.param_groups[0]["lr"]}
                guard.check(record, step, last_saved)
                if r.val_every and (step % r.val_every == 0 or step == r.steps):
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
                            "rng": rng_state(rng),
                            "skipped": guard.skipped,
                        },
                    )
                    last_saved = stage.last
        save_network(stage.dir / "model.safetensors", G, "refiner", "refiner", r.arch, info, step)
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
            ],
            device,
            {
                "steps": step,
                "best_val_score": best,
                "batch_size": r.batch_size,
                "skipped_steps": guard.skipped,
            },
        )
    rep.line(f"refiner trained: {stage.dir / 'model.safetensors'} (step {step})")
    return stage.dir / "model.safetensors"
