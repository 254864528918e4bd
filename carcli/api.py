"""The Python API: ``from carcli import load_model``.

    model = load_model("runs/toy/bundle")            # a bundle folder, or a recipe path
    pred = model.predict(images, num_samples=16, seed=0)
    pred.samples, pred.probabilities, pred.entropy, pred.proposals

`images` is a numpy array [B, C, H, W] (or one [C, H, W]) or a list of arrays, taken as
already normalised, or file paths / folders, read as `carseg predict` reads them (image files
through the model's preprocessing). Nothing is written unless asked (`pred.save(out)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Prediction:
    """Per input: `samples` uint8 [N, H, W], `probabilities` (F's) float16 [K, H, W],
    `entropy` (F's, nats) float32 [H, W], `proposals` (list of dicts, see
    carcli/predict/proposals.py). When every input has one size the first three are stacked
    arrays [B, ...]; otherwise lists."""

    names: list[str]
    samples: Any
    probabilities: Any
    entropy: Any
    proposals: list[list[dict]]
    num_samples: int = 0
    seed: int = 0
    items: list[Any] = field(repr=False, default_factory=list)
    results: list[Any] = field(repr=False, default_factory=list)
    meta: dict[str, Any] = field(repr=False, default_factory=dict)

    def save(self, out: str | Path) -> Path:
        """Write the per-input folders and predictions.h5 as `carseg predict` does."""
        from carcli.predict.run import write_all

        return write_all(
            Path(out), self.items, self.results, self.meta, self.num_samples, self.seed
        )


class Model:
    """A loaded F and G with their description (model.json); see `load_model`."""

    def __init__(self, loaded: Any, device: Any) -> None:
        import torch

        from carcli.runtime.speed import notes, settings

        self.loaded, self.device = loaded, device
        recipe = speed_recipe(loaded.speed)
        dev = torch.device(device)
        # what applies here (as `sample` records it), and a line per option that does not
        applied = settings(recipe, dev, 1, inference=True)
        self.speed_notes: list[str] = notes(recipe, dev)
        self.meta: dict[str, Any] = {**loaded.meta, "speed_applied": applied}
        self._recipe, self._calls = recipe, None

    def calls(self) -> tuple[Any, Any]:
        """F and G as `sample` calls them: through the speed options (channels-last,
        ``fold_bn``'s folded copies, bf16 autocast), `carcli.runtime.speed.accelerate`."""
        if self._calls is None:
            import torch

            from carcli.runtime.speed import accelerate

            dev = torch.device(self.device)
            self._calls = tuple(
                accelerate(net, self._recipe, dev, inference=True)
                for net in (self.loaded.F, self.loaded.G)
            )
        return self._calls

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def preprocess(self) -> list[dict] | None:
        return self.meta.get("preprocess")

    def read(self, images: Any, recursive: bool = False) -> list[Any]:
        """Inputs as `Item`s (network input, name, sha256, noise key); nothing is run."""
        from carcli.predict.inputs import collect

        return collect(images, self.preprocess, int(self.meta["in_channels"]), recursive)

    def predict(
        self,
        images: Any,
        num_samples: int = 16,
        seed: int = 0,
        batch_size: int = 8,
        blackbox: str | Path | list[np.ndarray] | None = None,
        recursive: bool = False,
        done: Any = None,
    ) -> Prediction:
        """Samples, F's probabilities and entropy, and proposals for `images`."""
        items = self.read(images, recursive)
        return self.predict_items(items, num_samples, seed, batch_size, blackbox, done)

    def blackboxes(self, items: list[Any], blackbox: Any) -> list[np.ndarray | None]:
        from carcli.predict.run import blackbox_for

        return blackbox_for(items, blackbox, self.meta)

    def predict_items(
        self,
        items: list[Any],
        num_samples: int = 16,
        seed: int = 0,
        batch_size: int = 8,
        blackbox: Any = None,
        done: Any = None,
        skip: set[int] | None = None,
    ) -> Prediction:
        import torch

        from carcli.errors import CarsegError
        from carcli.predict import engine

        if num_samples < 1 or batch_size < 1:
            raise CarsegError("num_samples and batch_size must be at least 1")
        bbs = self.blackboxes(items, blackbox)
        results: list[Any] = [None] * len(items)

        def finished(i: int, res: Any) -> None:
            results[i] = res
            if done is not None:
                done(i, res)

        todo = [i for i in range(len(items)) if not skip or i not in skip]
        F_call, G_call = self.calls()
        with torch.inference_mode():
            engine.run(
                F_call,
                G_call,
                [items[i] for i in todo],
                [bbs[i] for i in todo],
                engine.PredictOptions(num_samples, seed, batch_size),
                self._engine_spec(),
                lambda j, res: finished(todo[j], res),
            )
        pred = _prediction(items, results)
        pred.num_samples, pred.seed, pred.meta = num_samples, seed, self.meta
        return pred

    def _engine_spec(self) -> Any:
        """The engine's view of this model (model.json's values, the speed recipe's chunk)."""
        import torch

        from carcli.predict import engine

        return engine.ModelSpec(
            noise_dim=int(self.meta["noise_dim"]),
            num_classes=self.num_classes,
            eval_classes=[int(c) for c in self.meta["eval_classes"]],
            stride=int(self.meta["stride"]),
            device=torch.device(self.device),
            independent_regions=self.meta.get("independent_regions"),
            chunk_samples=self._recipe.speed.sample_chunk,
            recombine=self.loaded.coupling,
        )


def _prediction(items: list[Any], results: list[Any]) -> Prediction:
    ok = [r for r in results if r is not None]
    same = len({r.entropy.shape for r in ok}) <= 1 and len(ok) == len(results)

    def stack(name: str) -> Any:
        arrays = [getattr(r, name) if r is not None else None for r in results]
        return np.stack(arrays) if same and arrays else arrays

    return Prediction(
        names=[it.name for it in items],
        samples=stack("samples"),
        probabilities=stack("probabilities"),
        entropy=stack("entropy"),
        proposals=[r.proposals if r is not None else [] for r in results],
        items=items,
        results=results,
    )


def speed_recipe(speed: dict[str, Any]) -> Any:
    """A default recipe whose `speed` section holds ``speed`` (what `accelerate` reads)."""
    import dataclasses

    from carcli.recipe.schema import Recipe

    recipe = Recipe()
    return dataclasses.replace(recipe, speed=dataclasses.replace(recipe.speed, **speed))


def load_model(
    path: str | Path,
    device: str = "cpu",
    speed: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> Model:
    """A bundle folder (made by `carseg export`) or a recipe (its run's checkpoints).

    The bundle's weights are checked against the sha256 in model.json; nothing is executed.
    `device`: ``cpu``, ``cuda``, ``cuda:1``, ``mps`` or ``auto``. F and G run with the
    model's speed options (the recipe's `speed` section, or the one model.json recorded at
    export), as `carseg sample` runs them; ``speed`` overrides some, e.g.
    ``{"cpu_bf16": False}`` (keys: amp, channels_last, compile, fold_bn, cpu_bf16).
    ``overrides``: `key=value` recipe overrides of a recipe `path` (e.g. its `run_dir=`)."""
    import torch

    from carcli.bundle.load import load

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Model(load(path, device, speed, overrides), device)
