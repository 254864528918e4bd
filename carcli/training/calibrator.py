"""`train-calibrator`: F alone, pixelwise cross-entropy against a randomly drawn annotation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from carcli import distributed
from carcli.data.batches import BatchSource
from carcli.data.dataset import DatasetFile, split_path
from carcli.data.prefetch import training_loader
from carcli.errors import CarsegError
from carcli.losses import cross_entropy, expected_cross_entropy, gaussian_nll
from carcli.recipe.schema import Recipe
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
from carcli.training.networks import new_calibrator, save_network
from carcli.training.speed import accelerate
from carcli.training.speed import notes as speed_notes
from carcli.training.speed import settings as speed_settings
from carcli.ui import Reporter

MAKE_CMD = "carseg train-calibrator RECIPE"


def calibrator_loss(
    model: torch.nn.Module,
    cond: torch.Tensor,
    label: torch.Tensor,
    task: str,
    ignore_index: int,
    soft: torch.Tensor | None = None,
) -> torch.Tensor:
    out = model(cond)
    if soft is not None:
        return expected_cross_entropy(out, soft, soft.sum(1) > 0)
    if task == "segmentation":
        return cross_entropy(out, label, ignore_index=ignore_index)
    return gaussian_nll(out, label)


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
                per_px = F.cross_entropy(
                    out, b.label, ignore_index=val.info.ignore_index, reduction="none"
                )
                valid = (b.label != val.info.ignore_index).flatten(1).float()
                per_img = (per_px.flatten(1) * valid).sum(1) / valid.sum(1).clamp_min(1)
            else:
                per_img = 0.5 * ((out - b.label) ** 2).flatten(1).mean(1)
            total += float((w[:, a] * per_img).sum())
    model.train()
    return total / max(1, n)


def run_train_calibrator(
    recipe: Recipe, resume: bool = False, overwrite: bool = False, quiet: bool = False
) -> Path:
    """Train F; writes calibrator/model.safetensors (+ best, last, metrics.jsonl, manifest)."""
    rep = Reporter(quiet or distributed.env_world()[0] > 0)  # rank 0 speaks for the job
    c = recipe.calibrator
    stage = TrainingStage(recipe, "calibrator", resume, overwrite, MAKE_CMD)
    train_path, val_path = split_path(recipe.data.dir, "train"), split_path(recipe.data.dir, "val")
    with (
        distributed.session(recipe) as dist,
        stage.open(),
        DatasetFile(train_path, validate=True) as train_ds,
        DatasetFile(val_path, validate=True) as val_ds,
    ):
        device = setup_torch(recipe)
        distributed.check_batch(c.batch_size, "calibrator.batch_size")
        for note in speed_notes(recipe, device):
            rep.line(note)
        info = train_ds.info
        train, val = BatchSource(train_ds, flip=recipe.data.flip), BatchSource(val_ds)
        model = new_calibrator(recipe, info)
        if c.init_weights and not resume:
            _init_from(model, Path(c.init_weights))
        model.to(device).train()
        opt = adam(model.parameters(), c.lr, c.betas, c.weight_decay)
        rng = np.random.default_rng([recipe.seed, 1])
        state = stage.restore({"F": model}, {"F": opt}, {})
        step, best = 0, float("inf")
        guard = NonFiniteGuard(c.on_nonfinite, "calibrator", [opt])
        if state is not None:
            step, best = state["step"], state["best"]
            guard.skipped = state.get("skipped", 0)
            rng = rng_from_state(state["rng"])
            rep.line(f"resuming {stage.dir} at step {step}")
        if not dist.main:  # own dropout stream, from (seed, rank, step)
            torch.manual_seed(distributed.rank_seed(recipe.seed, dist.rank, step))
        # DDP under torchrun (it starts every rank from rank 0's weights); `model` is saved
        net = accelerate(model, recipe, device, dist.world, ddp=True)
        log = MetricsLog(stage.dir / "metrics.jsonl", step if state is not None else None)
        last_saved: Path | None = stage.last if state is not None else None
        soft = c.soft_targets and info.task == "segmentation"
        loader = training_loader(train, c.batch_size, rng, soft, recipe.speed.prefetch, device)
        with loader, rep.progress(c.steps, "train-calibrator", start=step) as bar:
            while step < c.steps:
                set_lr(opt, lr_at(c.lr, c.lr_milestones, c.lr_gamma, step))
                # this rank's rows of the global batch
                batch = distributed.shard(loader.next()).to(device, non_blocking=True)
                loss = calibrator_loss(
                    net, batch.cond, batch.label, info.task, info.ignore_index, batch.soft
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                value = distributed.global_mean(loss.detach().item())
                record = {"step": step, "loss_ce": value, "lr": opt.param_groups[0]["lr"]}
                guard.check(record, step, last_saved)
                val_now = c.val_every and (step % c.val_every == 0 or step == c.steps)
                if val_now and dist.main:
                    record["val_ce"] = validation_loss(model, val, c.val_size, device, c.batch_size)
                    if record["val_ce"] < best:
                        best = record["val_ce"]
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
                log.write(record)
                bar.advance(
                    1,
                    f"ce {value:.3f}"
                    + (f" val {record['val_ce']:.3f}" if "val_ce" in record else ""),
                )
                if step % c.checkpoint_every == 0 or step == c.steps:
                    stage.save(
                        {"F": model},
                        {"F": opt},
                        {},
                        {
                            "step": step,
                            "best": best,
                            "rng": loader.rng_state(),
                            "skipped": guard.skipped,
                        },
                    )
                    last_saved = stage.last
        save_network(
            stage.dir / "model.safetensors", model, "calibrator", "calibrator", c.arch, info, step
        )
        stage.finish(
            [train_path, val_path],
            [
                "model.safetensors",
                "best.safetensors",
                "last.safetensors",
                "metrics.jsonl",
                "recipe.yaml",
            ],
            device,
            {
                "steps": step,
                "best_val_ce": best,
                "batch_size": c.batch_size,
                "skipped_steps": guard.skipped,
                "distributed": dist.describe(c.batch_size),
                "speed": speed_settings(recipe, device, dist.world),
            },
        )
    rep.line(f"calibrator trained: {stage.dir / 'model.safetensors'} (step {step})")
    return stage.dir / "model.safetensors"


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
