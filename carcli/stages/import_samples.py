"""`import-samples`: read the recipe, then turn another method's samples into a sample bank.

The library part (sources, checks, the bank) is :func:`carcli.sampling.importer.import_samples`.
"""

from __future__ import annotations

from pathlib import Path

from carcli.artefacts.run import RunLayout
from carcli.errors import CarsegError
from carcli.recipe.load import recipe_to_dict, recipe_to_yaml
from carcli.recipe.schema import Recipe
from carcli.sampling.importer import ImportRecord, import_samples


def run_import_samples(
    recipe: Recipe,
    source: str | Path,
    *,
    split: str | None = None,
    out: str | Path | None = None,
    calibration: str | Path | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> Path:
    """Write the bank of ``source`` for ``split`` (default evaluate.split) to ``out``
    (default ``run_dir/samples/<split>.h5``); return its path."""
    split = split or recipe.evaluate.split
    if split not in ("train", "val", "test"):
        raise CarsegError(f"--split {split!r}: expected train, val or test")
    layout = RunLayout(Path(recipe.run_dir))
    bank_path = Path(out) if out else layout.bank(split)
    return import_samples(
        source,
        recipe.data.dir,
        split,
        bank_path,
        record=ImportRecord(recipe.seed, recipe_to_dict(recipe), recipe_to_yaml(recipe)),
        calibration=calibration,
        overwrite=overwrite,
        quiet=quiet,
    )
