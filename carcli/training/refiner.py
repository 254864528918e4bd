"""`train-refiner`: G and D against the frozen F, following the paper's Algorithm 1.

The step itself is :class:`carcli.training.step.RefinerStep`; the loop is the shared one of
:mod:`carcli.training.loop`. This module only builds the networks and says what differs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from carcli import distributed
from carcli.data.batches import Batch, BatchSource
from carcli.data.dataset import DatasetFile
from carcli.data.prefetch import training_loader
from carcli.data.schema import DatasetInfo
from carcli.errors import CarsegError
from carcli.recipe.schema import Recipe
from carcli.runtime.networks import (
    COUPLING,
    DISCRIMINATOR,
    JOINT_CALIBRATOR,
    load_network,
    save_network,
)
from carcli.runtime.speed import accelerate
from carcli.runtime.speed import settings as speed_settings
from carcli.training.coupling import fit_coupling
from carcli.training.loop import Schedule, StagePlan, run_loop
from carcli.training.networks import new_discriminator, new_refiner, new_set_discriminator
from carcli.training.optim import adam
from carcli.training.stage import TrainingStage, stage_setup
from carcli.training.step import Nets, RefinerStep
from carcli.training.val_metrics import refiner_validation
from carcli.ui import Reporter

MAKE_CMD = "carseg train-refiner RECIPE"
CALIBRATOR_CMD = "carseg train-calibrator RECIPE"
SET_DISCRIMINATOR = "set_discriminator.safetensors"


def run_train_refiner(
    recipe: Recipe,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    allow_stale: bool = False,
) -> Path:
    """Train G and D; writes refiner/model.safetensors and refiner/discriminator.safetensors
    (and, with refiner.joint_calibrator, the jointly trained F as refiner/calibrator.safetensors,
    named in G's checkpoint metadata so `sample` uses it). An F trained on dataset files that
    have changed since is refused unless `allow_stale`."""
    from carcli.runtime.staleness import require_fresh

    rep = Reporter(quiet or distributed.env_world()[0] > 0)  # rank 0 speaks for the job
    r = recipe.refiner
    stage = TrainingStage(recipe, "refiner", resume, overwrite, MAKE_CMD)
    f_path = Path(recipe.run_dir) / "calibrator" / "model.safetensors"
    with stage_setup(stage, r.batch_size, "refiner.batch_size", rep) as s:
        device, dist, info = s.device, s.dist, s.info
        _check_task(recipe, info.task, s.train_path)
        nets, saved = _networks(recipe, info, f_path, device, dist.world)
        stale = require_fresh(recipe, "train-refiner", allow_stale)  # F is readable
        joint = r.joint_calibrator
        soft = joint and recipe.calibrator.soft_targets and info.task == "segmentation"
        train = BatchSource(s.train_ds, flip=recipe.data.flip)
        noise = torch.Generator(device=device)
        noise.manual_seed(distributed.rank_seed(recipe.seed + 2, dist.rank))
        plan = _plan(recipe, nets, saved, noise, BatchSource(s.val_ds), stage, info, device)
        result = run_loop(
            stage,
            plan,
            np.random.default_rng([recipe.seed, 2]),
            _loader(recipe, train, soft, device),
            device,
            rep,
        )
        step, best = result.step, result.best
        _save_networks(stage.dir, recipe, info, step, saved)
        coupling = _fit_coupling(recipe, saved[2], s.train_ds, s.val_ds, device, stage.dir, rep)
        stage.finish(
            {"data.train": s.train_path, "data.val": s.val_path, "calibrator": f_path},
            _outputs(joint, saved[3] is not None, coupling is not None),
            device,
            {
                "steps": step,
                "best_val_score": best,
                "batch_size": r.batch_size,
                "skipped_steps": result.skipped,
                "distributed": dist.describe(r.batch_size),
                "speed": speed_settings(recipe, device, dist.world),
                "allow_stale": allow_stale,
                "stale_inputs": stale,
                **({"coupling": coupling} if coupling else {}),
            },
        )
    rep.line(f"refiner trained: {stage.dir / 'model.safetensors'} (step {step})")
    return stage.dir / "model.safetensors"


def _loader(
    recipe: Recipe, train: BatchSource, soft: bool, device: torch.device
) -> Callable[[np.random.Generator], Any]:
    """The training batches for a random stream: with the annotation modes where a term
    beyond the paper needs them (joint, energy, set discriminator)."""
    r, d = recipe.refiner, recipe.discriminator
    modes = r.w_joint > 0 or r.w_energy > 0 or d.set_size > 0
    return lambda rng: training_loader(
        train, r.batch_size, rng, soft, recipe.speed.prefetch, device, modes=modes
    )


def _networks(
    recipe: Recipe, info: DatasetInfo, f_path: Path, device: torch.device, world: int
) -> tuple[Nets, tuple[Any, Any, Any, Any]]:
    """F from its checkpoint, new G and D (and the set discriminator), rank 0's weights on
    every rank; the step's networks and optimisers, and (G, D, F, D_set) as they are saved."""
    r, d = recipe.refiner, recipe.discriminator
    F_net = load_network(f_path, "calibrator", "calibrator", info, CALIBRATOR_CMD)
    F_net.to(device).eval().requires_grad_(r.joint_calibrator)  # F frozen unless joint
    G, D = new_refiner(recipe, info).to(device), new_discriminator(recipe, info).to(device)
    for net in (G, D, F_net):
        distributed.broadcast_parameters(net)  # every rank starts from rank 0's weights
    nets = step_nets(recipe, F_net, G, D, device, world)
    D_set = None
    if d.set_size:  # beyond the paper: a discriminator of sets of k answers
        D_set = new_set_discriminator(recipe, info).to(device).train()
        distributed.broadcast_parameters(D_set)
        nets.D_set = accelerate(D_set, recipe, device, world, compile_ok=False)
        nets.opt_D_set = adam(
            D_set.parameters(), d.lr, r.betas, r.weight_decay, recipe.speed.optimizer
        )
    return nets, (G, D, F_net, D_set)


def step_nets(
    recipe: Recipe,
    F_net: torch.nn.Module,
    G: torch.nn.Module,
    D: torch.nn.Module,
    device: torch.device,
    world: int = 1,
) -> Nets:
    """The step's networks as the speed options wrap their forward calls (F_net, G and D
    themselves are what is saved) and their optimisers (speed.optimizer). F's forward stays
    float32 under speed.train_bf16: its probabilities are L_cal's target."""
    r, d, c, impl = recipe.refiner, recipe.discriminator, recipe.calibrator, recipe.speed.optimizer
    joint = r.joint_calibrator
    return Nets(
        accelerate(F_net, recipe, device, world, train_bf16=False),
        accelerate(G.train(), recipe, device, world),
        accelerate(D.train(), recipe, device, world, compile_ok=False),
        adam(G.parameters(), r.lr, r.betas, r.weight_decay, impl),
        adam(D.parameters(), d.lr, r.betas, r.weight_decay, impl),
        adam(F_net.parameters(), r.lr, c.betas, c.weight_decay, impl) if joint else None,
    )


def _fit_coupling(
    recipe: Recipe,
    F_net: torch.nn.Module,
    train_ds: DatasetFile,
    val_ds: DatasetFile,
    device: torch.device,
    folder: Path,
    rep: Reporter,
) -> dict[str, Any] | None:
    """With refiner.coupling_steps > 0 (segmentation): the region coupling head, fitted to
    the annotations' pairwise association of F's regions (rank 0 only); its scores."""
    r = recipe.refiner
    if r.coupling_steps <= 0 or train_ds.info.task != "segmentation":
        return None
    if not distributed.current().main:
        return None
    settings = {
        "steps": r.coupling_steps,
        "lr": r.coupling_lr,
        "seed": recipe.seed,
        "region_threshold": recipe.sample.region_threshold,
        "region_link": recipe.sample.region_link,
    }
    rep.line(f"region coupling head: up to {r.coupling_steps} steps")
    scores = fit_coupling(
        F_net, BatchSource(train_ds), BatchSource(val_ds), settings, device, folder / COUPLING
    )
    val = scores["val"]
    if val.get("pairs"):
        rep.line(
            f"region coupling head: val pairs {val['pairs']} ({val['coupled_pairs']} coupled), "
            f"calls right {val['accuracy']:.3f}; kept the head of step {scores['selected_step']} "
            "(lowest error on them)"
        )
    return scores


def _outputs(joint: bool, set_discriminator: bool, coupling: bool = False) -> list[str]:
    """The files train-refiner writes into refiner/ (docs/guide.md's run layout and companions)."""
    return [
        "model.safetensors",
        DISCRIMINATOR,
        "best.safetensors",
        "last.safetensors",
        "metrics.jsonl",
        "recipe.yaml",
        *([JOINT_CALIBRATOR] if joint else []),
        *([SET_DISCRIMINATOR] if set_discriminator else []),
        *([COUPLING] if coupling else []),
    ]


def _check_task(recipe: Recipe, task: str, train_path: Path) -> None:
    """Options that make sense only for segmentation are refused on a regression dataset."""
    r = recipe.refiner
    if task != "regression":
        return
    if r.calibration_loss in ("ce", "kl_forward"):
        raise CarsegError(
            f"refiner.calibration_loss {r.calibration_loss!r} is for segmentation, but "
            f"{train_path} is a regression dataset",
            hint="use 'kl' (the squared-error form of L_cal) or 'none' (lambda = 0)",
        )
    if r.w_joint:
        raise CarsegError(
            f"refiner.w_joint is for segmentation (joint class distributions), but "
            f"{train_path} is a regression dataset",
            hint="set refiner.w_joint=0",
        )
    if r.w_energy:
        raise CarsegError(
            f"refiner.w_energy is for segmentation (the energy score of class maps), but "
            f"{train_path} is a regression dataset",
            hint="set refiner.w_energy=0",
        )
    if r.w_entropy:
        raise CarsegError(
            f"refiner.w_entropy is for segmentation (the entropy of class maps), but "
            f"{train_path} is a regression dataset",
            hint="set refiner.w_entropy=0",
        )


def _save_networks(
    folder: Path,
    recipe: Recipe,
    info: DatasetInfo,
    step: int,
    nets: tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module, torch.nn.Module | None],
) -> None:
    """G, D (and the set D), and with joint training the F that G was trained with."""
    r, d = recipe.refiner, recipe.discriminator
    G, D, F_net, D_set = nets
    joint = r.joint_calibrator
    g_meta = {"calibrator": JOINT_CALIBRATOR} if joint else None
    save_network(folder / "model.safetensors", G, "refiner", "refiner", r.arch, info, step, g_meta)
    if joint:  # a drop-in calibrator checkpoint: the F that G was trained with
        f_arch = F_net.config["arch"]
        save_network(
            folder / JOINT_CALIBRATOR,
            F_net,
            "calibrator",
            "calibrator",
            f_arch,
            info,
            step,
            {"joint_with_refiner": True},
        )
    save_network(
        folder / DISCRIMINATOR,
        D,
        "refiner",
        "discriminator",
        d.arch,
        info,
        step,
    )
    if D_set is not None:
        save_network(
            folder / SET_DISCRIMINATOR,
            D_set,
            "refiner",
            "discriminator",
            d.arch,
            info,
            step,
            {"set_size": d.set_size},
        )


