"""The training loop both stages share.

A stage (``train-calibrator``, ``train-refiner``) builds its networks and optimisers and hands
the loop a :class:`StagePlan`: what to save and restore, how one step goes, how to validate.
The loop owns everything else, the same way for both: resume (weights, optimisers, generators,
step, best score, batch stream), the non-finite guard, the learning-rate schedule, this
rank's shard of each batch, metrics.jsonl, validation and the best checkpoint, the periodic
``last.safetensors`` (every `checkpoint_every` steps and every `checkpoint_minutes`), the
progress bar, and a stop on SIGINT / SIGTERM.

A stop request (Ctrl-C, or the SIGTERM a cluster sends before a time limit or on preemption)
is looked at between steps, never inside one: the step in progress finishes, every rank
agrees on the step to stop at (one small all-reduce of the request per step under torchrun),
rank 0 writes ``last.safetensors`` as at a periodic checkpoint, and the stage ends with
:class:`~carcli.runtime.interrupt.Interrupted` (exit 130 / 143, a line naming the `--resume`
command). A second signal aborts at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from carcli import distributed
from carcli.data.batches import Batch
from carcli.data.prefetch import BatchPrefetcher
from carcli.runtime.interrupt import Interrupted, StopRequest
from carcli.training.optim import lr_at, set_lr
from carcli.training.stage import MetricsLog, NonFiniteGuard, TrainingStage, rng_from_state
from carcli.ui import Reporter


@dataclass
class Schedule:
    """The recipe section's loop keys (calibrator.* or refiner.*)."""

    steps: int
    lr_milestones: list[int]
    lr_gamma: float
    val_every: int
    checkpoint_every: int
    on_nonfinite: str
    checkpoint_minutes: float = 0.0  # 0: no time-based checkpoint

    @classmethod
    def of(cls, section: Any) -> Schedule:
        return cls(
            section.steps,
            section.lr_milestones,
            section.lr_gamma,
            section.val_every,
            section.checkpoint_every,
            section.on_nonfinite,
            section.checkpoint_minutes,
        )


@dataclass
class StagePlan:
    """What a training stage supplies to the loop."""

    schedule: Schedule
    models: dict[str, torch.nn.Module]  # saved in last.safetensors under these names
    optimizers: dict[str, torch.optim.Optimizer]
    base_lr: dict[str, float]  # optimiser name -> learning rate before the schedule
    generators: dict[str, torch.Generator]
    start: Callable[[int], None]  # called once the step is known (seeds, wrappers)
    step: Callable[[Batch, int], dict[str, float]]  # one update -> figures (global means)
    validate: Callable[[], dict[str, float]]  # validation figures, including `score`
    score: str  # the validation figure that picks best.safetensors (lower is better)
    save_best: Callable[[int, float], None]
    lr_key: str  # logged learning rate: (key, optimiser name)
    lr_opt: str
    summary: Callable[[dict[str, Any], dict[str, Any]], str]  # progress text: figures, record


@dataclass
class LoopResult:
    step: int
    best: float
    skipped: int


def run_loop(
    stage: TrainingStage,
    plan: StagePlan,
    rng: np.random.Generator,
    make_loader: Callable[[np.random.Generator], BatchPrefetcher],
    device: torch.device,
    rep: Reporter,
) -> LoopResult:
    """Restore (on --resume), then train to ``plan.schedule.steps``; see the module doc."""
    s, dist = plan.schedule, distributed.current()
    state = stage.restore(plan)
    step, best = 0, float("inf")
    guard = NonFiniteGuard(s.on_nonfinite, stage.name, list(plan.optimizers.values()))
    if state is not None:
        step, best, rng = state["step"], state["best"], rng_from_state(state["rng"])
        guard.skipped = state.get("skipped", 0)
        rep.line(f"resuming {stage.dir} at step {step}")
    plan.start(step)
    log = MetricsLog(stage.dir / "metrics.jsonl", step if state is not None else None)
    last_saved = stage.last if state is not None else None
    loader = make_loader(rng)
    clock = _CheckpointClock(s.checkpoint_minutes)
    with (
        StopRequest() as stop,
        loader,
        rep.progress(s.steps, f"train-{stage.name}", start=step) as bar,
    ):
        while step < s.steps:
            for name, opt in plan.optimizers.items():
                set_lr(opt, lr_at(plan.base_lr[name], s.lr_milestones, s.lr_gamma, step))
            batch = distributed.shard(loader.next()).to(device, non_blocking=True)
            figures = plan.step(batch, step)  # this rank's rows of the global batch
            step += 1
            lr = plan.optimizers[plan.lr_opt].param_groups[0]["lr"]
            record = {"step": step, **figures, plan.lr_key: lr}
            guard.check(record, step, last_saved)
            if s.val_every and (step % s.val_every == 0 or step == s.steps) and dist.main:
                record.update(plan.validate())
                if record[plan.score] < best:
                    best = record[plan.score]
                    plan.save_best(step, best)
            log.write(record)
            bar.advance(1, plan.summary(figures, record))
            signum = distributed.max_over_ranks(stop.signum or 0)  # every rank stops here
            stopping = bool(signum) and step < s.steps  # (the last step just finishes)
            if stopping or step % s.checkpoint_every == 0 or step == s.steps or clock.due():
                info = {"step": step, "best": best, "rng": loader.rng_state()}
                stage.save(plan, {**info, "skipped": guard.skipped})
                last_saved = stage.last
                clock.reset()
            if stopping:
                raise Interrupted(
                    signum,
                    f"interrupted at step {step}; resume with {stage.make_cmd} --resume"
                    if dist.main
                    else "",
                )
    return LoopResult(step, best, guard.skipped)


class _CheckpointClock:
    """`checkpoint_minutes`: due once that long has passed since the last checkpoint (or the
    start); never with 0. Only rank 0 writes, so only its clock matters."""

    def __init__(self, minutes: float) -> None:
        self.seconds = 60.0 * minutes
        self.reset()

    def reset(self) -> None:
        self.since = time.monotonic()

    def due(self) -> bool:
        return self.seconds > 0 and time.monotonic() - self.since >= self.seconds
