"""The commands an error message suggests, made runnable as they are printed.

A stage names the command that makes a missing or broken input as `carseg STAGE RECIPE
[args]` (it does not know the command line). Here, where the recipe path and the user's
overrides are known, each such suggestion becomes one that can succeed:

* RECIPE becomes the recipe path, followed by the user's overrides that the suggested stage
  reads (`carseg prepare` is not told `calibrator.steps=5`; a key the suggestion sets itself
  is not repeated);
* `--overwrite` is added when the suggested stage's output already exists (remaking a
  truncated dataset or checkpoint must replace it, or the stage refuses);
* `carseg prepare` of a recipe whose `data.source` is `prepared` cannot remake anything (it
  only checks the files a user's converter wrote): the suggestion becomes what to do by hand.

tests/test_hints.py runs every suggestion the reliability table's situations produce.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path
from typing import Any

# Recipe sections (and top-level keys) a stage does not read: a user's override of one is
# left out of a command suggested for that stage. Everything else is carried.
NOT_READ: dict[str, set[str]] = {
    "prepare": {
        "run_dir",
        "calibrator",
        "refiner",
        "discriminator",
        "sample",
        "evaluate",
        "speed",
        "distributed",
        "device",
    },
    "train-calibrator": {"refiner", "discriminator", "sample", "evaluate"},
    "train-refiner": {"sample", "evaluate"},
    "sample": {"discriminator", "evaluate"},
    "evaluate": {"calibrator", "refiner", "discriminator", "distributed"},
    "plot-reliability": {"calibrator", "refiner", "discriminator", "distributed"},
    "import-samples": {"calibrator", "refiner", "discriminator", "distributed"},
    "export": {"evaluate", "distributed"},
}

# `carseg STAGE RECIPE` and the arguments that follow it (key=value, --options)
_SUGGESTION = re.compile(
    r"(`?)\bcarseg ([a-z-]+) RECIPE((?: (?:--[a-z-]+|[A-Za-z_][\w.]*=[^\s`;,]+))*)(`?)"
)


def split_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """`carseg predict RECIPE INPUT... key=value...`: (inputs, recipe overrides). An argument
    is an override when it reads `dotted.key=value` and no file or folder has that name."""
    inputs, overrides = [], []
    for arg in args:
        is_override = override_key(arg) is not None and not Path(arg).exists()
        (overrides if is_override else inputs).append(arg)
    return inputs, overrides


def override_key(text: str) -> str | None:
    """The key of a `key=value` argument (None for anything else)."""
    m = re.match(r"([A-Za-z_][\w.]*)=", text)
    return m.group(1) if m else None


def relevant(stage: str, override: str) -> bool:
    """Whether `stage` reads the recipe key that `override` sets."""
    key = override_key(override)
    if key is None:
        return True
    return key.split(".")[0] not in NOT_READ.get(stage, set())


# `carseg import-samples RECIPE SOURCE ...`: the overrides go after SOURCE (a positional)
_IMPORT = re.compile(
    r"\bcarseg import-samples RECIPE ('[^']*'|[^\s`;,']+)"
    r"((?: (?:--split (?:train|val|test)|--[a-z-]+|[A-Za-z_][\w.]*=[^\s`;,]+))*)"
)


def complete(text: str, recipe: str | None, overrides: list[str] | None) -> str:
    """`text` with every `carseg STAGE RECIPE ...` made runnable (see the module doc)."""
    if not recipe or "RECIPE" not in text:
        return text
    loaded = _load(recipe, overrides or [])

    def one(m: re.Match[str]) -> str:
        tick, stage, extra = m.group(1), m.group(2), m.group(3).split()
        if stage == "prepare" and loaded is not None and loaded.data.source == "prepared":
            return (  # what to do by hand: no command of carseg remakes a user's files
                f"your own converter (data.source is 'prepared': carseg prepare only checks "
                f"the files in {loaded.data.dir}; or set data.source to the source they come "
                "from and run carseg prepare with --overwrite)"
            )
        own = {override_key(e) for e in extra} - {None}
        carried = [
            o for o in (overrides or []) if relevant(stage, o) and override_key(o) not in own
        ]
        if (
            loaded is not None
            and "--overwrite" not in extra
            and "--resume" not in extra
            and _output_exists(stage, loaded)
        ):
            extra.append("--overwrite")
        command = shlex.join(["carseg", stage, recipe, *carried, *extra])
        return f"{tick}{command}{m.group(4)}"

    def imported(m: re.Match[str]) -> str:
        carried = [o for o in (overrides or []) if relevant("import-samples", o)]
        source, extra = shlex.split(m.group(1))[0], m.group(2).split()
        split = extra[extra.index("--split") + 1] if "--split" in extra else None
        if loaded is not None and "--overwrite" not in extra:
            bank = Path(loaded.run_dir) / "samples" / f"{split or loaded.evaluate.split}.h5"
            if bank.exists():
                extra.append("--overwrite")
        return shlex.join(["carseg", "import-samples", recipe, source, *carried, *extra])

    return _SUGGESTION.sub(one, _IMPORT.sub(imported, text))


def _load(recipe: str, overrides: list[str]) -> Any:
    """The recipe as the command loaded it (None when it does not load)."""
    from carcli.errors import CarsegError
    from carcli.recipe.load import load_recipe

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # its warnings were printed once
            return load_recipe(recipe, overrides)
    except (CarsegError, OSError, ValueError):
        return None


def _output_exists(stage: str, recipe: Any) -> bool:
    """Whether `stage` would refuse to run without --overwrite (its output exists; paths of
    CONTRACTS' run layout)."""
    run = Path(recipe.run_dir)
    if stage == "prepare":
        return any((Path(recipe.data.dir) / f"{s}.h5").exists() for s in ("train", "val", "test"))
    if stage in ("train-calibrator", "train-refiner"):
        folder = run / ("calibrator" if stage == "train-calibrator" else "refiner")
        return (folder / "manifest.json").exists() or (folder / "last.safetensors").exists()
    if stage == "sample":
        return (run / "samples" / f"{recipe.sample.split}.h5").exists()
    if stage == "evaluate":
        return (run / "eval" / recipe.evaluate.split / "metrics.json").exists()
    if stage == "export":
        return (run / "bundle" / "model.json").exists()
    return False