def _trained(
    recipe: Recipe, nets: Nets, saved: tuple[Any, Any, Any, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """The networks the loop checkpoints and schedules, their optimisers and learning rates."""
    r = recipe.refiner
    G, D, F_net, D_set = saved
    models, opts = {"G": G, "D": D}, {"G": nets.opt_G, "D": nets.opt_D}
    base_lr = {"G": r.lr, "D": recipe.discriminator.lr}
    if nets.opt_F is not None:
        models["F"], opts["F"], base_lr["F"] = F_net, nets.opt_F, r.lr
    if D_set is not None and nets.opt_D_set is not None:
        models["D_set"], opts["D_set"] = D_set, nets.opt_D_set
        base_lr["D_set"] = recipe.discriminator.lr
    return models, opts, base_lr


def _plan(
    recipe: Recipe,
    nets: Nets,
    saved: tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module, torch.nn.Module | None],
    noise: torch.Generator,
    val: BatchSource,
    stage: TrainingStage,
    info: DatasetInfo,
    device: torch.device,
) -> StagePlan:
    """G's side of the shared loop: Algorithm 1 (plus joint F's own step), GED validation."""
    r = recipe.refiner
    G, _, F_net, _ = saved  # the unwrapped networks (what is saved)
    dist = distributed.current()
    algorithm1 = RefinerStep.from_recipe(
        recipe, nets, info.task, info.num_classes, info.ignore_index, noise
    )
    models, opts, base_lr = _trained(recipe, nets, saved)

    def start(step: int) -> None:
        if not dist.main:  # own dropout and noise streams, from (seed, rank, step)
            torch.manual_seed(distributed.rank_seed(recipe.seed, dist.rank, step))
            noise.manual_seed(distributed.rank_seed(recipe.seed + 2, dist.rank, step))

    def step(batch: Batch, i: int) -> dict[str, float]:
        return distributed.mean_figures(algorithm1(batch, i))

    def validate() -> dict[str, float]:
        G.eval()
        figures = refiner_validation(F_net, G, val, r.val_size, device, recipe.seed)
        G.train()
        return figures

    def save_best(step: int, best: float) -> None:
        meta = {"val_score": best}
        save_network(
            stage.dir / "best.safetensors", G, "refiner", "refiner", r.arch, info, step, meta
        )

    def summary(figures: dict[str, Any], record: dict[str, Any]) -> str:
        acc = f" D-acc {figures['d_acc']:.2f}" if "d_acc" in figures else ""
        return f"cal {figures['loss_cal']:.3f} adv {figures['loss_adv']:.2f}{acc}"

    return StagePlan(
        schedule=Schedule.of(r),
        models=models,
        optimizers=opts,
        base_lr=base_lr,
        generators={"noise": noise},
        start=start,
        step=step,
        validate=validate,
        score="val_score",
        save_best=save_best,
        lr_key="lr_g",
        lr_opt="G",
        summary=summary,
    )
