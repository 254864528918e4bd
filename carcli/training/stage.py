"""A training stage's folder and records: the stage folder (lock, finished/resume/overwrite
rules), the non-finite guard, the metrics log, checkpoint writing and the batch stream's RNG
state (the optimiser and its schedule: `carcli.training.optim`; the device and seeding:
`carcli.runtime.device`)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from carcli import distributed
from carcli.artefacts.checkpoint import load_training_state, save_training_state
from carcli.artefacts.run import (
    Manifest,
    clear_stage_dir,
    ensure_dir,
    stage_lock,
    write_text_atomic,
)
from carcli.data.dataset import DatasetFile, split_path
from carcli.data.schema import DatasetInfo
from carcli.errors import CarsegError
from carcli.recipe.load import recipe_to_dict, recipe_to_yaml
from carcli.recipe.schema import Recipe
from carcli.runtime.device import setup_torch
from carcli.runtime.speed import notes as speed_notes
from carcli.ui import Reporter


class NonFiniteGuard:
    """The recipe's `on_nonfinite` rule for one training stage.

    A step-pre-hook on every optimiser drops an update whose gradients are not all finite
    (the weights stay as they were), so no checkpoint ever holds a non-finite weight. After
    each step `check(record, ...)` looks at the step's figures: `stop` raises a CarsegError
    naming the last good checkpoint; `skip` marks the record `skipped`, blanks the non-finite
    figures (metrics.jsonl stays strict JSON) and counts the step in `skipped_steps`.
    """

    def __init__(
        self, mode: str, key: str, optimizers: list[torch.optim.Optimizer], skipped: int = 0
    ) -> None:
        self.mode, self.key, self.skipped = mode, key, skipped
        self._dropped: list[str] = []
        for opt in optimizers:
            opt.register_step_pre_hook(self._before_step)

    def _before_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return
        finite = torch.stack([torch.isfinite(p.grad).all() for p in params]).all()
        if not bool(finite):
            for p in params:
                p.grad = None  # Adam leaves parameters without a gradient untouched
            self._dropped.append("gradients")

    def check(self, record: dict[str, Any], step: int, last_good: Path | None) -> bool:
        """True when this step was skipped; raises in `stop` mode."""
        bad = [
            k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)
        ] + self._dropped
        self._dropped = []
        if not bad:
            if self.skipped:
                record["skipped_steps"] = self.skipped
            return False
        if self.mode == "stop":
            where = (
                f"the last good checkpoint is {last_good}"
                if last_good
                else "no checkpoint was written before it"
            )
            raise CarsegError(
                f"{' and '.join(dict.fromkeys(bad))} became non-finite at step {step}; {where}",
                hint=f"lower the learning rate and resume with --resume, or set "
                f"{self.key}.on_nonfinite=skip to skip such steps",
            )
        self.skipped += 1
        for k in bad:
            if k in record:
                record[k] = None
        record["skipped"] = True
        record["skipped_steps"] = self.skipped
        return True


class MetricsLog:
    """metrics.jsonl: one JSON object per logged step; on resume, later lines are dropped.
    Under torchrun only rank 0 writes it (on the other ranks this is a no-op)."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self.enabled = distributed.current().main
        if not self.enabled:
            pass
        elif resume_step is None:
            write_text_atomic(path, "")
        elif path.exists():
            kept = [ln for ln in path.read_text().splitlines() if _step_of(ln) <= resume_step]
            write_text_atomic(path, "".join(ln + "\n" for ln in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise CarsegError(
                f"cannot write {self.path}: {exc.strerror or exc}",
                hint="free disk space, then continue with --resume",
            ) from None


def _step_of(line: str) -> float:
    """A log line's step; a line torn by a kill (or blank) counts as past any resume point."""
    try:
        return json.loads(line).get("step", 0)
    except (ValueError, AttributeError):
        return math.inf


class Checkpointed(Protocol):
    """What last.safetensors holds besides the step and scores, each by name (a stage's
    :class:`~carcli.training.loop.StagePlan` is one)."""

    models: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    generators: dict[str, torch.Generator]


@dataclass
class TrainingStage:
    """A training stage's folder, its rules, and its checkpoints."""

    recipe: Recipe
    name: str  # "calibrator" or "refiner"
    resume: bool
    overwrite: bool
    make_cmd: str
    sub: str = ""  # a second run of the stage inside its folder (calibrator/regularised)
    started: float = field(default_factory=time.time)

    @property
    def dir(self) -> Path:
        return Path(self.recipe.run_dir) / self.name / self.sub

    @property
    def last(self) -> Path:
        return self.dir / "last.safetensors"

    @property
    def primary(self) -> bool:
        """Rank 0 (or the only process): the one that locks, checks and writes the folder."""
        return distributed.current().main

    @contextlib.contextmanager
    def open(self) -> Iterator[TrainingStage]:
        """Lock the folder and apply the finished / resume / overwrite rules."""
        if self.resume and self.overwrite:
            raise CarsegError("--resume and --overwrite exclude each other", hint="pass one")
        if not self.primary:  # under torchrun: wait for rank 0's lock and checks
            distributed.from_main(lambda: None)
            yield self
            return
        created = _first_missing(self.dir)
        announced = False
        try:
            ensure_dir(self.dir)
            with self._locked(created is not None):
                distributed.from_main(lambda: None)  # the other ranks may start
                announced = True
                yield self
        except BaseException as exc:
            if not announced:
                distributed.report_main_failure(exc)
            if created is not None:  # remove the (now empty) folders this run made
                for p in (self.dir, *self.dir.parents):
                    with contextlib.suppress(OSError):
                        os.rmdir(p)  # only empty folders go
                    if p == created:
                        break
            raise

    @contextlib.contextmanager
    def _locked(self, created: bool) -> Iterator[TrainingStage]:
        with stage_lock(self.dir), _empty_on_early_failure(self.dir, created):
            finished = (self.dir / "manifest.json").exists()
            if self.overwrite:
                pass  # restore() clears the folder once the inputs have been read
            elif self.resume:
                if not self.last.exists():
                    raise CarsegError(
                        f"nothing to resume in {self.dir} (no last.safetensors)",
                        hint=f"start it with `{self.make_cmd}`",
                    )
            elif finished:
                raise CarsegError(
                    f"{self.name} already trained in {self.dir}",
                    hint="pass --overwrite to train again, or --resume to "
                    "continue to a higher step count",
                )
            elif self.last.exists():
                raise CarsegError(
                    f"an unfinished {self.name} run is in {self.dir}",
                    hint="pass --resume to continue it or --overwrite to restart",
                )
            yield self

    def restore(self, parts: Checkpointed) -> dict[str, Any] | None:
        """The saved state on --resume (None otherwise), loaded into ``parts``; then writes
        recipe.yaml. With --overwrite, the old outputs go only here: a run that fails on its
        inputs before this point leaves the folder as it was."""
        info = None
        if self.overwrite and self.primary:
            clear_stage_dir(self.dir)
        if self.resume:
            info = load_training_state(
                self.last,
                models=parts.models,
                optimizers=parts.optimizers,
                generators=parts.generators,
                make_cmd=self.make_cmd,
            )
            if info.get("stage") != self.name:
                raise CarsegError(
                    f"{self.last}: training state of {info.get('stage')!r}, expected {self.name!r}"
                )
        if self.primary:
            write_text_atomic(self.dir / "recipe.yaml", recipe_to_yaml(self.recipe))
        return info

    def save(self, parts: Checkpointed, info: dict[str, Any]) -> None:
        """Write last.safetensors: ``parts`` and ``info`` (rank 0 only)."""
        if not self.primary:
            return
        save_training_state(
            self.last,
            models=parts.models,
            optimizers=parts.optimizers,
            generators=parts.generators,
            info={"stage": self.name, **info},
        )

    def finish(
        self,
        inputs: dict[str, Path],
        outputs: list[str],
        device: torch.device,
        extra: dict[str, Any],
    ) -> None:
        """Write manifest.json; `inputs`: role -> path of what the stage read (provenance)."""
        if not self.primary:
            return
        manifest = Manifest(
            self.name,
            recipe_to_dict(self.recipe),
            self.recipe.seed,
            started=self.started,
            extra=extra,
        )
        for role, p in inputs.items():
            manifest.add_input(p, role)
        manifest.write(self.dir, outputs, device=str(device))


@dataclass
class StageSetup:
    """What both training stages open before their first step (see :func:`stage_setup`)."""

    dist: Any  # the distributed session (world, rank, describe)
    device: torch.device
    train_path: Path
    val_path: Path
    train_ds: DatasetFile
    val_ds: DatasetFile

    @property
    def info(self) -> DatasetInfo:
        return self.train_ds.info


@contextlib.contextmanager
def stage_setup(
    stage: TrainingStage, batch_size: int, batch_key: str, rep: Reporter
) -> Iterator[StageSetup]:
    """The distributed session, the stage's folder (:meth:`TrainingStage.open`), the train
    and val splits (validated), the device and threads (`setup_torch`), the batch checked
    against the world size (``batch_key`` names it) and the speed notes printed."""
    recipe = stage.recipe
    train_path, val_path = split_path(recipe.data.dir, "train"), split_path(recipe.data.dir, "val")
    with (
        distributed.session(recipe) as dist,
        stage.open(),
        DatasetFile(train_path, validate=True) as train_ds,
        DatasetFile(val_path, validate=True) as val_ds,
    ):
        device = setup_torch(recipe)
        distributed.check_batch(batch_size, batch_key)
        for note in speed_notes(recipe, device):
            rep.line(note)
        yield StageSetup(dist, device, train_path, val_path, train_ds, val_ds)


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (None if `path` exists)."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            break
        missing = p
    return missing


@contextlib.contextmanager
def _empty_on_early_failure(stage_dir: Path, created: bool) -> Iterator[None]:
    """In a folder this run created, a failure before the first logged step (a bad input)
    removes recipe.yaml and the empty metrics.jsonl, under the lock, so nothing is left."""
    try:
        yield
    except BaseException:
        if created:
            names = {p.name for p in stage_dir.iterdir()} - {".lock"}
            log = stage_dir / "metrics.jsonl"
            if names <= {"recipe.yaml", "metrics.jsonl"} and not (
                log.exists() and log.stat().st_size
            ):
                for name in names:
                    (stage_dir / name).unlink(missing_ok=True)
        raise


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng
