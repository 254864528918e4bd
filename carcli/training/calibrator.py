"""`train-calibrator`: F alone, pixelwise cross-entropy against a randomly drawn annotation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf

from carcli import distributed
from carcli.data.batches import Batch, BatchSource
from carcli.data.prefetch import training_loader
from carcli.data.schema import DatasetInfo
from carcli.errors import CarsegError
from carcli.losses import calibrator_loss
from carcli.recipe.schema import Recipe
from carcli.runtime.networks import save_network
from carcli.runtime.speed import accelerate
from carcli.runtime.speed import settings as speed_settings
from carcli.training.loop import LoopResult, Schedule, StagePlan, run_loop
from carcli.training.networks import new_calibrator
from carcli.training.optim import adam
from carcli.training.overfit import overfit_check, validation_ce
from carcli.training.recalibration import recalibrate
from carcli.training.stage import StageSetup, TrainingStage, stage_setup
from carcli.ui import Reporter

MAKE_CMD = "carseg train-calibrator RECIPE"


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module, val: BatchSource, n: int, device: torch.device, batch_size: int
) -> float:
    """Expected loss under the label distribution (label_weight) on the first `n` val images."""
    model.eval()
    n = min(n, val.info.n)
    total = 0.0
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(n, start + batch_size))
        w = torch.from_numpy(val.weights[idx]).float()
        out = None
        for a in range(val.info.num_annotations):
            b = val.get(idx, None, annotation=np.full(len(idx), a))
            if out is None:
                out = model(b.cond.to(device)).float().cpu()
            if val.info.task == "segmentation":
                per_px = nnf.cross_entropy(
                    out, b.label, ignore_index=val.info.ignore_index, reduction="none"
                )
                valid = (b.label != val.info.ignore_index).flatten(1).float()
                per_img = (per_px.flatten(1) * valid).sum(1) / valid.sum(1).clamp_min(1)
            else:
                per_img = 0.5 * ((out - b.label) ** 2).flatten(1).mean(1)
            total += float((w[:, a] * per_img).sum())
    model.train()
    return total / max(1, n)


OUTPUTS = [
    "model.safetensors",
    "best.safetensors",
    "last.safetensors",
    "metrics.jsonl",
    "recipe.yaml",
]
"""The files train-calibrator writes into calibrator/ (docs/guide.md's run layout, companions)."""


@dataclasses.dataclass
class _Trained:
    """One trained F of the stage (the first, or a regularised one) and its records."""

    name: str  # "as trained", "regularised", "regularised-2", ...
    model: torch.nn.Module
    result: LoopResult
    recal: dict[str, Any] | None  # the class-bias refit, if any


def run_train_calibrator(
    recipe: Recipe, resume: bool = False, overwrite: bool = False, quiet: bool = False
) -> Path:
    """Train F; writes calibrator/model.safetensors (+ best, last, metrics.jsonl, manifest;
    calibrator/regularised/ (and regularised-2/, ...) when `calibrator.overfit_ratio` finds
    the first F over-fitted)."""
    rep = Reporter(quiet or distributed.env_world()[0] > 0)  # rank 0 speaks for the job
    c = recipe.calibrator
    stage = TrainingStage(recipe, "calibrator", resume, overwrite, MAKE_CMD)
    with stage_setup(stage, c.batch_size, "calibrator.batch_size", rep) as s:
        device, dist = s.device, s.dist
        val = BatchSource(s.val_ds)
        model, result = _train(recipe, stage, s, val, rep, init=not resume)
        check = _overfit_check(recipe, model, s, val, rep)
        recal = _recalibrate(recipe, model, val, device, rep, dist.main)
        kept = _Trained("as trained", model, result, recal)
        if check and check["overfit"]:
            kept = _choose(recipe, kept, s, val, rep, check, resume)
        _save(
            stage,
            s,
            kept,
            check,
            {
                "batch_size": c.batch_size,
                "skipped_steps": kept.result.skipped,
                "distributed": dist.describe(c.batch_size),
                "speed": speed_settings(recipe, device, dist.world),
                "overfit_check": check,
            },
        )
    rep.line(f"calibrator trained: {stage.dir / 'model.safetensors'} (step {kept.result.step})")
    return stage.dir / "model.safetensors"


def _save(
    stage: TrainingStage,
    s: StageSetup,
    f: _Trained,
    check: dict[str, Any] | None,
    manifest: dict[str, Any],
) -> None:
    """``f`` as the stage's model.safetensors (metadata: its refit and ``check``) and the
    stage's manifest (its steps, best val CE and refit, then ``manifest``)."""
    meta: dict[str, Any] = {"recalibration": f.recal} if f.recal else {}
    if check:
        meta["overfit_check"] = check
    arch = stage.recipe.calibrator.arch
    save_network(
        stage.dir / "model.safetensors",
        f.model,
        "calibrator",
        "calibrator",
        arch,
        s.info,
        f.result.step,
        meta or None,
    )
    stage.finish(
        {"data.train": s.train_path, "data.val": s.val_path},
        OUTPUTS,
        s.device,
        {
            "steps": f.result.step,
            "best_val_ce": f.result.best,
            "recalibration": f.recal,
            **manifest,
        },
    )


def _train(
    recipe: Recipe,
    stage: TrainingStage,
    s: StageSetup,
    val: BatchSource,
    rep: Reporter,
    init: bool,
) -> tuple[torch.nn.Module, LoopResult]:
    """Build F and its optimiser and run the shared loop in ``stage``'s folder."""
    c, device, info = recipe.calibrator, s.device, s.info
    train = BatchSource(s.train_ds, flip=recipe.data.flip)
    model = new_calibrator(recipe, info)
    if c.init_weights and init:
        _init_from(model, Path(c.init_weights))
    model.to(device).train()
    opt = adam(model.parameters(), c.lr, c.betas, c.weight_decay, recipe.speed.optimizer)
    plan = _plan(recipe, model, opt, val, stage, info, device, s.dist)
    soft = c.soft_targets and info.task == "segmentation"
    result = run_loop(
        stage,
        plan,
        np.random.default_rng([recipe.seed, 1]),
        lambda rng: training_loader(train, c.batch_size, rng, soft, recipe.speed.prefetch, device),
        device,
        rep,
    )
    return model, result


def _overfit_check(
    recipe: Recipe, model: torch.nn.Module, s: StageSetup, val: BatchSource, rep: Reporter
) -> dict[str, Any] | None:
    """calibrator.overfit_ratio: F's KL from the labels, validation against training images
    (before the refit, which is fitted on the validation split)."""
    c = recipe.calibrator
    if not c.overfit_ratio:
        return None
    if s.info.task != "segmentation":
        raise CarsegError(
            f"calibrator.overfit_ratio is for segmentation, but {s.train_path} holds a "
            f"{s.info.task} dataset",
            hint="set calibrator.overfit_ratio=0",
        )
    check = overfit_check(
        model, BatchSource(s.train_ds), val, s.device, c.batch_size, recipe.seed, c.overfit_ratio
    )
    verdict = (
        "over-fitted: a regularised F follows"
        if check["overfit"]
        else f"within {c.overfit_ratio:g}x: kept"
    )
    rep.line(
        f"F's KL from the labels: {check['val_kl']:.5f} on validation, {check['train_kl']:.5f} "
        f"on {check['train_images']} training images ({check['ratio']:.2f}x), {verdict}"
    )
    return check


def _choose(
    recipe: Recipe,
    first: _Trained,
    s: StageSetup,
    val: BatchSource,
    rep: Reporter,
    check: dict[str, Any],
    resume: bool,
) -> _Trained:
    """Train one regularised F per ``overfit_dropout`` value in calibrator/regularised/ (the
    first value), regularised-2/, ... (each resumable on its own, as the first F is), refit
    each as the first, and return the F of the lowest validation cross-entropy; ``check``
    gets the figures and the choice."""
    c = recipe.calibrator
    dropouts = c.overfit_dropouts()
    trained = [first]
    for i, dropout in enumerate(dropouts):
        name = "regularised" if i == 0 else f"regularised-{i + 1}"
        trained.append(_regularised(recipe, name, dropout, s, val, rep, resume))
    ce = {f.name: validation_ce(f.model, val, s.device, c.batch_size, recipe.seed) for f in trained}
    best = min(trained, key=lambda f: ce[f.name])
    check["val_ce"] = ce
    check["chosen"] = best.name
    if len(dropouts) > 1:
        check["dropout"] = dict(zip([f.name for f in trained[1:]], dropouts, strict=True))
    figures = ", ".join(f"{ce[f.name]:.5f} {f.name}" for f in trained)
    rep.line(
        f"validation cross-entropy {figures} (dropout {', '.join(f'{d:g}' for d in dropouts)}, "
        f"weight decay {c.overfit_weight_decay:g}): F {best.name} kept"
    )
    return best


def _regularised(
    recipe: Recipe,
    name: str,
    dropout: float,
    s: StageSetup,
    val: BatchSource,
    rep: Reporter,
    resume: bool,
) -> _Trained:
    """One regularised F (``dropout``, ``overfit_weight_decay``) in calibrator/NAME/, from the
    first F's initial weights, batches and schedule, refitted and saved there."""
    c = recipe.calibrator
    alt_recipe = dataclasses.replace(
        recipe,
        calibrator=dataclasses.replace(
            c, dropout=dropout, weight_decay=c.overfit_weight_decay, overfit_ratio=0.0
        ),
    )
    # on --resume an interrupted (or shorter) F continues; a fresh run starts it afresh
    sub = TrainingStage(alt_recipe, "calibrator", False, True, MAKE_CMD, sub=name)
    if resume and sub.last.exists():
        sub = dataclasses.replace(sub, resume=True, overwrite=False)
    rep.line(f"training a regularised F (dropout {dropout:g}) in {sub.dir}")
    torch.manual_seed(recipe.seed)  # the first F's initial weights: only the regularisation differs
    with sub.open():
        model, result = _train(alt_recipe, sub, s, val, rep, init=not sub.resume)
        recal = _recalibrate(alt_recipe, model, val, s.device, rep, s.dist.main)
        trained = _Trained(name, model, result, recal)
        _save(sub, s, trained, None, {})
    return trained


def _recalibrate(
    recipe: Recipe,
    model: torch.nn.Module,
    val: BatchSource,
    device: torch.device,
    rep: Reporter,
    main: bool,
) -> dict[str, Any] | None:
    """calibrator.recalibrate=class_bias (vector_scaling): F's class biases (and logit
    scales) refitted on the validation split (every rank fits the same map on the same
    pixels; rank 0 reports)."""
    kind = recipe.calibrator.recalibrate
    if kind == "none":
        return None
    rec = recalibrate(model, val, device, recipe.calibrator.batch_size, recipe.seed, kind)
    if main:
        bias = ", ".join(f"{x:+.3f}" for x in rec["class_bias"])
        what = f"class biases [{bias}]"
        if "class_scale" in rec:
            scale = ", ".join(f"{x:.3f}" for x in rec["class_scale"])
            what = f"class logit scales [{scale}] and biases [{bias}]"
        rep.line(
            f"{what} refitted on {rec['val_images']} validation images, "
            f"val cross-entropy {rec['val_ce_before']:.5f} -> {rec['val_ce_after']:.5f}"
        )
    return rec


def _plan(
    recipe: Recipe,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    val: BatchSource,
    stage: TrainingStage,
    info: DatasetInfo,
    device: torch.device,
    dist: distributed.Dist,
) -> StagePlan:
    """F's side of the shared loop: one L_ce step, the validation cross-entropy."""
    c = recipe.calibrator
    net = model  # DDP-wrapped (and sped up) in start(); `model` is what is saved

    def start(step: int) -> None:
        nonlocal net
        if not dist.main:  # own dropout stream, from (seed, rank, step)
            torch.manual_seed(distributed.rank_seed(recipe.seed, dist.rank, step))
        # DDP under torchrun (it starts every rank from rank 0's weights)
        net = accelerate(model, recipe, device, dist.world, ddp=True)

    def step(batch: Batch, _: int) -> dict[str, float]:
        loss = calibrator_step(net, opt, batch, info.task, info.ignore_index)
        return {"loss_ce": distributed.global_mean(loss)}

    def save_best(step: int, best: float) -> None:
        save_network(
            stage.dir / "best.safetensors",
            model,
            "calibrator",
            "calibrator",
            c.arch,
            info,
            step,
            {"val_ce": best},
        )

    def summary(figures: dict[str, Any], record: dict[str, Any]) -> str:
        val = f" val {record['val_ce']:.3f}" if "val_ce" in record else ""
        return f"ce {figures['loss_ce']:.3f}{val}"

    return StagePlan(
        schedule=Schedule.of(c),
        models={"F": model},
        optimizers={"F": opt},
        base_lr={"F": c.lr},
        generators={},
        start=start,
        step=step,
        validate=lambda: {"val_ce": validation_loss(model, val, c.val_size, device, c.batch_size)},
        score="val_ce",
        save_best=save_best,
        lr_key="lr",
        lr_opt="F",
        summary=summary,
    )


def calibrator_step(
    net: torch.nn.Module, opt: torch.optim.Optimizer, batch: Batch, task: str, ignore_index: int
) -> float:
    """One step of F on L_ce (``net``: the module to call, as `accelerate` returns it)."""
    loss = calibrator_loss(net(batch.cond), batch.label, task, ignore_index, batch.soft)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach().item()


def _init_from(model: torch.nn.Module, path: Path) -> None:
    """Initialise F from a local safetensors file with matching parameter names."""
    from carcli.artefacts.checkpoint import read_safetensors

    tensors, _ = read_safetensors(path, "calibrator.init_weights file", "check the path")
    own = model.state_dict()
    matched = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise CarsegError(
            f"{path}: no parameter matches the calibrator by name and shape",
            hint="calibrator.init_weights needs weights saved from this architecture",
        )
    model.load_state_dict(matched, strict=False)
