"""What both training stages share: device, seeding, the step schedule, the stage folder
(lock, finished/resume/overwrite rules), the metrics log and checkpoint writing."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from carcli.artefacts.checkpoint import load_training_state, save_training_state
from carcli.artefacts.run import Manifest, clear_stage_dir, ensure_dir, stage_lock
from carcli.errors import CarsegError
from carcli.recipe.load import recipe_to_dict, recipe_to_yaml
from carcli.recipe.schema import Recipe


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CarsegError(
            f"device {name!r} requested but CUDA is not available",
            hint="set device=auto or device=cpu",
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise CarsegError(
            f"device -> unknown device {name!r}", hint="use auto, cpu or cuda"
        ) from None


def setup_torch(recipe: Recipe) -> torch.device:
    """Threads and seeds; returns the device."""
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    return select_device(recipe.device)


def lr_at(base: float, milestones: list[int], gamma: float, step: int) -> float:
    """Step schedule: base * gamma^(number of milestones already passed)."""
    return base * gamma ** sum(step >= m for m in milestones)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def adam(params: Any, lr: float, betas: list[float], weight_decay: float) -> torch.optim.Adam:
    """The paper's optimiser: Adam with coupled L2 weight decay."""
    return torch.optim.Adam(params, lr=lr, betas=(betas[0], betas[1]), weight_decay=weight_decay)


def check_finite(value: float, name: str, step: int, last_good: Path | None) -> None:
    if not math.isfinite(value):
        where = f"; the last good checkpoint is {last_good}" if last_good else ""
        raise CarsegError(
            f"{name} became non-finite at step {step}{where}",
            hint="lower the learning rate, or resume from the checkpoint with --resume",
        )


class MetricsLog:
    """metrics.jsonl: one JSON object per logged step; on resume, later lines are dropped."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is None:
            path.write_text("")
        elif path.exists():
            kept = [
                ln
                for ln in path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= resume_step
            ]
            path.write_text("".join(ln + "\n" for ln in kept))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


@dataclass
class TrainingStage:
    """A training stage's folder, its rules, and its checkpoints."""

    recipe: Recipe
    name: str  # "calibrator" or "refiner"
    resume: bool
    overwrite: bool
    make_cmd: str
    started: float = field(default_factory=time.time)

    @property
    def dir(self) -> Path:
        return Path(self.recipe.run_dir) / self.name

    @property
    def last(self) -> Path:
        return self.dir / "last.safetensors"

    @contextlib.contextmanager
    def open(self) -> Iterator[TrainingStage]:
        """Lock the folder and apply the finished / resume / overwrite rules."""
        if self.resume and self.overwrite:
            raise CarsegError("--resume and --overwrite exclude each other", hint="pass one")
        ensure_dir(self.dir)
        with stage_lock(self.dir):
            finished = (self.dir / "manifest.json").exists()
            if self.overwrite:
                clear_stage_dir(self.dir)
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
            (self.dir / "recipe.yaml").write_text(recipe_to_yaml(self.recipe))
            yield self

    def restore(
        self,
        models: dict[str, torch.nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        generators: dict[str, torch.Generator],
    ) -> dict[str, Any] | None:
        if not self.resume:
            return None
        info = load_training_state(
            self.last,
            models=models,
            optimizers=optimizers,
            generators=generators,
            make_cmd=self.make_cmd,
        )
        if info.get("stage") != self.name:
            raise CarsegError(
                f"{self.last}: training state of {info.get('stage')!r}, expected {self.name!r}"
            )
        return info

    def save(
        self,
        models: dict[str, torch.nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        generators: dict[str, torch.Generator],
        info: dict[str, Any],
    ) -> None:
        save_training_state(
            self.last,
            models=models,
            optimizers=optimizers,
            generators=generators,
            info={"stage": self.name, **info},
        )

    def finish(
        self, inputs: list[Path], outputs: list[str], device: torch.device, extra: dict[str, Any]
    ) -> None:
        manifest = Manifest(
            self.name,
            recipe_to_dict(self.recipe),
            self.recipe.seed,
            started=self.started,
            extra=extra,
        )
        for p in inputs:
            manifest.add_input(p)
        manifest.write(self.dir, outputs, device=str(device))


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng
