"""`carseg validate RECIPE`: check a recipe and every input it names, running nothing."""

from __future__ import annotations

from pathlib import Path

from carcli.cli.help import name_recipe, recipe_args
from carcli.data.dataset import SPLITS, split_path
from carcli.data.dataset_check import validate_dataset
from carcli.errors import CarsegError
from carcli.recipe.load import load_recipe
from carcli.stages.status import Row, run_status
from carcli.ui import Reporter

GENERATED = ("synthetic", "regression")


def run_validate(path: str, overrides: list[str]) -> None:
    """Print one line per input; raise CarsegError listing every problem found."""
    rep = Reporter()
    recipe = load_recipe(path, overrides)
    rep.line(f"{path}: recipe is valid ({recipe.name}, seed {recipe.seed})")
    args = recipe_args(path, overrides)
    problems: list[str] = []
    data = recipe.data
    for split in SPLITS:
        p = split_path(data.dir, split)
        if p.exists():
            try:
                info = validate_dataset(p)
                rep.line(
                    f"  {p}: valid, {info.n} images, {info.num_classes} classes, "
                    f"{info.num_annotations} annotations"
                )
            except CarsegError as exc:
                problems.extend(str(exc).splitlines())
        elif data.source in GENERATED:
            rep.line(f"  {p}: not made yet; `carseg prepare {args}` generates it")
        elif data.source == "prepared":
            problems.append(
                f"{p}: missing (data.source is 'prepared'); point data.dir at the prepared files"
            )
        elif data.raw is None or not Path(data.raw).exists():
            problems.append(
                f"{p}: missing, and data.raw ({data.raw}) does not exist; get the "
                f"{data.source} data (see data/README.md), then run "
                f"`carseg prepare {args}`"
            )
        else:
            rep.line(f"  {p}: not made yet; `carseg prepare {args}` builds it from {data.raw}")
    if data.blackbox_dir is not None and data.source != "prepared":
        bb = Path(data.blackbox_dir)
        if not bb.is_dir():
            problems.append(
                f"data.blackbox_dir {bb} is not a folder; put the black-box predictions there "
                f"(see data/README.md, 'Black-box predictions') or remove the key"
            )
        else:
            n = sum(1 for f in bb.iterdir() if f.suffix in (".png", ".npy"))
            rep.line(f"  {bb}: {n} black-box prediction files (.png / .npy)")
    if data.source == "lidc-pickle" and not data.allow_pickle:
        problems.append(
            "data.allow_pickle is false: the lidc-pickle source needs the explicit "
            "opt-in data.allow_pickle=true (unpickling can run code)"
        )
    rows = {r.stage: r for r in run_status(recipe)}
    for what, stage in (
        ("calibrator", "train-calibrator"),
        ("refiner", "train-refiner"),
        ("sample bank", "sample"),
    ):
        rep.line(f"  {rows[stage].artefact}: {_state(rows[stage], path, overrides)} ({what})")
    if problems:
        raise CarsegError("\n".join(problems))
    rep.line("ok")


def _state(row: Row, path: str, overrides: list[str]) -> str:
    """`present` only for an artefact that is up to date with what it was made from."""
    if row.state == "done":
        return "present, up to date"
    if row.state == "missing":
        return "not made yet"
    command = name_recipe(row.command, path, overrides) if row.command else ""
    then = f"; run `{command}`" if command else ""
    return f"{row.state}: {row.why}{then}"
